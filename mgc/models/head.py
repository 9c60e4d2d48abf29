"""A small head over a pretrained tagger's embedding (the transfer-learning model): the musicnn
vector of each segment, alone or beside the classical baseline's per-band statistics of the
spectra, standardised, then two paths added in the logits. A linear one, the baseline's logistic
regression on the same input, fitted in closed form before training and kept as it is; and dropout
and one hidden layer, whose output starts at zero and learns what the regression misses. Training
so starts from the baseline rather than from noise, which a one-layer head on a few hundred
segments does not reliably climb out of (bench/README.md, "The hard corpus"). Its embedding is
the hidden layer."""

from __future__ import annotations

from typing import Any

from mgc.models.base import Architecture, register
from mgc.models.baseline import Statistics, fit_linear


def start(net, train: Any, multilabel: bool = False) -> dict[str, float]:
    """The linear path and the standardisation, fitted as the baseline's (mgc.models.baseline)."""
    return fit_linear(net, train, multilabel, net.skip)


register(
    Architecture(
        "head",
        "the baseline's logistic regression plus dropout and a dense layer of 128 trained from it, over the musicnn "
        "embedding and tags (transfer), alone or with the log-mel and MFCC statistics",
        (("musicnn",), ("musicnn", "logmel", "mfcc")),
        Statistics,
        {"dense": (128,)},
        start=start,
    )
)
