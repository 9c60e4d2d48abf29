"""Every stage against S3: an S3-compatible server on 127.0.0.1 (moto), reached through the standard
AWS variables (AWS_ENDPOINT_URL, keys, region) by the driver, the jobs and the cluster's workers.

The FMA corpus and the uploads live in the bucket; features, a sweep's training runs and its best
model, labels and the catalogue are written back to it."""

import io
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from conftest import _free_port, _start_moto, submit_job
from helpers import assert_complete_and_unique

from mgc import fma, storage
from mgc.errors import MgcError
from mgc.extract import ExtractConfig, run
from mgc.synth import uploads

BUCKET = "mgc-test"


@pytest.fixture(scope="module")
def s3(s3_server):
    """The bucket, created, and a function listing the object keys under a prefix."""
    endpoint = urlparse(s3_server["AWS_ENDPOINT_URL"])
    fs = pafs.S3FileSystem(endpoint_override=endpoint.netloc, scheme="http", allow_bucket_creation=True)
    fs.create_dir(BUCKET)

    def keys(prefix: str) -> set[str]:
        infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True))
        return {i.path[len(BUCKET) + len(prefix) + 2 :] for i in infos if i.type == pafs.FileType.File}

    return fs, keys


def _upload(fs, local, prefix: str) -> str:
    pafs.copy_files(
        str(local), f"{BUCKET}/{prefix}", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
    )
    return f"s3://{BUCKET}/{prefix}"


@pytest.fixture(scope="module")
def s3_features(ray_connected, s3, corpus):
    """The corpus (FMA metadata and MP3s) uploaded to the bucket, and extracted there."""
    fma_root = _upload(s3[0], corpus, "fma")
    out = f"s3://{BUCKET}/features"
    summary = run(fma.manifest(fma_root), ExtractConfig(out=out, tracks_per_shard=8, progress=False))
    return fma_root, out, summary


def test_extraction_reads_the_corpus_from_s3_and_writes_shards_there(s3, s3_features, truth):
    fma_root, out, summary = s3_features
    keys = s3[1]("features")
    assert {"_config.json", "_summary.json", "_manifest.parquet"} <= keys
    assert {k for k in keys if k.startswith("features/")} == {f"features/part-{k:06d}.parquet" for k in range(6)}
    assert {k for k in keys if k.startswith("rejects/")} == {f"rejects/part-{k:06d}.parquet" for k in range(6)}
    assert not {k for k in keys if k.startswith(".") or "/." in k}  # no write probes or temporaries left
    assert_complete_and_unique(out, truth, segments_per_track=3)
    assert (
        storage.read_json(f"{out}/_summary.json")["tracks_ok"]
        == summary["tracks_ok"]
        == int((truth["expected"] == "ok").sum())
    )
    again = run(fma.manifest(fma_root), ExtractConfig(out=out, tracks_per_shard=8, progress=False))
    assert again["this_run"]["tracks_processed"] == 0


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_folder_of_more_parquet_files_than_one_scan_reads_whole(where, s3, tmp_path):
    """storage.read_parquet scans at most READ_GROUP files at once (a scan's memory grows with its
    files): over 2.5 scans' worth, the first file's schema for all, or `schema` with a column some
    files lack read as nulls, the same rows as reading each file."""
    import pyarrow as pa

    n = storage.READ_GROUP * 5 // 2
    root = str(tmp_path / "parts") if where == "local" else f"s3://{BUCKET}/many-parts"
    for i in range(n):
        cols = {"i": pa.array([i, i], pa.int64()), **({"note": pa.array(["x", None])} if i % 3 else {})}
        storage.write_parquet(pa.table(cols), storage.join(root, f"part-{i:04d}.parquet"))
    rows = storage.read_parquet(root, columns=["i"]).column("i").to_pylist()
    assert sorted(rows) == sorted(2 * list(range(n)))
    schema = pa.schema([("i", pa.int64()), ("note", pa.string())])
    table = storage.read_parquet(root, schema=schema)
    assert table.schema == schema and table.num_rows == 2 * n
    with_note = sorted(
        i for i, note in zip(table.column("i").to_pylist(), table.column("note").to_pylist()) if note == "x"
    )
    assert with_note == [i for i in range(n) if i % 3]


@pytest.mark.slow
def test_train_label_and_embed_with_everything_in_s3(ray_cluster, s3, s3_features, tmp_path):
    """The jobs as a cluster runs them, through `ray job submit`, every path an s3:// URI: a sweep
    (each trial a Ray Train run, proposed by Optuna's TPE: the optional searcher is tested here
    too), its best model exported, then labelling and the catalogue."""
    pytest.importorskip("optuna")
    fs, keys = s3
    _, features, _ = s3_features
    submit_job(ray_cluster, "jobs/tune.py", "--features", features, "--storage-path", f"s3://{BUCKET}/sweeps", "--num-samples", "2",
               "--max-concurrent", "1", "--epochs", "1", "--num-workers", "2", "--cpus-per-worker", "0.5", "--search", "optuna",
               "--channels", "4,8,8,8", "--dense", "16,8", "--batch-size", "16")  # fmt: skip
    sweep = "sweeps/cnn-sweep"
    found = keys(sweep)
    assert {"sweep.json", "trials.csv", "best.json", "search_plane.png"} <= found
    assert {
        "best/model/model.json",
        "best/model/weights.pt",
        "best/metrics.json",
        "best/confusion_matrix.png",
        "best/learning_curves.png",
    } <= found
    trials = pd.read_csv(io.BytesIO(storage.read_bytes(f"s3://{BUCKET}/{sweep}/trials.csv")))
    assert len(trials) == 2 and (trials["stop_reason"] == "completed").all() and trials["lr"].nunique() == 2
    for trial in trials["trial_id"]:  # every trial's Ray Train checkpoint is in the bucket
        assert f"runs/{trial}/epoch-0001/state.pt" in found, (trial, sorted(found))
    best = storage.read_json(f"s3://{BUCKET}/{sweep}/best.json")
    assert best["trial_id"] in set(trials["trial_id"]) and best["artifact"] == f"s3://{BUCKET}/{sweep}/best/model"

    inbox = tmp_path / "uploads"
    truth = uploads(str(inbox), n=6, seconds=6.0)
    (inbox / "_truth.csv").unlink()
    uploads_uri = _upload(fs, inbox, "uploads/2026-11-21")
    out = f"s3://{BUCKET}/labels/2026-11-21"
    submit_job(ray_cluster, "jobs/label.py", "--model", best["artifact"], "--input", uploads_uri, "--out", out)
    label_keys = keys("labels/2026-11-21")
    assert {"summary.csv", "_summary.json"} <= label_keys and any(k.startswith("labels/part-") for k in label_keys)
    rows = storage.read_parquet(f"{out}/labels").to_pandas()
    assert sorted(rows["path"]) == sorted(f"{uploads_uri}/{f}" for f in truth["file"])
    assert dict(zip(rows["path"].str[len(uploads_uri) + 1 :], rows["status"])) == dict(
        zip(truth["file"], truth["status"])
    )
    ok = rows[rows["status"] == "ok"]
    assert np.allclose([np.sum(p) for p in ok["probabilities"]], 1.0, atol=1e-4)

    from mgc.cli import main

    assert (
        main(["embed", "--features", features, "--model", best["artifact"], "--out", f"s3://{BUCKET}/catalogue"]) == 0
    )
    assert {"catalogue.parquet", "precision_at_k.csv", "precision_at_k.md"} <= keys("catalogue")
    catalogue = pq.read_table(io.BytesIO(storage.read_bytes(f"s3://{BUCKET}/catalogue/catalogue.parquet")))
    assert catalogue.num_rows == len(
        storage.read_parquet(f"{features}/features", columns=["track_id"]).column("track_id").unique()
    )


@pytest.fixture(scope="module")
def denying_server():
    """A second S3 server that checks credentials: ours are unknown to it."""
    port = _free_port()
    proc = _start_moto(port, {"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.parametrize("problem", ["missing bucket", "wrong credentials", "unreachable endpoint"])
def test_storage_problems_fail_before_work_naming_the_uri(
    problem, ray_connected, s3_features, corpus, denying_server, monkeypatch, tmp_path
):
    """Each job's first step finds the problem and names the URI in one line; nothing is written."""
    fma_root, features, _ = s3_features
    from mgc.cli import main

    bucket, why = "no-such-bucket", "bucket"
    if problem == "wrong credentials":
        monkeypatch.setenv("AWS_ENDPOINT_URL", denying_server)
        bucket, why = BUCKET, "access denied"
    elif problem == "unreachable endpoint":
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
        bucket, why = BUCKET, "cannot reach the storage endpoint"
    commands = {
        f"s3://{bucket}/fma": ["extract", "--fma-root", f"s3://{bucket}/fma", "--out", str(tmp_path / "f")],
        f"s3://{bucket}/features": [
            "train",
            "--features",
            f"s3://{bucket}/features",
            "--storage-path",
            str(tmp_path / "r"),
            "--cpus-per-worker",
            "0.5",
        ],
        f"s3://{bucket}/uploads": [
            "label",
            "--model",
            f"s3://{bucket}/runs/cnn/model",
            "--input",
            f"s3://{bucket}/uploads",
            "--out",
            str(tmp_path / "l"),
        ],
    }
    if problem != "missing bucket":  # outputs: the probe write fails (a missing bucket is covered by inputs)
        commands[f"s3://{bucket}/out"] = ["extract", "--fma-root", str(corpus), "--out", f"s3://{bucket}/out"]
    for uri, args in commands.items():
        with pytest.raises(MgcError) as e:
            main(["--debug", *args, "--no-progress"])
        message = str(e.value)
        assert message.startswith(("s3://", f"s3://{bucket}")) and uri.split("/")[2] in message and why in message, (
            args,
            message,
        )
        assert "\n" not in message
    assert not list(tmp_path.iterdir())
