"""Ray Tune sweeps on CPU: ASHA stops trials early, a killed driver resumes without re-running
finished trials, the outputs agree, the best artifact predicts, bad input fails before trials."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from conftest import SWEEP

from mgc import artifact, manifest
from mgc.cli import build_parser, main
from mgc.errors import MgcError
from mgc.models import ModelConfig
from mgc.train import SCORE, TrainConfig
from mgc.tune import SweepConfig, config_file_values, trial_config

BEST = f"best_{SCORE}"
TRIALS = int(SWEEP[SWEEP.index("--num-samples") + 1])  # the sweep fixture's


def test_asha_stops_trials_early_and_the_outputs_agree(sweep):
    sweep_dir, _, _ = sweep
    trials = pd.read_csv(sweep_dir / "trials.csv")
    assert len(trials) == TRIALS and trials["trial_id"].is_unique
    assert set(trials["stop_reason"]) <= {"completed", "stopped early by ASHA"}, trials["stop_reason"].tolist()
    early = trials[trials["stop_reason"] == "stopped early by ASHA"]
    assert len(early) >= 1 and (early["epochs_run"] < 3).all()
    assert (trials.loc[trials["stop_reason"] == "completed", "epochs_run"] == 3).all()
    assert trials["lr"].between(1e-5, 1e-2).all() and trials["dropout"].between(0.1, 0.7).all()
    assert (
        trials["weight_decay"].between(1e-4, 1e-1).all()
        and trials["mixup"].between(0, 0.5).all()
        and trials["mixup"].nunique() == TRIALS
    )

    best = json.loads((sweep_dir / "best.json").read_text())
    top = trials.loc[trials[BEST].idxmax()]
    assert best["trial_id"] == top["trial_id"] and best["epoch"] == top["best_epoch"]
    assert best["score"] == pytest.approx(top[BEST]) and best["config"]["lr"] == pytest.approx(top["lr"])
    assert best["trials"] == TRIALS and best["stopped_early"] == len(early)
    # The exported checkpoint is the best epoch's: its validation score is the sweep's best.
    metrics = json.loads((sweep_dir / "best" / "metrics.json").read_text())
    assert metrics["best_epoch"] == best["epoch"] and metrics["validation"][SCORE] == pytest.approx(best["score"])
    assert metrics["train"]["weight_decay"] == pytest.approx(top["weight_decay"]) and metrics["train"][
        "mixup"
    ] == pytest.approx(top["mixup"])
    assert (sweep_dir / "search_plane.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _ray_reports(sweep_dir) -> list[tuple[float, str, int, float]]:
    """Every (timestamp, trial id, epoch, score) Ray Tune recorded in its trials' result.json."""
    reports = []
    for result in sweep_dir.glob("_trial_*/result.json"):
        for line in result.read_text().splitlines():
            r = json.loads(line)
            reports.append((r["timestamp"], r["trial_id"], int(r["epoch"]), float(r[SCORE])))
    return sorted(reports)


def test_asha_stopped_exactly_the_trials_its_rule_stops(sweep):
    """ASHA's rule replayed on Ray's own records: at each rung (epochs 1 and 2 here: grace period 1,
    reduction factor 2, 3 epochs) a trial whose score is below the median of the scores recorded
    there before it is stopped, and no other trial is. Tune keeps no scheduler state across a
    resume, so the replay starts afresh where the resumed driver's experiment state begins."""
    import time

    sweep_dir, _, _ = sweep
    epochs, rungs = 3, (2, 1)
    starts = sorted(
        p.name.removeprefix("experiment_state-").removesuffix(".json")
        for p in sweep_dir.glob("experiment_state-*.json")
    )
    assert len(starts) == 2, starts  # the first driver's, then the resumed one's
    resumed_at = time.mktime(time.strptime(starts[1], "%Y-%m-%d_%H-%M-%S"))
    recorded: dict[int, dict[str, float]] = {r: {} for r in rungs}
    predicted, ran = {}, {}
    reset = False
    for stamp, trial, epoch, score in _ray_reports(sweep_dir):
        if stamp >= resumed_at and not reset:
            recorded, reset = {r: {} for r in rungs}, True
        ran[trial] = max(ran.get(trial, 0), epoch)
        if trial in predicted:
            continue
        for rung in rungs:  # as Ray's _Bracket.on_result: the highest rung reached, once per trial
            if epoch >= rung and trial in recorded[rung]:
                break
            if epoch < rung:
                continue
            before = list(recorded[rung].values())
            recorded[rung][trial] = score
            if before and score < np.percentile(before, 50):
                predicted[trial] = epoch
            break
    assert predicted, "ASHA stopped no trial: the test sweep no longer exercises it"
    assert {t: e for t, e in ran.items() if e < epochs} == predicted
    trials = pd.read_csv(sweep_dir / "trials.csv").set_index("trial_id")
    assert trials["epochs_run"].to_dict() == ran  # trials.csv agrees with Ray's records
    assert set(trials.index[trials["stop_reason"] == "stopped early by ASHA"]) == set(predicted)


def _labelled(features, split: str, names, labels: list[str]):
    """A split's segments whose track has a top genre in the extraction's manifest, and their classes."""
    t = pq.read_table(features / "features", columns=["track_id", "split", *names])
    t = t.filter(pc.equal(t["split"], split))
    genre = (
        manifest.read(str(features / "_manifest.parquet"))
        .tracks.set_index("track_id")["genre_top"]
        .reindex(t["track_id"].to_numpy())
    )
    keep = genre.notna().to_numpy()
    return t.filter(keep), np.array([labels.index(g) for g in genre[keep]])


def test_the_best_artifact_reproduces_the_recorded_best_score_on_validation(sweep, features):
    from mgc import metrics
    from mgc.inference import Predictor

    sweep_dir, _, _ = sweep
    best = json.loads((sweep_dir / "best.json").read_text())
    predictor = Predictor.load(best["artifact"])
    t, y = _labelled(features, "validation", predictor.inputs, predictor.meta["labels"])
    logprobs, _ = predictor({n: t[n].combine_chunks().to_numpy_ndarray() for n in predictor.inputs})
    scores = metrics.flat(metrics.evaluate(t["track_id"].to_numpy(), y, logprobs, len(predictor.meta["labels"])), "val")
    assert scores[best["metric"]] == pytest.approx(best["score"], abs=1e-9)


def test_a_killed_driver_resumes_without_rerunning_finished_trials(sweep):
    sweep_dir, finished_before, interrupted = sweep
    trials = pd.read_csv(sweep_dir / "trials.csv").set_index("trial_id")
    assert (trials.loc[finished_before, "attempts"] == 1).all(), trials["attempts"]
    assert trials.loc[interrupted, "attempts"] == 2  # restarted once, after the kill
    assert trials["attempts"].sum() == TRIALS + 1  # the interrupted trial twice


def test_the_best_artifact_loads_and_predicts(sweep, features):
    sweep_dir, _, _ = sweep
    best = json.loads((sweep_dir / "best.json").read_text())
    model, meta = artifact.load(best["artifact"])
    assert model.cfg.dropout == pytest.approx(best["config"]["dropout"])
    names = model.cfg.inputs
    t, y = _labelled(features, "test", names, meta["labels"])
    x = {n: torch.from_numpy(t[n].combine_chunks().to_numpy_ndarray().astype(np.float32)) for n in names}
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    accuracy = float((pred == y).mean())
    assert accuracy == pytest.approx(best["test"]["segment"]["accuracy"], abs=1e-6)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--lr-min", "1e-2", "--lr-max", "1e-3"], "learning-rate range .* empty or inverted"),
        (["--dropout-min", "0.5", "--dropout-max", "0.5"], "dropout range .* empty or inverted"),
        (["--metric", "val_track_auc"], "'val_track_auc' is not reported by training; choose one of train_loss"),
        (
            ["--metric", "val_track_ap_micro"],
            "'val_track_ap_micro' scores multi-label models; --target genre_top reports accuracy",
        ),
        (["--gpus-per-trial", "1"], "--gpus-per-trial 1 is more than the cluster's 0 GPUs"),
        (["--search", "grid"], "unknown --search 'grid'; choose one of random"),
        (["--grace-period", "5"], "grace-period <= --epochs"),
        (["--weight-decay-min", "0", "--weight-decay-max", "0.1"], "weight-decay range .* empty or inverted"),
        (["--model", "baseline"], "baseline is fitted in closed form: it has no learning rate or dropout to tune"),
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


def test_a_sweep_optimises_the_targets_score_by_default():
    """Micro average precision for a multi-label target (mgc.targets), macro F1 for genre_top."""
    assert SweepConfig(train=TrainConfig(features="f", target="genres_all")).metric == "val_track_ap_micro"
    assert SweepConfig(train=TrainConfig(features="f")).metric == SCORE == "val_track_f1_macro"
    assert SweepConfig(train=TrainConfig(features="f", target="genres"), metric="val_track_log_loss").mode == "min"


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
    sweep = SweepConfig(
        train=TrainConfig(features="f", model="cnn_lstm", storage_path=str(tmp_path)), dropout_per_layer=True
    )
    cfg = trial_config(sweep, {"lr": 1e-3, "dropout_lstm1": 0.15, "dropout_head": 0.4}, "t1", ("lstm1", "head"))
    assert cfg.dropout == (0.15, 0.4) and cfg.run_dir == str(tmp_path / "cnn_lstm" / "runs" / "t1")
    from mgc.models import build

    net = build(ModelConfig(name="cnn_lstm", channels=(4, 8), dense=(8,), lstm_units=(8, 8), dropout=cfg.dropout))
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.15, 0.4]
