"""Segments and the mel spectrogram: the signal processing under mgc's inputs (`mgc.inputs`),
pure functions of the audio and a FeatureConfig."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft
import scipy.sparse

from mgc.errors import Reject

if TYPE_CHECKING:
    from mgc.features import FeatureConfig


@functools.lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> scipy.sparse.csr_matrix:
    import librosa  # here, not at the top: the networks import without it (bench/gpu.py on a bare GPU machine)

    # The mel filterbank is ~98% zeros: a sparse product is much cheaper than librosa's dense one.
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
    """Reject a track whose overall RMS level is below cfg.silence_db."""
    rms_db = 10.0 * np.log10(float(np.mean(np.square(y, dtype=np.float64))) + 1e-20)
    if rms_db < cfg.silence_db:
        raise Reject("silent", f"RMS level {rms_db:.1f} dBFS is below {cfg.silence_db:g} dBFS")


# Segments per batched FFT: bounds the working set (~70 MB) for long files; a 30 s clip is one batch.
BLOCK_SEGMENTS = 32
