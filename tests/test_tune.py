"""Ray Tune sweeps on CPU: ASHA stops trials early, a killed driver resumes without re-running
finished trials, the outputs agree, the best artifact predicts, bad input fails before trials."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from conftest import REPO
from mgc import artifact
from mgc.cli import build_parser, main
from mgc.errors import MgcError
from mgc.models import ModelConfig
from mgc.train import SCORE, TrainConfig
from mgc.tune import SweepConfig, config_file_values, trial_config

# 6 trials of a small cnn, one at a time (1 worker x 1 CPU, a CPU left for Ray Data's reads).
SWEEP = ["--model", "cnn", "--epochs", "3", "--num-samples", "6", "--max-concurrent", "1", "--num-workers", "1", "--cpus-per-worker", "1",
         "--grace-period", "1", "--reduction-factor", "2", "--lr-min", "1e-5", "--lr-max", "1e-2", "--channels", "8,16,32,32",
         "--dense", "64,32", "--batch-size", "32", "--seed", "1", "--no-progress"]  # fmt: skip
BEST = f"best_{SCORE}"


@pytest.fixture(scope="module")
def sweep(ray_cluster, features, tmp_path_factory):
    """A sweep whose driver is SIGKILLed while its third trial runs, then resumed with the real
    `ray job submit` client. Returns (sweep dir, trials finished before the kill, the interrupted trial)."""
    storage_path = tmp_path_factory.mktemp("sweeps")
    runs = storage_path / "sw" / "runs"
    # A relative --storage-path: trials run in Ray workers with other working directories.
    cmd = [sys.executable, str(REPO / "jobs" / "tune.py"), "--features", str(features), "--storage-path", storage_path.name, "--name", "sw", *SWEEP]
    # Tune saves its experiment state at most every 10 s by default; at every step here, so that
    # "finished before the kill" means "recorded as finished".
    env = {**ray_cluster["env"], "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    log = open(storage_path / "driver.log", "w")
    proc = subprocess.Popen(cmd, env=env, cwd=storage_path.parent, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and len(list(runs.glob("*/attempts.json"))) < 3:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    started = sorted(runs.glob("*/attempts.json"), key=lambda p: json.loads(p.read_text())[0])
    assert len(started) == 3, f"not killed while the third trial ran: {len(started)} started\n" + (storage_path / "driver.log").read_text()[-3000:]

    resume = [ray_cluster["ray"], "job", "submit", "--address", ray_cluster["dashboard"], "--working-dir", str(REPO), "--",
              "python", "jobs/tune.py", "--resume", "--storage-path", str(storage_path), "--name", "sw", "--no-progress"]  # fmt: skip
    client_env = {k: v for k, v in ray_cluster["env"].items() if k != "RAY_ADDRESS"}
    done = subprocess.run(resume, env=client_env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and "succeeded" in done.stdout + done.stderr, done.stdout[-3000:] + done.stderr[-3000:]
    return storage_path / "sw", [p.parent.name for p in started[:-1]], started[-1].parent.name


def test_asha_stops_trials_early_and_the_outputs_agree(sweep):
    sweep_dir, _, _ = sweep
    trials = pd.read_csv(sweep_dir / "trials.csv")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert set(trials["stop_reason"]) <= {"completed", "stopped early by ASHA"}, trials["stop_reason"].tolist()
    early = trials[trials["stop_reason"] == "stopped early by ASHA"]
    assert len(early) >= 1 and (early["epochs_run"] < 3).all()
    assert (trials.loc[trials["stop_reason"] == "completed", "epochs_run"] == 3).all()
    assert trials["lr"].between(1e-5, 1e-2).all() and trials["dropout"].between(0.1, 0.7).all()

    best = json.loads((sweep_dir / "best.json").read_text())
    top = trials.loc[trials[BEST].idxmax()]
    assert best["trial_id"] == top["trial_id"] and best["epoch"] == top["best_epoch"]
    assert best["score"] == pytest.approx(top[BEST]) and best["config"]["lr"] == pytest.approx(top["lr"])
    assert best["trials"] == 6 and best["stopped_early"] == len(early)
    # The exported checkpoint is the best epoch's: its validation score is the sweep's best.
    metrics = json.loads((sweep_dir / "best" / "metrics.json").read_text())
    assert metrics["best_epoch"] == best["epoch"] and metrics["validation"][SCORE] == pytest.approx(best["score"])
    assert (sweep_dir / "search_plane.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_killed_driver_resumes_without_rerunning_finished_trials(sweep):
    sweep_dir, finished_before, interrupted = sweep
    trials = pd.read_csv(sweep_dir / "trials.csv").set_index("trial_id")
    assert (trials.loc[finished_before, "attempts"] == 1).all(), trials["attempts"]
    assert trials.loc[interrupted, "attempts"] == 2  # restarted once, after the kill
    assert trials["attempts"].sum() == 7


def test_the_best_artifact_loads_and_predicts(sweep, features):
    sweep_dir, _, _ = sweep
    best = json.loads((sweep_dir / "best.json").read_text())
    model, meta = artifact.load(best["artifact"])
    assert model.cfg.dropout == pytest.approx(best["config"]["dropout"])
    t = pq.read_table(features / "features", columns=["split", "label", meta["input"]])
    t = t.filter(pc.and_(pc.equal(t["split"], "test"), pc.greater_equal(t["label"], 0)))
    x = torch.from_numpy(t[meta["input"]].combine_chunks().to_numpy_ndarray().astype(np.float32))
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    accuracy = float((pred == t["label"].to_numpy()).mean())
    assert accuracy == pytest.approx(best["test"]["segment"]["accuracy"], abs=1e-6)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--lr-min", "1e-2", "--lr-max", "1e-3"], "learning-rate range .* empty or inverted"),
        (["--dropout-min", "0.5", "--dropout-max", "0.5"], "dropout range .* empty or inverted"),
        (["--metric", "val_track_auc"], "'val_track_auc' is not reported by training; choose one of train_loss"),
        (["--gpus-per-trial", "1"], "--gpus-per-trial 1 is more than the cluster's 0 GPUs"),
        (["--search", "grid"], "unknown search algorithm 'grid'"),
        (["--grace-period", "5"], "grace-period <= --epochs"),
    ],
)
def test_bad_sweeps_fail_before_any_trial(ray_connected, features, tmp_path, capsys, options, message):
    argv = ["tune", "--features", str(features), "--storage-path", str(tmp_path), "--name", "bad", *SWEEP, *options]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgc: error:") and re.search(message, err), err
    assert not (tmp_path / "bad").exists(), "a refused sweep left a directory"


def test_resume_and_rerun_are_refused_where_they_make_no_sense(ray_connected, sweep, tmp_path, capsys):
    assert main(["tune", "--resume", "--storage-path", str(tmp_path), "--name", "none"]) == 2
    assert "no sweep to resume" in capsys.readouterr().err
    sweep_dir, _, _ = sweep
    assert main(["tune", "--features", "x", "--storage-path", str(sweep_dir.parent), "--name", sweep_dir.name]) == 2
    assert "already holds a sweep: resume it with --resume" in capsys.readouterr().err


def test_a_config_file_sets_options_and_the_command_line_overrides_it(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('lr-min = 1e-4\nnum_samples = 3\nsearch = "random"\nchannels = [4, 8]\n')
    argv = ["tune", "--features", "f", "--config", str(path), "--num-samples", "5"]
    args = build_parser(config_file_values(str(path))).parse_args(argv)
    assert (args.lr_min, args.num_samples, args.channels, args.lr_max) == (1e-4, 5, (4, 8), 1e-2)
    path.write_text("learning_rate = 0.1\n")
    with pytest.raises(MgcError, match="sweep.toml: unknown option 'learning_rate'"):
        config_file_values(str(path))


def test_per_layer_dropout_gives_each_layer_its_own_rate(tmp_path):
    model = ModelConfig(name="cnn_lstm", lstm_units=(16, 16, 16), dropout=(0.1, 0.2, 0.3))
    assert model.dropout_layers == ("lstm1", "lstm2", "head") and model.dropout_rates == (0.1, 0.2, 0.3)
    with pytest.raises(MgcError, match="3 dropout layers .* but 2 rates"):
        ModelConfig(name="cnn_lstm", lstm_units=(16, 16, 16), dropout=(0.1, 0.2))
    sweep = SweepConfig(train=TrainConfig(features="f", model="cnn_lstm", storage_path=str(tmp_path)), dropout_per_layer=True)
    cfg = trial_config(sweep, {"lr": 1e-3, "dropout_lstm1": 0.15, "dropout_head": 0.4}, "t1", ("lstm1", "head"))
    assert cfg.dropout == (0.15, 0.4) and cfg.run_dir == str(tmp_path / "cnn_lstm" / "runs" / "t1")
    from mgc.models import build

    net = build(ModelConfig(name="cnn_lstm", channels=(4, 8), dense=(8,), lstm_units=(8, 8), dropout=cfg.dropout))
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.15, 0.4]


def test_a_model_based_searcher_runs_a_sweep(ray_connected, features, tmp_path):
    """Optuna's TPE proposes the trials (an optional extra, installed for the tests)."""
    pytest.importorskip("optuna")
    argv = ["tune", "--features", str(features), "--storage-path", str(tmp_path), "--name", "tpe", *SWEEP,
            "--search", "optuna", "--num-samples", "2", "--epochs", "1"]  # fmt: skip
    assert main(argv) == 0
    trials = pd.read_csv(tmp_path / "tpe" / "trials.csv")
    assert len(trials) == 2 and (trials["stop_reason"] == "completed").all() and trials["lr"].nunique() == 2
    assert json.loads((tmp_path / "tpe" / "best.json").read_text())["trial_id"] in set(trials["trial_id"])
