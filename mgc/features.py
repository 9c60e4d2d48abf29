"""Segments and the mel spectrogram: the signal processing under mgc's inputs (`mgc.inputs`).

Extraction, training and labelling all compute inputs through `mgc.inputs` (`compute`, or
`prepare` then `finish` where a network runs elsewhere), so a model never sees features computed
differently from those it was trained on. The parameters live in
`FeatureConfig`, which is stored beside every output (`_config.json`) and inside every artifact.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft
import scipy.sparse

from mgc.errors import MgcError, Reject
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
        if "musicnn" in self.inputs and self.segment_seconds < 3.0:
            raise MgcError(
                f"FeatureConfig: the musicnn input needs segments of at least 3 s (its 187-frame patch), not {self.segment_seconds:g} s"
            )
        if self.max_seconds is not None and self.max_seconds < self.segment_seconds:
            raise MgcError("FeatureConfig: max_seconds is shorter than one segment")
        from mgc import inputs  # the registry builds on this module

        object.__setattr__(self, "inputs", tuple(self.inputs))
        if not self.inputs or len(set(self.inputs)) != len(self.inputs):
            raise MgcError(f"FeatureConfig: inputs {','.join(self.inputs)} must name each input once")
        for name in self.inputs:
            inputs.get(name)

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


@functools.lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> scipy.sparse.csr_matrix:
    import librosa  # here, not at the top: the networks import without it (bench/gpu.py on a bare GPU machine)

    # The mel filterbank is ~98% zeros: a sparse product is 5x cheaper than librosa's dense one.
    return scipy.sparse.csr_matrix(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).astype(np.float32))


@functools.lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
    import librosa  # as in _mel_basis

    return librosa.filters.get_window("hann", n_fft, fftbins=True).astype(np.float32)


def segment(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Cut mono audio into non-overlapping segments [n, segment_samples]; the tail is dropped."""
    n = len(y) // cfg.segment_samples
    if n == 0:
        raise Reject(
            "too_short",
            f"{len(y) / cfg.sample_rate:.2f} s of audio is shorter than one {cfg.segment_seconds:g} s segment",
        )
    return y[: n * cfg.segment_samples].reshape(n, cfg.segment_samples)


def mel_power(segments: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Mel power spectrogram [n, n_mels, frames] of each segment.

    Equal to librosa.feature.melspectrogram(center=True, pad_mode='constant') to float32
    precision (a test checks this), computed with one batched real FFT and a sparse filterbank.
    """
    n_fft, hop = cfg.n_fft, cfg.hop_length
    padded = np.pad(segments.astype(np.float32, copy=False), ((0, 0), (n_fft // 2, n_fft // 2)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]
    spec = scipy.fft.rfft(frames * _window(n_fft), axis=-1, workers=1)
    power = spec.real**2 + spec.imag**2  # [n, frames, bins]
    n, t, bins = power.shape
    mel = _mel_basis(cfg.sample_rate, n_fft, cfg.n_mels) @ power.reshape(n * t, bins).T
    return np.asarray(mel, dtype=np.float32).reshape(cfg.n_mels, n, t).transpose(1, 0, 2)


def check_not_silent(y: np.ndarray, cfg: FeatureConfig) -> None:
    rms_db = 10.0 * np.log10(float(np.mean(np.square(y, dtype=np.float64))) + 1e-20)
    if rms_db < cfg.silence_db:
        raise Reject("silent", f"RMS level {rms_db:.1f} dBFS is below {cfg.silence_db:g} dBFS")


# Segments per batched FFT: bounds the working set (~70 MB) for long files; a 30 s clip is one batch.
BLOCK_SEGMENTS = 32
