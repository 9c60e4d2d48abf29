"""An LSTM stack over the MFCC sequence (or the log-mel one, with --input logmel)."""

from __future__ import annotations

import torch
from torch import nn

from mgc.models.base import Architecture, register
from mgc.models.blocks import LSTMStack


class LSTM(nn.Module):
    def __init__(self, cfg, gaps: tuple[float, ...]):
        super().__init__()
        self.seq = LSTMStack(cfg.shapes[0][0], cfg.lstm_units, gaps)
        self.size = self.seq.size

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.seq(next(iter(x.values())).transpose(1, 2))  # frames are the time steps


register(
    Architecture(
        "lstm",
        "five stacked LSTMs (128, 32, 32, 32, 32) over the MFCCs",
        (("mfcc",), ("logmel",)),
        LSTM,
        {"dense": (1024, 256, 64, 32), "lstm_units": (128, 32, 32, 32, 32)},
        lstm=True,
    )
)
