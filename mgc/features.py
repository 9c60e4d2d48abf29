"""`FeatureConfig`: how audio becomes model input, stored beside every output (`_config.json`)
and inside every artifact.

Extraction, training and labelling all compute inputs through `mgc.inputs` (`compute`, or
`prepare` then `finish` where a network runs elsewhere), from the signal processing of
`mgc.segments`, so a model never sees features computed differently from those it was trained on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mgc.errors import MgcError
from mgc.options import option, validate


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes model input. Defaults follow the design contract."""

    sample_rate: int = option(22050, low=1000, help="every file is mixed to mono and resampled to this rate, Hz")
    segment_seconds: float = option(3.0, above=0, help="length of one training example; a 30 s clip gives 10")
    n_fft: int = option(2048, low=16, help="FFT window of the spectrogram, samples")
    hop_length: int = option(512, low=1, help="step between spectrogram frames, samples")
    n_mels: int = option(128, low=1, help="mel bands of the log-mel spectrogram")
    n_mfcc: int = option(20, low=1, help="MFCC coefficients kept")
    # A clip whose overall RMS is below this level holds no usable audio.
    silence_db: float = option(
        -60.0, low=-200, high=0, help="a track whose RMS level is below this is rejected as silent, dBFS"
    )
    max_seconds: float | None = option(
        None, above=0, help="analyse at most this much of each file from its start, s (none: all of it)"
    )
    inputs: tuple[str, ...] = option(("logmel", "mfcc"), registry="inputs", help="what each segment is stored as")
    # A 30 s clip's 10 segments are one block of 32: every segment then runs the network.
    musicnn_patches: int = option(
        0,
        low=0,
        help="musicnn input only: run the network on this many evenly spaced segments of every 32 (a 30 s clip's "
        "10), the others copying the nearest (0: every segment; the network is most of the input's cost)",
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.n_mfcc > self.n_mels:
            raise MgcError(f"FeatureConfig: n_mfcc ({self.n_mfcc}) cannot exceed n_mels ({self.n_mels})")
        if self.max_seconds is not None and self.max_seconds < self.segment_seconds:
            raise MgcError("FeatureConfig: max_seconds is shorter than one segment")
        from mgc import inputs  # here: the registry runs networks, and torch stays out of this module

        object.__setattr__(self, "inputs", tuple(self.inputs))
        if not self.inputs or len(set(self.inputs)) != len(self.inputs):
            raise MgcError(f"FeatureConfig: inputs {','.join(self.inputs)} must name each input once")
        for name in self.inputs:
            inputs.get(name).check(self)

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """Time frames per segment (centred STFT)."""
        return 1 + self.segment_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "inputs": list(self.inputs)}  # as JSON holds it

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise MgcError(f"FeatureConfig: unknown field(s) {sorted(unknown)}; written by a newer mgc?")
        return cls(**d)

    def diff(self, other: "FeatureConfig") -> list[str]:
        """Human-readable list of fields that differ, e.g. ['n_mels: 128 -> 64']."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]} -> {b[k]}" for k in a if a[k] != b[k]]
