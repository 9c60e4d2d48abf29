"""Promises of the README that no other test exercised (issue 38), each end to end on the suite's
real Ray cluster (and, for the first-time user's path, a local Ray that mgc starts itself)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import BIN, SWEEP

from mgc import label, manifest, session, storage
from mgc.cli import main

MGC = str(BIN / "mgc")


def _write_clip(path: Path, genre: str, seed: int, seconds: float = 6.0, sr: int = 22050) -> None:
    import soundfile as sf

    from mgc.synth import render

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, render(genre, 500 + seed, seed, seconds, sr).mean(axis=1), sr, subtype="PCM_16")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Four 6 s WAV clips of four genres (two segments each), and a file that is not audio."""
    folder = tmp_path_factory.mktemp("promise_clips")
    for i, genre in enumerate(("Rock", "Electronic", "Folk", "Hip-Hop")):
        _write_clip(folder / f"clip{i}.wav", genre, i)
    (folder / "not_audio.wav").write_bytes(b"<html>404 Not Found</html>\n" * 40)
    return folder


def _summary(stdout: str) -> dict:
    """The JSON a command prints last on stdout."""
    return json.loads(stdout[stdout.index("{") :])


# --- 1. `mgc tune --search hyperopt` ---------------------------------------------------------------


def test_tune_search_hyperopt_has_hyperopt_propose_the_trials(ray_connected, features, tmp_path):
    """README, "Tune": `--search hyperopt` (`pip install hyperopt`) uses Ray's HyperOpt searcher.
    The sweep runs, and Ray Tune's saved searcher state is HyperOptSearch's: hyperopt's own
    record of the trials it proposed holds exactly the learning rates and dropouts that trials.csv
    says the trials ran with."""
    import cloudpickle

    argv = ["tune", "--features", str(features), "--storage-path", str(tmp_path), "--name", "hx", *SWEEP,
            "--search", "hyperopt", "--num-samples", "2", "--epochs", "1", "--grace-period", "1", "--max-concurrent", "2",
            "--cpus-per-worker", "0.5"]  # fmt: skip
    assert main(argv) == 0
    sweep_dir = tmp_path / "hx"
    trials = pd.read_csv(sweep_dir / "trials.csv")
    assert len(trials) == 2 and (trials["epochs_run"] == 1).all(), trials
    assert json.loads((sweep_dir / "sweep.json").read_text())["search"] == "hyperopt"

    states = list(sweep_dir.glob("searcher-state-*.pkl"))
    assert len(states) == 1, sorted(p.name for p in sweep_dir.iterdir())
    state = cloudpickle.loads(states[0].read_bytes())
    assert isinstance(state, dict) and "_hpopt_trials" in state, f"not HyperOptSearch's state: {type(state)}"
    proposed = state["_hpopt_trials"].trials
    assert len(proposed) == 2
    ran = sorted(zip(trials["lr"], trials["dropout"]))
    by_hyperopt = sorted((t["misc"]["vals"]["lr"][0], t["misc"]["vals"]["dropout"][0]) for t in proposed)
    assert np.allclose(ran, by_hyperopt), (ran, by_hyperopt)
    assert all(1e-5 <= lr <= 1e-2 and 0.1 <= d <= 0.7 for lr, d in ran)


# --- 2. Shards from before labels left them ----------------------------------------------------------


def _old_fingerprint(tracks: pd.DataFrame) -> str:
    """The manifest fingerprint mgc wrote before labels left the shards (ids, paths, splits, labels)."""
    h = hashlib.sha256()
    for col in ("track_id", "path", "split", "label"):
        h.update("\x1f".join(map(str, tracks[col].tolist())).encode())
        h.update(b"\x1e")
    return h.hexdigest()[:16]


def _old_layout(features: Path, old: Path) -> None:
    """`features` rewritten as an mgc before shard format 2 wrote it (commit eb8ece2^): shards
    with genre_top and label columns after track_id, segment, split, one row group per split and
    labelled-or-not; a _manifest.parquet of track_id, path, split, genre_top, label (no genre
    lists, no tree); a _config.json with the label map and no shard_format."""
    tracks = manifest.read(str(features / "_manifest.parquet")).tracks
    genres = sorted(g for g in tracks["genre_top"].dropna().unique())
    index = {g: i for i, g in enumerate(genres)}
    tracks = tracks.assign(label=[index.get(g, -1) if isinstance(g, str) else -1 for g in tracks["genre_top"]])
    tracks["label"] = tracks["label"].astype(np.int16)
    by_id = tracks.set_index("track_id")
    (old / "features").mkdir(parents=True)
    for shard in sorted((features / "features").glob("part-*.parquet")):
        t = pq.read_table(shard)
        ids = t["track_id"].to_numpy()
        genre, lab = by_id.loc[ids, "genre_top"].tolist(), by_id.loc[ids, "label"].to_numpy()
        t = t.add_column(3, "genre_top", pa.array(genre, pa.string())).add_column(4, "label", pa.array(lab, pa.int16()))
        key = [(s, bool(x < 0)) for s, x in zip(t["split"].to_pylist(), lab)]
        order = sorted(range(len(key)), key=key.__getitem__)
        t = t.take(order)
        groups = pd.Series([key[i] for i in order]).ne(pd.Series([key[i] for i in order]).shift()).cumsum()
        storage.write_parquet(t, str(old / "features" / shard.name), ["track_id", "segment", "split", "genre_top", "label"],
                              groups.groupby(groups).size().tolist())  # fmt: skip
    shutil.copytree(features / "rejects", old / "rejects")
    shutil.copy(features / "_summary.json", old / "_summary.json")
    legacy = tracks[["track_id", "path", "split", "genre_top", "label"]]
    pq.write_table(pa.Table.from_pandas(legacy, preserve_index=False), old / "_manifest.parquet")
    config = json.loads((features / "_config.json").read_text())
    config.pop("shard_format")
    config.update(labels=genres, manifest_fingerprint=_old_fingerprint(legacy))
    (old / "_config.json").write_text(json.dumps(config))


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_shards_that_carry_their_labels_still_train_and_refuse_more_tracks(
    ray_connected, features, train_corpus, tmp_path, capsys
):
    """README, "What it writes": shards written by an mgc before labels left them (with genre_top
    and label columns) still train as they are; extracting more tracks into such an output is
    refused with a message (write to a new --out), and nothing in it changes."""
    old = tmp_path / "old"
    _old_layout(features, old)
    assert {"genre_top", "label"} <= set(pq.read_schema(next((old / "features").glob("*.parquet"))).names)
    runs = tmp_path / "runs"
    assert (
        main(["train", "--features", str(old), "--model", "baseline", "--storage-path", str(runs), "--no-progress"])
        == 0
    )
    metrics = json.loads((runs / "baseline" / "metrics.json").read_text())
    assert metrics["test"]["track"]["accuracy"] >= 0.9, metrics["test"]["track"]
    model = json.loads((runs / "baseline" / "model" / "model.json").read_text())
    assert model["labels"] == json.loads((old / "_config.json").read_text())["labels"]

    before = _digest(old)
    capsys.readouterr()
    assert main(["extract", "--fma-root", str(train_corpus), "--out", str(old), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert (
        f"mgc: error: {old} was written by an older mgc, whose shards carry their labels: training still reads it, "
        "but to extract more tracks write to a new --out" in err
    ), err
    assert _digest(old) == before


# --- 3. A CSV manifest without track ids -----------------------------------------------------------


def test_a_csv_without_track_ids_extracts_and_relabels_by_path(ray_connected, train_corpus, tmp_path, capsys):
    """README: `mgc extract --manifest tracks.csv` takes columns path, label, optional split and
    track_id, relative paths resolving against the CSV's folder; the shards hold track_id, whose
    labels are the manifest's (_manifest.parquet). A relabelling CSV for `mgc train --manifest`
    without track_id has its paths matched to the extraction's: its rows in another order, one
    path the extraction never saw, the labels follow the files."""
    from mgc.train import TrainConfig, check

    truth = pd.read_csv(train_corpus / "fma_metadata" / "synth_truth.csv")
    truth = truth[truth["kind"] == "ok"]
    picked = pd.concat(
        truth[(truth["genre"] == g) & (truth["split"] == s)].head(n)
        for g in ("Rock", "Electronic", "Folk", "Hip-Hop")
        for s, n in (("training", 4), ("validation", 1), ("test", 1))
    )
    rows = []
    for r in picked.itertuples():
        rel = f"audio/{r.genre}/{r.track_id:06d}.mp3"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(train_corpus / "fma_large" / f"{r.track_id // 1000:03d}" / f"{r.track_id:06d}.mp3", tmp_path / rel)
        rows.append({"path": rel, "label": r.genre, "split": r.split})
    listed = pd.DataFrame(rows).sample(frac=1, random_state=0).reset_index(drop=True)
    listed.to_csv(tmp_path / "tracks.csv", index=False)
    out = tmp_path / "features"
    assert main(["extract", "--manifest", str(tmp_path / "tracks.csv"), "--out", str(out), "--no-progress"]) == 0

    known = manifest.read(str(out / "_manifest.parquet")).tracks.set_index("path")
    paths = [str(tmp_path / p) for p in listed["path"]]  # resolved against the CSV's folder
    assert sorted(known.index) == sorted(paths) and known["track_id"].is_unique
    shards = pq.read_table(out / "features", columns=["track_id", "split"]).to_pandas()
    assert set(shards["track_id"]) == set(known["track_id"])  # every track, by the manifest's id
    want = dict(zip(known.loc[paths, "track_id"], listed["split"]))
    assert (shards["split"] == shards["track_id"].map(want)).all()

    relabel = listed.assign(label=[f"g_{g.lower()}" for g in listed["label"]]).drop(columns="split")
    relabel = pd.concat([relabel.iloc[::-1], pd.DataFrame([{"path": "audio/elsewhere.mp3", "label": "g_rock"}])])
    relabel.to_csv(tmp_path / "relabel.csv", index=False)
    prep = check(TrainConfig(features=str(out), manifest=str(tmp_path / "relabel.csv")))
    ids = known.loc[paths, "track_id"].to_numpy()
    _, y = prep.target.lookup(ids)
    assert [prep.target.classes[c] for c in y] == [f"g_{g.lower()}" for g in listed["label"]]

    runs = tmp_path / "runs"
    capsys.readouterr()
    assert main(["train", "--features", str(out), "--model", "baseline", "--manifest", str(tmp_path / "relabel.csv"),
                 "--storage-path", str(runs), "--no-progress"]) == 0  # fmt: skip
    assert "labels 24 of the 24 tracks in the shards" in capsys.readouterr().err
    model = json.loads((runs / "baseline" / "model" / "model.json").read_text())
    assert model["labels"] == ["g_electronic", "g_folk", "g_hip-hop", "g_rock"]
    assert json.loads((runs / "baseline" / "metrics.json").read_text())["test"]["track"]["accuracy"] >= 0.75


# --- 4. --cache-data keeps only labelled segments ---------------------------------------------------


def test_cache_data_keeps_only_the_labelled_segments(ray_connected, features, tmp_path):
    """README, "Multi-label genres": the shards hold every track, labelled or not, and
    `--cache-data` keeps only the labelled ones. With half the training tracks unlabelled in the
    manifest, the split that training caches (mgc.train.dataset with cache, as the trainer builds
    it for --cache-data) is materialized in the object store with exactly the labelled segments."""
    from ray.data.dataset import MaterializedDataset

    from mgc.train import TrainConfig, check, dataset

    m = manifest.read(str(features / "_manifest.parquet"))
    train_ids = m.tracks.loc[m.tracks["split"] == "training", "track_id"].to_numpy()
    unlabelled = set(train_ids[::2].tolist())
    m.tracks.loc[m.tracks["track_id"].isin(unlabelled), "genre_top"] = None
    manifest.write(m, str(tmp_path / "half.parquet"))

    prep = check(TrainConfig(features=str(features), manifest=str(tmp_path / "half.parquet")))
    shards = pq.read_table(features / "features", columns=["track_id", "split"]).to_pandas()
    training = shards[shards["split"] == "training"]
    labelled = training[training["track_id"].isin(m.tracks.loc[m.tracks["genre_top"].notna(), "track_id"])]
    assert 0 < len(labelled) == prep.segments["training"] < len(training)

    cached = dataset(str(features), "training", prep.target, ["mfcc"], cache=True)
    try:
        assert isinstance(cached, MaterializedDataset)
        assert cached.count() == len(labelled)  # the cached blocks' own row count
        ids = np.concatenate([b["track_id"] for b in cached.iter_batches(batch_size=None, batch_format="numpy")])
        assert sorted(ids.tolist()) == sorted(labelled["track_id"].tolist())
    finally:
        del cached


# --- 5, 6. Labelling: a manifest's files are hashed every run; the tagger's summary.csv ----------


def test_a_manifests_files_are_hashed_again_every_run(ray_connected, clips, tmp_path, capsys):
    """README, "Label new uploads": a folder's file whose size and modification time are those of
    its latest row is skipped unread; a manifest's files are hashed again, and only a changed
    content gets a new row. A file rewritten with other audio of the same size, its modification
    time put back, gets a new row with its new hash; the others none."""
    src = tmp_path / "in"
    names = ["clip0.wav", "clip1.wav", "clip2.wav"]
    for name in names:
        (src / "day").mkdir(parents=True, exist_ok=True)
        shutil.copy(clips / name, src / "day" / name)
    pd.DataFrame({"path": [f"day/{n}" for n in names]}).to_csv(src / "uploads.csv", index=False)
    out = tmp_path / "tags"
    argv = ["label", "--model", "musicnn", "--input", str(src / "uploads.csv"), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert _summary(capsys.readouterr().out)["labelled"] == 3
    first = label.current(str(out)).set_index("path")

    changed = src / "day" / "clip0.wav"
    stat = changed.stat()
    _write_clip(changed, "Folk", 77)  # other audio, the same length and format: the same size
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (changed.stat().st_size, changed.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    new_hash = hashlib.sha256(changed.read_bytes()).hexdigest()
    assert new_hash != first.loc[str(changed), "content_hash"]

    assert main(argv) == 0
    again = _summary(capsys.readouterr().out)
    assert (again["labelled"], again["skipped"], again["errors"]) == (1, 2, 0), again
    rows = label.read_labels(str(out))
    assert len(rows) == 4 and rows["path"].value_counts()[str(changed)] == 2
    latest = label.current(str(out)).set_index("path")
    assert latest.loc[str(changed), "content_hash"] == new_hash
    assert latest.loc[str(changed), "labelled_at"] > first.loc[str(changed), "labelled_at"]
    assert not np.allclose(latest.loc[str(changed), "probabilities"], first.loc[str(changed), "probabilities"])
    for name in names[1:]:
        path = str(src / "day" / name)
        assert latest.loc[path, "labelled_at"] == first.loc[path, "labelled_at"]


def test_the_tagger_writes_a_summary_of_files_per_top_tag(ray_connected, clips, tmp_path, capsys):
    """README, "First output in a minute": `mgc label --model musicnn ... --out tags/ --top-k 5`
    labels every file with the 50 MSD tags, and tags/summary.csv counts files per top tag (with
    the uncertain share), and per error reason: it agrees with the labels' rows."""
    from mgc.musicnn import TAGS

    out = tmp_path / "tags"
    argv = ["label", "--model", "musicnn", "--input", str(clips), "--out", str(out), "--top-k", "5", "--no-progress"]
    assert main(argv) == 0
    done = _summary(capsys.readouterr().out)
    assert (done["labelled"], done["errors"]) == (4, 1), done
    rows = label.current(str(out))
    ok = rows[rows["status"] == "ok"]
    assert len(ok) == 4 and (rows["status"] == "error").sum() == 1
    assert all(len(g) == 5 and set(g) <= set(TAGS) for g in ok["top_genres"])

    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["kind", "name", "files", "uncertain_share"]
    assert set(summary["kind"]) == {"genre", "error"}  # the tagger's rows carry no tree's tags
    per_tag = summary[summary["kind"] == "genre"].set_index("name")
    top = ok.assign(tag=[g[0] for g in ok["top_genres"]]).groupby("tag")
    assert per_tag["files"].to_dict() == top.size().to_dict()
    assert per_tag["uncertain_share"].to_dict() == pytest.approx(top["uncertain"].mean().round(3).to_dict())
    errors = summary[summary["kind"] == "error"].set_index("name")["files"].to_dict()
    assert errors == rows[rows["status"] == "error"]["reason"].value_counts().to_dict() == {"decode_error": 1}


# --- 7. --verbose / MGC_LOG=debug, and errors naming Ray's log folder --------------------------------


def _run_mgc(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([MGC, *args], env=env, capture_output=True, text=True, timeout=timeout)


# Lines that only Ray's own loggers print: ray.init joining a cluster, Ray Data starting a dataset.
RAY_LINES = (r"Connecting to existing Ray cluster at address", r"Starting execution of Dataset")


def test_verbose_shows_rays_own_logs_and_errors_name_its_log_folder(ray_cluster, features, clips, tmp_path):
    """README, "What the commands print": Ray's own logs go to the Ray session's log folder, and
    `--verbose` (or `MGC_LOG=debug`) shows them again; an error prints as one line `mgc: error:
    ...` and, once Ray was joined, says where its logs are."""
    two = tmp_path / "two.csv"
    paths = [str(clips / "clip0.wav"), str(clips / "clip1.wav")]
    pd.DataFrame({"path": paths, "label": ["Rock", "Electronic"], "split": "training"}).to_csv(two, index=False)
    env = {k: v for k, v in ray_cluster["env"].items() if k != "MGC_LOG"}
    extract = ["extract", "--manifest", str(two), "--no-progress", "--out"]
    quiet = _run_mgc([*extract, str(tmp_path / "quiet")], env)
    loud = _run_mgc([*extract, str(tmp_path / "loud"), "--verbose"], env)
    debug = _run_mgc([*extract, str(tmp_path / "debug")], {**env, "MGC_LOG": "debug"})
    for proc in (quiet, loud, debug):
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert _summary(proc.stdout)["tracks_ok"] == 2
    for pattern in RAY_LINES:
        assert not re.search(pattern, quiet.stderr + quiet.stdout), quiet.stderr[-3000:]
        assert re.search(pattern, loud.stderr), loud.stderr[-3000:]
        assert re.search(pattern, debug.stderr), debug.stderr[-3000:]

    # An error once Ray was joined (the cluster's GPUs are known only then) names the session's logs.
    failed = _run_mgc(
        ["tune", "--features", str(features), "--storage-path", str(tmp_path), *SWEEP, "--gpus-per-trial", "1"], env
    )
    assert failed.returncode == 2
    line = failed.stderr.strip().splitlines()[-1]
    found = re.fullmatch(r"mgc: error: .*more than the cluster's 0 GPUs.* \(Ray's logs: (\S+)\)", line)
    assert found, failed.stderr[-3000:]
    logs = Path(found[1])
    assert logs.is_relative_to(ray_cluster["temp_dir"]) and (logs / "raylet.out").is_file(), logs
    # An error before Ray is joined has no log folder to name.
    early = _run_mgc(["train", "--features", str(tmp_path / "missing"), "--model", "cnn"], env)
    assert (
        early.returncode == 2
        and early.stderr.strip() == f"mgc: error: {tmp_path / 'missing'}: feature directory not found"
    )


# --- 8. mgc's own local Ray, with no RAY_ADDRESS ----------------------------------------------------


def _marked(marker: str) -> dict[int, str]:
    """The live processes (pid: name) whose environment carries `marker`: those the command started."""
    import psutil

    found = {}
    for p in psutil.process_iter(["name"]):
        try:
            if p.environ().get("MGC_TEST_MARK") == marker:
                found[p.pid] = p.info["name"]
        except psutil.Error:
            continue
    return found


def _run_watched(
    cmd: list[str], env: dict[str, str], raylet_env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, dict[int, str]]:
    """`cmd` run to its end (killed after 300 s), and the raylet and GCS servers it started
    meanwhile (pid: name): those carrying env's MGC_TEST_MARK that were not running before.
    `raylet_env` gets the RAY_ variables a raylet it started ran with."""
    import psutil

    rays = {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in ("raylet", "gcs_server")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[int, str] = {}
    try:
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            seen |= _marked(env["MGC_TEST_MARK"])
            ours = [pid for pid, name in seen.items() if name == "raylet" and pid not in rays]
            if raylet_env is not None and not raylet_env and ours:
                try:
                    raylet_env |= {k: v for k, v in psutil.Process(ours[0]).environ().items() if k.startswith("RAY_")}
                except psutil.Error:  # ended meanwhile: read it at the next poll
                    pass
            time.sleep(0.5)
        stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.time()))
    finally:
        if proc.poll() is None:  # a driver joined to a cluster must not outlive the test
            proc.kill()
    started = {pid: name for pid, name in seen.items() if pid not in rays and name in ("raylet", "gcs_server")}
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), started


def test_with_no_ray_address_mgc_starts_a_local_ray_and_stops_it(clips, tmp_path):
    """README, "Set-up": with no cluster named (no RAY_ADDRESS), as in `make demo` and a first
    run, mgc starts a local Ray itself. `mgc label --model musicnn` on two files succeeds, labels
    both, and the Ray it started (its raylet and GCS server, told apart from the suite's cluster
    and anyone else's by a variable in their environment) is gone once it exits. Its raylet ran
    with the worker limits the README names (start-up concurrency, idle workers kept), and Ray
    Train's preemption watcher off, as the driver had it."""
    import psutil

    src = tmp_path / "in"
    src.mkdir()
    for name in ("clip1.wav", "clip3.wav"):
        shutil.copy(clips / name, src / name)
    marker = uuid.uuid4().hex
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", session.PREEMPTION_WATCHER) and not k.startswith("RAY_AUTH")
    }
    env["MGC_TEST_MARK"] = marker
    out = tmp_path / "tags"
    cmd = [MGC, "label", "--model", "musicnn", "--input", str(src), "--out", str(out), "--no-progress"]
    raylet_env: dict[str, str] = {}
    try:
        done, started = _run_watched(cmd, env, raylet_env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert _summary(done.stdout)["labelled"] == 2
        expected = {
            "RAY_worker_maximum_startup_concurrency": "16",
            "RAY_num_workers_soft_limit": str(session.idle_workers_kept(os.cpu_count() or 1)),
            session.PREEMPTION_WATCHER: "0",
        }
        limits = {k: raylet_env.get(k) for k in expected}
        assert limits == expected, limits
        rows = label.current(str(out))
        assert (
            sorted(rows["path"]) == [str(src / "clip1.wav"), str(src / "clip3.wav")] and (rows["status"] == "ok").all()
        )
        assert {"raylet", "gcs_server"} <= set(started.values()), f"no local Ray of its own seen: {started}"
        deadline = time.time() + 10  # the processes it stopped may take a moment to be reaped
        while _marked(marker) and time.time() < deadline:
            time.sleep(0.5)
        left = _marked(marker)
        assert not left, f"left running after mgc exited: {left}"
    finally:
        for pid in _marked(marker):  # only what this command started
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass


def test_with_no_ray_address_mgc_says_when_it_joins_a_cluster_ray_start_recorded(ray_cluster, clips, tmp_path):
    """With no RAY_ADDRESS, Ray joins the cluster that the last `ray start` on the machine recorded
    (its temp folder's ray_current_cluster), where a user may have expected a Ray of mgc's own:
    mgc says so, naming the cluster, and starts no Ray of its own. The record is written where Ray
    reads it (RAY_TMPDIR), as `ray start` writes it, naming the suite's head."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(clips / "clip1.wav", src / "clip1.wav")
    (tmp_path / "rt" / "ray").mkdir(parents=True)
    (tmp_path / "rt" / "ray" / "ray_current_cluster").write_text(ray_cluster["address"])
    marker = uuid.uuid4().hex
    env = {k: v for k, v in ray_cluster["env"].items() if k != "RAY_ADDRESS"}
    env |= {"RAY_TMPDIR": str(tmp_path / "rt"), "MGC_TEST_MARK": marker}
    cmd = [MGC, "label", "--model", "musicnn", "--input", str(src), "--out", str(tmp_path / "tags"), "--no-progress"]
    done, started = _run_watched(cmd, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _summary(done.stdout)["labelled"] == 1
    port = ray_cluster["address"].rsplit(":", 1)[1]  # Ray names the host by its IP
    assert re.search(rf"joined the Ray cluster already running on this machine at \S+:{port} ", done.stderr), (
        done.stderr
    )
    assert not started, started
