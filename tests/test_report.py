"""`mgc report`: every section present, its figures those of the run's own JSON and CSV outputs,
and the HTML opened by a real headless browser (Debian's chromium) for a screenshot."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

import matplotlib.image
import pandas as pd
import pytest

from mgc import report
from mgc.cli import main

SECTIONS = ["Extraction", "Models", "Tuning", "Labelling", "Recommendations", "Run facts"]


def _tables(markdown: str) -> dict[str, pd.DataFrame]:
    """The Markdown report's tables by caption (### line), cells as strings."""
    tables, caption, rows = {}, None, []
    for line in markdown.splitlines() + [""]:
        if line.startswith("### "):
            caption, rows = line[4:], []
        elif line.startswith("|") and caption:
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows and caption:
            tables[caption] = pd.DataFrame([r for r in rows[2:]], columns=rows[0])
            caption, rows = None, []
    return tables


@pytest.fixture(scope="module")
def run_dir(features, compared, sweep, labelled, catalogue, tmp_path_factory):
    """A run directory laid out as `mgc demo` lays it out, from the session's real outputs."""
    run = tmp_path_factory.mktemp("run")
    for name, src in {"features": features, "runs": compared, "labels": labelled, "catalogue": catalogue}.items():
        (run / name).symlink_to(src)
    (run / "sweeps").mkdir()
    (run / "sweeps" / "sw").symlink_to(sweep[0])
    (run / "demo.json").write_text(
        json.dumps({"config": {}, "stages": {"extract": {"wall_s": 12.5}, "train": {"wall_s": 80.0}}})
    )
    return run


def test_the_report_has_every_section_with_the_runs_figures(run_dir, model, capsys):
    assert main(["report", str(run_dir)]) == 0
    assert str(run_dir / "report" / "report.html") in capsys.readouterr().out
    page = (run_dir / "report" / "report.html").read_text()
    md = (run_dir / "report" / "report.md").read_text()
    for title in SECTIONS:
        assert f">{title}</h2>" in page and f"## {title}\n" in md, title
    assert "Not run" not in page + md
    # 3 figures per model (confusion, learning curves, reliability), the sweep's plane: embedded
    # in the HTML, copied beside the Markdown.
    assert page.count("src='data:image/png;base64,") == 7
    assert len(re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", md)) == 7 and all(
        (run_dir / "report" / f).is_file() for f in re.findall(r"\]\(([^)]+\.png)\)", md)
    )

    # How to serve the labelling model with the catalogue it embedded (README, "Serve").
    assert f"`mgc serve --model {model} --catalogue {run_dir / 'catalogue'}`" in md

    tables = _tables(md)
    summary = json.loads((run_dir / "features" / "_summary.json").read_text())
    extraction = dict(tables["Tracks and segments"].values)
    assert int(extraction["tracks ok"]) == summary["tracks_ok"] and int(extraction["segments"]) == summary["segments"]
    assert int(extraction["tracks rejected"]) == summary["tracks_rejected"]
    assert {k: int(extraction[f"rejected: {k}"]) for k in summary["rejects_by_reason"]} == summary["rejects_by_reason"]

    for level in ("segment", "track"):
        table = tables[f"Test metrics, {level} level"].set_index("model")
        assert set(table.index) == {"cnn", "cnn_lstm"}
        for run in table.index:
            metrics = json.loads((run_dir / "runs" / run / "metrics.json").read_text())["test"][level]
            for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss", "ece"):
                assert float(table.loc[run, k]) == pytest.approx(metrics[k], abs=1e-4), (level, run, k)
    calibration = tables["Calibration, test tracks"].set_index("model")
    for run in calibration.index:
        c = json.loads((run_dir / "runs" / run / "metrics.json").read_text())["calibration"]
        assert float(calibration.loc[run, "temperature"]) == pytest.approx(c["temperature"], abs=1e-3)
        assert float(calibration.loc[run, "test ece after"]) == pytest.approx(c["test"]["ece_after"], abs=1e-4)
        fit = c["temperature_fit"]  # how T was chosen, in metrics.json and in the report
        assert (
            calibration.loc[run, "how"].startswith("floor" if fit["floored"] else "fitted")
            and f"{fit['right']}/{fit['n']}" in calibration.loc[run, "how"]
        )

    best = json.loads((run_dir / "sweeps" / "sw" / "best.json").read_text())
    config = dict(tables["sw: best configuration"].values)
    assert float(config["lr"]) == pytest.approx(best["config"]["lr"], rel=1e-4)
    assert f"best {best['metric']} {best['score']:.4f}" in md
    trials = pd.read_csv(run_dir / "sweeps" / "sw" / "trials.csv")
    assert sorted(tables["sw: trials"]["trial_id"]) == sorted(trials["trial_id"])

    people = pd.read_csv(run_dir / "labels" / "summary.csv")
    genres = tables["Files per predicted genre, and the share flagged uncertain"]
    assert dict(zip(genres["genre"], genres["files"].astype(int))) == dict(
        people.loc[people["kind"] == "genre", ["name", "files"]].values
    )
    uncertain = (people["files"] * people["uncertain_share"].fillna(0)).sum() / people.loc[
        people["kind"] == "genre", "files"
    ].sum()
    assert f"({uncertain:.1%} flagged uncertain)" in md
    errors = tables["Errors by reason"]
    assert dict(zip(errors["reason"], errors["files"].astype(int))) == dict(
        people.loc[people["kind"] == "error", ["name", "files"]].values
    )
    precision = pd.read_csv(run_dir / "catalogue" / "precision_at_k.csv").set_index("genre")
    shown = tables["Genre precision of the 5 and 10 nearest neighbours"].set_index("genre")
    assert float(shown.loc["all", "precision@5"]) == pytest.approx(precision.loc["all", "precision@5"], abs=1e-4)

    features = json.loads((run_dir / "features" / "_config.json").read_text())["feature_config"]
    assert int(dict(tables["Feature configuration (features/_config.json)"].values)["n_mels"]) == features["n_mels"]
    assert dict(tables["Wall time per stage, seconds (demo.json)"].values) == {"extract": "12.5", "train": "80"}
    versions = dict(tables["Versions (of the environment that rendered this report)"].values)
    import ray

    assert versions["ray"] == ray.__version__


def test_a_browser_renders_the_report(run_dir, tmp_path):
    """Headless chromium opens the HTML and takes a screenshot that is not blank."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    page = run_dir / "report" / "report.html"
    if not page.exists():
        report.write(str(run_dir))
    shot = tmp_path / "report.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1280,2400",
           f"--user-data-dir={tmp_path / 'profile'}", page.as_uri()]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2400, 1280)
    assert pixels[..., :3].std() > 0.05  # text, tables and figures, not an empty page
    shutil.copy(shot, run_dir / "report" / "screenshot.png")  # kept beside the report for people to look at

    # What the browser made of the page, read from its DOM once loaded: a copy of the report with
    # a script that writes each figure's decoded width and each section heading's height into it.
    probe = tmp_path / "probe.html"
    script = (
        "<script>window.addEventListener('load', () => document.body.setAttribute('data-probe', JSON.stringify({"
        "images: [...document.images].map(i => i.naturalWidth),"
        "sections: [...document.querySelectorAll('h2')].map(h => [h.textContent, h.getBoundingClientRect().height])})));"
        "</script>"
    )
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom",
           f"--user-data-dir={tmp_path / 'profile'}", probe.as_uri()]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'data-probe="([^"]*)"', proc.stdout)
    assert proc.returncode == 0 and found, proc.stderr[-2000:]
    seen = json.loads(html.unescape(found.group(1)))
    assert len(seen["images"]) == page.read_text().count("<img") >= 3 and all(w > 0 for w in seen["images"]), seen[
        "images"
    ]
    assert [t for t, _ in seen["sections"]] == SECTIONS and all(h > 0 for _, h in seen["sections"]), seen["sections"]


def test_a_report_of_an_empty_folder_says_what_was_not_run(tmp_path):
    html, md = report.write(str(tmp_path))
    text = open(md).read()
    for title in SECTIONS:
        assert f"## {title}\n" in text
    assert text.count("Not run") == 5


def test_a_summary_missing_a_field_names_the_file_and_the_field(tmp_path):
    """An extraction's _summary.json that is `{}`: its section says which file lacks which field;
    the other sections render as ever."""
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "_summary.json").write_text("{}")
    html, md = report.write(str(tmp_path))
    text = open(md).read()
    assert f"Could not be rendered: {tmp_path / 'features' / '_summary.json'}: no field 'tracks_ok'" in text, text[
        :2000
    ]
    assert "KeyError" not in text and text.count("Not run") == 4
