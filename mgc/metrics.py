"""Segment- and track-level classification metrics (scikit-learn), as the literature reports
them, and calibration. A track's prediction is the mean of its segments' log-probabilities,
divided by the model's temperature (fitted on validation after training) and renormalised."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.special import log_softmax
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, precision_recall_fscore_support

# The scalar scores of every split and level, as reported per epoch and written to metrics.json.
SCALARS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss", "ece")
ECE_BINS = 15


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
        "ece": ece(y, logprobs),
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
        "n": int(len(y)),
    }


def reliability(y: np.ndarray, logprobs: np.ndarray, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per confidence bin (equal widths over [0, 1]) of the top prediction: mean confidence,
    accuracy and count (bins without predictions hold NaN and 0)."""
    conf = np.exp(logprobs.max(1))
    correct = logprobs.argmax(1) == y
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        return {
            "confidence": np.bincount(which, conf, bins) / count,
            "accuracy": np.bincount(which, correct.astype(float), bins) / count,
            "count": count,
        }


def ece(y: np.ndarray, logprobs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the count-weighted mean gap between confidence and accuracy."""
    r = reliability(y, logprobs, bins)
    seen = r["count"] > 0
    return float(np.sum(r["count"][seen] * np.abs(r["confidence"][seen] - r["accuracy"][seen])) / max(1, len(y)))


def fit_temperature(y: np.ndarray, logprobs: np.ndarray) -> float:
    """The temperature T minimising the log loss of log_softmax(logprobs / T) (Guo et al. 2017):
    one number, fitted on the validation split's tracks, that leaves every prediction's ranking
    as it is."""
    from scipy.optimize import minimize_scalar

    labels = list(range(logprobs.shape[1]))

    def loss(log_t: float) -> float:
        return log_loss(y, np.exp(calibrate(logprobs, np.exp(log_t))), labels=labels)

    # Bounded to [0.05, 20]: a validation split the model gets all right pushes T towards 0.
    return float(np.exp(minimize_scalar(loss, bounds=(-3.0, 3.0), method="bounded").x))


def calibrate(logprobs: np.ndarray, temperature: float) -> np.ndarray:
    """Log-probabilities [n, classes] divided by the temperature and renormalised."""
    return log_softmax(logprobs / temperature, axis=-1)


def pool(segment_logprobs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """A track's log-probabilities from its segments' [segments, classes]: the mean of their
    log-probabilities over `temperature`, renormalised. `track_level` applies the same rule to
    every track of a split."""
    return calibrate(segment_logprobs.mean(0), temperature)


def track_level(track_ids: np.ndarray, y: np.ndarray, logprobs: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(track ids, labels, log-probabilities) per track, by `pool`'s rule."""
    frame = pd.DataFrame(logprobs)
    frame["track_id"], frame["y"] = track_ids, y
    g = frame.groupby("track_id", sort=True)
    mean = g[list(range(logprobs.shape[1]))].mean().to_numpy()
    return g.size().index.to_numpy(), g["y"].first().to_numpy(), calibrate(mean, temperature)


def evaluate(track_ids: np.ndarray, y: np.ndarray, logprobs: np.ndarray, n_classes: int, temperature: float = 1.0) -> dict[str, dict[str, Any]]:
    """{'segment': scores, 'track': scores} for one split; the temperature applies to tracks."""
    _, ty, tlp = track_level(track_ids, y, logprobs, temperature)
    return {"segment": scores(y, logprobs, n_classes), "track": scores(ty, tlp, n_classes)}


def flat(metrics: dict[str, dict[str, Any]], prefix: str) -> dict[str, float]:
    """{'val_track_f1_macro': ..., ...}: scalar metrics under one prefix, for Ray's reports."""
    return {f"{prefix}_{level}_{k}": v for level, m in metrics.items() for k, v in m.items() if isinstance(v, float)}
