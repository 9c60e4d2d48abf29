"""A deterministic synthetic corpus in the exact FMA layout and metadata format.

The real FMA cannot be downloaded everywhere mgc is developed and tested, so this module writes
N clips of 44.1 kHz stereo MP3 under <out>/<audio_dir>/NNN/NNNNNN.mp3 with fma_metadata/tracks.csv
and genres.csv in the published format. Eight genres differ the way real ones do (tempo, rhythm
pattern, timbre, harmony, noise colour); an artist has a style of its own and each track varies
it, so a model has to learn the genre rather than look clips up. A configurable share of files is
broken like the FMA's own bad clips (empty, truncated, not audio, under 2 s, silent, missing).

Two opt-in options make the genre lists of tracks.csv audible, for multi-label tagging over the
FMA's genre tree (the default corpus is byte-identical with or without them in the code):
- `subgenres`: each artist plays one of its genre's two SUBGENRES, heard as the parent genre plus
  that sub-genre's voice (SUBGENRE_VOICES: a low sustained pad or a high, bright ostinato);
  `genres` lists the sub-genre, `genres_all` it and its parent.
- `multi_genre`: that share of the usable tracks is a blend of two genres, both rendered whole and
  mixed at comparable loudness; `genres` lists both, `genre_top` is empty (as the FMA leaves it
  when a track's genres span several roots), `genres_all` has both roots.
With either on, tracks.csv lists only what is audible: a single-genre track its genre (or its
sub-genre), a blend both, and a track without genre_top that is no blend nothing at all. Label
noise flips single-genre tracks only (a blend is listed as it sounds). synth_truth.csv says what
each track sounds like (`genres`, `subgenres`) and what it is listed as (`listed_genre`, and
`labelled`: tagged at all, which a blend is, its genre_top empty notwithstanding).

Everything derives from the seed: the same config writes byte-identical audio and metadata.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import soundfile as sf

from mgc import fma
from mgc.errors import MgcError

# The FMA's 16 top-level genres (genre_id, title), as in its genres.csv.
TOP_GENRES = [
    (2, "International"), (3, "Blues"), (4, "Jazz"), (5, "Classical"), (8, "Old-Time / Historic"),
    (9, "Country"), (10, "Pop"), (12, "Rock"), (13, "Easy Listening"), (14, "Soul-RnB"),
    (15, "Electronic"), (17, "Folk"), (20, "Spoken"), (21, "Hip-Hop"), (38, "Experimental"),
    (1235, "Instrumental"),
]  # fmt: skip
# Two real sub-genres (genre_id, title) of each synthesised genre, for the genres list columns;
# with `subgenres` on, each is heard as its SUBGENRE_VOICES voice over the parent genre.
SUBGENRES = {
    "Electronic": [(42, "Ambient Electronic"), (181, "Techno")],
    "Experimental": [(1, "Avant-Garde"), (6, "Novelty")],
    "Folk": [(33, "Psych-Folk"), (49, "Free-Folk")],
    "Hip-Hop": [(83, "Nerdcore"), (100, "Alternative Hip-Hop")],
    "Instrumental": [(18, "Soundtrack"), (107, "Ambient")],
    "International": [(46, "Latin America"), (77, "French")],
    "Pop": [(76, "Experimental Pop"), (362, "Synth Pop")],
    "Rock": [(25, "Punk"), (26, "Post-Rock")],
}
GENRE_IDS = {title: gid for gid, title in TOP_GENRES}
SUBGENRE_TITLES = {gid: title for subs in SUBGENRES.values() for gid, title in subs}
SUBGENRE_PARENT = {gid: parent for parent, subs in SUBGENRES.items() for gid, _ in subs}
# What a sub-genre adds to its parent's sound (`_add_voice`): ("pad", timbre), sustained chords in
# the low-mid register with a deep tremolo, or ("ostinato", timbre), a repeated 16th-note figure
# three octaves above the root. Each parent has one of each, so that its two sub-genres differ in
# register, brightness and rhythm, all of which a log-mel spectrogram shows; the timbres nod to
# the names.
SUBGENRE_VOICES = {
    42: ("pad", "sine"), 181: ("ostinato", "square"),  # Ambient Electronic, Techno
    1: ("pad", "organ"), 6: ("ostinato", "bell"),  # Avant-Garde, Novelty
    33: ("pad", "organ"), 49: ("ostinato", "pluck"),  # Psych-Folk, Free-Folk
    83: ("ostinato", "square"), 100: ("pad", "sine"),  # Nerdcore (chiptune), Alternative Hip-Hop
    18: ("ostinato", "bell"), 107: ("pad", "sine"),  # Soundtrack (celesta), Ambient
    46: ("ostinato", "pluck"), 77: ("pad", "organ"),  # Latin America, French (musette)
    76: ("pad", "organ"), 362: ("ostinato", "square"),  # Experimental Pop, Synth Pop
    25: ("ostinato", "saw"), 26: ("pad", "sine"),  # Punk, Post-Rock
}  # fmt: skip
# A voice's loudness, as a share of the parent's RMS (-4.4 dB): loud enough that a linear model on
# log-mel statistics tells every parent's two sub-genres apart (at 0.3 it told some hardly better
# than chance), quiet enough that the parent's genre stays as recognisable as without the voice
# and a blend's two genres are both heard (tests/test_synth.py measures all three).
VOICE_GAIN = 0.6

# Broken-file kinds and the reject reason extraction must give each ('ok': still usable).
BROKEN_EXPECTED = {
    "empty": "decode_error",
    "truncated": "ok",
    "not_audio": "decode_error",
    "short": "too_short",
    "silent": "silent",
    "missing": "missing_file",
}

# FMA large: 8,000 small, 25,000 medium (small included), 106,574 in all; genre_top is set on
# every small and medium track and on 24,598 of the 81,574 others (49,598 in all).
FMA_SUBSET_SHARES = {"small": 8_000 / 106_574, "medium": 17_000 / 106_574, "large": 81_574 / 106_574}
FMA_UNLABELLED_IN_LARGE = 56_976 / 81_574

# tracks.csv columns in the FMA's order.
TRACKS_COLUMNS = (
    [("album", c) for c in "comments date_created date_released engineer favorites id information listens producer tags title tracks type".split()]
    + [("artist", c) for c in "active_year_begin active_year_end associated_labels bio comments date_created favorites id latitude location longitude members name related_projects tags website wikipedia_page".split()]
    + [("set", "split"), ("set", "subset")]
    + [("track", c) for c in "bit_rate comments composer date_created date_recorded duration favorites genre_top genres genres_all information interest language_code license listens lyricist number publisher tags title".split()]
)  # fmt: skip


# How a new upload can be recorded unlike the catalogue (record_upload says how each is drawn).
UPLOAD_CONDITIONS = ("offset", "band", "noise", "level")


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. `workers` 0 means one process per core."""

    out: str
    tracks: int = 400
    seconds: float = 30.0
    sample_rate: int = 44100
    seed: int = 0
    broken_share: float = 0.05
    unlabelled_share: float = 0.03
    # Share of training tracks whose genre in tracks.csv is another one, drawn at random (the
    # audio keeps its genre; synth_truth.csv has both): noisy labels, as real catalogues have.
    label_noise: float = 0.0
    # Validation and test tracks recorded as new uploads are, unlike the catalogue that training
    # sees: any of UPLOAD_CONDITIONS (`record_upload`). Held-out recording conditions, on top of
    # the held-out artists every split has; empty: every split recorded alike.
    upload_conditions: tuple[str, ...] = ()
    # Share of the artists' tracks in validation and in test, each (the FMA's split: 0.1). More
    # held-out tracks make a comparison of two trainings tell smaller differences apart.
    held_out: float = 0.1
    audio_dir: str = "fma_large"
    workers: int = 0
    # Render only this many clips (shared by the genres) and hard-link every track to one of its
    # genre's: a corpus of FMA large's size in minutes, for benchmarks of what grows with it.
    link_pool: int = 0
    # FMA large's subset sizes and genre_top coverage (FMA_SUBSET_SHARES) instead of even
    # subsets and `unlabelled_share`.
    fma_proportions: bool = False
    # Share of the usable (kind "ok") tracks rendered as a blend of their genre and another drawn
    # at random, listed with both genres and no genre_top: multi-genre tracks that a multi-label
    # model can learn from the audio (without it, the tracks listing two genres sound like one).
    multi_genre: float = 0.0
    # Each artist plays one of its genre's two SUBGENRES, audibly (SUBGENRE_VOICES), and
    # tracks.csv lists that sub-genre: sub-genre tags that can be learnt, not random ones.
    subgenres: bool = False
    # Each artist also plays a second genre (drawn per artist), in the artist's tempo and key, mixed
    # under its genre at up to this share of its RMS (drawn per track): genres that share
    # instruments, tempi and keys, and artists whose sound carries across genres. The label stays
    # the artist's genre. 0: off.
    crossover: float = 0.0

    def __post_init__(self) -> None:
        if self.tracks < 1:
            raise MgcError("synth: --tracks must be at least 1")
        if self.seconds < 3:
            raise MgcError("synth: --seconds must be at least 3 (one segment)")
        if not 0 <= self.broken_share < 1 or not 0 <= self.unlabelled_share < 1 or not 0 <= self.label_noise < 1:
            raise MgcError("synth: shares must be in [0, 1)")
        object.__setattr__(self, "upload_conditions", tuple(self.upload_conditions))
        unknown = [c for c in self.upload_conditions if c not in UPLOAD_CONDITIONS]
        if unknown or len(set(self.upload_conditions)) != len(self.upload_conditions):
            raise MgcError(
                f"synth: --upload-conditions {','.join(self.upload_conditions)}: name each once, among {', '.join(UPLOAD_CONDITIONS)}"
            )
        if self.link_pool < 0:
            raise MgcError("synth: --link-pool must be at least 0")
        if not 0 < self.held_out <= 0.4:
            raise MgcError(
                "synth: --held-out must be in (0, 0.4]: validation and test take that share each, training the rest"
            )
        if not 0 <= self.multi_genre <= 1 or not 0 <= self.crossover <= 1:
            raise MgcError("synth: --multi-genre and --crossover must be in [0, 1]")
        if self.link_pool and (self.truthful or self.crossover):
            raise MgcError(
                "synth: --link-pool shares one clip per genre; it cannot be used with --multi-genre, --subgenres or --crossover"
            )

    @property
    def truthful(self) -> bool:
        """Whether tracks.csv lists only audible genres (either option on); else as before they existed."""
        return self.multi_genre > 0 or self.subgenres


# ---------------------------------------------------------------------------------------------
# Sound sources


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
    w = (2 * np.pi * ((f * t) % 1.0)).astype(np.float32)
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


# ---------------------------------------------------------------------------------------------
# Genres: each renders a track from an artist style and a per-track random stream.

SCALES = {
    "major": [0, 2, 4, 5, 7, 9, 11],
    "minor": [0, 2, 3, 5, 7, 8, 10],
    "mixolydian": [0, 2, 4, 5, 7, 9, 10],
    "major_pent": [0, 2, 4, 7, 9],
    "minor_pent": [0, 3, 5, 7, 10],
    "hijaz": [0, 1, 4, 5, 7, 8, 10],
}


def _degree(scale: str, root: float, d: int) -> float:
    s = SCALES[scale]
    return root + s[d % len(s)] + 12 * (d // len(s))


def _chord(scale: str, root: float, d: int, size: int = 3) -> list[float]:
    return [_degree(scale, root, d + 2 * i) for i in range(size)]


def _mutate(pattern: str, rng, p: float) -> str:
    """Flip a few steps of a 16-step pattern: the same groove, never quite the same bar."""
    return "".join(("x" if c == "." else ".") if rng.random() < p else c for c in pattern)


def _drums(mix: _Mix, rng, bpm: float, patterns: dict[str, tuple[str, float]], swing: float = 0.0, p_mut: float = 0.04):
    step = 60.0 / bpm / 4
    sounds = {k: _drum(k, mix.sr, rng) for k in patterns}
    bar = 0
    while bar * 16 * step < mix.seconds:
        for kind, (pattern, gain) in patterns.items():
            pat = _mutate(pattern, rng, p_mut)
            for i, c in enumerate(pat):
                if c == "x":
                    at = (bar * 16 + i) * step + (swing * step if i % 2 else 0.0)
                    mix.add(
                        sounds[kind], at, gain * rng.uniform(0.75, 1.0), pan=0.2 if kind in ("hat", "shaker") else 0.0
                    )
        bar += 1


def _bars(mix: _Mix, bpm: float):
    bar_s = 240.0 / bpm
    return [i * bar_s for i in range(int(mix.seconds / bar_s) + 1)], bar_s


def _electronic(mix, rng, style):
    bpm, root = style["bpm"], style["root"]
    _drums(
        mix,
        rng,
        bpm,
        {
            "kick": ("x...x...x...x...", 0.9),
            "hat": ("..x...x...x...x.", 0.35),
            "clap": ("....x.......x...", 0.4 * style["flag"]),
        },
    )
    starts, bar_s = _bars(mix, bpm)
    prog = [0, 5, 6, 4]
    for b, t0 in enumerate(starts):
        d = prog[b % 4]
        bass = _degree("minor", root, d)
        for i in range(16 if style["flag"] else 8):
            step = bar_s / (16 if style["flag"] else 8)
            mix.add(
                _note(_midi(bass + 12 * (i % 4 == 2)), step * 0.9, mix.sr, "saw", 0.003, 0.08, rng), t0 + i * step, 0.25
            )
        for m in _chord("minor", root + 24, d):
            mix.add(_note(_midi(m), bar_s, mix.sr, "saw", 0.3, 1.5, rng), t0, 0.05, pan=rng.uniform(-0.5, 0.5))
    mix.add(_noise(mix.buf.shape[1], 0.0, rng), 0, style["noise"] * 0.3)


def _hiphop(mix, rng, style):
    bpm, root = style["bpm"], style["root"]
    kick = "x.....x...x....." if style["flag"] else "x......x..x....."
    _drums(
        mix,
        rng,
        bpm,
        {"kick": (kick, 1.0), "snare": ("....x.......x...", 0.6), "hat": ("x.x.x.x.x.x.x.x.", 0.25)},
        swing=style["swing"],
    )
    starts, bar_s = _bars(mix, bpm)
    for b, t0 in enumerate(starts):
        d = [0, 0, 3, 2][b % 4]
        for i, c in enumerate(kick):
            if c == "x":
                mix.add(
                    _note(_midi(_degree("minor_pent", root, d)), bar_s / 4, mix.sr, "sine", 0.005, 0.4, rng),
                    t0 + i * bar_s / 16,
                    0.6,
                )
        for beat in range(4):
            if rng.random() < 0.5:
                m = _degree("minor_pent", root + 24, int(rng.integers(0, 7)))
                mix.add(
                    _note(_midi(m), bar_s / 4, mix.sr, style["timbre"], 0.005, 0.3, rng),
                    t0 + beat * bar_s / 4,
                    0.12,
                    pan=-0.3,
                )
    crackle = (rng.random(mix.buf.shape[1]) < 8 / mix.sr) * rng.uniform(-1, 1, mix.buf.shape[1])
    mix.add(_noise(mix.buf.shape[1], 2.0, rng) * 0.5 + crackle, 0, style["noise"] * 0.5)


def _rock(mix, rng, style):
    bpm, root = style["bpm"], style["root"]
    _drums(
        mix,
        rng,
        bpm,
        {"kick": ("x.......x.x.....", 0.9), "snare": ("....x.......x...", 0.8), "hat": ("x.x.x.x.x.x.x.x.", 0.35)},
    )
    starts, bar_s = _bars(mix, bpm)
    prog = [0, 6, 3, 0] if style["flag"] else [0, 3, 4, 3]
    for b, t0 in enumerate(starts):
        r = _degree("mixolydian", root, prog[b % 4])
        for i in range(8):
            chord = sum(_note(_midi(m), bar_s / 8, mix.sr, "saw", 0.002, 0.5, rng) for m in (r + 12, r + 19, r + 24))
            mix.add(np.tanh(style["drive"] * chord) * 0.5, t0 + i * bar_s / 8, 0.35, pan=rng.uniform(-0.6, 0.6))
            mix.add(_note(_midi(r), bar_s / 8, mix.sr, "saw", 0.002, 0.2, rng), t0 + i * bar_s / 8, 0.25)
    mix.add(_noise(mix.buf.shape[1], 1.0, rng), 0, style["noise"] * 0.4)


def _folk(mix, rng, style):
    bpm, root = style["bpm"], style["root"]
    if style["flag"]:
        _drums(mix, rng, bpm, {"shaker": ("x.x.x.x.x.x.x.x.", 0.3)})
    starts, bar_s = _bars(mix, bpm)
    prog = [0, 3, 4, 0]
    for b, t0 in enumerate(starts):
        ch = _chord("major", root + 12, prog[b % 4]) + [_degree("major", root + 24, prog[b % 4])]
        order = [0, 1, 2, 3, 2, 1, 2, 3] if style["flag"] else [0, 2, 1, 3, 0, 2, 1, 3]
        for i, k in enumerate(order):
            mix.add(
                _note(_midi(ch[k]), bar_s / 2, mix.sr, "pluck", 0.002, 0.6, rng),
                t0 + i * bar_s / 8,
                0.3,
                pan=rng.uniform(-0.3, 0.3),
            )
        mix.add(_note(_midi(_degree("major", root, prog[b % 4])), bar_s, mix.sr, "pluck", 0.002, 0.9, rng), t0, 0.35)
    mix.add(_noise(mix.buf.shape[1], 1.0, rng), 0, style["noise"] * 0.05)


def _pop(mix, rng, style):
    bpm, root = style["bpm"], style["root"]
    _drums(
        mix,
        rng,
        bpm,
        {"kick": ("x.......x.......", 0.8), "clap": ("....x.......x...", 0.55), "hat": ("x.x.x.x.x.x.x.x.", 0.2)},
    )
    starts, bar_s = _bars(mix, bpm)
    prog = [0, 5, 3, 4]
    motif = [int(x) for x in rng.integers(0, 6, 4)]
    for b, t0 in enumerate(starts):
        d = prog[b % 4]
        for m in _chord("major", root + 12, d):
            mix.add(_note(_midi(m), bar_s, mix.sr, "organ", 0.05, 2.0, rng), t0, 0.07, pan=rng.uniform(-0.4, 0.4))
        for beat in range(4):
            mix.add(
                _note(_midi(_degree("major", root - 12, d)), bar_s / 4, mix.sr, "sine", 0.005, 0.3, rng),
                t0 + beat * bar_s / 4,
                0.4,
            )
        for i, deg in enumerate(motif):
            m = _degree("major_pent", root + 24, deg + (b % 2))
            mix.add(_note(_midi(m), bar_s / 4, mix.sr, "square", 0.01, 0.35, rng), t0 + i * bar_s / 4, 0.12)
    mix.add(_noise(mix.buf.shape[1], 1.0, rng), 0, style["noise"] * 0.05)


def _experimental(mix, rng, style):
    t = 0.0
    while t < mix.seconds:
        kind = rng.integers(0, 4)
        dur = rng.uniform(0.1, 2.0)
        n = int(dur * mix.sr)
        if kind == 0:
            x = _noise(n, rng.uniform(0, 2), rng) * _env(n, mix.sr, 0.01, dur / 3)
        elif kind == 1:
            x = sum(
                _note(f, dur, mix.sr, "sine", 0.05, dur / 2, rng) for f in rng.uniform(100, 4000, rng.integers(3, 7))
            )
        elif kind == 2:
            tt = np.arange(n) / mix.sr
            f = rng.uniform(60, 600) * np.exp(np.log(rng.uniform(0.25, 4)) * tt / dur)
            x = np.sin(2 * np.pi * np.cumsum(f) / mix.sr) * _env(n, mix.sr, 0.1, dur)
        else:
            x = (rng.random(n) < 0.002).astype(float) * rng.uniform(-1, 1, n)
        mix.add(x, t, rng.uniform(0.1, 0.5), pan=rng.uniform(-1, 1))
        t += rng.exponential(1.0 / style["density"])
    tt = np.arange(mix.buf.shape[1]) / mix.sr
    drone = np.sin(2 * np.pi * style["drone"] * tt + 3 * np.sin(2 * np.pi * 0.1 * tt))
    mix.add(drone, 0, 0.15)
    mix.add(_noise(mix.buf.shape[1], style["colour"], rng), 0, style["noise"] * 0.6)


def _instrumental(mix, rng, style):
    bpm, root = style["bpm"], style["root"]
    starts, bar_s = _bars(mix, bpm)
    prog = [0, 3, 5, 4]
    for b, t0 in enumerate(starts):
        ch = _chord("major", root + 12, prog[b % 4], size=4)
        if style["flag"]:
            for i, m in enumerate(ch):
                mix.add(_note(_midi(m), bar_s, mix.sr, "piano", 0.004, 1.6, rng), t0 + i * bar_s / 4, 0.25)
        else:
            for m in ch:
                mix.add(_note(_midi(m), bar_s, mix.sr, "piano", 0.004, 1.8, rng), t0, 0.2)
        for h in range(2):
            m = _degree("major", root + 24, int(rng.integers(0, 8)))
            mix.add(_note(_midi(m), bar_s / 2, mix.sr, "piano", 0.004, 1.0, rng), t0 + h * bar_s / 2, 0.25, pan=0.2)
        for m in _chord("major", root, prog[b % 4]):
            mix.add(_note(_midi(m), bar_s * 1.1, mix.sr, "saw", 0.4, 3.0, rng) * 0.3, t0, 0.08, pan=-0.3)
    mix.add(_noise(mix.buf.shape[1], 1.0, rng), 0, style["noise"] * 0.05)


def _international(mix, rng, style):
    bpm, root = style["bpm"], style["root"]
    _drums(mix, rng, bpm, {"clave": ("x..x..x...x.x...", 0.45), "frame": ("x..x.x..x..x.x..", 0.7)})
    starts, bar_s = _bars(mix, bpm)
    tt = np.arange(mix.buf.shape[1]) / mix.sr
    drone = sum(np.sin(2 * np.pi * _midi(root + d) * tt) for d in (0, 7))
    mix.add(drone, 0, 0.06)
    deg = 0
    for t0 in starts:
        for i in range(8):
            deg = int(np.clip(deg + rng.integers(-2, 3), 0, 10))
            m = _degree("hijaz", root + 24, deg)
            mix.add(
                _note(_midi(m), bar_s / 6, mix.sr, "bell", 0.003, 0.25, rng),
                t0 + i * bar_s / 8,
                0.18,
                pan=rng.uniform(-0.5, 0.5),
            )
    mix.add(_noise(mix.buf.shape[1], 0.0, rng), 0, style["noise"] * 0.05)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) + 1e-12


def _add_voice(mix: _Mix, subgenre: int, style: dict, rng) -> None:
    """Add `subgenre`'s voice (SUBGENRE_VOICES) over its parent's mix, in the parent's tempo and
    key, at VOICE_GAIN of the mix's RMS: a pad holds a minor chord a bar long, low, with a
    tremolo; an ostinato repeats a figure of four degrees (drawn per track) in 16ths, three
    octaves up."""
    kind, timbre = SUBGENRE_VOICES[subgenre]
    starts, bar_s = _bars(mix, style["bpm"])
    root = style["root"]
    voice = _Mix(mix.seconds, mix.sr)
    if kind == "pad":
        for b, t0 in enumerate(starts):
            for m in _chord("minor", root + 12, [0, 3, 4, 0][b % 4]):
                voice.add(
                    _note(_midi(m), bar_s * 1.05, mix.sr, timbre, 0.15, 4.0, rng), t0, 1.0, pan=rng.uniform(-0.4, 0.4)
                )
        # A deep tremolo, four to seven beats a second: it moves where the parent holds still.
        t = np.arange(voice.buf.shape[1]) / mix.sr
        voice.buf *= 1.0 - 0.8 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(4, 7) * t))
    else:
        figure = [int(d) for d in rng.integers(0, 7, 4)]
        step = bar_s / 16
        for t0 in starts:
            for i in range(16):
                m = _degree("minor_pent", root + 36, figure[i % 4])
                voice.add(
                    _note(_midi(m), step * 0.9, mix.sr, timbre, 0.002, 0.08, rng),
                    t0 + i * step,
                    rng.uniform(0.8, 1.0),
                    pan=0.3,
                )
    mix.buf += voice.buf * (VOICE_GAIN * _rms(mix.buf) / _rms(voice.buf))


def _style(genre: str, rng) -> dict:
    """An artist's style: where in its genre's space it sits."""
    tempo = {"Electronic": (122, 134), "Hip-Hop": (82, 96), "Rock": (110, 150), "Folk": (80, 115),
             "Pop": (98, 124), "Instrumental": (60, 84), "International": (90, 112), "Experimental": (60, 60)}[genre]  # fmt: skip
    return {
        "bpm": rng.uniform(*tempo),
        "root": float(rng.integers(36, 48)),
        "flag": bool(rng.random() < 0.5),
        "noise": rng.uniform(0.2, 1.0),
        "swing": rng.uniform(0.05, 0.3),
        "timbre": ["piano", "bell", "square"][int(rng.integers(0, 3))],
        "drive": rng.uniform(3, 10),
        "density": rng.uniform(1, 4),
        "drone": rng.uniform(40, 120),
        "colour": rng.uniform(0, 2),
    }


RENDERERS: dict[str, Callable] = {
    "Electronic": _electronic, "Experimental": _experimental, "Folk": _folk, "Hip-Hop": _hiphop,
    "Instrumental": _instrumental, "International": _international, "Pop": _pop, "Rock": _rock,
}  # fmt: skip
GENRES = tuple(RENDERERS)


def render(
    genre: str,
    artist_seed: int,
    track_seed: int,
    seconds: float,
    sr: int,
    upload: tuple[str, ...] = (),
    subgenre: int | None = None,
    blend: str | None = None,
    blend_subgenre: int | None = None,
    crossover: str | None = None,
    crossover_level: float = 0.0,
) -> np.ndarray:
    """One clip [samples, 2] float32 of `genre` in the style of an artist, varied per track; as
    the catalogue holds it (mastered alike: clean, full band, peak-normalised to -10.5 to -0.9
    dBFS, starting on a bar) or, with `upload` conditions, as a new upload records it (`record_upload`).

    `subgenre` (a SUBGENRES id of `genre`) adds that sub-genre's voice (`_add_voice`). `blend` (another
    genre, with its own `blend_subgenre` if given) renders that genre too, in the artist's key and
    its own tempo, and mixes the two at equal RMS give or take 3 dB. `crossover` (the artist's second
    genre) renders that genre in the artist's tempo and key, mixed under the clip at
    `crossover_level` of its RMS. Without them the clip is the one this function always gave: the
    extras draw from generators of their own."""
    for g, sub in ((genre, subgenre), (blend, blend_subgenre)):
        if sub is not None and (g is None or SUBGENRE_PARENT.get(sub) != g):
            raise ValueError(f"sub-genre {sub} is not one of {g}'s {SUBGENRES.get(g)}")
    style = _style(genre, np.random.default_rng(artist_seed))
    rng = np.random.default_rng(track_seed)
    # A track moves a little from its artist's tempo and key.
    style["bpm"] *= rng.uniform(0.96, 1.04)
    style["root"] += float(rng.integers(-2, 3))
    mix = _Mix(seconds + (UPLOAD_OFFSET_S if "offset" in upload else 0.0), sr)
    RENDERERS[genre](mix, rng, style)
    if subgenre is not None:
        _add_voice(mix, subgenre, style, np.random.default_rng([track_seed, 2]))
    if crossover is not None:
        second_style = _style(crossover, np.random.default_rng([artist_seed, 5]))
        second_style.update(bpm=style["bpm"], root=style["root"])
        second = _Mix(mix.seconds, sr)
        RENDERERS[crossover](second, np.random.default_rng([track_seed, 5]), second_style)
        mix.buf = mix.buf / _rms(mix.buf) + second.buf / _rms(second.buf) * crossover_level
    if blend is not None:
        other_style = _style(blend, np.random.default_rng([artist_seed, 3]))
        other_rng = np.random.default_rng([track_seed, 3])
        other_style["bpm"] *= other_rng.uniform(0.96, 1.04)
        other_style["root"] = style["root"]  # one key: a blend, not two pieces played at once
        other = _Mix(mix.seconds, sr)
        RENDERERS[blend](other, other_rng, other_style)
        if blend_subgenre is not None:
            _add_voice(other, blend_subgenre, other_style, np.random.default_rng([track_seed, 4]))
        # Equal RMS, give or take 3 dB. (Balancing instead so that each genre is the louder in about
        # half of the spectrogram's cells left a dense genre 15-20 dB under a sparse one, and
        # models heard the two no better.)
        balance = 10 ** (other_rng.uniform(-3, 3) / 20)
        mix.buf = mix.buf / _rms(mix.buf) + other.buf / _rms(other.buf) * balance
    x = mix.buf.T / (np.abs(mix.buf).max() + 1e-9)
    level = rng.uniform(0.3, 0.9)
    if not upload:
        return (x * level).astype(np.float32)
    x, level = record_upload(x, sr, int(seconds * sr), upload, level, np.random.default_rng([track_seed, 1]))
    return (x / (np.abs(x).max() + 1e-9) * level).astype(np.float32)


# A new upload with the "offset" condition starts up to this far into the music.
UPLOAD_OFFSET_S = 2.0


def record_upload(
    x: np.ndarray, sr: int, n: int, conditions: tuple[str, ...], level: float, rng
) -> tuple[np.ndarray, float]:
    """`n` samples of the clip x [samples, 2] as a new upload records it, under `conditions`
    (UPLOAD_CONDITIONS), each drawn per track from `rng`, and its peak level:
    - offset: the clip starts anywhere in its first UPLOAD_OFFSET_S, not on a bar;
    - band: high pass at 40-300 Hz, low pass at 3-10 kHz (small speakers, phones, low bit rates),
      and an EQ tilt of up to 4 dB per octave either way;
    - noise: background noise (white to brown) 10-30 dB below the music;
    - level: a peak of -30 to -1 dBFS instead of the catalogue's `level` (-10.5 to -0.9 dBFS)."""
    start = int(rng.uniform(0, len(x) - n + 1)) if "offset" in conditions else 0
    x = x[start : start + n]
    if "band" in conditions:
        f = np.maximum(np.fft.rfftfreq(n, 1 / sr), 1.0)
        hp, lp = np.exp(rng.uniform(np.log(40), np.log(300))), np.exp(rng.uniform(np.log(3000), np.log(10000)))
        gain = (
            (f / 1000) ** (rng.uniform(-4, 4) / (20 * np.log10(2)))
            / np.sqrt(1 + (hp / f) ** 4)
            / np.sqrt(1 + (f / lp) ** 8)
        )
        x = np.fft.irfft(np.fft.rfft(x, axis=0) * gain[:, None], n, axis=0)
    if "noise" in conditions:
        noise = np.stack([_noise(n, rng.uniform(0, 2), rng) for _ in range(x.shape[1])], axis=1)
        rms = lambda v: np.sqrt(np.mean(v**2)) + 1e-12  # noqa: E731
        x = x + noise * (rms(x) / rms(noise) * 10 ** (-rng.uniform(10, 30) / 20))
    if "level" in conditions:
        level = 10 ** (rng.uniform(-30, -1) / 20)
    return x, level


# ---------------------------------------------------------------------------------------------
# The corpus


def _write_mp3(path: str, x: np.ndarray, sr: int) -> None:
    """320 kbit/s constant, as most FMA clips are encoded. LAME's fast algorithm (quality 7)
    encodes 7x faster than libsndfile's default setting; the clips are synthetic, so its
    psychoacoustic shortcuts cost nothing that matters."""
    import lameenc

    enc = lameenc.Encoder()
    enc.set_bit_rate(320)
    enc.set_in_sample_rate(sr)
    enc.set_channels(x.shape[1])
    enc.set_quality(7)
    pcm = (np.clip(x, -1.0, 1.0) * 32767).astype("<i2")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(enc.encode(pcm.tobytes()) + enc.flush())
    os.replace(tmp, path)


def _write_track(job: tuple) -> None:
    path, genre, artist_seed, track_seed, seconds, sr, kind, upload, layers = job
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if kind == "missing":
        return
    if kind == "empty":
        open(path, "wb").close()
        return
    if kind == "not_audio":
        with open(path, "wb") as f:
            f.write(b"<html><body>404 Not Found</body></html>\n" * 20)
        return
    if kind == "short":
        seconds = 1.5
    x = render(genre, artist_seed, track_seed, seconds, sr, upload, **layers)
    if kind == "silent":
        x = np.zeros_like(x)
    _write_mp3(path, x, sr)
    if kind == "truncated":
        # Cut mid-stream, as an interrupted upload leaves a file: 40% of it still decodes.
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: int(len(data) * 0.4)])


def plan(cfg: SynthConfig) -> pd.DataFrame:
    """The corpus before any audio: one row per track with artist, genre, split, subset, kind."""
    rng = np.random.default_rng(cfg.seed)
    rows = []
    track_id = 2
    artist = 0
    # Artists take genres in turn, so genres stay balanced; each has 1-4 tracks.
    while len(rows) < cfg.tracks:
        artist += 1
        genre = GENRES[(artist - 1) % len(GENRES)]
        for _ in range(int(rng.integers(1, 5))):
            if len(rows) == cfg.tracks:
                break
            rows.append({"track_id": track_id, "artist_id": artist, "genre": genre})
            track_id += int(rng.integers(1, 4))
    df = pd.DataFrame(rows)
    # Artist-filtered splits, stratified by genre: every artist's tracks share one split; the first
    # artists of a genre seed validation and test so that small corpora cover every genre.
    split_of = {}
    for genre, g in df.groupby("genre", sort=True):
        artists = list(g["artist_id"].unique())
        sizes = g["artist_id"].value_counts()
        rng.shuffle(artists)
        counts = {"training": 0, "validation": 0, "test": 0}
        target = {"training": 1 - 2 * cfg.held_out, "validation": cfg.held_out, "test": cfg.held_out}
        for i, a in enumerate(artists):
            n = int(sizes[a])
            if len(artists) >= 3 and i < 2:
                s = ["validation", "test"][i]
            else:
                total = sum(counts.values()) + n
                s = max(target, key=lambda k: target[k] * total - counts[k])
            split_of[a] = s
            counts[s] += n
    df["split"] = df["artist_id"].map(split_of)
    shares = FMA_SUBSET_SHARES if cfg.fma_proportions else {"small": 0.4, "medium": 0.3, "large": 0.3}
    df["subset"] = rng.choice(list(shares), size=len(df), p=list(shares.values()))
    unlabelled = FMA_UNLABELLED_IN_LARGE if cfg.fma_proportions else cfg.unlabelled_share / shares["large"]
    df["labelled"] = ~((df["subset"] == "large") & (rng.random(len(df)) < unlabelled))
    df["kind"] = "ok"
    n_broken = int(round(cfg.broken_share * len(df)))
    if n_broken:
        idx = rng.choice(len(df), size=n_broken, replace=False)
        kinds = list(BROKEN_EXPECTED)
        df.loc[idx, "kind"] = [kinds[i % len(kinds)] for i in range(n_broken)]
    df["expected"] = df["kind"].map(lambda k: BROKEN_EXPECTED.get(k, "ok"))
    df["artist_seed"] = cfg.seed * 1_000_003 + df["artist_id"]
    df["track_seed"] = cfg.seed * 1_000_003 + df["track_id"] * 7919 + 1
    # The metadata's genre; its own generator, so that a clean corpus stays what it was.
    noise = np.random.default_rng(cfg.seed + 2)
    flipped = (df["split"] == "training").to_numpy() & (noise.random(len(df)) < cfg.label_noise)
    others = [[g for g in GENRES if g != genre] for genre in df["genre"]]
    df["listed_genre"] = [o[int(noise.integers(len(o)))] if f else g for g, o, f in zip(df["genre"], others, flipped)]
    # The tracks recorded as uploads: validation and test, with upload conditions.
    df["upload"] = (df["split"] != "training") & bool(cfg.upload_conditions)
    # What the options add (0 and "": nothing), each from a generator of its own so that every
    # column above stays as it was: the sub-genre a track plays and is listed as, and the genre
    # (with its sub-genre) it is blended with.
    df["subgenre"] = df["listed_subgenre"] = df["blend_subgenre"] = 0
    df["blend"] = ""
    if cfg.subgenres:
        # Per artist, as an artist's style is: within a genre the artists (by id) alternate
        # between its two sub-genres from a random start, so that small corpora have both.
        start = dict(zip(GENRES, np.random.default_rng(cfg.seed + 4).integers(0, 2, len(GENRES))))
        rank = df.groupby("genre")["artist_id"].rank(method="dense").astype(int).to_numpy() - 1
        which = [(r + start[g]) % 2 for g, r in zip(df["genre"], rank)]
        df["subgenre"] = [SUBGENRES[g][w][0] for g, w in zip(df["genre"], which)]
        # A flipped label names the other genre's sub-genre of the same rank: wrong at both levels.
        df["listed_subgenre"] = [SUBGENRES[g][w][0] for g, w in zip(df["listed_genre"], which)]
    if cfg.multi_genre:
        mg = np.random.default_rng(cfg.seed + 3)
        ok = np.flatnonzero((df["kind"] == "ok").to_numpy())
        chosen = np.sort(mg.choice(ok, size=int(round(cfg.multi_genre * len(ok))), replace=False))
        df.loc[chosen, "blend"] = [
            [g for g in GENRES if g != genre][int(mg.integers(len(GENRES) - 1))] for genre in df.loc[chosen, "genre"]
        ]
        if cfg.subgenres:
            df.loc[chosen, "blend_subgenre"] = [SUBGENRES[g][int(mg.integers(2))][0] for g in df.loc[chosen, "blend"]]
        # A blend is tagged (with two genres, genre_top empty), and truthfully: label noise flips
        # single-genre tracks only, so that a flip never names the blend's other genre alone.
        df.loc[chosen, "labelled"] = True
        df.loc[chosen, "listed_genre"] = df.loc[chosen, "genre"]
        df.loc[chosen, "listed_subgenre"] = df.loc[chosen, "subgenre"]
    df["crossover"], df["crossover_level"] = "", 0.0
    if cfg.crossover:
        cx = np.random.default_rng(cfg.seed + 5)
        second = {
            a: [g for g in GENRES if g != genre][int(cx.integers(len(GENRES) - 1))]
            for a, genre in df.groupby("artist_id")["genre"].first().items()
        }
        df["crossover"] = df["artist_id"].map(second)
        df["crossover_level"] = cfg.crossover * cx.uniform(0.2, 1.0, len(df))
    return df


def _listed(df: pd.DataFrame) -> tuple[list[list[int]], list[list[int]]]:
    """The genre ids tracks.csv lists for each track when `truthful`: `genres` (a single-genre
    track its genre, or its sub-genre; a blend both; a track left without genre_top that is no
    blend nothing) and `genres_all` (those and their parents), each sorted as the FMA writes them."""
    genres, genres_all = [], []
    for r in df.itertuples():
        ids = []
        if r.labelled:
            ids.append(r.listed_subgenre or GENRE_IDS[r.listed_genre])
        if r.blend:
            ids.append(r.blend_subgenre or GENRE_IDS[r.blend])
        genres.append(sorted(ids))
        genres_all.append(sorted(set(ids) | {GENRE_IDS[SUBGENRE_PARENT[i]] for i in ids if i in SUBGENRE_PARENT}))
    return genres, genres_all


def _tracks_csv(df: pd.DataFrame, cfg: SynthConfig) -> pd.DataFrame:
    rng = np.random.default_rng(cfg.seed + 1)
    out = pd.DataFrame(
        index=pd.Index(df["track_id"], name="track_id"), columns=pd.MultiIndex.from_tuples(TRACKS_COLUMNS)
    )
    out.loc[:, :] = ""
    genres_col, genres_all = [], []
    if cfg.truthful:
        genres_col, genres_all = ([str(ids) for ids in c] for c in _listed(df))
    else:  # as before the options existed: genre lists that the audio does not bear out
        for g, labelled in zip(df["listed_genre"], df["labelled"]):
            sub = SUBGENRES[g][int(rng.integers(0, 2))][0]
            if labelled:
                genres_col.append(f"[{sub}]")
                genres_all.append(str(sorted([sub, GENRE_IDS[g]])))
            else:  # several top genres: the FMA leaves genre_top empty
                other = GENRES[(GENRES.index(g) + 1) % len(GENRES)]
                osub = SUBGENRES[other][0][0]
                genres_col.append(str(sorted([sub, osub])))
                genres_all.append(str(sorted([sub, osub, GENRE_IDS[g], GENRE_IDS[other]])))
    created = "2016-01-01 00:00:00"
    album = df["artist_id"].to_numpy()
    cols = {
        ("album", "comments"): 0, ("album", "date_created"): created, ("album", "favorites"): 0,
        ("album", "id"): album, ("album", "information"): "<p></p>", ("album", "listens"): 0,
        ("album", "tags"): "[]", ("album", "title"): [f"Album {a}" for a in album],
        ("album", "tracks"): df.groupby("artist_id")["track_id"].transform("size").to_numpy(), ("album", "type"): "Album",
        ("artist", "comments"): 0, ("artist", "date_created"): created, ("artist", "favorites"): 0,
        ("artist", "id"): album, ("artist", "name"): [f"Synthetic Artist {a}" for a in album], ("artist", "tags"): "[]",
        ("set", "split"): df["split"].to_numpy(), ("set", "subset"): df["subset"].to_numpy(),
        ("track", "bit_rate"): 320000, ("track", "comments"): 0, ("track", "date_created"): created,
        ("track", "duration"): int(cfg.seconds), ("track", "favorites"): 0,
        ("track", "genre_top"): np.where(df["labelled"] & (df["blend"] == ""), df["listed_genre"], ""),
        ("track", "genres"): genres_col, ("track", "genres_all"): genres_all, ("track", "interest"): 0,
        ("track", "language_code"): "en", ("track", "license"): "Attribution 4.0 International",
        ("track", "listens"): 0, ("track", "number"): df.groupby("artist_id").cumcount().to_numpy() + 1,
        ("track", "tags"): "[]", ("track", "title"): [f"Track {t}" for t in df["track_id"]],
    }  # fmt: skip
    # Columns the FMA fills for some tracks only; filled on every 7th (the first included), so
    # that they read back with the real file's dtypes (an all-empty column reads as float).
    some = np.arange(len(df)) % 7 == 0
    sparse = {
        ("album", "date_released"): created, ("album", "engineer"): "Synthetic Engineer", ("album", "producer"): "Synthetic Producer",
        ("artist", "active_year_begin"): created, ("artist", "active_year_end"): created, ("artist", "associated_labels"): "Synthetic Records",
        ("artist", "bio"): "<p>A synthetic artist.</p>", ("artist", "latitude"): 41.39, ("artist", "location"): "Barcelona",
        ("artist", "longitude"): 2.17, ("artist", "members"): "Synthetic Member", ("artist", "related_projects"): "Side projects",
        ("artist", "website"): "http://example.org", ("artist", "wikipedia_page"): "http://example.org/wiki",
        ("track", "composer"): "Synthetic Composer", ("track", "date_recorded"): created, ("track", "information"): "<p></p>",
        ("track", "lyricist"): "Synthetic Lyricist", ("track", "publisher"): "Synthetic Publisher",
    }  # fmt: skip
    cols.update({k: np.where(some, v, np.nan if isinstance(v, float) else "") for k, v in sparse.items()})
    for k, v in cols.items():
        out[k] = v
    return out


def _genres_csv(df: pd.DataFrame, cfg: SynthConfig) -> pd.DataFrame:
    """The 16 top genres and SUBGENRES. `#tracks`: each genre's tracks by their audio's genre; with
    the options on, the tracks whose genres_all lists it, as the FMA counts them."""
    if cfg.truthful:
        count = pd.Series([i for ids in _listed(df)[1] for i in ids], dtype=int).value_counts().to_dict()
    else:
        count = {gid: int((df["genre"] == title).sum()) for gid, title in TOP_GENRES}
    rows = [(gid, int(count.get(gid, 0)), 0, title, gid) for gid, title in TOP_GENRES]
    for parent, subs in SUBGENRES.items():
        for gid, title in subs:
            rows.append(
                (gid, int(count.get(gid, 0)) if cfg.truthful else 0, GENRE_IDS[parent], title, GENRE_IDS[parent])
            )
    g = pd.DataFrame(rows, columns=["genre_id", "#tracks", "parent", "title", "top_level"]).set_index("genre_id")
    return g.sort_index()


def _link_pool(df: pd.DataFrame, paths: list[str], cfg: SynthConfig) -> tuple[list[tuple], list[tuple[str, str]]]:
    """The clips to render into <out>/_link_pool/ (`link_pool` good ones shared by the genres,
    rendered as the first tracks of each genre; one file per kind of broken file) and the
    (pool file, track path) hard links that give every track one of them. Missing files stay missing."""
    pool_dir = os.path.join(cfg.out, "_link_pool")
    per_genre = max(1, cfg.link_pool // len(GENRES))
    jobs, links, sources = [], [], {}
    rank = df.groupby(["genre", "kind"]).cumcount().to_numpy()
    for path, r, i in zip(paths, df.itertuples(), rank):
        if r.kind == "missing":
            continue
        key = (r.genre, int(i) % per_genre) if r.kind == "ok" else (r.kind, 0)
        if key not in sources:
            sources[key] = os.path.join(pool_dir, f"{key[0].replace(' ', '_').replace('/', '_')}-{key[1]}.mp3")
            jobs.append(
                (sources[key], r.genre, r.artist_seed, r.track_seed, cfg.seconds, cfg.sample_rate, r.kind, (), {})
            )
        links.append((sources[key], path))
    return jobs, links


def _layers(r) -> dict:
    """`render`'s keyword arguments for a plan row's sub-genre, blend and crossover, if any."""
    layers = {
        "subgenre": int(r.subgenre),
        "blend": r.blend,
        "blend_subgenre": int(r.blend_subgenre),
        "crossover": r.crossover,
        "crossover_level": float(r.crossover_level),
    }
    return {k: v for k, v in layers.items() if v}


def stamp_of(cfg: SynthConfig) -> dict:
    """What synth_config.json holds for cfg, as JSON holds it. Options added later are left out
    at their defaults, so that a corpus written before they existed keeps its stamp (and is reused)."""
    wanted = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "workers")}
    wanted["upload_conditions"] = list(cfg.upload_conditions)
    for k, unset in (
        ("upload_conditions", []),
        ("held_out", 0.1),
        ("multi_genre", 0.0),
        ("subgenres", False),
        ("crossover", 0.0),
    ):
        if wanted[k] == unset:
            del wanted[k]
    return wanted


def generate(cfg: SynthConfig, progress: bool = True) -> str:
    """Write the corpus under cfg.out and return it. A corpus already written with the same config
    is reused as it is."""
    from tqdm.auto import tqdm

    from mgc import storage

    if storage.is_uri(cfg.out):
        raise MgcError(f"{cfg.out}: synth writes to a local folder; copy it to object storage afterwards")
    meta_dir = os.path.join(cfg.out, "fma_metadata")
    stamp = os.path.join(meta_dir, "synth_config.json")
    wanted = stamp_of(cfg)
    if os.path.exists(stamp) and storage.read_json(stamp) == wanted:
        return cfg.out
    df = plan(cfg)
    audio_root = os.path.join(cfg.out, cfg.audio_dir)
    paths = [fma.audio_path(audio_root, t) for t in df["track_id"]]
    jobs = [
        (
            p,
            r.genre,
            r.artist_seed,
            r.track_seed,
            cfg.seconds,
            cfg.sample_rate,
            r.kind,
            cfg.upload_conditions if r.upload else (),
            _layers(r),
        )
        for p, r in zip(paths, df.itertuples())
    ]
    links: list[tuple[str, str]] = []
    if cfg.link_pool:
        jobs, links = _link_pool(df, paths, cfg)
    workers = cfg.workers or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for _ in tqdm(
            pool.map(_write_track, jobs, chunksize=4), total=len(jobs), desc="synth", unit="track", disable=not progress
        ):
            pass
    for source, path in tqdm(links, desc="link", unit="track", disable=not progress or not links, mininterval=1.0):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path):
            os.remove(path)
        os.link(source, path)
    os.makedirs(meta_dir, exist_ok=True)
    _tracks_csv(df, cfg).to_csv(os.path.join(meta_dir, "tracks.csv"))
    _genres_csv(df, cfg).to_csv(os.path.join(meta_dir, "genres.csv"))
    truth = df[
        [
            "track_id",
            "genre",
            "listed_genre",
            "split",
            "subset",
            "labelled",
            "kind",
            "expected",
            "upload",
            "crossover",
            "crossover_level",
        ]
    ].copy()
    # What each track sounds like: its genre(s) and sub-genre(s), "|"-joined, the track's own first.
    truth["genres"] = [g + (f"|{b}" if b else "") for g, b in zip(df["genre"], df["blend"])]
    truth["subgenres"] = [
        "|".join(SUBGENRE_TITLES[i] for i in (s, b) if i) for s, b in zip(df["subgenre"], df["blend_subgenre"])
    ]
    truth.to_csv(os.path.join(meta_dir, "synth_truth.csv"), index=False)
    storage.write_json(stamp, wanted)
    return cfg.out


# ---------------------------------------------------------------------------------------------
# New uploads, for labelling

# (extension, soundfile format, subtype) of the upload formats, in turn.
UPLOAD_FORMATS = [
    ("mp3", "MP3", "MPEG_LAYER_III"),
    ("wav", "WAV", "PCM_16"),
    ("flac", "FLAC", "PCM_16"),
    ("ogg", "OGG", "VORBIS"),
]
UPLOAD_RATES = (44100, 48000, 22050, 32000)


def uploads(
    out: str,
    n: int = 24,
    seconds: float = 15.0,
    long_seconds: float = 0.0,
    seed: int = 100,
    crossover: float = 0.0,
    conditions: tuple[str, ...] = (),
) -> pd.DataFrame:
    """A folder of synthetic "new uploads", by new artists: n clips of the genres in turn, in
    mixed formats, sample rates and channel counts, in nested folders; one long file of
    `long_seconds` if given; and broken files (empty, not audio, too short). `crossover` and
    upload `conditions` as SynthConfig's. Writes and returns `_truth.csv` (file, genre or '',
    expected status and reason)."""
    rng, cx = np.random.default_rng(seed), np.random.default_rng([seed, 5])
    rows = []
    for i in range(n):
        genre = GENRES[i % len(GENRES)]
        ext, fmt, subtype = UPLOAD_FORMATS[i % len(UPLOAD_FORMATS)]
        sr = UPLOAD_RATES[(i // len(UPLOAD_FORMATS)) % len(UPLOAD_RATES)]
        layers = {}
        if crossover:
            layers = {
                "crossover": [g for g in GENRES if g != genre][int(cx.integers(len(GENRES) - 1))],
                "crossover_level": crossover * cx.uniform(0.2, 1.0),
            }
        x = render(genre, 10_000 + seed * 100 + i, int(rng.integers(1 << 31)), seconds, sr, conditions, **layers)
        if i % 3 == 0:
            x = x.mean(axis=1)  # mono
        rows.append((f"day{i % 2}/upload_{i:03d}.{ext}", genre, x, sr, fmt, subtype))
    if long_seconds:
        rows.append(
            (
                "long/long_mix.flac",
                "Electronic",
                render("Electronic", 99_999, 1, long_seconds, 22050),
                22050,
                "FLAC",
                "PCM_16",
            )
        )
    truth = []
    for rel, genre, x, sr, fmt, subtype in rows:
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sf.write(path, x, sr, format=fmt, subtype=subtype)
        truth.append({"file": rel, "genre": genre, "status": "ok", "reason": ""})
    broken = {
        "broken/empty.mp3": (b"", "decode_error"),
        "broken/not_audio.wav": (b"<html>404 Not Found</html>\n" * 40, "decode_error"),
    }
    for rel, (data, reason) in broken.items():
        os.makedirs(os.path.join(out, "broken"), exist_ok=True)
        with open(os.path.join(out, rel), "wb") as f:
            f.write(data)
        truth.append({"file": rel, "genre": "", "status": "error", "reason": reason})
    sf.write(os.path.join(out, "broken", "too_short.wav"), render("Rock", 7, 7, 1.0, 22050), 22050)
    truth.append({"file": "broken/too_short.wav", "genre": "", "status": "error", "reason": "too_short"})
    df = pd.DataFrame(truth)
    df.to_csv(os.path.join(out, "_truth.csv"), index=False)
    return df
