"""Shared fixtures: one real Ray cluster per test session (`ray start --head`, token auth on),
and one small synthetic FMA corpus."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import cli_flags

from mgc.session import PREEMPTION_WATCHER
from mgc.train import PLAIN

REPO = Path(__file__).resolve().parents[1]
FMA_SAMPLE = REPO / "tests" / "data" / "fma"  # real FMA metadata and two clips, in the repository
BIN = Path(sys.executable).parent


# Ray reads RAY_AUTH_MODE when it is first imported, and some tests import it before the session's
# cluster starts: the test process is a client of that token-authenticated cluster from the start.
TOKEN = secrets.token_hex(32)


def pytest_addoption(parser):
    parser.addoption(
        "--gpu", action="store_true", help="give the test cluster this machine's GPUs and run the tests marked gpu"
    )


def pytest_configure(config):
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = TOKEN
    # The runs this process drives see the cluster as mgc's own Ray of one machine (cluster_env).
    os.environ[PREEMPTION_WATCHER] = "0"


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu run only with --gpu on a machine with a CUDA device."""
    import torch

    if config.getoption("--gpu") and torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs --gpu and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _free_ports(n: int) -> list[int]:
    """n distinct free ports: every socket is held until all are chosen (probing one at a time,
    the OS can hand out the same port twice, and Ray then refuses to start)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def _free_port() -> int:
    return _free_ports(1)[0]


@contextlib.contextmanager
def _environment(variables: dict[str, str]):
    """These variables in this process's environment for a session fixture's lifetime."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in variables.items():
            mp.setenv(k, v)
        yield


@pytest.fixture(scope="session")
def fma_sample() -> Path:
    """Genuine FMA metadata (tracks.csv's first 682 records, the genre tables) and two real MP3s."""
    return FMA_SAMPLE


def _start_moto(port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    """moto's standalone S3 server on 127.0.0.1:port, once it accepts connections."""
    import time

    cmd = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start")
            time.sleep(0.2)


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto's standalone server) on 127.0.0.1, and the standard AWS
    variables that point clients at it."""
    port = _free_port()
    proc = _start_moto(port)
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "mgc-test",
        "AWS_SECRET_ACCESS_KEY": "mgc-test",
        "AWS_REGION": "us-east-1",
    }
    try:
        with _environment(env):
            yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def start_head(env: dict[str, str], gpus: bool = False) -> dict:
    """A head node started with the real `ray start --head --block` in a process group of its own,
    with its own temporary folder, ports and (unless `gpus`) no GPUs, once it reports that it runs.
    Returns what `stop_head` and the clients need."""
    ray_bin = shutil.which("ray", path=str(BIN)) or shutil.which("ray")
    temp = tempfile.mkdtemp(prefix="mgcray", dir="/tmp")  # short: Ray's socket paths live under it
    port, dash, *others = _free_ports(6)
    cmd = [
        ray_bin, "start", "--head", "--block", f"--port={port}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
        "--node-ip-address=127.0.0.1", "--num-cpus=2", "--object-store-memory=500000000", "--include-dashboard=true",
        "--disable-usage-stats", f"--temp-dir={temp}", *([] if gpus else ["--num-gpus=0"]),
        *(f"--{p}={n}" for p, n in zip(("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port"), others)),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    seen = []
    deadline = time.time() + 180
    for line in proc.stdout:  # `ray start` says so once every process runs, then blocks
        seen.append(line)
        if "Ray runtime started" in line:
            break
        assert time.time() < deadline, "".join(seen)[-3000:]
    else:
        raise RuntimeError("ray start --head ended:\n" + "".join(seen)[-3000:])
    threading.Thread(target=seen.extend, args=(proc.stdout,), daemon=True).start()  # drain the rest, kept for failures
    return {"address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}", "env": {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"},
            "ray": ray_bin, "proc": proc, "temp_dir": temp, "output": seen}  # fmt: skip


def stop_head(head: dict) -> None:
    """End the head's own processes only (its process group, then anything left under its
    temporary folder), never `ray stop`, which would stop every Ray of this user on the machine."""
    import psutil

    proc = head["proc"]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    # Every process of the group has the signal itself; `ray start --block` would then take over
    # 30 s to stop its children one by one (measured), which a moment's grace and SIGKILL spare.
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for p in psutil.process_iter(["cmdline"]):
        if any(head["temp_dir"] in part for part in p.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                p.kill()
    shutil.rmtree(head["temp_dir"], ignore_errors=True)


def cluster_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What the test cluster's nodes run with: token authentication, the project's venv first on
    PATH (jobs' `python` is the project's), a raylet that does not warn about worker start-up on
    2 CPUs and keeps idle workers through a training run, and runs (jobs' drivers, Tune's trials)
    without Ray Train's preemption watcher, as `mgc` configures the local Ray of one machine it
    starts (mgc.session). (Ray Train's poll interval is mgc's own: `mgc.train.POLL_INTERVAL_S`.)"""
    from mgc.session import idle_workers_kept

    env = {**os.environ, **(extra or {}), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_worker_maximum_startup_concurrency": "16", "RAY_num_workers_soft_limit": str(idle_workers_kept(2)),
           PREEMPTION_WATCHER: "0"}  # fmt: skip
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="session")
def ray_cluster(s3_server, request):
    """The session's head node (`ray start --head`), token authentication on, no GPUs unless the
    suite runs with --gpu. Yields a dict with the GCS address, the dashboard URL for `ray job
    submit`, and the environment a client needs (RAY_AUTH_MODE=token and the token)."""
    # The nodes get the S3 server's variables, as a cluster's nodes get their credentials.
    head = start_head(cluster_env(s3_server), gpus=request.config.getoption("--gpu"))
    try:
        with _environment({"RAY_ADDRESS": head["env"]["RAY_ADDRESS"]}):
            yield head
    finally:
        import ray

        ray.shutdown()
        stop_head(head)


@pytest.fixture(scope="session")
def ray_connected(ray_cluster):
    """This test process joined to the session's cluster as a driver."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_cluster["address"], log_to_driver=False)
    return ray_cluster


@pytest.fixture(scope="session")
def train_corpus(tmp_path_factory) -> Path:
    """240 synthetic 9 s tracks of 8 genres (3 segments each), 2% broken."""
    from mgc.synth import SynthConfig, generate

    corpus = tmp_path_factory.mktemp("train_corpus")
    generate(SynthConfig(out=str(corpus), tracks=240, seconds=9.0, broken_share=0.02, seed=3), progress=False)
    return corpus


def _extract(corpus: Path, out: Path, **features) -> Path:
    from mgc import fma
    from mgc.extract import ExtractConfig, run
    from mgc.features import FeatureConfig

    run(
        fma.manifest(str(corpus)),
        ExtractConfig(out=str(out), tracks_per_shard=16, features=FeatureConfig(**features), progress=False),
    )
    return out


@pytest.fixture(scope="session")
def features(ray_connected, train_corpus, tmp_path_factory) -> Path:
    """The training corpus extracted with the defaults (log-mel and MFCC): the input of the
    training, tuning and labelling tests."""
    return _extract(train_corpus, tmp_path_factory.mktemp("train_features"))


@pytest.fixture(scope="session")
def all_inputs(ray_connected, train_corpus, tmp_path_factory) -> Path:
    """The same corpus with every input (the waveform too), the STFT of the FMA study by Maccani
    et al. (window 4096, hop 1024) and 64 mel bands: the waveform and multimodal models' input."""
    return _extract(
        train_corpus,
        tmp_path_factory.mktemp("all_inputs"),
        inputs=("logmel", "mfcc", "waveform"),
        n_fft=4096,
        hop_length=1024,
        n_mels=64,
    )


@pytest.fixture(scope="session")
def tagged(ray_connected, train_corpus, tmp_path_factory) -> Path:
    """The training corpus extracted with the pretrained tagger's input beside the defaults, the
    network run on each track's middle segment only (--musicnn-patches 1: a third of the cost)."""
    return _extract(
        train_corpus,
        tmp_path_factory.mktemp("musicnn_features"),
        inputs=("logmel", "mfcc", "musicnn"),
        musicnn_patches=1,
    )


MUSICNN_HEAD = dict(epochs=12, batch_size=32, lr=3e-3, num_workers=1, cache_data=True, progress=False)


@pytest.fixture(scope="session")
def musicnn_runs(tagged, tmp_path_factory) -> Path:
    """`mgc compare --models baseline,head --export-best` on `tagged`: the transfer model (on the
    musicnn input) beside the baseline (on the statistics); the runs folder (baseline/, head/,
    comparison.csv, best/)."""
    from mgc.cli import main

    runs = tmp_path_factory.mktemp("musicnn_runs")
    flags = cli_flags({k: v for k, v in MUSICNN_HEAD.items() if k != "progress"})
    assert (
        main(
            [
                "compare",
                "--models",
                "baseline,head",
                "--features",
                str(tagged),
                "--storage-path",
                str(runs),
                *flags,
                "--no-progress",
                "--export-best",
            ]
        )
        == 0
    )
    return runs


# The fixtures that show each architecture learning train with the plain recipe (Adam at a
# constant rate, no augmentation): their budgets of 10-24 epochs were set by it, and the default
# recipe's augmentation needs more epochs on the synthetic corpus (bench/README.md, "The training
# recipe"); test_recipe.py trains with the default recipe.
PLAIN_RECIPE = cli_flags(PLAIN)


@pytest.fixture(scope="session")
def compared(features, tmp_path_factory) -> Path:
    """`mgc compare` of cnn and cnn_lstm, as a user runs it (splits cached after epoch 1): the runs
    folder (cnn/model is the artifact the labelling and recommendation tests use)."""
    from mgc.cli import main

    runs = tmp_path_factory.mktemp("runs")
    args = ["compare", "--models", "cnn,cnn_lstm", "--features", str(features), "--storage-path", str(runs), "--epochs", "10",
            "--channels", "8,16,32,32", "--dense", "64,32", "--lstm-units", "64,64", "--batch-size", "32", "--lr", "0.003",
            "--dropout", "0.2", "--cpus-per-worker", "0.5", "--cache-data", "--no-progress", *PLAIN_RECIPE]  # fmt: skip
    assert main(args) == 0
    return runs


def mgc_beside(cluster: dict, beside: list[str], *here: list[str], timeout: int = 1500) -> None:
    """`mgc BESIDE` in a driver process of its own on `cluster` while this process runs each `mgc
    HERE` in turn. A run trains on one thread, so two at once keep both cores busier than one after
    another; a seed gives the same model either way. (A process of its own costs mgc's imports and
    its first Ray Data read, a few seconds: one is enough.)"""
    from mgc.cli import main

    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([str(BIN / "mgc"), *beside], env=cluster["env"], stdout=log, stderr=subprocess.STDOUT)
        try:
            for argv in here:
                assert main(argv) == 0, f"mgc {' '.join(argv)} failed"
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.seek(0)
        assert proc.returncode == 0, f"mgc {' '.join(beside)}:\n{log.read()[-4000:]}"


# The models compared_all trains (compared has cnn and cnn_lstm), at sizes and settings that reach
# the genres within a few minutes on 2 CPUs. crnn, the slowest to learn (an LSTM reading the last
# of 65 steps of a residual encoder), trains longer on the cheaper MFCCs, at a lower rate; lstm
# stacks two LSTMs of 64 (one of 64 memorised the training split and stalled at 0.83-0.88 on
# validation, 21 of 24 tracks, in two suite runs; two of 64 for 16 epochs reached 21 of 24 once more),
# for 24 epochs (the best checkpoint is kept). Training is reproducible per seed, so each budget is
# measured: at these settings (2026-12-02) the compared models first reach >= 0.9 on validation at
# epochs 5-8 of 12 (cnn_bilstm 0.92 at 8), crnn at epoch 9 of 16, lstm only at epoch 23 of 24; the
# test judges the test split (>= 0.8; 0.89-1.0 on 2026-12-07).
SMALL_ALL = [
    "--dense",
    "64,32",
    "--batch-size",
    "16",
    "--dropout",
    "0.2",
    "--num-workers",
    "1",
    "--cpus-per-worker",
    "0.5",
    "--cache-data",
    "--no-progress",
    *PLAIN_RECIPE,
]


@pytest.fixture(scope="session")
def compared_all(ray_connected, all_inputs, tmp_path_factory) -> Path:
    """The other seven models trained on `all_inputs`: `mgc compare` of four beside `mgc train`
    of cnn_bilstm, lstm and crnn, the two of similar length (mgc_beside). The runs folder."""
    runs = tmp_path_factory.mktemp("runs_all")
    common = ["--features", str(all_inputs), "--storage-path", str(runs), *SMALL_ALL]
    small = ["--epochs", "12", "--lr", "0.003", "--channels", "4,8,16,16", "--lstm-units", "64", *common]
    mgc_beside(
        ray_connected,
        ["compare", "--models", "baseline,resnet2d,cnn1d,mm_crnn", *small],
        ["train", "--model", "cnn_bilstm", *small],
        ["train", "--model", "lstm", "--epochs", "24", "--lr", "0.003", "--lstm-units", "64,64", *common],
        ["train", "--model", "crnn", "--input", "mfcc", "--epochs", "16", "--lr", "0.001", "--channels", "16,32,64,64",
         "--lstm-units", "128", *common],
    )  # fmt: skip
    return runs


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """48 synthetic 9 s tracks (3 segments each) in FMA layout, 15% broken (every kind)."""
    from mgc.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("corpus")
    generate(SynthConfig(out=str(out), tracks=48, seconds=9.0, broken_share=0.15, seed=7), progress=False)
    return out


@pytest.fixture(scope="session")
def extracted(ray_connected, corpus, tmp_path_factory) -> tuple[Path, dict]:
    """`corpus` extracted as FMA large (5 tracks a shard): the output folder and the run's summary."""
    from mgc import fma
    from mgc.extract import ExtractConfig, run

    out = tmp_path_factory.mktemp("features")
    summary = run(
        fma.manifest(str(corpus), "fma_large", "large"), ExtractConfig(out=str(out), tracks_per_shard=5, progress=False)
    )
    return out, summary


@pytest.fixture(scope="session")
def truth(corpus) -> pd.DataFrame:
    return pd.read_csv(corpus / "fma_metadata" / "synth_truth.csv")


# 4 trials of a small cnn, one at a time (1 worker x 1 CPU, a CPU left for Ray Data's reads), over
# learning rate, dropout, weight decay and mixup.
SWEEP = ["--model", "cnn", "--epochs", "3", "--num-samples", "4", "--max-concurrent", "1", "--num-workers", "1", "--cpus-per-worker", "1",
         "--grace-period", "1", "--reduction-factor", "2", "--lr-min", "1e-5", "--lr-max", "1e-2", "--channels", "8,16,32,32",
         "--dense", "64,32", "--batch-size", "32", "--seed", "1", "--weight-decay-min", "1e-4", "--weight-decay-max", "1e-1",
         "--mixup-max", "0.5", "--no-progress"]  # fmt: skip


def wait_for_free_cpus(timeout: float = 120, after: str = "") -> None:
    """Every CPU of the cluster free again within `timeout` s, or a failure naming what holds them
    (`after`: what ran last): a CPU held by something that ended would leave the next stage
    waiting forever."""
    import ray

    from mgc import resources

    total, deadline = ray.cluster_resources().get("CPU", 0), time.time() + timeout
    while ray.available_resources().get("CPU", 0) < total:
        if time.time() > deadline:
            pytest.fail(
                f"CPUs still held {timeout:.0f} s after {after or 'the last stage'} ended:\n  {resources.holders()}"
            )
        time.sleep(0.5)


@pytest.fixture(autouse=True)
def _cpus_free_after_each_test(request):
    """After every test that joined Ray in this process, every CPU is free again: a leak fails
    the test that made it rather than hanging a later one."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        wait_for_free_cpus(60, after=request.node.nodeid)


# A fixture that runs Ray work fails with what holds the cluster after this long, not at CI's
# limit (pytest-timeout bounds tests' own calls, not their fixtures).
FIXTURE_LIMIT_S = 1800


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """Bounds each fixture's own set-up (its dependencies are set up before, each bounded alone)."""
    if signal.getitimer(signal.ITIMER_REAL)[0] or threading.current_thread() is not threading.main_thread():
        yield  # inside a test's timed call (a fixture asked for by getfixturevalue): that bound holds
        return

    def expire(signum, frame):
        import ray

        from mgc import resources

        held = resources.holders() if ray.is_initialized() else "(this process has not joined Ray)"
        raise TimeoutError(f"fixture {fixturedef.argname} ran over {FIXTURE_LIMIT_S} s; the cluster now:\n  {held}")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, FIXTURE_LIMIT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _free_groups_of_ended_jobs(after_s: float) -> None:
    """What a user told by mgc's watchdog does: once the cluster's CPUs have not all come back
    within `after_s` seconds, placement groups of jobs that have ended (a driver SIGKILLed while
    its trial's workers were being placed can leave one, a race in Ray) are removed."""
    import ray
    from ray.util.state import list_placement_groups

    from mgc import resources

    deadline = time.time() + after_s
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0) and time.time() < deadline:
        time.sleep(0.5)
    ended = resources.ended_jobs()
    for g in list_placement_groups(filters=[("state", "=", "CREATED")], limit=10_000, raise_on_missing_output=False):
        if g.creator_job_id in ended:
            print(f"removing placement group {g.placement_group_id} of ended job {g.creator_job_id}", file=sys.stderr)
            resources.remove_group(g.placement_group_id)


@pytest.fixture(scope="session")
def sweep(ray_connected, features, tmp_path_factory):
    """A sweep whose driver is SIGKILLed while its third trial runs, then resumed with the real
    `ray job submit` client. Returns (sweep dir, trials finished before the kill, the interrupted trial)."""
    storage_path = tmp_path_factory.mktemp("sweeps")
    runs = storage_path / "sw" / "runs"
    # A relative --storage-path: trials run in Ray workers with other working directories.
    cmd = [
        sys.executable,
        str(REPO / "jobs" / "tune.py"),
        "--features",
        str(features),
        "--storage-path",
        storage_path.name,
        "--name",
        "sw",
        *SWEEP,
    ]
    # Tune saves its experiment state at most every 10 s by default; at every step here, so that
    # "finished before the kill" means "recorded as finished".
    env = {**ray_connected["env"], "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    log = open(storage_path / "driver.log", "w")
    proc = subprocess.Popen(
        cmd, env=env, cwd=storage_path.parent, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and len(list(runs.glob("*/attempts.json"))) < 3:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    started = sorted(runs.glob("*/attempts.json"), key=lambda p: json.loads(p.read_text())[0])
    assert len(started) == 3, (
        f"not killed while the third trial ran: {len(started)} started\n"
        + (storage_path / "driver.log").read_text()[-3000:]
    )

    _free_groups_of_ended_jobs(after_s=60)
    wait_for_free_cpus(after="the killed sweep")
    submit_job(ray_connected, "jobs/tune.py", "--resume", "--storage-path", str(storage_path), "--name", "sw")
    return storage_path / "sw", [p.parent.name for p in started[:-1]], started[-1].parent.name


def submit_job(cluster: dict, *args: str, options: tuple[str, ...] = (), timeout: int = 900) -> str:
    """`ray job submit --working-dir REPO [options] -- python ARGS --no-progress` with the real client
    (outside the cluster: no RAY_ADDRESS, the token from the environment); asserts that it succeeded
    (or, with --no-wait, was submitted) and returns its output."""
    cmd = [
        cluster["ray"],
        "job",
        "submit",
        "--address",
        cluster["dashboard"],
        "--working-dir",
        str(REPO),
        *options,
        "--",
        "python",
        *args,
        "--no-progress",
    ]
    env = {k: v for k, v in cluster["env"].items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and ("--no-wait" in options or "succeeded" in out), out[-6000:]
    return out


@pytest.fixture(scope="session")
def model(compared):
    return str(compared / "cnn" / "model")


@pytest.fixture(scope="session")
def inbox(tmp_path_factory):
    """24 uploads of 15 s in 4 formats, 4 sample rates, mono and stereo, a 2-minute file, 3 broken."""
    from mgc.synth import uploads

    out = tmp_path_factory.mktemp("uploads")
    truth = uploads(str(out), n=24, seconds=15.0, long_seconds=120.0)
    return out, truth


@pytest.fixture(scope="session")
def labelled(ray_cluster, model, inbox, tmp_path_factory):
    """The uploads labelled by the real `ray job submit` client, analysing at most 60 s a file."""
    folder, _ = inbox
    out = tmp_path_factory.mktemp("labels")
    submit_job(
        ray_cluster,
        "jobs/label.py",
        "--model",
        model,
        "--input",
        str(folder),
        "--out",
        str(out),
        "--max-seconds",
        "60",
        "--files-per-batch",
        "4",
    )
    return out


@pytest.fixture(scope="session")
def catalogue(ray_connected, features, model, tmp_path_factory) -> Path:
    """`mgc embed` of the session's features with the cnn: catalogue.parquet and precision_at_k.csv/.md."""
    from mgc.cli import main

    out = tmp_path_factory.mktemp("catalogue")
    assert main(["embed", "--features", str(features), "--model", model, "--out", str(out)]) == 0
    return out
