"""PNG figures for runs and sweeps: confusion matrices, learning curves, reliability diagrams, a
multi-label model's AP per genre, the search plane (matplotlib, no display)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mgc import storage  # noqa: E402


def _save(fig, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    storage.write_bytes(path, buf.getvalue())


def confusion_matrix(cm: list[list[int]], labels: list[str], path: str, title: str) -> None:
    """Row-normalised confusion matrix with counts in the cells."""
    cm_arr = np.asarray(cm, dtype=float)
    share = cm_arr / np.maximum(cm_arr.sum(1, keepdims=True), 1)
    size = 1.0 + 0.55 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm_arr[i, j]:
                ax.text(
                    j,
                    i,
                    int(cm_arr[i, j]),
                    ha="center",
                    va="center",
                    color="white" if share[i, j] > 0.5 else "black",
                    fontsize=8,
                )
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    _save(fig, path)


def genre_ap(per_genre: list[dict[str, Any]], path: str, title: str, shown: int = 15) -> None:
    """A multi-label model's average precision per genre (the `shown` best and worst genres with
    test positives), each bar with its support."""
    rows = sorted((g for g in per_genre if g["ap"] is not None), key=lambda g: -g["ap"])
    rows = rows if len(rows) <= 2 * shown else rows[:shown] + rows[-shown:]
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.28 * len(rows)))
    y = np.arange(len(rows))[::-1]
    ax.barh(y, [g["ap"] for g in rows], color="tab:blue")
    ax.set_yticks(y, [f"{g['genre']} ({g['support']})" for g in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision (test tracks; support in brackets)")
    ax.set_title(title)
    _save(fig, path)


def learning_curves(history: list[dict[str, Any]], path: str, title: str) -> None:
    """Train and validation loss, and validation accuracy / macro F1 by epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    a.plot(epochs, [h["val_segment_log_loss"] for h in history], marker="o", label="val segment log loss")
    a.plot(epochs, [h["val_track_log_loss"] for h in history], marker="o", label="val track log loss")
    a.set_xlabel("epoch")
    a.legend()
    for key, label in (
        ("val_segment_accuracy", "val segment accuracy"),
        ("val_track_accuracy", "val track accuracy"),
        ("val_track_f1_macro", "val track macro F1"),
    ):
        b.plot(epochs, [h[key] for h in history], marker="o", label=label)
    b.set_ylim(0, 1.02)
    b.set_xlabel("epoch")
    b.legend(loc="lower right")
    fig.suptitle(title)
    _save(fig, path)


def search_plane(lr, dropout, score, early, best: int, path: str, metric: str, dropout_label: str) -> None:
    """Each trial at its learning rate (log) and dropout, coloured by its best score; trials ASHA
    stopped early are crosses, the best trial is ringed."""
    lr, dropout, score, early = (np.asarray(v) for v in (lr, dropout, score, early))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    finite = np.isfinite(score.astype(float))
    vmin, vmax = (np.nanmin(score[finite]), np.nanmax(score[finite])) if finite.any() else (0, 1)
    for mask, marker, label in ((~early, "o", "ran every epoch"), (early, "X", "stopped early (ASHA)")):
        if mask.any():
            sc = ax.scatter(
                lr[mask],
                dropout[mask],
                c=score[mask].astype(float),
                cmap="viridis",
                vmin=vmin,
                vmax=vmax,
                marker=marker,
                s=70,
                edgecolors="black",
                linewidths=0.5,
                label=label,
            )
    ax.scatter([lr[best]], [dropout[best]], s=260, facecolors="none", edgecolors="red", linewidths=1.5, label="best")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(dropout_label)
    ax.legend(loc="best", fontsize=8)
    fig.colorbar(sc, ax=ax, label=f"best {metric}")
    ax.set_title(f"{len(lr)} trials")
    _save(fig, path)


def reliability(curves: dict[str, dict[str, np.ndarray]], path: str, title: str, multilabel: bool = False) -> None:
    """Reliability diagram: accuracy against confidence per bin (mgc.metrics.reliability), one
    line per named curve, beside the diagonal of perfect calibration; `multilabel`: every
    track-genre probability against how often that genre is listed."""
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    for name, r in curves.items():
        seen = r["count"] > 0
        ax.plot(r["confidence"][seen], r["accuracy"][seen], marker="o", label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("probability of a genre" if multilabel else "confidence (top probability)")
    ax.set_ylabel("share of tracks listing it" if multilabel else "accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title)
    _save(fig, path)
