"""Segment- and track-level classification metrics (scikit-learn), as the literature reports
them. A track's prediction is the mean of its segments' log-probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.special import log_softmax
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, precision_recall_fscore_support

# The scalar scores of every split and level, as reported per epoch and written to metrics.json.
SCALARS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss")


def scores(y: np.ndarray, logprobs: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy, macro precision / recall / F1, log loss and the confusion matrix."""
    labels = list(range(n_classes))
    pred = logprobs.argmax(1)
    p, r, f, _ = precision_recall_fscore_support(y, pred, labels=labels, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "precision_macro": float(p),
        "recall_macro": float(r),
        "f1_macro": float(f),
        "log_loss": float(log_loss(y, np.exp(logprobs), labels=labels)),
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
        "n": int(len(y)),
    }


def pool(segment_logprobs: np.ndarray) -> np.ndarray:
    """A track's log-probabilities from its segments' [segments, classes]: the mean of their
    log-probabilities, renormalised. `track_level` applies the same rule to every track of a split."""
    return log_softmax(segment_logprobs.mean(0))


def track_level(track_ids: np.ndarray, y: np.ndarray, logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(track ids, labels, log-probabilities) per track: mean segment log-probs, renormalised."""
    frame = pd.DataFrame(logprobs)
    frame["track_id"], frame["y"] = track_ids, y
    g = frame.groupby("track_id", sort=True)
    mean = g[list(range(logprobs.shape[1]))].mean().to_numpy()
    return g.size().index.to_numpy(), g["y"].first().to_numpy(), log_softmax(mean, axis=1)


def evaluate(track_ids: np.ndarray, y: np.ndarray, logprobs: np.ndarray, n_classes: int) -> dict[str, dict[str, Any]]:
    """{'segment': scores, 'track': scores} for one split."""
    _, ty, tlp = track_level(track_ids, y, logprobs)
    return {"segment": scores(y, logprobs, n_classes), "track": scores(ty, tlp, n_classes)}


def flat(metrics: dict[str, dict[str, Any]], prefix: str) -> dict[str, float]:
    """{'val_track_f1_macro': ..., ...}: scalar metrics under one prefix, for Ray's reports."""
    return {f"{prefix}_{level}_{k}": v for level, m in metrics.items() for k, v in m.items() if isinstance(v, float)}
