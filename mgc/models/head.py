"""A small head over a pretrained tagger's embedding (the transfer-learning model): the musicnn
vector of each segment, alone or beside the classical baseline's per-band statistics of the
spectra, through dropout and one hidden layer. Trained by the same loop and recipe as every
network; its embedding is the hidden layer."""

from __future__ import annotations

import torch
from torch import nn

from mgc.models.base import Architecture, register
from mgc.models.baseline import summary, summary_size


class Vectors(nn.Module):
    """The normalised inputs' summary (mgc.models.baseline): the musicnn vector, then each
    spectrum's per-band mean and standard deviation over time."""

    def __init__(self, cfg, gaps: tuple[float, ...]):
        super().__init__()
        self.size = summary_size(cfg.shapes)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return summary(x)


register(Architecture("head", "dropout and one dense layer of 128 over the musicnn embedding and tags (transfer), alone or with the log-mel and MFCC statistics",
                      (("musicnn",), ("musicnn", "logmel", "mfcc")), Vectors, {"dense": (128,)}))  # fmt: skip
