"""The building blocks the encoders share: input normalisation, conv and residual stages, the
LSTM stack and the dense head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mgc.errors import MgcError


class Normalise(nn.Module):
    """An input's z-score with statistics of the training split, held as buffers: `size` of them,
    one per band of a spectrum [batch, bands, frames], or one for the whole input."""

    def __init__(self, size: int, mean: Any = None, std: Any = None):
        super().__init__()
        self.register_buffer(
            "mean", torch.zeros(size) if mean is None else torch.as_tensor(mean, dtype=torch.float32).reshape(size)
        )
        self.register_buffer(
            "std", torch.ones(size) if std is None else torch.as_tensor(std, dtype=torch.float32).reshape(size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)  # bands on axis 1; a single statistic broadcasts alike
        return (x.float() - self.mean.view(view)) / self.std.view(view)


def conv2d_block(c_in: int, c_out: int, k: int) -> nn.Sequential:
    """Conv, batch norm, ReLU, 2x2 average pooling."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.AvgPool2d(2)
    )


def conv1d_stage(c_in: int, c_out: int, k: int, stride: int = 1, pool: int = 4) -> nn.Sequential:
    """1-D conv (strided or not), batch norm, ReLU, max pooling over time."""
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, k, stride=stride, padding=k // 2),
        nn.BatchNorm1d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool1d(pool),
    )


class ResBlock2d(nn.Module):
    """Two convs with a 1x1 skip, then pooling over frequency only (time is kept)."""

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, k, padding=k // 2),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, k, padding=k // 2),
            nn.BatchNorm2d(c_out),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1)
        self.pool = nn.AvgPool2d((2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.body(x) + self.skip(x)))


class ResidualEncoder2d(nn.Module):
    """Residual blocks over a spectrum [batch, bands, frames] that compress frequency to one band:
    [batch, channels, frames]."""

    def __init__(self, shape: tuple[int, ...], channels: tuple[int, ...], k: int, name: str):
        super().__init__()
        bands = shape[0]
        if bands >> len(channels) < 1:
            raise MgcError(
                f"{name}: {len(channels)} blocks halve the {bands} bands of its input to none: use fewer --channels"
            )
        blocks, c_in = [], 1
        for c in channels:
            blocks.append(ResBlock2d(c_in, c, k))
            c_in = c
        self.blocks = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d((1, None)))
        self.channels = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.unsqueeze(1)).squeeze(2)


class LSTMStack(nn.Module):
    """Stacked LSTMs over [batch, time, features] with dropout between them (one rate per gap);
    the last time step summarises the sequence."""

    def __init__(
        self, n_in: int, units: tuple[int, ...], dropout: tuple[float, ...], bidirectional_first: bool = False
    ):
        super().__init__()
        self.layers = nn.ModuleList()
        for i, u in enumerate(units):
            bi = bidirectional_first and i == 0
            self.layers.append(nn.LSTM(n_in, u, batch_first=True, bidirectional=bi))
            n_in = u * (2 if bi else 1)
        self.drops = nn.ModuleList(nn.Dropout(r) for r in dropout)
        self.size = n_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, lstm in enumerate(self.layers):
            x, _ = lstm(x)
            if i < len(self.drops):
                x = self.drops[i](x)
        return x[:, -1]


class Head(nn.Module):
    """Dropout, dense ReLU layers, then the classes; `hidden` is the embedding."""

    def __init__(self, n_in: int, dense: tuple[int, ...], n_classes: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        for d in dense:
            layers += [nn.Linear(n_in, d), nn.ReLU(inplace=True)]
            n_in = d
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(n_in, n_classes)
        self.embedding_size = n_in
