"""After training: the best checkpoint exported as an artifact with its calibration fitted on
validation, the test split scored once, the run's outputs written; and what compares runs."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mgc import artifact, metrics, plots, storage, targets
from mgc.errors import MgcError
from mgc.models import build
from mgc.train.config import Prepared, TrainConfig
from mgc.train.data import batch_dtypes, dataset, evaluate, predict


def split_predictions(cfg: TrainConfig, prep: Prepared, net, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(track_ids, targets, segment log-probabilities) of a split, by `net` on the CPU."""
    import torch

    multilabel = prep.target.multilabel
    batches = dataset(cfg.features, split, prep.target, list(prep.model.inputs)).iter_torch_batches(
        batch_size=256, **batch_dtypes(prep.model, multilabel)
    )
    return predict(net, batches, torch.device("cpu"), multilabel)


def _tensor(x: np.ndarray) -> pa.Array:
    return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(x, dtype=np.float32))


def _track_probs(
    target: targets.Target, ids: np.ndarray, ys: np.ndarray, lps: np.ndarray, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(targets, probabilities) per track, as labelling gives them (multi-label: tree-consistent)."""
    tracks = metrics.track_probs(lps, temperature, target.multilabel, target.parents, track_ids=ids, y=ys)
    return tracks.y, tracks.probs


def _calibration(target: targets.Target, y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """ECE, log loss and the reliability curve of track probabilities."""
    if target.multilabel:
        return {
            "ece": metrics.binary_ece(y, probs),
            "log_loss": metrics.binary_log_loss(y, probs),
            "curve": metrics.binary_reliability(y, probs),
        }
    lp = np.log(np.maximum(probs.astype(np.float64), 1e-300))  # in float32 the floor would be 0
    return {
        "ece": metrics.ece(y, lp),
        "log_loss": metrics.scores(y, lp, len(target.classes))["log_loss"],
        "curve": metrics.reliability(y, lp),
    }


def finish(
    cfg: TrainConfig, prep: Prepared, best: dict[str, Any], best_metrics: dict[str, Any], last: dict[str, Any]
) -> dict[str, Any]:
    """Export the `best` checkpointed state as an artifact into cfg.run_dir, with a temperature
    (and, multi-label, per-genre thresholds) fitted on the validation split's tracks; score the
    test split once, write the outputs; `last` is the latest state (for the whole history)."""
    history, target, run_dir = last["history"], prep.target, cfg.run_dir
    net = build(prep.model)
    net.load_state_dict(best["model"])
    val = split_predictions(cfg, prep, net, "validation")
    fitted, cut, extra = _fit_calibration(target, val)
    temperature = fitted["temperature"]
    artifact.save(
        storage.join(run_dir, "model"),
        net,
        prep.features,
        prep.labels,
        {"epoch": best["epoch"], "run": cfg.run_name, "temperature": temperature, **extra},
    )

    ids, ys, lps = split_predictions(cfg, prep, net, "test")
    test = evaluate(target, ids, ys, lps, temperature, cut)
    calibration, curves = _calibrations(target, {"validation": val, "test": (ids, ys, lps)}, fitted)
    # Single-label: `label`, the class index; multi-label: `target`, the multi-hot rows.
    predictions = pa.table(
        {"track_id": ids, **({"target": _tensor(ys)} if target.multilabel else {"label": ys}), "logprobs": _tensor(lps)}
    )
    storage.write_parquet(predictions, storage.join(run_dir, "test_predictions.parquet"))

    out = {
        "run": cfg.run_name,
        "model": prep.model.to_dict(),
        "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("progress",)},
        "target": cfg.target,
        "labels": prep.labels,
        "segments": prep.segments,
        "tracks": prep.tracks,
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "resumed_at": list(last["resumed_at"]),  # epochs resumed from a checkpoint (lost worker, re-run)
        "validation": {k: v for k, v in best_metrics.items() if k.startswith("val_")},
        "test": test,  # track level calibrated by the temperature, as labelling outputs it
        "calibration": calibration,
        "stopped_early": bool(history[-1].get("early_stop")),
        "parameters": int(sum(p.numel() for p in net.parameters())),
    }
    storage.write_json(storage.join(run_dir, "metrics.json"), out)
    storage.write_json(storage.join(run_dir, "history.json"), history)
    _plot(cfg, prep, test, history, curves)
    return out


def _calibrations(
    target: targets.Target, splits: dict[str, tuple], fitted: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """How the `fitted` temperature changed each split's calibration (ECE; log loss of the test
    split), and the test tracks' reliability curves before and after it."""
    temperature = fitted["temperature"]
    before = {split: _calibration(target, *_track_probs(target, *p)) for split, p in splits.items()}
    after = {split: _calibration(target, *_track_probs(target, *p, temperature)) for split, p in splits.items()}
    calibration = {
        "temperature": temperature,
        "temperature_fit": {k: v for k, v in fitted.items() if k != "temperature"},  # how T was chosen
        **{split: {"ece_before": before[split]["ece"], "ece_after": after[split]["ece"]} for split in splits},
    }
    calibration["test"] |= {"log_loss_before": before["test"]["log_loss"], "log_loss_after": after["test"]["log_loss"]}
    return calibration, {"before": before["test"]["curve"], f"after (T = {temperature:.2f})": after["test"]["curve"]}


def _fit_calibration(target: targets.Target, val) -> tuple[dict[str, Any], list[float] | None, dict[str, Any]]:
    """The temperature fitted on the validation predictions `val` (with how it was chosen), the
    per-genre thresholds of a multi-label model, and what the artifact stores beside them."""
    if not target.multilabel:
        return metrics.fit_temperature(*metrics.track_level(*val)[1:]), None, {}
    fitted = metrics.fit_temperature_multilabel(*val)
    cut = metrics.thresholds(*_track_probs(target, *val, fitted["temperature"]))
    return fitted, cut, {**target.meta(), "thresholds": cut}


def _plot(cfg: TrainConfig, prep: Prepared, test: dict[str, Any], history: list, curves: dict[str, Any]) -> None:
    """The run's figures: the confusion matrix of top genres, the learning curves, the
    reliability `curves` of the test tracks and, multi-label, the AP per genre."""
    target, run_dir = prep.target, cfg.run_dir
    tops = [prep.labels[r] for r in target.roots]  # a multi-label model's top genres: its roots
    if test["track"]["confusion"]:  # none where no test track's genre_top is a class (--target genres)
        plots.confusion_matrix(
            test["track"]["confusion"],
            tops,
            storage.join(run_dir, "confusion_matrix.png"),
            f"{cfg.run_name}: test, track level" + (", top genres" if target.multilabel else ""),
        )
    plots.learning_curves(history, storage.join(run_dir, "learning_curves.png"), cfg.run_name)
    plots.reliability(
        curves, storage.join(run_dir, "reliability.png"), f"{cfg.run_name}: test tracks", target.multilabel
    )
    if target.multilabel:
        plots.genre_ap(
            test["track"]["per_genre"],
            storage.join(run_dir, "genre_ap.png"),
            f"{cfg.run_name}: test AP per genre (top-genre accuracy {test['track']['accuracy']:.3f})",
        )


def export_best(runs: list[dict[str, Any]], storage_path: str, name: str = "best") -> dict[str, Any]:
    """Copy the artifact of the run with the best validation score (the target's: macro F1 of
    tracks, micro AP multi-label) to <storage_path>/<name>/model, with best.json beside it
    (the run, its score, every candidate's); returns best.json."""
    kinds = {r.get("target", "genre_top") for r in runs}
    if len(kinds) > 1:
        raise MgcError(
            "--export-best compares models on one target's validation score; these runs have "
            + ", ".join(sorted(kinds))
        )
    score = targets.score(kinds.pop())
    scored = [r for r in runs if not math.isnan(r["validation"][score])]
    if not scored:
        raise MgcError(f"--export-best: no run has a {score} to compare (no validation positives?)")
    top = max(scored, key=lambda r: r["validation"][score])
    src, dest = storage.join(storage_path, top["run"]), storage.join(storage_path, name)
    for f in ("weights.pt", "model.json"):  # model.json last: it is what marks an artifact as there
        storage.write_bytes(storage.join(dest, "model", f), storage.read_bytes(storage.join(src, "model", f)))
    best = {
        "run": top["run"],
        "model": top["model"]["name"],
        "metric": score,
        "score": top["validation"][score],
        "artifact": storage.join(dest, "model"),
        "candidates": {r["run"]: r["validation"][score] for r in scored},
    }
    storage.write_json(storage.join(dest, "best.json"), best)
    return best


def compare(runs: list[dict[str, Any]], storage_path: str | None = None) -> pd.DataFrame:
    """The studies' table: one row per model, test metrics at segment and track level; written
    as comparison.csv and comparison.md under `storage_path` if given."""
    rows = []
    for r in runs:
        row = {
            "model": r["model"]["name"],
            "run": r["run"],
            "target": r.get("target", "genre_top"),
            "parameters": r["parameters"],
            "best_epoch": r["best_epoch"],
        }
        for level in ("segment", "track"):
            for k in metrics.SCALARS + metrics.MULTILABEL_SCALARS:  # multi-label runs' accuracy: the top genre's
                if k in r["test"][level]:
                    row[f"{level}_{k}"] = round(r["test"][level][k], 4)
        rows.append(row)
    table = pd.DataFrame(rows)
    if storage_path is not None:
        storage.write_bytes(storage.join(storage_path, "comparison.csv"), table.to_csv(index=False).encode())
        storage.write_bytes(
            storage.join(storage_path, "comparison.md"), (table.to_markdown(index=False) + "\n").encode()
        )
    return table
