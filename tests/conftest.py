"""Shared fixtures: one real Ray cluster per test session (`ray start --head`, token auth on),
and one small synthetic FMA corpus."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
FMA_SAMPLE = REPO.parent / "shared" / "fma_sample"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _environment(variables: dict[str, str]):
    """These variables in this process's environment for a session fixture's lifetime."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in variables.items():
            mp.setenv(k, v)
        yield


@pytest.fixture(scope="session")
def fma_sample() -> Path:
    """Genuine FMA metadata and two real MP3s; absent from a fresh clone."""
    if not (FMA_SAMPLE / "tracks.csv").exists():
        pytest.skip("../shared/fma_sample is not present")
    return FMA_SAMPLE


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto's standalone server) on 127.0.0.1, and the standard AWS
    variables that point clients at it."""
    import time

    port = _free_port()
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start")
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "mgc-test", "AWS_SECRET_ACCESS_KEY": "mgc-test", "AWS_REGION": "us-east-1"}
    try:
        with _environment(env):
            yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory, s3_server):
    """A head node started with the real `ray start --head`, token authentication on.

    Yields a dict with the GCS address, the dashboard URL for `ray job submit`, and the
    environment a client needs (RAY_AUTH_MODE=token and the token)."""
    ray_bin = shutil.which("ray", path=str(BIN)) or shutil.which("ray")
    token = secrets.token_hex(32)
    # The nodes get the S3 server's variables, as a cluster's nodes get their credentials.
    env = {**os.environ, **s3_server, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}
    # As if started from the activated venv: job entrypoints' `python` is the project's.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    port, dash = _free_port(), _free_port()
    cmd = [
        ray_bin, "start", "--head", f"--port={port}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
        "--node-ip-address=127.0.0.1", "--num-cpus=2", "--object-store-memory=500000000", "--include-dashboard=true",
        "--disable-usage-stats",
    ]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
    info = {
        "address": f"127.0.0.1:{port}",
        "dashboard": f"http://127.0.0.1:{dash}",
        "env": {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"},
        "ray": ray_bin,
    }
    try:
        with _environment({k: info["env"][k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}):
            yield info
    finally:
        import ray

        ray.shutdown()
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def ray_connected(ray_cluster):
    """This test process joined to the session's cluster as a driver."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_cluster["address"], log_to_driver=False)
    return ray_cluster


@pytest.fixture(scope="session")
def features(ray_connected, tmp_path_factory) -> Path:
    """240 synthetic 9 s tracks of 8 genres, extracted: the input of the training and tuning tests."""
    from mgc import fma
    from mgc.extract import ExtractConfig, run
    from mgc.synth import SynthConfig, generate

    corpus = tmp_path_factory.mktemp("train_corpus")
    generate(SynthConfig(out=str(corpus), tracks=240, seconds=9.0, broken_share=0.02, seed=3), progress=False)
    out = tmp_path_factory.mktemp("train_features")
    run(fma.manifest(str(corpus)), ExtractConfig(out=str(out), tracks_per_shard=16, progress=False))
    return out


@pytest.fixture(scope="session")
def compared(features, tmp_path_factory) -> Path:
    """`mgc compare` of cnn and cnn_lstm, as a user runs it: the runs folder (cnn/model is the
    artifact the labelling and recommendation tests use)."""
    from mgc.cli import main

    runs = tmp_path_factory.mktemp("runs")
    args = ["compare", "--models", "cnn,cnn_lstm", "--features", str(features), "--storage-path", str(runs), "--epochs", "10",
            "--channels", "8,16,32,32", "--dense", "64,32", "--lstm-units", "64,64", "--batch-size", "32", "--lr", "0.003",
            "--dropout", "0.2", "--cpus-per-worker", "0.5", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return runs


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """48 synthetic 9 s tracks (3 segments each) in FMA layout, 15% broken (every kind)."""
    from mgc.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("corpus")
    generate(SynthConfig(out=str(out), tracks=48, seconds=9.0, broken_share=0.15, seed=7), progress=False)
    return out


@pytest.fixture(scope="session")
def truth(corpus) -> pd.DataFrame:
    return pd.read_csv(corpus / "fma_metadata" / "synth_truth.csv")
