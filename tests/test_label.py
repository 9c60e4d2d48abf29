"""Labelling new uploads and recommending similar tracks, with a model trained in the tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from mgc import label, recommend
from mgc.cli import main
from mgc.errors import MgcError
from mgc.label import LabelConfig


def _by_file(rows: pd.DataFrame, folder) -> pd.DataFrame:
    return rows.assign(file=[os.path.relpath(p, folder) for p in rows["path"]]).set_index("file")


def test_every_upload_is_labelled_once_and_well(labelled, inbox):
    folder, truth = inbox
    raw = label.read_labels(str(labelled))
    assert raw["path"].is_unique and len(raw) == len(truth)
    rows = _by_file(raw, folder).loc[truth["file"]]
    broken = truth[truth["status"] == "error"].set_index("file")
    assert (rows.loc[broken.index, "status"] == "error").all()
    assert rows.loc[broken.index, "reason"].tolist() == broken["reason"].tolist()
    assert rows.loc[broken.index, "detail"].str.contains("broken/").all()  # the message names the file
    good = truth[truth["status"] == "ok"].set_index("file")
    ok = rows.loc[good.index]
    assert (ok["status"] == "ok").all()
    assert np.allclose([np.sum(p) for p in ok["probabilities"]], 1.0, atol=1e-4)
    assert all(len(g) == 3 and np.all(np.diff(p) <= 0) for g, p in zip(ok["top_genres"], ok["top_probs"]))
    assert all(len(e) == 32 and np.isfinite(e).all() for e in ok["embedding"])  # the penultimate layer: dense 64-32
    assert ((ok["agreement"] > 0) & (ok["agreement"] <= 1)).all()
    accuracy = float((ok["top_genres"].map(lambda g: g[0]) == good["genre"]).mean())
    assert accuracy >= 0.9, accuracy
    # The long file: 2 minutes long, its first 60 s analysed (20 segments of 3 s).
    long = ok.loc["long/long_mix.flac"]
    assert (
        long["n_segments"] == 20
        and long["analysed_s"] == pytest.approx(60.0)
        and long["duration_s"] == pytest.approx(120.0)
    )
    summary = pd.read_csv(labelled / "summary.csv")
    assert summary.loc[summary["kind"] == "genre", "files"].sum() == len(good)
    assert dict(summary.loc[summary["kind"] == "error", ["name", "files"]].values) == {
        "decode_error": 2,
        "too_short": 1,
    }


def test_a_rerun_labels_nothing_new(ray_connected, labelled, model, inbox):
    folder, truth = inbox
    before = label.read_labels(str(labelled))
    summary = label.run(LabelConfig(model=model, input=str(folder), out=str(labelled), max_seconds=60, progress=False))
    assert summary["labelled"] == 0 and summary["errors"] == 0 and summary["skipped"] == len(truth)
    assert len(label.read_labels(str(labelled))) == len(before)


def test_a_killed_run_rerun_ends_without_duplicates(ray_cluster, model, inbox, tmp_path):
    folder, truth = inbox
    out = tmp_path / "labels"
    cmd = [sys.executable, str(REPO / "jobs" / "label.py"), "--model", model, "--input", str(folder), "--out", str(out),
           "--max-seconds", "60", "--files-per-batch", "1", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=ray_cluster["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(list((out / "labels").glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list((out / "labels").glob("part-*.parquet")))
    assert 3 <= written < len(truth), f"not killed midway: {written} parts"
    rerun = subprocess.run(cmd, env=ray_cluster["env"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads(rerun.stdout[rerun.stdout.index("{") :])["skipped"] >= written
    raw = label.read_labels(str(out))
    assert raw["path"].is_unique and len(raw) == len(truth)


def test_bad_inputs_are_error_rows_or_clear_messages(ray_connected, model, inbox, tmp_path):
    folder, _ = inbox
    manifest = folder / "batch.csv"
    pd.DataFrame({"path": ["day0/upload_000.mp3", "../elsewhere/secret.wav", "day1/gone.wav"]}).to_csv(
        manifest, index=False
    )
    out = tmp_path / "labels"
    summary = label.run(LabelConfig(model=model, input=str(manifest), out=str(out), progress=False))
    assert (summary["labelled"], summary["errors"]) == (1, 2)
    rows = label.read_labels(str(out)).set_index("path")
    assert rows.loc[str(folder / "day0" / "upload_000.mp3"), "status"] == "ok"
    outside = rows[rows["reason"] == "outside_root"]
    assert len(outside) == 1 and "outside the manifest's folder" in outside["detail"].iloc[0]
    assert rows.loc[str(folder / "day1" / "gone.wav"), "reason"] == "missing_file"
    manifest.unlink()

    with pytest.raises(MgcError, match="not a model artifact"):
        label.run(LabelConfig(model=str(tmp_path / "nothing"), input=str(folder), out=str(out)))
    old = tmp_path / "old_model"
    shutil.copytree(model, old)
    meta = json.loads((old / "model.json").read_text())
    (old / "model.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(MgcError, match="artifact format 99 is not 2"):
        label.run(LabelConfig(model=str(old), input=str(folder), out=str(out)))
    with pytest.raises(MgcError, match="no audio files"):
        label.run(LabelConfig(model=model, input=str(tmp_path / "labels" / "labels"), out=str(tmp_path / "o2")))


@pytest.mark.parametrize("product", [recommend.PRODUCT, 300])  # one slice of queries, or slices of 3
def test_nearest_neighbours_are_exact_in_blocks(monkeypatch, product):
    monkeypatch.setattr(recommend, "PRODUCT", product)
    rng = np.random.default_rng(0)
    cat, q = rng.normal(size=(1000, 16)), rng.normal(size=(7, 16))
    exclude = np.array([3, -1, 500, 999, 0, 10, 20])
    idx, score = recommend.nearest(q, cat, 5, exclude=exclude, block=97)
    sims = recommend.normalise(q) @ recommend.normalise(cat).T
    sims[np.arange(7)[exclude >= 0], exclude[exclude >= 0]] = -np.inf
    assert (idx == np.argsort(-sims, axis=1)[:, :5]).all()
    assert np.allclose(score, np.sort(sims, axis=1)[:, ::-1][:, :5], atol=1e-5)


def test_recommendations_find_tracks_of_the_same_genre(catalogue, features, model, capsys, inbox):
    import pyarrow.compute as pc

    from mgc import storage
    from mgc.inference import Predictor

    # One row per extracted track; its embedding is the mean of its segments' (summed by the
    # driver as batches arrive, a track possibly cut by a batch boundary).
    table = storage.read_parquet(str(features / "features"))
    genre_top = pd.read_parquet(features / "_manifest.parquet").set_index("track_id")["genre_top"]
    shards = (
        table.select(["track_id"]).to_pandas().assign(genre_top=lambda t: genre_top.reindex(t["track_id"]).to_numpy())
    )
    rows = recommend.load_catalogue(str(catalogue / "catalogue.parquet")).set_index("id")
    assert sorted(rows.index) == sorted(str(t) for t in shards["track_id"].unique())  # ids as strings
    predict = Predictor.load(model)
    for tid in shards.dropna()["track_id"].unique()[:3]:
        mine = table.filter(pc.equal(table.column("track_id"), tid))
        _, h = predict({n: mine.column(n).combine_chunks().to_numpy_ndarray() for n in predict.inputs})
        np.testing.assert_allclose(rows.loc[str(tid), "embedding"], h.mean(0), rtol=1e-4, atol=1e-5)
        assert rows.loc[str(tid), "genre"] == shards.loc[shards["track_id"] == tid, "genre_top"].iloc[0]

    table = pd.read_csv(catalogue / "precision_at_k.csv").set_index("genre")
    assert table.loc["all", "precision@5"] >= 0.8, table
    assert len(table) == 9 and table.loc["all", "tracks"] == table.drop("all")["tracks"].sum()
    path = str(catalogue / "catalogue.parquet")
    rows = recommend.load_catalogue(path)
    # Not trivially high: with the genres shuffled over the same embeddings it collapses.
    shuffled = rows.assign(genre=np.random.default_rng(0).permutation(rows["genre"].to_numpy()))
    assert recommend.evaluate(shuffled).set_index("genre").loc["all", "precision@5"] < 0.5
    some = str(rows["id"].iloc[0])
    capsys.readouterr()
    assert main(["similar", "--catalogue", path, "--track-id", some, "-k", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and all(line.split()[0] != some for line in lines[1:])
    folder, truth = inbox
    first = truth[truth["status"] == "ok"].iloc[0]
    assert (
        main(["similar", "--catalogue", path, "--file", str(folder / first["file"]), "--model", model, "-k", "10"]) == 0
    )
    found = capsys.readouterr().out.strip().splitlines()[1:]
    assert len(found) == 10 and sum(first["genre"] in r for r in found) >= 7


def test_relabelling_follows_each_files_content_and_the_model(ray_connected, compared, model, inbox, tmp_path, capsys):
    """A changed file gets a new row and `current()` returns it while the others are skipped; a
    second model labels every file again under its own id; `uncertain` follows --uncertain-below;
    `mgc similar` searches a labelling output."""
    import soundfile as sf

    from mgc.synth import render

    folder, truth = inbox
    good = truth[truth["status"] == "ok"].head(4)
    src = tmp_path / "in"
    for f in good["file"]:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / f, src / f)
    out = tmp_path / "labels"

    def run(model_path, threshold=0.5):
        return label.run(
            LabelConfig(model=model_path, input=str(src), out=str(out), uncertain_below=threshold, progress=False)
        )

    assert run(model, threshold=0.999)["labelled"] == 4
    first = label.current(str(out))
    assert (first["uncertain"] == first["top_probs"].map(lambda p: p[0] < 0.999)).all()

    changed = src / good["file"].iloc[0]
    x, sr = sf.read(changed)
    sf.write(changed, render("Rock", 4242, 1, len(x) / sr, sr), sr, format=sf.info(changed).format)
    again = run(model)
    assert (again["labelled"], again["skipped"]) == (1, 3)
    raw, latest = label.read_labels(str(out)), label.current(str(out), label.model_id(model))
    assert len(raw) == 5 and len(latest) == 4
    row = latest.set_index("path").loc[str(changed)]
    old = first.set_index("path").loc[str(changed)]
    assert row["content_hash"] != old["content_hash"] and row["labelled_at"] > old["labelled_at"]
    assert row["size_bytes"] == changed.stat().st_size and row["modified_ns"] == changed.stat().st_mtime_ns

    # The quick check: other bytes with the same size and modification time are not read again
    # (as rsync); a new modification time makes a file hashed again: the same content gives no new
    # row, other content of the same size does (a size-only check would miss it).
    kept = src / good["file"].iloc[1]
    stat, data = kept.stat(), bytearray(kept.read_bytes())
    data[-1] ^= 0xFF
    kept.write_bytes(bytes(data))
    os.utime(kept, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    quick = run(model)
    assert (quick["labelled"], quick["skipped"]) == (0, 4)
    os.utime(src / good["file"].iloc[2])
    os.utime(kept)
    assert kept.stat().st_size == stat.st_size
    hashed = run(model)
    assert (hashed["labelled"], hashed["skipped"]) == (1, 3)
    assert len(label.read_labels(str(out))) == 6
    assert (
        label.current(str(out), label.model_id(model)).set_index("path").loc[str(kept), "modified_ns"]
        == kept.stat().st_mtime_ns
    )

    other = str(compared / "cnn_lstm" / "model")
    third = run(other)
    assert (third["labelled"], third["skipped"]) == (4, 0)
    assert set(label.current(str(out), label.model_id(other))["path"]) == {str(src / f) for f in good["file"]}
    assert len(label.read_labels(str(out))) == 10

    query = str(src / good["file"].iloc[1])
    capsys.readouterr()
    assert main(["similar", "--catalogue", str(out), "--track-id", query, "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    assert len(lines) == 3 and all(line.split()[0].startswith(str(src)) and line.split()[0] != query for line in lines)


@pytest.mark.parametrize("name", ["cnn1d", "mm_crnn"])
def test_labelling_gives_the_trained_models_probabilities(
    ray_connected, compared_all, all_inputs, train_corpus, tmp_path, name
):
    """The waveform and multimodal artifacts label the test split's audio files, decoded and
    featurised again from the files, with the probabilities the model gave them at training end
    (test_predictions.parquet, from the shards), calibrated by the artifact's temperature."""
    import pyarrow.parquet as pq

    run = compared_all / name
    saved = pq.read_table(run / "test_predictions.parquet")
    lp = (
        pd.DataFrame(saved["logprobs"].combine_chunks().to_numpy_ndarray()).groupby(saved["track_id"].to_numpy()).mean()
    )
    calibrated = (
        lp.to_numpy() / json.loads((run / "model" / "model.json").read_text())["temperature"]
    )  # fitted on validation
    expected = np.exp(calibrated - np.logaddexp.reduce(calibrated, axis=1, keepdims=True))
    tracks = pq.read_table(all_inputs / "_manifest.parquet").to_pandas().set_index("track_id").loc[lp.index]
    batch = train_corpus / f"test_split_{name}.csv"  # beside the audio: manifest paths stay inside its folder
    pd.DataFrame({"path": [os.path.relpath(p, train_corpus) for p in tracks["path"]]}).to_csv(batch, index=False)
    summary = label.run(
        LabelConfig(model=str(run / "model"), input=str(batch), out=str(tmp_path / "labels"), progress=False)
    )
    assert (summary["labelled"], summary["errors"]) == (len(tracks), 0)
    rows = label.read_labels(str(tmp_path / "labels")).set_index("path").loc[tracks["path"]]
    got = np.stack(rows["probabilities"].to_numpy())
    assert np.allclose(got, expected, atol=1e-4), np.abs(got - expected).max()
    assert json.loads((run / "model" / "model.json").read_text())["model_config"]["inputs"] == (
        ["waveform"] if name == "cnn1d" else ["waveform", "logmel"]
    )
