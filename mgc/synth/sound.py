"""Signal primitives the genres are composed of: pitches, notes in a few timbres, coloured
noise, drum hits and a stereo mix buffer that voices are added into."""

from __future__ import annotations

import functools

import numpy as np


def _midi(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69) / 12)


def _env(n: int, sr: int, attack: float, decay: float) -> np.ndarray:
    t = np.arange(n) / sr
    e = np.exp(-t / decay)
    a = min(n, max(1, int(attack * sr)))
    e[:a] *= np.linspace(0.0, 1.0, a)
    return e


# Timbres: (frequency ratio, amplitude, decay multiplier) per partial.
TIMBRES = {
    "sine": [(1, 1.0, 1.0), (2, 0.08, 0.6)],
    "saw": [(k, 1.0 / k, 1.0) for k in range(1, 13)],
    "square": [(k, 1.0 / k, 1.0) for k in range(1, 16, 2)],
    "pluck": [(k * (1 + 0.0004 * k * k), 1.0 / k, 1.0 / k) for k in range(1, 11)],
    "piano": [(k * (1 + 0.0002 * k * k), 1.0 / k**1.4, 1.0 / k**0.7) for k in range(1, 9)],
    "bell": [(1, 1.0, 1.0), (2.76, 0.6, 0.7), (5.40, 0.4, 0.5), (8.93, 0.25, 0.35)],
    "organ": [(1, 1.0, 1.0), (2, 0.5, 1.0), (3, 0.3, 1.0), (4, 0.15, 1.0), (6, 0.1, 1.0)],
}


@functools.lru_cache(maxsize=32)
def _partials(freq: float, n: int, sr: int, timbre: str, decay: float) -> tuple[np.ndarray, np.ndarray]:
    """A note's partials as decaying sines and cosines [partials, n], float32, amplitudes applied.
    Notes recur every few bars with new random phases: sin(wt + p) = sin(wt) cos(p) + cos(wt) sin(p)
    turns each recurrence into two matrix-vector products instead of a sine per partial and sample."""
    rows = [(freq * ratio, amp, dmul) for ratio, amp, dmul in TIMBRES[timbre]]
    rows = rows[: next((i for i, (f, _, _) in enumerate(rows) if f >= sr / 2 * 0.95), len(rows))]
    f, amp, dmul = (np.array(c)[:, None] for c in zip(*rows))
    t = np.arange(n) / sr
    # Phases in cycles, wrapped in float64 so that float32 (2-3x faster sines) stays exact enough.
    # x - floor(x) is x % 1.0 to the bit for x >= 0 (both exact), at a tenth of numpy's float mod.
    cycles = f * t
    cycles -= np.floor(cycles)
    w = (2 * np.pi * cycles).astype(np.float32)
    env = (amp * np.exp(-t / (decay * dmul))).astype(np.float32)
    return np.sin(w) * env, np.cos(w) * env


def _note(freq: float, dur: float, sr: int, timbre: str, attack: float, decay: float, rng) -> np.ndarray:
    n = max(1, int(dur * sr))
    sines, cosines = _partials(freq, n, sr, timbre, decay)
    phase = rng.uniform(0, 2 * np.pi, len(sines))
    out = np.cos(phase).astype(np.float32) @ sines + np.sin(phase).astype(np.float32) @ cosines
    a = min(n, max(1, int(attack * sr)))
    out[:a] *= np.linspace(0.0, 1.0, a, dtype=np.float32)
    return out


def _noise(n: int, colour: float, rng) -> np.ndarray:
    """Noise with power spectrum 1/f^colour (0 white, 1 pink, 2 brown), unit peak."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=float)
    f[0] = 1.0
    x = np.fft.irfft(spec / f ** (colour / 2), n)
    return x / (np.abs(x).max() + 1e-12)


def _drum(kind: str, sr: int, rng) -> np.ndarray:
    if kind == "kick":
        t = np.arange(int(0.35 * sr)) / sr
        f = 48 + 110 * np.exp(-t / 0.035)
        return np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / 0.13)
    if kind == "snare":
        t = np.arange(int(0.25 * sr)) / sr
        body = 0.5 * np.sin(2 * np.pi * 185 * t) * np.exp(-t / 0.05)
        return body + np.diff(rng.standard_normal(len(t) + 1)) * 0.45 * np.exp(-t / 0.07)
    if kind == "hat":
        t = np.arange(int(0.07 * sr)) / sr
        return np.diff(np.diff(rng.standard_normal(len(t) + 2))) * 0.2 * np.exp(-t / 0.018)
    if kind == "clap":
        t = np.arange(int(0.3 * sr)) / sr
        bursts = sum(np.exp(-np.clip(t - d, 0, None) / 0.006) * (t >= d) for d in (0, 0.011, 0.023))
        return np.diff(rng.standard_normal(len(t) + 1)) * 0.5 * (bursts + 0.4 * np.exp(-t / 0.09))
    if kind == "clave":
        t = np.arange(int(0.06 * sr)) / sr
        return np.sin(2 * np.pi * 2500 * t) * np.exp(-t / 0.012)
    if kind == "frame":
        t = np.arange(int(0.4 * sr)) / sr
        f = 95 + 40 * np.exp(-t / 0.02)
        slap = np.diff(rng.standard_normal(len(t) + 1)) * 0.2 * np.exp(-t / 0.015)
        return np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / 0.22) + slap
    if kind == "shaker":
        t = np.arange(int(0.09 * sr)) / sr
        return np.diff(rng.standard_normal(len(t) + 1)) * 0.15 * np.sin(np.pi * t / t[-1])
    raise ValueError(kind)


class _Mix:
    """A stereo buffer that voices are added into at sample offsets."""

    def __init__(self, seconds: float, sr: int):
        self.sr = sr
        self.buf = np.zeros((2, int(seconds * sr)))

    @property
    def seconds(self) -> float:
        return self.buf.shape[1] / self.sr

    def add(self, x: np.ndarray, at: float, gain: float, pan: float = 0.0) -> None:
        start = int(at * self.sr)
        if start >= self.buf.shape[1] or start < 0:
            return
        x = x[: self.buf.shape[1] - start] * gain
        self.buf[0, start : start + len(x)] += x * np.sqrt((1 - pan) / 2)
        self.buf[1, start : start + len(x)] += x * np.sqrt((1 + pan) / 2)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) + 1e-12
