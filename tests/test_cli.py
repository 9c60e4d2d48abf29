"""The command line as people meet it: help that explains every option, one-line errors unless
--debug (before or after the subcommand), and a demo that reuses finished stages."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mgc import demo
from mgc.cli import build_parser, main


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", sorted(_subparsers(build_parser())))
def test_every_option_is_explained_with_its_default(command):
    sub = _subparsers(build_parser())[command]
    for action in sub._actions:
        if action.dest in ("help",) or not action.option_strings and action.dest == "run_dir":
            continue
        text = (action.help or "").strip()
        # An explanation, not only "(default: x)".
        assert len(text.split("(")[0].strip()) >= 10, f"mgc {command} {action.option_strings}: {text!r}"
        if (
            action.option_strings
            and action.default not in (None, False, "", argparse.SUPPRESS)
            and action.required is False
        ):
            assert "default" in text, f"mgc {command} {action.option_strings} does not show its default: {text!r}"


@pytest.mark.parametrize("command", sorted(_subparsers(build_parser())))
def test_every_numeric_option_is_range_checked(command):
    sub = _subparsers(build_parser())[command]
    for action in sub._actions:
        numbers = action.default if isinstance(action.default, tuple) else (action.default,)
        if numbers == () and action.type is not None:  # an empty list: what its items parse as
            try:
                numbers = action.type("1")
            except argparse.ArgumentTypeError:
                numbers = ("a registry's name",)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers)
        if action.option_strings and numeric and action.type is not None:
            assert getattr(action.type, "limits", None) is not None, (
                f"mgc {command} {action.option_strings} is not range-checked"
            )


@pytest.mark.parametrize(
    "argv,words",
    [
        (["train", "--features", "f", "--epochs", "0"], "argument --epochs: 0 is out of range: must be at least 1"),
        (
            ["train", "--features", "f", "--dropout", "0.2,1.0"],
            "argument --dropout: 1.0 is out of range: must be at least 0 and below 1",
        ),
        (
            ["tune", "--features", "f", "--reduction-factor", "1"],
            "argument --reduction-factor: 1 is out of range: must be at least 2",
        ),
        (
            ["label", "--model", "m", "--input", "i", "--out", "o", "--uncertain-below", "1.5"],
            "must be at least 0 and at most 1",
        ),
        (["similar", "--catalogue", "c", "--track-id", "1", "-k", "0"], "argument -k: 0 is out of range"),
        (["synth", "--out", "o", "--tracks", "many"], "argument --tracks: 'many' is not an integer"),
        (
            ["extract", "--folder", "f", "--out", "o", "--n-fft", "0"],
            "argument --n-fft: 0 is out of range: must be at least 16",
        ),
    ],
)
def test_out_of_range_options_are_one_line_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and words in err and err.count("\n") == 1, err


def test_errors_are_one_line_unless_debug(tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    assert main(["label", "--model", missing, "--input", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgc: error: ") and missing in err and err.count("\n") == 1
    proc = subprocess.run([sys.executable, "-m", "mgc.cli", "label", "--model", missing, "--input", str(tmp_path), "--out", str(tmp_path / "o"), "--debug"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "MgcError" in proc.stderr


def test_the_demo_reuses_finished_stages_and_refuses_other_settings(tmp_path, capsys):
    work = tmp_path / "demo"
    work.mkdir()
    cfg = demo.DemoConfig(workdir=str(work), progress=False)
    stages = {name: {"wall_s": 1.0, "outcome": "ok"} for name, _, _ in demo.STAGES}
    (work / "demo.json").write_text(json.dumps({"config": cfg.shape(), "stages": stages}))
    assert main(["demo", "--workdir", str(work), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("done in an earlier run") == len(demo.STAGES) and (work / "report" / "report.html").is_file()

    assert main(["demo", "--workdir", str(work), "--tracks", "100"]) == 2
    assert "made with other settings (tracks): add --fresh" in capsys.readouterr().err

    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.txt").write_text("keep me")
    assert main(["demo", "--workdir", str(other), "--fresh"]) == 2
    assert "not a demo folder" in capsys.readouterr().err and (other / "thesis.txt").exists()


@pytest.mark.slow
def test_the_demo_runs_end_to_end_with_our_progress_not_rays_logs(ray_cluster, tmp_path):
    """`mgc demo` at a tiny size, on the test cluster, as a user runs it (progress bars on): every
    stage, a report with every section, and no Ray INFO or raylet lines in what it prints."""
    from conftest import BIN

    work = tmp_path / "demo"
    cmd = [str(BIN / "mgc"), "demo", "--workdir", str(work), "--tracks", "48", "--seconds", "9", "--epochs", "2", "--trials", "2",
           "--sweep-epochs", "2", "--uploads", "8"]  # fmt: skip
    proc = subprocess.run(cmd, env=ray_cluster["env"], capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert [int(k) for k in re.findall(r"^\[(\d)/7\]", proc.stdout, re.M)] == list(range(1, 8)), proc.stdout
    noise = [
        line
        for line in out.splitlines()
        if re.search(r"\bINFO\b|\(raylet\)|Trial status|Execution plan|RuntimeWarning", line)
    ]
    assert not noise, "\n".join(noise[:10])
    assert re.search(r"extract: 100%.*48/48", proc.stderr) and re.search(r"train cnn: .*2/2", proc.stderr)  # our bars
    md = (work / "report" / "report.md").read_text()
    for title in ("Extraction", "Models", "Tuning", "Labelling", "Recommendations", "Run facts"):
        assert f"## {title}\n" in md
    assert "Not run" not in md and "Could not be rendered" not in md
    state = json.loads((work / "demo.json").read_text())
    assert set(state["stages"]) == {name for name, _, _ in demo.STAGES}


def test_ray_datas_false_no_free_cpu_warning_is_dropped_and_its_other_warnings_shown(ray_cluster):
    """Ray Data says a dataset "will hang" whenever it starts while no CPU is free that instant,
    which the demo printed as one training's worker gave its CPU back to the next: a joined
    session (not verbose) drops that line, and only that line. The line is Ray's own, read from the
    installed ray.data.dataset, so that a Ray whose wording differs fails here."""
    import ast

    import ray.data.dataset

    from mgc import session

    tree = ast.parse(Path(ray.data.dataset.__file__).read_text())
    said = [
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "warning" and node.args
        and isinstance(node.args[0], ast.Constant) and "available CPUs" in str(node.args[0].value)
    ]  # fmt: skip
    assert len(said) == 1 and said[0].startswith(session.NO_FREE_CPU), said
    script = f"""
import logging
from mgc import session
session.connect()
logging.getLogger("ray.data.dataset").warning({said[0]!r})
logging.getLogger("ray.data.dataset").warning("another warning of Ray Data's")
"""
    env = {**ray_cluster["env"], "RAY_ADDRESS": ray_cluster["address"]}
    env.pop("MGC_LOG", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "another warning of Ray Data's" in proc.stderr and "will hang" not in proc.stderr, proc.stderr[-2000:]
