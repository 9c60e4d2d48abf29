"""Segment- and track-level classification metrics (scikit-learn), as the literature reports
them, and calibration. A track's prediction is the mean of its segments' log-probabilities,
divided by the model's temperature (fitted on validation after training) and renormalised.

Multi-label (a sigmoid per genre): a track's probability of a genre is the mean of its segments'
sigmoid(logit / temperature), made consistent with the genre tree (mgc.targets.consistent);
scores are average precision and ROC-AUC over genres, F1 at per-genre thresholds chosen on
validation (each genre's own, shrunk towards a common one by its support there), and the
top-genre accuracy read from the root genres, beside the single-label ones' names (accuracy:
top genre; precision/recall/F1: at the thresholds; log loss: binary; ECE: over every track-genre
pair), so that tables, curves and Tune read either."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, log_softmax
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)

from mgc.targets import consistent, roots

# The scalar scores of every split and level, as reported per epoch and written to metrics.json.
SCALARS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss", "ece")
# ... and those of a multi-label model besides.
MULTILABEL_SCALARS = ("ap_micro", "ap_macro", "auc_micro", "auc_macro", "f1_micro")
ECE_BINS = 15


def scores(y: np.ndarray, logprobs: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy, macro precision / recall / F1, log loss and the confusion matrix."""
    logprobs = calibrate(logprobs, 1.0)  # a float64 distribution: float32 rows miss 1 by more than scikit-learn allows
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
    conf = np.exp(calibrate(logprobs, 1.0).max(1))
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


# How the temperature is chosen (metrics.json and the report quote it). The validation log loss
# alone falls without end as T -> 0 wherever the model gets every validation track right, and a
# small split says little: T is the most probable given the validation tracks under a log-normal
# prior centred on 1, and no lower than keeps their mean confidence at the accuracy Laplace's rule
# of succession expects of them (bench/README.md, "Calibration": the rules compared).
TEMPERATURE_RULE = (
    "MAP of the validation tracks' log loss, log T ~ N(0, 0.5^2); mean confidence <= (right + 1) / (n + 2)"
)
LOG_T_PRIOR_SD = 0.5
LOG_T_BOUNDS = (-3.0, 3.0)  # T in [0.05, 20]


def _choose_temperature(loss, confidence, tracks: int, right: int, n: int) -> dict[str, Any]:
    """T in LOG_T_BOUNDS minimising tracks x `loss(T)` (a mean log loss) + the prior's
    (log T)^2 / (2 sd^2), raised where needed so that `confidence(T)` (the mean confidence) is at
    most (right + 1) / (n + 2) of the n predictions scored, at T and every higher T tried (a
    pooled mean of sigmoids need not fall as T rises everywhere)."""
    from scipy.optimize import brentq, minimize_scalar

    def objective(s: float) -> float:
        return tracks * loss(float(np.exp(s))) + s * s / (2 * LOG_T_PRIOR_SD**2)

    fitted = float(np.exp(minimize_scalar(objective, bounds=LOG_T_BOUNDS, method="bounded").x))
    expected = (right + 1) / (n + 2)
    grid = np.linspace(*LOG_T_BOUNDS, 121)  # log T in steps of 0.05
    over = np.array([confidence(float(np.exp(s))) > expected for s in grid])
    if not over.any():
        floor = float(np.exp(grid[0]))
    elif over[-1]:
        floor = float(np.exp(grid[-1]))
    else:
        i = int(np.flatnonzero(over)[-1])  # the last grid T still too confident; the floor is past it
        floor = float(
            np.exp(brentq(lambda s: confidence(float(np.exp(s))) - expected, grid[i], grid[i + 1], xtol=1e-6))
        )
    return {
        "temperature": max(fitted, floor),
        "fitted": fitted,
        "floor": floor,
        "floored": floor > fitted,
        "expected_accuracy": expected,
        "right": int(right),
        "n": int(n),
        "rule": TEMPERATURE_RULE,
    }


def fit_temperature(y: np.ndarray, logprobs: np.ndarray) -> dict[str, Any]:
    """The temperature T for log_softmax(logprobs / T) (Guo et al. 2017), one number fitted on the
    validation split's tracks that leaves every prediction's ranking as it is, by TEMPERATURE_RULE
    ('fitted': the prior's MAP, 'floor': the confidence rule's). Returns {'temperature', 'fitted',
    'floor', 'floored', 'expected_accuracy', 'right', 'n', 'rule'}."""
    labels = list(range(logprobs.shape[1]))
    lp = np.asarray(logprobs, dtype=np.float64)

    def loss(t: float) -> float:
        return log_loss(y, np.exp(calibrate(lp, t)), labels=labels)

    def confidence(t: float) -> float:
        return float(np.exp(calibrate(lp, t).max(1)).mean())

    return _choose_temperature(loss, confidence, len(y), int((lp.argmax(1) == y).sum()), len(y))


def calibrate(logprobs: np.ndarray, temperature: float) -> np.ndarray:
    """Log-probabilities [n, classes] divided by the temperature and renormalised, in float64."""
    return log_softmax(np.asarray(logprobs, dtype=np.float64) / temperature, axis=-1)


def pool(segment_logprobs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """A track's log-probabilities from its segments' [segments, classes]: the mean of their
    log-probabilities over `temperature`, renormalised. `track_level` applies the same rule to
    every track of a split."""
    return calibrate(segment_logprobs.mean(0), temperature)


def track_level(
    track_ids: np.ndarray, y: np.ndarray, logprobs: np.ndarray, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(track ids, labels, log-probabilities) per track, by `pool`'s rule."""
    frame = pd.DataFrame(logprobs)
    frame["track_id"], frame["y"] = track_ids, y
    g = frame.groupby("track_id", sort=True)
    mean = g[list(range(logprobs.shape[1]))].mean().to_numpy()
    return g.size().index.to_numpy(), g["y"].first().to_numpy(), calibrate(mean, temperature)


def evaluate(
    track_ids: np.ndarray, y: np.ndarray, logprobs: np.ndarray, n_classes: int, temperature: float = 1.0
) -> dict[str, dict[str, Any]]:
    """{'segment': scores, 'track': scores} for one split; the temperature applies to tracks."""
    _, ty, tlp = track_level(track_ids, y, logprobs, temperature)
    return {"segment": scores(y, logprobs, n_classes), "track": scores(ty, tlp, n_classes)}


def flat(metrics: dict[str, dict[str, Any]], prefix: str) -> dict[str, float]:
    """{'val_track_f1_macro': ..., ...}: scalar metrics under one prefix, for Ray's reports."""
    return {f"{prefix}_{level}_{k}": v for level, m in metrics.items() for k, v in m.items() if isinstance(v, float)}


# ---------------------------------------------------------------------------------------------
# Multi-label


def logits(logsigmoid: np.ndarray) -> np.ndarray:
    """The logits behind log-sigmoid outputs (what the inference form gives a multi-label model)."""
    ls = np.asarray(logsigmoid, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.clip(ls - np.log(-np.expm1(ls)), -50.0, 50.0)  # log p - log(1 - p)


def pool_multilabel(segment_logsigmoid: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """A track's genre probabilities from its segments' log-sigmoids [segments, genres]: the mean
    of sigmoid(logit / temperature). `track_level_multilabel` applies it to every track of a split."""
    return expit(logits(segment_logsigmoid) / temperature).mean(0)


def track_level_multilabel(
    track_ids: np.ndarray, y: np.ndarray, logsigmoid: np.ndarray, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(track ids, targets, probabilities) per track, by `pool_multilabel`'s rule."""
    frame = pd.DataFrame(expit(logits(logsigmoid) / temperature))
    frame["track_id"] = track_ids
    g = frame.groupby("track_id", sort=True)
    first = (
        pd.DataFrame({"track_id": track_ids, "row": np.arange(len(track_ids))})
        .groupby("track_id", sort=True)["row"]
        .first()
        .to_numpy()
    )
    return g.size().index.to_numpy(), y[first], g.mean().to_numpy()


def binary_log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy over every (track, genre)."""
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def binary_reliability(y: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """`reliability` of every (track, genre) probability: mean probability and share positive per bin."""
    p, t = probs.ravel(), y.ravel().astype(float)
    which = np.clip(np.ceil(p * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        return {
            "confidence": np.bincount(which, p, bins) / count,
            "accuracy": np.bincount(which, t, bins) / count,
            "count": count,
        }


def binary_ece(y: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    r = binary_reliability(y, probs, bins)
    seen = r["count"] > 0
    return float(np.sum(r["count"][seen] * np.abs(r["confidence"][seen] - r["accuracy"][seen])) / max(1, y.size))


# A genre's F1-best threshold on a handful of validation positives is mostly noise (FMA's rarer
# genres have two or three there): each is pulled towards the one threshold best for all genres
# together, as if that one stood on THRESHOLD_PRIOR positives of the genre's own.
THRESHOLD_PRIOR = 10


def _best_f1_cut(y: np.ndarray, probs: np.ndarray) -> float:
    precision, recall, cut = precision_recall_curve(y, probs)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(cut[int(np.argmax(f1))])


def thresholds(y: np.ndarray, probs: np.ndarray) -> list[float]:
    """Per genre, a probability threshold chosen on these (validation) tracks: the one that
    maximises the genre's F1, shrunk towards the one that maximises micro F1 over every genre,
    (n * own + THRESHOLD_PRIOR * common) / (n + THRESHOLD_PRIOR) for a genre with n positives here
    (the common one where it has none; 0.5 where no genre has any)."""
    if not y.any():
        return [0.5] * y.shape[1]
    common = _best_f1_cut(y.ravel(), probs.ravel())
    out = []
    for c in range(y.shape[1]):
        n = float(y[:, c].sum())
        own = _best_f1_cut(y[:, c], probs[:, c]) if n else common
        out.append((n * own + THRESHOLD_PRIOR * common) / (n + THRESHOLD_PRIOR))
    return out


def multilabel_scores(
    y: np.ndarray,
    probs: np.ndarray,
    tops: np.ndarray,
    roots: list[int],
    cut: list[float] | None = None,
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """A multi-label model's scores on targets y [n, genres] (0/1) and probabilities; `tops` the
    class of each row's genre_top (-1: none), read against the argmax over the `roots`; F1 at
    thresholds `cut` (0.5 where None); per genre AP and support if `classes` are named."""
    y = y.astype(int)
    cut_arr = np.asarray(cut if cut is not None else [0.5] * y.shape[1])
    pred = probs >= cut_arr
    has = y.sum(0) > 0
    both = has & (y.sum(0) < len(y))
    out: dict[str, Any] = {
        "ap_micro": float(average_precision_score(y, probs, average="micro")) if y.any() else float("nan"),
        "ap_macro": float(average_precision_score(y[:, has], probs[:, has], average="macro"))
        if has.any()
        else float("nan"),
        "auc_micro": float(roc_auc_score(y.ravel(), probs.ravel())) if 0 < y.sum() < y.size else float("nan"),
        "auc_macro": float(roc_auc_score(y[:, both], probs[:, both], average="macro")) if both.any() else float("nan"),
        "f1_micro": float(f1_score(y, pred, average="micro", zero_division=0)),
    }
    p, r, f, _ = precision_recall_fscore_support(y, pred, labels=np.flatnonzero(has), average="macro", zero_division=0)
    rows = tops >= 0
    top_pred = np.asarray(roots)[probs[rows][:, roots].argmax(1)] if rows.any() and roots else np.zeros(0, int)
    out |= {
        "accuracy": float(accuracy_score(tops[rows], top_pred)) if rows.any() else float("nan"),
        "precision_macro": float(p),
        "recall_macro": float(r),
        "f1_macro": float(f),
        "log_loss": binary_log_loss(y, probs),
        "ece": binary_ece(y, probs),
        "confusion": confusion_matrix(tops[rows], top_pred, labels=roots).tolist() if rows.any() else [],
        "n": int(len(y)),
        "n_top": int(rows.sum()),
    }
    if classes is not None:
        out["per_genre"] = [
            {
                "genre": classes[c],
                "ap": float(average_precision_score(y[:, c], probs[:, c])) if has[c] else None,
                "support": int(y[:, c].sum()),
                "threshold": float(cut_arr[c]),
            }
            for c in range(y.shape[1])
        ]
    return out


def evaluate_multilabel(
    track_ids: np.ndarray,
    y: np.ndarray,
    logsigmoid: np.ndarray,
    tops: np.ndarray,
    parents: list[int],
    temperature: float = 1.0,
    cut: list[float] | None = None,
    classes: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """{'segment': scores, 'track': scores} of a multi-label model on one split; predictions made
    consistent with the tree (`parents`), the temperature applied to tracks."""
    top = roots(parents)
    seg = consistent(np.exp(logsigmoid.astype(np.float64)), parents)
    tracks = track_probs(logsigmoid, temperature, True, parents, track_ids=track_ids, y=y)
    tids = np.unique(track_ids)  # track_probs' order
    ttops = pd.Series(tops, index=track_ids).groupby(level=0).first().reindex(tids).to_numpy()
    return {
        "segment": multilabel_scores(y, seg, tops, top, cut, classes),
        "track": multilabel_scores(tracks.y, tracks.probs, ttops, top, cut, classes),
    }


def fit_temperature_multilabel(track_ids: np.ndarray, y: np.ndarray, logsigmoid: np.ndarray) -> dict[str, Any]:
    """The temperature T for the tracks' pooled sigmoid(logit / T) on the validation split, one
    number for every genre, by TEMPERATURE_RULE: the tracks' binary log loss, the confidence over
    track-genre pairs (a pair is right where its probability is on its target's side of 0.5)."""
    _, ty, _ = track_level_multilabel(track_ids, y, logsigmoid)
    # track_level_multilabel's pooling, with the grouping done once for the many T tried.
    _, inverse, counts = np.unique(track_ids, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    starts, z = np.concatenate([[0], np.cumsum(counts)[:-1]]), logits(logsigmoid)[order]

    def pooled(t: float) -> np.ndarray:
        return np.add.reduceat(expit(z / t), starts, axis=0) / counts[:, None]

    def confidence(t: float) -> float:
        p = pooled(t)
        return float(np.maximum(p, 1 - p).mean())

    right = int(((pooled(1.0) >= 0.5) == (ty >= 0.5)).sum())
    return _choose_temperature(lambda t: binary_log_loss(ty, pooled(t)), confidence, len(ty), right, ty.size)


@dataclass
class Tracks:
    """`track_probs`' result: per track its target (of its first segment; None for one track's
    segments), probabilities and the `k` most probable genres among the candidates, best first."""

    y: np.ndarray | None
    probs: np.ndarray
    top: np.ndarray


def track_probs(
    logprobs: np.ndarray,
    temperature: float = 1.0,
    multilabel: bool = False,
    parents: list[int] | None = None,
    k: int = 1,
    track_ids: np.ndarray | None = None,
    y: np.ndarray | None = None,
) -> Tracks:
    """Segments' log-probabilities [segments, classes] (log-sigmoids for `multilabel`) pooled to
    tracks, as labelling and training's metrics read them. Single-label: the segments' mean
    log-probability over `temperature`, renormalised (`pool`). Multi-label: the mean of
    sigmoid(logit / temperature), made consistent with the tree `parents` (`pool_multilabel`),
    the top genres read from its roots; without a tree (the pretrained tagger, whose temperature is
    1), each tag's mean segment probability, the top genres read from every class.

    With `track_ids` (one per segment) and the segments' targets `y`: every track, in id order
    (`track_level`'s grouping), probs [tracks, classes] and top [tracks, k]. Without:
    the segments are one track's, probs [classes] and top [k]."""
    if track_ids is None:
        if not multilabel:
            probs = np.exp(pool(logprobs, temperature))
        elif parents is None:
            probs = np.exp(logprobs).mean(0)
        else:
            probs = consistent(pool_multilabel(logprobs, temperature)[None], parents)[0]
    elif not multilabel:
        _, y, lp = track_level(track_ids, y, logprobs, temperature)
        probs = np.exp(lp)
    else:
        _, y, probs = track_level_multilabel(track_ids, y, logprobs, temperature)
        probs = probs if parents is None else consistent(probs, parents)
    candidates = top_candidates(probs.shape[-1], multilabel, parents)
    return Tracks(y, probs, candidates[np.argsort(-probs[..., candidates], axis=-1)[..., :k]])


def top_candidates(n_classes: int, multilabel: bool, parents: list[int] | None) -> np.ndarray:
    """The classes a top genre is read from: a multi-label tree's roots, else every class."""
    return np.asarray(roots(parents)) if multilabel and parents is not None else np.arange(n_classes)
