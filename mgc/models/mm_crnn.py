"""The multimodal CRNN of the FMA study by Maccani et al.: a 1-D encoder of the waveform and a 2-D
residual encoder of the log-mel spectrogram, their feature maps brought to one time axis and
concatenated along channels, then one LSTM of 128 and the dense head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from mgc.models.base import Architecture, register
from mgc.models.blocks import LSTMStack, ResidualEncoder2d
from mgc.models.cnn1d import WaveformEncoder


class MMCRNN(nn.Module):
    def __init__(self, cfg, gaps: tuple[float, ...]):
        super().__init__()
        self.wave = WaveformEncoder(cfg.shape("waveform")[0], cfg.channels, cfg.kernel, cfg.name)
        # The 2-D branch keeps the residual blocks' 3x3 kernels; cfg.kernel sizes the 1-D stages.
        self.spec = ResidualEncoder2d(cfg.shape("logmel"), cfg.channels, 3, cfg.name)
        self.seq = LSTMStack(self.wave.channels + self.spec.channels, cfg.lstm_units, gaps)
        self.size = self.seq.size

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        w, s = self.wave(x["waveform"]), self.spec(x["logmel"])  # [batch, channels, frames] each
        steps = min(w.shape[2], s.shape[2])  # the coarser time axis of the two
        h = torch.cat([functional.adaptive_avg_pool1d(w, steps), functional.adaptive_avg_pool1d(s, steps)], dim=1)
        return self.seq(h.transpose(1, 2))


register(
    Architecture(
        "mm_crnn",
        "a 1-D waveform encoder and a 2-D log-mel residual encoder, concatenated along channels, one LSTM of 128",
        (("waveform", "logmel"),),
        MMCRNN,
        {"channels": (16, 32, 64, 128), "kernel": 9, "dense": (256, 64), "lstm_units": (128,)},
        lstm=True,
    )
)
