"""Networks from the genre-classification literature, built by name from a ModelConfig.

- cnn:        four conv blocks (conv, batch norm, ReLU, 2-D average pooling), then a dense head
- cnn_lstm:   the same conv trunk, time as the sequence axis, two LSTM layers, the dense head
- cnn_bilstm: as cnn_lstm with the first LSTM bidirectional
- lstm:       five stacked LSTMs (128, 32, 32, 32, 32) over the MFCC sequence
- crnn:       residual conv encoder that pools frequency down to one band, then one LSTM

Every network normalises its input band-wise with statistics of the training split, held as
buffers so that an exported model carries them, and exposes `embed` (the penultimate layer).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mgc.errors import MgcError

MODELS = ("cnn", "cnn_lstm", "cnn_bilstm", "lstm", "crnn")
_LSTM_DEFAULTS = {"cnn": (), "cnn_lstm": (128, 128), "cnn_bilstm": (128, 128), "lstm": (128, 32, 32, 32, 32), "crnn": (128,)}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and sizes; Tune searches `dropout`. Empty `lstm_units` takes the model's default."""

    name: str = "cnn"
    n_classes: int = 8
    n_bands: int = 128  # n_mels for the log-mel models, n_mfcc for lstm
    n_frames: int = 130
    channels: tuple[int, ...] = (64, 128, 256, 512)
    kernel: int = 3
    dense: tuple[int, ...] = (1024, 256, 64, 32)
    lstm_units: tuple[int, ...] = field(default=())
    # One rate shared by every dropout layer, or one per layer in the order of `dropout_layers`.
    dropout: float | tuple[float, ...] = 0.3

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise MgcError(f"unknown model {self.name!r}; choose one of {', '.join(MODELS)}")
        if not self.lstm_units:
            object.__setattr__(self, "lstm_units", _LSTM_DEFAULTS[self.name])
        rates = self.dropout_rates
        if len(rates) != len(self.dropout_layers):
            raise MgcError(f"{self.name} has {len(self.dropout_layers)} dropout layers ({', '.join(self.dropout_layers)}), but {len(rates)} rates were given")
        if not all(0 <= r < 1 for r in rates):
            raise MgcError(f"dropout {self.dropout} is outside [0, 1)")
        if self.name != "lstm" and len(self.channels) and self.n_bands >> len(self.channels) < 1:
            raise MgcError(f"{len(self.channels)} pooling blocks leave no frequency bands of {self.n_bands}")

    @property
    def dropout_layers(self) -> tuple[str, ...]:
        """Names of the dropout layers, in order: between stacked LSTMs, then the head's input."""
        stacked = len(self.lstm_units) if self.name != "cnn" else 0
        return tuple(f"lstm{i}" for i in range(1, stacked)) + ("head",)

    @property
    def dropout_rates(self) -> tuple[float, ...]:
        """One rate per dropout layer."""
        if isinstance(self.dropout, (int, float)):
            return (float(self.dropout),) * len(self.dropout_layers)
        return tuple(float(r) for r in self.dropout)

    @property
    def input(self) -> str:
        """Which shard column the network reads."""
        return "mfcc" if self.name == "lstm" else "logmel"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        for k in ("channels", "dense", "lstm_units", "dropout"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        return cls(**d)


def _conv_block(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.AvgPool2d(2))


class _Head(nn.Module):
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


class _LSTMStack(nn.Module):
    """Stacked LSTMs with dropout between them (`dropout`: one rate per gap)."""

    def __init__(self, n_in: int, units: tuple[int, ...], dropout: tuple[float, ...], bidirectional_first: bool = False):
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
        return x[:, -1]  # the last time step summarises the sequence


class _ResBlock(nn.Module):
    """Two 3x3 convs with a 1x1 skip, then pooling over frequency only (time is kept for the LSTM)."""

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, k, padding=k // 2), nn.BatchNorm2d(c_out),
        )  # fmt: skip
        self.skip = nn.Conv2d(c_in, c_out, 1)
        self.pool = nn.AvgPool2d((2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.body(x) + self.skip(x)))


class GenreNet(nn.Module):
    """All five architectures: an encoder to a vector, then the shared dense head."""

    def __init__(self, cfg: ModelConfig, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        bands = cfg.n_bands
        self.register_buffer("norm_mean", torch.zeros(bands) if mean is None else torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("norm_std", torch.ones(bands) if std is None else torch.as_tensor(std, dtype=torch.float32))
        self.seq: _LSTMStack | None = None
        *gaps, head_rate = cfg.dropout_rates
        if cfg.name == "lstm":
            self.seq = _LSTMStack(bands, cfg.lstm_units, gaps)
            n_out = self.seq.size
        elif cfg.name == "crnn":
            blocks, c_in, f = [], 1, bands
            for c in cfg.channels:
                blocks.append(_ResBlock(c_in, c, cfg.kernel))
                c_in, f = c, f // 2
            self.trunk = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d((1, None)))  # frequency -> 1 band
            self.seq = _LSTMStack(c_in, cfg.lstm_units, gaps)
            n_out = self.seq.size
        else:
            blocks, c_in = [], 1
            for c in cfg.channels:
                blocks.append(_conv_block(c_in, c, cfg.kernel))
                c_in = c
            self.trunk = nn.Sequential(*blocks)
            f, t = bands >> len(cfg.channels), cfg.n_frames >> len(cfg.channels)
            if cfg.name == "cnn":
                n_out = c_in * f * t
            else:
                self.seq = _LSTMStack(c_in * f, cfg.lstm_units, gaps, bidirectional_first=cfg.name == "cnn_bilstm")
                n_out = self.seq.size
        self.head = _Head(n_out, cfg.dense, cfg.n_classes, head_rate)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, bands, frames] features -> [batch, n] vector before the head."""
        x = (x.float() - self.norm_mean[:, None]) / self.norm_std[:, None]
        if self.cfg.name == "lstm":
            return self.seq(x.transpose(1, 2))
        h = self.trunk(x.unsqueeze(1))  # [batch, channels, bands', frames']
        if self.cfg.name == "cnn":
            return h.flatten(1)
        # time becomes the sequence axis: [batch, frames', channels * bands']
        return self.seq(h.permute(0, 3, 1, 2).flatten(2))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer: the track embedding used for recommendations."""
        return self.head.hidden(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.out(self.embed(x))


def build(cfg: ModelConfig, mean=None, std=None) -> GenreNet:
    """The network named by cfg.name, normalising with the given band statistics."""
    return GenreNet(cfg, mean, std)


def for_inference(model: GenreNet) -> GenreNet:
    """An eval-mode copy that computes the same function faster: each batch norm folded into the
    convolution before it, and channels-last memory for the convolutions (together 2-3x faster
    on CPU for the benchmark's cnn; bench/README.md)."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(seq[i], seq[i + 1]), nn.Identity()
    return model.to(memory_format=torch.channels_last)
