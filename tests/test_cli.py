"""The command line as people meet it: help that explains every option, one-line errors unless
--debug (before or after the subcommand), and a demo that reuses finished stages."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

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
        if action.option_strings and action.default not in (None, False, "", argparse.SUPPRESS) and action.required is False:
            assert "default" in text, f"mgc {command} {action.option_strings} does not show its default: {text!r}"


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
