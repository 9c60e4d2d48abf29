"""The CNN family: four conv blocks over a spectrum, then the dense head (cnn), or time as the
sequence axis of stacked LSTMs (cnn_lstm; cnn_bilstm with the first LSTM bidirectional). They read
the log-mel spectrogram, or MFCCs with --input mfcc (the dense head follows the input's shape)."""

from __future__ import annotations

import torch
from torch import nn

from mgc.errors import MgcError
from mgc.models.base import Architecture, register
from mgc.models.blocks import LSTMStack, conv2d_block


class ConvTrunk(nn.Module):
    """Conv blocks, each halving frequency and time: [batch, bands, frames] -> [batch, c, f, t]."""

    def __init__(self, cfg):
        super().__init__()
        (bands, frames), n = cfg.shapes[0], len(cfg.channels)
        if bands >> n < 1 or frames >> n < 1:
            raise MgcError(
                f"{cfg.name}: {n} pooling blocks leave no frequency bands of {bands} or frames of {frames}: "
                "use fewer --channels"
            )
        blocks, c_in = [], 1
        for c in cfg.channels:
            blocks.append(conv2d_block(c_in, c, cfg.kernel))
            c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.out_shape = (c_in, bands >> n, frames >> n)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.blocks(next(iter(x.values())).unsqueeze(1))


class CNN(nn.Module):
    def __init__(self, cfg, gaps: tuple[float, ...]):
        super().__init__()
        self.trunk = ConvTrunk(cfg)
        c, f, t = self.trunk.out_shape
        self.size = c * f * t

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.trunk(x).flatten(1)


class CNNLSTM(nn.Module):
    def __init__(self, cfg, gaps: tuple[float, ...]):
        super().__init__()
        self.trunk = ConvTrunk(cfg)
        c, f, _ = self.trunk.out_shape
        self.seq = LSTMStack(c * f, cfg.lstm_units, gaps, bidirectional_first=cfg.name == "cnn_bilstm")
        self.size = self.seq.size

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.trunk(x)  # [batch, channels, bands', frames']: time becomes the sequence axis
        return self.seq(h.permute(0, 3, 1, 2).flatten(2))


SPECTRA = (("logmel",), ("mfcc",))
TRUNK = {"channels": (64, 128, 256, 512), "kernel": 3, "dense": (1024, 256, 64, 32)}

register(
    Architecture(
        "cnn",
        "four conv blocks of 64-512 filters with batch norm, ReLU and average pooling, then dense 1024-256-64-32",
        SPECTRA,
        CNN,
        TRUNK,
    )
)
register(
    Architecture(
        "cnn_lstm",
        "the cnn's trunk, time as the sequence axis, two LSTMs of 128",
        SPECTRA,
        CNNLSTM,
        {**TRUNK, "lstm_units": (128, 128)},
        lstm=True,
    )
)
register(
    Architecture(
        "cnn_bilstm",
        "as cnn_lstm with the first LSTM bidirectional",
        SPECTRA,
        CNNLSTM,
        {**TRUNK, "lstm_units": (128, 128)},
        lstm=True,
    )
)
