"""A 1-D CNN on the raw waveform (the FMA study by Maccani et al.): four conv stages over the
samples, the first strided, each max-pooled, then global pooling over time and the dense head."""

from __future__ import annotations

import torch
from torch import nn

from mgc.errors import MgcError
from mgc.models.base import Architecture, register
from mgc.models.blocks import conv1d_stage

STRIDE, POOL = 4, 4  # the first conv's stride, and each stage's pooling: 66,150 samples -> 64 frames


class WaveformEncoder(nn.Module):
    """[batch, samples] -> [batch, channels, frames]."""

    def __init__(self, samples: int, channels: tuple[int, ...], k: int, name: str):
        super().__init__()
        frames = samples // STRIDE // POOL ** len(channels)
        if frames < 1:
            raise MgcError(
                f"{name}: {len(channels)} stages pool the {samples} samples of its input to nothing: "
                "use fewer --channels"
            )
        stages, c_in = [], 1
        for i, c in enumerate(channels):
            stages.append(conv1d_stage(c_in, c, k, stride=STRIDE if i == 0 else 1, pool=POOL))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.channels = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x.unsqueeze(1))


class CNN1d(nn.Module):
    def __init__(self, cfg, gaps: tuple[float, ...]):
        super().__init__()
        self.trunk = WaveformEncoder(cfg.shapes[0][0], cfg.channels, cfg.kernel, cfg.name)
        self.size = self.trunk.channels

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.trunk(x["waveform"]).mean(2)


register(
    Architecture(
        "cnn1d",
        "four 1-D conv stages of 32-256 filters over the waveform, the first strided, max pooling, global pooling, "
        "dense 256-64",
        (("waveform",),),
        CNN1d,
        {"channels": (32, 64, 128, 256), "kernel": 9, "dense": (256, 64)},
    )
)
