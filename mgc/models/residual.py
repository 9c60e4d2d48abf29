"""The residual family of the FMA study by Maccani et al.: four residual blocks that compress
frequency to one band, then global pooling over time and the dense head (resnet2d, their 2-D
baseline), or one LSTM over time (crnn)."""

from __future__ import annotations

import torch
from torch import nn

from mgc.models.base import Architecture, register
from mgc.models.blocks import LSTMStack, ResidualEncoder2d


class ResNet2d(nn.Module):
    def __init__(self, cfg, gaps: tuple[float, ...]):
        super().__init__()
        self.trunk = ResidualEncoder2d(cfg.shapes[0], cfg.channels, cfg.kernel, cfg.name)
        self.size = self.trunk.channels

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.trunk(next(iter(x.values()))).mean(2)  # global average over time


class CRNN(nn.Module):
    def __init__(self, cfg, gaps: tuple[float, ...]):
        super().__init__()
        self.trunk = ResidualEncoder2d(cfg.shapes[0], cfg.channels, cfg.kernel, cfg.name)
        self.seq = LSTMStack(self.trunk.channels, cfg.lstm_units, gaps)
        self.size = self.seq.size

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.seq(self.trunk(next(iter(x.values()))).transpose(1, 2))


SPECTRA = (("logmel",), ("mfcc",))
BLOCKS = {"channels": (64, 128, 256, 512), "kernel": 3, "dense": (1024, 256, 64, 32)}

register(
    Architecture(
        "crnn",
        "residual conv encoder down to one frequency band, then an LSTM of 128",
        SPECTRA,
        CRNN,
        {**BLOCKS, "lstm_units": (128,)},
        lstm=True,
    )
)
register(
    Architecture(
        "resnet2d",
        "the crnn's residual encoder, global pooling over time, then the dense head",
        SPECTRA,
        ResNet2d,
        BLOCKS,
    )
)
