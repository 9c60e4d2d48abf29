"""`mgc report RUN_DIR`: one page people can read about a run of the pipeline (HTML with the
figures embedded, and the same tables in Markdown), from the JSON, CSV and PNG outputs the stages
wrote. RUN_DIR is laid out as `mgc demo` lays it out:

    features/   mgc extract        runs/     mgc compare (one folder per model)
    sweeps/     mgc tune           labels/   mgc label      catalogue/  mgc embed
    demo.json   wall time per stage (optional)

A stage whose output is absent gets a section saying so.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import os
import platform
import shutil
from importlib import metadata
from typing import Any

import pandas as pd

from mgc import metrics, storage
from mgc.errors import MgcError

PACKAGES = ("mgc", "ray", "torch", "numpy", "pyarrow", "librosa", "soundfile", "soxr", "scikit-learn")


@dataclasses.dataclass
class Section:
    """A titled part of the report: lines of text, captioned tables and captioned PNG files."""

    title: str
    lines: list[str] = dataclasses.field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = dataclasses.field(default_factory=list)
    images: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def _temperature_how(fit: dict | None) -> str:
    """How a run's temperature was chosen, in a few words (a run with no `temperature_fit`: fitted)."""
    if not fit:
        return "validation log loss"
    if fit["floored"]:
        return (
            f"floor: {fit['right']}/{fit['n']} right on validation, "
            f"mean confidence held at {fit['expected_accuracy']:.3f}"
        )
    return f"fitted on {fit['right']}/{fit['n']} right on validation (prior's MAP)"


class _Fields(dict):
    """A JSON file's object whose missing field is an MgcError naming the file and the field."""

    def __init__(self, path: str, fields: dict[str, Any]):
        super().__init__(fields)
        self.path = path

    def __missing__(self, key: str):
        raise MgcError(f"{self.path}: no field {key!r} (cut short, or written by another tool?)")


def _json(path: str) -> dict[str, Any] | None:
    if not os.path.isfile(path):
        return None
    data = storage.read_json(path)
    return _Fields(path, data) if isinstance(data, dict) else data


def _csv(path: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (ValueError, OSError) as e:  # pandas' parser errors are ValueErrors
        raise MgcError(f"{path}: not a readable CSV ({e})") from None


def _missing(title: str, path: str, command: str) -> Section:
    return Section(title, [f"Not run: {path} holds no output of `{command}`."])


def extraction(run_dir: str) -> Section:
    path = os.path.join(run_dir, "features")
    summary = _json(os.path.join(path, "_summary.json"))
    if summary is None:
        return _missing("Extraction", path, "mgc extract")
    last = summary.get("this_run", {})
    rows = [
        ("tracks ok", summary["tracks_ok"]),
        ("tracks rejected", summary["tracks_rejected"]),
        ("segments", summary["segments"]),
    ]
    rows += [(f"rejected: {reason}", n) for reason, n in sorted(summary["rejects_by_reason"].items())]
    rows += [
        ("last run: tracks processed", last.get("tracks_processed")),
        ("last run: wall time (s)", last.get("wall_s")),
        ("last run: tracks/s", last.get("tracks_per_s")),
        ("cluster CPUs", last.get("cluster_cpus")),
    ]
    return Section(
        "Extraction",
        [f"From `{path}/_summary.json`."],
        [("Tracks and segments", pd.DataFrame(rows, columns=["figure", "value"]))],
    )


def model_runs(run_dir: str) -> list[tuple[str, dict[str, Any]]]:
    """(run directory, metrics.json) of every finished training run under runs/, by name."""
    root = os.path.join(run_dir, "runs")
    found = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        m = _json(os.path.join(root, name, "metrics.json"))
        if m is not None:
            found.append((os.path.join(root, name), m))
    return found


def models(run_dir: str) -> Section:
    runs = model_runs(run_dir)
    if not runs:
        return _missing("Models", os.path.join(run_dir, "runs"), "mgc compare")
    section = Section(
        "Models",
        [
            "Test split, scored once after training; a track's prediction is the mean of its segments' "
            "log-probabilities, calibrated by a temperature fitted on the validation split (ECE: expected "
            "calibration error, 15 bins)."
        ],
    )
    multilabel = any(m.get("target", "genre_top") != "genre_top" for _, m in runs)
    if multilabel:
        section.lines.append(
            "Multi-label models (target genres or genres_all): accuracy is the top genre's, read from the root "
            "genres' scores, on the tracks with a genre_top; precision, recall and F1 at per-genre thresholds "
            "chosen on validation; AP: average precision over genres."
        )
    shown = metrics.SCALARS + (metrics.MULTILABEL_SCALARS if multilabel else ())
    for level in ("segment", "track"):
        rows = [
            {
                "model": m["run"],
                "target": m.get("target", "genre_top"),
                "parameters": m["parameters"],
                "best epoch": m["best_epoch"],
                **{k: round(m["test"][level].get(k, float("nan")), 4) for k in shown},
            }
            for _, m in runs
        ]
        section.tables.append((f"Test metrics, {level} level", pd.DataFrame(rows)))
    calibrated = [(m["run"], m["calibration"]) for _, m in runs if "calibration" in m]
    if calibrated:
        rows = [
            {
                "model": run,
                "temperature": round(c["temperature"], 3),
                "how": _temperature_how(c.get("temperature_fit")),
                **{f"test {k.replace('_', ' ')}": round(v, 4) for k, v in c["test"].items()},
            }
            for run, c in calibrated
        ]
        section.tables.append(("Calibration, test tracks", pd.DataFrame(rows)))
        if any(c.get("temperature_fit") for _, c in calibrated):
            section.lines.append(f"The temperature: {metrics.TEMPERATURE_RULE}.")
    for path, m in runs:
        if os.path.exists(os.path.join(path, "confusion_matrix.png")):
            section.images.append(
                (f"{m['run']}: confusion matrix (test, track level)", os.path.join(path, "confusion_matrix.png"))
            )
        section.images.append((f"{m['run']}: learning curves", os.path.join(path, "learning_curves.png")))
        if os.path.exists(os.path.join(path, "reliability.png")):
            section.images.append((f"{m['run']}: reliability (test tracks)", os.path.join(path, "reliability.png")))
        if os.path.exists(os.path.join(path, "genre_ap.png")):
            section.images.append(
                (f"{m['run']}: average precision per genre (test tracks)", os.path.join(path, "genre_ap.png"))
            )
    return section


def sweeps(run_dir: str) -> list[str]:
    root = os.path.join(run_dir, "sweeps")
    return (
        [os.path.join(root, n) for n in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, n, "best.json"))]
        if os.path.isdir(root)
        else []
    )


def tuning(run_dir: str) -> Section:
    found = sweeps(run_dir)
    if not found:
        return _missing("Tuning", os.path.join(run_dir, "sweeps"), "mgc tune")
    section = Section("Tuning")
    for path in found:
        best = storage.read_json(os.path.join(path, "best.json"))
        name = os.path.basename(path)
        section.lines.append(
            f"{name}: {best['trials']} trials, {best['stopped_early']} stopped early by ASHA; best {best['metric']} "
            f"{best['score']:.4f} (trial {best['trial_id']}, epoch {best['epoch']})."
        )
        config = pd.DataFrame([(k, v) for k, v in best["config"].items()], columns=["parameter", "value"])
        section.tables.append((f"{name}: best configuration", config))
        trials = _csv(os.path.join(path, "trials.csv"))
        section.tables.append((f"{name}: trials", trials.round(6)))
        section.images.append((f"{name}: learning rate x dropout", os.path.join(path, "search_plane.png")))
    return section


def labelling(run_dir: str) -> Section:
    path = os.path.join(run_dir, "labels")
    summary = _json(os.path.join(path, "_summary.json"))
    if summary is None:
        return _missing("Labelling", path, "mgc label")
    people = _csv(os.path.join(path, "summary.csv"))
    genres = people[people["kind"] == "genre"][["name", "files", "uncertain_share"]].rename(columns={"name": "genre"})
    errors = people[people["kind"] == "error"][["name", "files"]].rename(columns={"name": "reason"})
    uncertain = float((genres["files"] * genres["uncertain_share"]).sum() / max(genres["files"].sum(), 1))
    line = (
        f"{summary['inputs']} files in the input: {int(genres['files'].sum())} labelled "
        f"({uncertain:.1%} flagged uncertain), {int(errors['files'].sum())} errors. The last run labelled "
        f"{summary['labelled']} in {summary['seconds']} s and skipped {summary['skipped']} already labelled; "
        f"model {summary['model_id']}."
    )
    tables = [("Files per predicted genre, and the share flagged uncertain", genres), ("Errors by reason", errors)]
    lines = [line]
    truth = os.path.join(run_dir, "uploads", "_truth.csv")  # the demo's uploads say what each file is
    if os.path.isfile(truth):
        from mgc import label  # here, not at the top: it imports torch, which a report needs nowhere else

        by_flag = label.accuracy_by_flag(
            label.current(path, columns=["status", "top_genres", "uncertain"]),
            pd.read_csv(truth, keep_default_na=False),
        )
        lines.append(
            f"Where the genre is known ({truth}), the top genre is right for {_share(by_flag.iloc[0])} of the files "
            f"flagged uncertain and {_share(by_flag.iloc[1])} of the rest."
        )
        tables.append(("Accuracy of the files flagged uncertain and of the rest, where the genre is known", by_flag))
    return Section("Labelling", lines, tables)


def _share(row: pd.Series) -> str:
    return f"{row['right']} of {row['n']}" + (f" ({row['accuracy']:.0%})" if row["n"] else "")


def recommendations(run_dir: str) -> Section:
    path = os.path.join(run_dir, "catalogue", "precision_at_k.csv")
    if not os.path.isfile(path):
        return _missing("Recommendations", os.path.dirname(path), "mgc embed")
    line = (
        "For each test track, the share of its 5 and 10 nearest catalogue neighbours (cosine similarity of "
        "embeddings) with the same genre."
    )
    # The labelling model is the one that embedded the catalogue where both came from one run (the demo).
    labelled = _json(os.path.join(run_dir, "labels", "_summary.json")) or {}
    model = labelled.get("model", "MODEL")
    serve = (
        f"To listen to them and label uploads as they arrive: `mgc serve --model {model} --catalogue "
        f'{os.path.dirname(path)}`, then open http://127.0.0.1:8000/ (README, "Serve"; the model must be the '
        "one that embedded the catalogue)."
    )
    return Section(
        "Recommendations",
        [line, serve],
        [("Genre precision of the 5 and 10 nearest neighbours", _csv(path).round(4))],
    )


def _hardware() -> list[tuple[str, Any]]:
    import psutil

    cpu = platform.processor() or ""
    if os.path.isfile("/proc/cpuinfo"):
        cpu = next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), cpu
        )
    rows = [
        ("machine", f"{platform.system()} {platform.machine()}"),
        ("CPU", cpu),
        ("cores", os.cpu_count()),
        ("memory (GiB)", round(psutil.virtual_memory().total / 2**30, 1)),
    ]
    try:
        import torch

        rows.append(("GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"))
    except ImportError:
        pass
    return rows


def facts(run_dir: str) -> Section:
    section = Section("Run facts")
    versions = [("python", platform.python_version())]
    for name in PACKAGES:
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            versions.append((name, "not installed"))
    section.tables.append(
        (
            "Versions (of the environment that rendered this report)",
            pd.DataFrame(versions, columns=["package", "version"]),
        )
    )
    section.tables.append(
        ("Hardware (where this report was rendered)", pd.DataFrame(_hardware(), columns=["item", "value"]))
    )
    config = _json(os.path.join(run_dir, "features", "_config.json"))
    if config is not None:
        features = list(config["feature_config"].items()) + [
            ("tracks_per_shard", config["tracks_per_shard"]),
            ("genres", ", ".join(config["labels"])),
        ]
        section.tables.append(
            ("Feature configuration (features/_config.json)", pd.DataFrame(features, columns=["parameter", "value"]))
        )
    demo = _json(os.path.join(run_dir, "demo.json"))
    if demo is not None:
        stages = [(name, s["wall_s"]) for name, s in demo["stages"].items()]
        section.tables.append(
            ("Wall time per stage, seconds (demo.json)", pd.DataFrame(stages, columns=["stage", "wall_s"]))
        )
    return section


SECTIONS = (
    ("Extraction", extraction),
    ("Models", models),
    ("Tuning", tuning),
    ("Labelling", labelling),
    ("Recommendations", recommendations),
    ("Run facts", facts),
)


def collect(run_dir: str) -> list[Section]:
    """Every section, in pipeline order. A stage's unreadable file spoils its own section only:
    that section says which file and why, the others are rendered."""
    sections = []
    for title, build in SECTIONS:
        try:
            sections.append(build(run_dir))
        except Exception as e:  # noqa: BLE001 - one bad file must not sink the whole report
            text = str(e) if isinstance(e, MgcError) else f"{type(e).__name__}: {e}"
            sections.append(Section(title, [f"Could not be rendered: {text}"]))
    return sections


def _html_table(caption: str, df: pd.DataFrame) -> str:
    return (
        f"<h3>{html.escape(caption)}</h3>\n<div class='w'>"
        + df.to_html(
            index=False,
            border=0,
            classes="t",
            na_rep="",
            float_format=lambda v: f"{v:.4g}" if abs(v) < 1e-3 else f"{v:.4f}".rstrip("0").rstrip("."),
        )
        + "</div>"
    )


def _png(path: str) -> str:
    return base64.b64encode(open(path, "rb").read()).decode()


CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}\
h3{font-size:1em;margin:1.2em 0 .4em}
table.t{border-collapse:collapse;font-size:13px;margin-bottom:1em}\
table.t td,table.t th{padding:3px 9px;border-bottom:1px solid #eee;text-align:right}
table.t th{background:#f5f5f5}table.t td:first-child,table.t th:first-child{text-align:left}
figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}figure img{max-width:520px}\
figcaption{font-size:13px;color:#555}
nav a{margin-right:1em}.w{overflow-x:auto}"""


def render_html(sections: list[Section], title: str) -> str:
    nav = " ".join(f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(sections))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>",
    ]
    for i, s in enumerate(sections):
        parts.append(f'<h2 id="s{i}">{html.escape(s.title)}</h2>')
        parts += [f"<p>{html.escape(line)}</p>" for line in s.lines]
        parts += [_html_table(caption, df) for caption, df in s.tables]
        for caption, path in s.images:
            if os.path.isfile(path):
                parts.append(
                    f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{_png(path)}'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(sections: list[Section], title: str, image_dir: str) -> str:
    """Markdown with the same tables; images are copied into image_dir and linked relatively."""
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""] + [line + "\n" for line in s.lines]
        for caption, df in s.tables:
            lines += [f"### {caption}", "", df.to_markdown(index=False) if len(df) else "(none)", ""]
        for caption, path in s.images:
            if os.path.isfile(path):
                name = "-".join(caption.split(":")[0].split()) + "-" + os.path.basename(path)
                shutil.copyfile(path, os.path.join(image_dir, name))
                lines += [f"![{caption}]({name})", ""]
    return "\n".join(lines)


def write(run_dir: str, out: str | None = None) -> tuple[str, str]:
    """Render the report of run_dir into `out` (default run_dir/report); returns the HTML and Markdown paths."""
    if not os.path.isdir(run_dir):
        raise MgcError(f"{run_dir}: no such run directory")
    out = out or os.path.join(run_dir, "report")
    os.makedirs(out, exist_ok=True)
    sections = collect(run_dir)
    title = f"mgc report: {os.path.basename(os.path.abspath(run_dir))}"
    html_path, md_path = os.path.join(out, "report.html"), os.path.join(out, "report.md")
    storage.write_bytes(html_path, render_html(sections, title).encode())
    storage.write_bytes(md_path, render_markdown(sections, title, out).encode())
    return html_path, md_path
