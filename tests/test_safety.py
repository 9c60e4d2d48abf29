"""Bad input is refused early and named: symbolic links leading out of an input are never read,
an artifact whose parts disagree or whose files are corrupt stops a job before Ray starts, every
error names its file, and the report renders what it can."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from mgc import artifact, label, manifest, report, storage
from mgc.errors import MgcError
from mgc.features import FeatureConfig
from mgc.label import LabelConfig
from mgc.models import ModelConfig, build
from mgc.synth import GENRES, render


def _wav(path, seconds=4.0, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, render(GENRES[seed % len(GENRES)], seed, seed, seconds, 22050), 22050)
    return path


@pytest.fixture
def linked(tmp_path):
    """An input folder holding two files, links leading out of it (to a file, to a folder), a link
    to a file inside it (in a folder listings leave out, as its name starts with "_") and a link
    to itself; beside it, the folder the outward links reach."""
    outside = tmp_path / "private"
    secret = _wav(outside / "secret.wav", seed=1)
    _wav(outside / "more" / "other.wav", seed=2)
    inbox = tmp_path / "inbox"
    _wav(inbox / "rock" / "a.wav", seed=3)
    _wav(inbox / "pop" / "b.wav", seed=4)
    (inbox / "rock" / "out_file.wav").symlink_to(secret)
    (inbox / "pop" / "out_dir").symlink_to(outside / "more")
    (inbox / "pop" / "in_link.wav").symlink_to(_wav(inbox / "_store" / "c.wav", seed=5))
    (inbox / "rock" / "loop").symlink_to(inbox)
    return inbox, secret


def test_links_leading_out_of_a_folder_are_never_listed(linked):
    inbox, _ = linked
    listed = label.list_inputs(str(inbox))
    ok = sorted(os.path.relpath(r["path"], inbox) for r in listed.rows if r["error"] is None)
    refused = {os.path.relpath(r["path"], inbox): r["error"] for r in listed.rows if r["error"]}
    assert ok == ["pop/b.wav", "rock/a.wav"]
    assert set(refused) == {"rock/out_file.wav", "pop/out_dir"} and all(
        "outside the input folder" in e for e in refused.values()
    )
    assert listed.links_skipped == 2  # the link inside, and the loop

    followed = label.list_inputs(str(inbox), follow_links=True)
    ok = sorted(os.path.relpath(r["path"], inbox) for r in followed.rows if r["error"] is None)
    assert ok == [
        "pop/b.wav",
        "pop/in_link.wav",
        "rock/a.wav",
    ]  # the loop is walked once, the outward links still refused
    assert sum(1 for r in followed.rows if r["error"]) == 2
    (inbox / "pop" / "again.wav").symlink_to(inbox / "rock" / "a.wav")  # a second name for a listed file: listed once
    assert [r["path"] for r in label.list_inputs(str(inbox), follow_links=True).rows if r["error"] is None] == [
        str(inbox / p) for p in ok
    ]
    (inbox / "pop" / "again.wav").unlink()

    m = manifest.from_folder(str(inbox))  # mgc extract --folder: the same rule
    assert sorted(os.path.relpath(p, inbox) for p in m.tracks["path"]) == ["pop/b.wav", "rock/a.wav"]
    assert len(m.source["links_outside"]) == 2 and m.source["links_skipped"] == 2


def test_a_manifest_entry_that_is_a_link_leading_out_is_an_error_row(linked):
    inbox, _ = linked
    csv = inbox / "batch.csv"
    pd.DataFrame({"path": ["rock/a.wav", "rock/out_file.wav", "pop/in_link.wav"]}).to_csv(csv, index=False)
    listed = label.list_inputs(str(csv))
    assert [os.path.relpath(r["path"], inbox) for r in listed.rows] == ["rock/a.wav", "rock/out_file.wav"]
    assert listed.rows[0]["error"] is None and "outside the manifest's folder" in listed.rows[1]["error"]
    assert listed.links_skipped == 1
    assert len(label.list_inputs(str(csv), follow_links=True).rows) == 3


def tiny_artifact(path, **changes) -> str:
    """An untrained small cnn saved as an artifact (what labelling reads), with `changes` to model.json."""
    fcfg = FeatureConfig()
    net = build(ModelConfig(name="cnn", n_classes=8, channels=(4, 8), dense=(16,)))
    artifact.save(str(path), net, fcfg, list(GENRES))
    if changes:
        meta = json.loads((path / "model.json").read_text())
        for key, value in changes.items():
            if isinstance(value, dict):
                meta[key].update(value)
            else:
                meta[key] = value
        (path / "model.json").write_text(json.dumps(meta))
    return str(path)


def test_labelling_reads_nothing_through_a_link_leading_out(ray_connected, linked, tmp_path):
    """Nothing outside the folder is opened, by the driver or by Ray's workers: one link leads to a
    FIFO outside, whose opening for reading a writer waiting on it would see."""
    inbox, secret = linked
    fifo = secret.parent / "pipe.wav"
    os.mkfifo(fifo)
    (inbox / "rock" / "out_fifo.wav").symlink_to(fifo)
    opened = threading.Event()

    def writer() -> None:
        os.close(os.open(fifo, os.O_WRONLY))  # blocks until something opens the FIFO to read it
        opened.set()

    waiting = threading.Thread(target=writer, daemon=True)
    waiting.start()
    out = tmp_path / "labels"
    summary = label.run(
        LabelConfig(model=tiny_artifact(tmp_path / "model"), input=str(inbox), out=str(out), progress=False)
    )
    assert not opened.is_set(), "labelling opened the FIFO outside the folder"
    assert summary["labelled"] == 2 and summary["errors"] == 3 and summary["links_skipped"] == 2
    rows = label.read_labels(str(out)).set_index("path")
    refused = rows[rows["reason"] == "outside_root"]
    assert sorted(os.path.relpath(p, inbox) for p in refused.index) == [
        "pop/out_dir",
        "rock/out_fifo.wav",
        "rock/out_file.wav",
    ]
    assert refused["content_hash"].isna().all()
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    assert digest not in set(rows["content_hash"].dropna())  # the file outside was never hashed
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the test's own opening releases the writer
    waiting.join(10)
    os.close(reader)
    assert opened.is_set()  # the writer does see an opening


def test_an_artifact_whose_parts_disagree_stops_the_job_before_ray_starts(tmp_path):
    inbox = tmp_path / "in"
    _wav(inbox / "a.wav")
    cases = {
        "labels": (
            tiny_artifact(tmp_path / "labels", labels=list(GENRES[:7])),
            "the label map has 7 genres, the network 8 classes",
        ),
        "features": (
            tiny_artifact(tmp_path / "features", feature_config={"n_mels": 64}),
            "the feature config gives logmel of shape [64, 130]",
        ),
        "weights": (
            tiny_artifact(tmp_path / "weights", model_config={"channels": [4, 16]}),
            "weights.pt: the weights do not fit the network",
        ),
    }
    script = f"""
import json, sys
from mgc.cli import main
codes = {{}}
for name, path in {json.dumps({k: v[0] for k, v in cases.items()})}.items():
    codes[name] = main(["label", "--model", path, "--input", {str(inbox)!r}, "--out", {str(tmp_path / "out")!r}])
codes["typo"] = main(["train", "--features", {str(tmp_path / "featurs")!r}])
import ray
print(json.dumps({{"codes": codes, "ray": ray.is_initialized()}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # were Ray started, it would be a new local one
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"codes": {"labels": 2, "features": 2, "weights": 2, "typo": 2}, "ray": False}, proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 4 and all(line.startswith("mgc: error: ") for line in errors), proc.stderr
    for line, (path, words) in zip(errors, cases.values()):
        assert path in line and words in line, line
    assert "featurs: feature directory not found" in errors[3]
    assert not (tmp_path / "out").exists()


class _Exploit:
    """A pickled object that would leave a file behind if it were ever unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize(
    "name,spoil,words",
    [
        ("empty weights", lambda p: (p / "weights.pt").write_bytes(b""), "weights.pt: empty"),
        (
            "truncated weights",
            lambda p: (p / "weights.pt").write_bytes((p / "weights.pt").read_bytes()[:2000]),
            "weights.pt: truncated or corrupt",
        ),
        (
            "pickled object",
            lambda p: torch.save({"w": _Exploit(str(p / "pwned"))}, p / "weights.pt"),
            "weights.pt: not a plain state dict (it holds pickled objects): refused",
        ),
        (
            "corrupt model.json",
            lambda p: (p / "model.json").write_text('{"format_version": 2, "labels": ['),
            "model.json: not valid JSON",
        ),
        (
            "model.json lacks a part",
            lambda p: (p / "model.json").write_text(json.dumps({"format_version": artifact.FORMAT_VERSION})),
            "model.json: lacks 'model_config'",
        ),
    ],
)
def test_corrupt_or_unsafe_artifact_files_are_named(tmp_path, name, spoil, words):
    path = tmp_path / "model"
    tiny_artifact(path)
    spoil(path)
    with pytest.raises(MgcError) as e:
        artifact.load(str(path))
    assert str(path) in str(e.value) and words in str(e.value), str(e.value)
    assert "weights_only=False" not in str(e.value) and not (path / "pwned").exists()


def test_a_report_with_one_unreadable_stage_renders_the_others(tmp_path):
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "_summary.json").write_text('{"tracks_ok": 3,')
    (tmp_path / "catalogue").mkdir()
    pd.DataFrame(
        {"genre": ["Rock", "all"], "tracks": [4, 4], "precision@5": [0.5, 0.5], "precision@10": [0.4, 0.4]}
    ).to_csv(tmp_path / "catalogue" / "precision_at_k.csv", index=False)
    _, md = report.write(str(tmp_path))
    text = open(md).read()
    extraction = text.split("## Extraction")[1].split("## ")[0]
    assert (
        "Could not be rendered" in extraction
        and str(tmp_path / "features" / "_summary.json") in extraction
        and "not valid JSON" in extraction
    )
    assert "### Genre precision of the 5 and 10 nearest neighbours" in text and "| Rock" in text
    assert text.count("Not run") == 3  # models, tuning, labelling


def test_decode_errors_say_what_the_file_is(tmp_path):
    from mgc.audio import load
    from mgc.errors import Reject

    text = tmp_path / "notes.mp3"
    text.write_text("a shopping list, not a song\n" * 40)
    flac = tmp_path / "cut.flac"
    sf.write(flac, np.random.default_rng(0).uniform(-0.3, 0.3, (22050 * 10, 2)), 22050, format="FLAC")
    flac.write_bytes(flac.read_bytes()[: flac.stat().st_size // 3])
    for path, words in ((text, "not a recognised audio format"), (flac, "truncated or corrupt after")):
        with pytest.raises(Reject) as e:
            load(str(path), FeatureConfig())
        assert e.value.reason == "decode_error" and e.value.detail.startswith(f"{path}: {words}"), e.value.detail
    seconds = float(e.value.detail.split("after ")[1].split(" s")[0])
    assert 0 < seconds < 10  # where decoding stopped, within the 10 s clip


def test_storage_read_json_names_the_file(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{")
    with pytest.raises(MgcError, match=f"{bad}: not valid JSON"):
        storage.read_json(str(bad))
