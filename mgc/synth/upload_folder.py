"""A folder of synthetic new uploads, for labelling: clips of every genre by new artists in mixed
formats, sample rates and channel counts, a long file, broken files, and `_truth.csv`."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import soundfile as sf

from mgc.synth.clip import render
from mgc.synth.genres import GENRES

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
    rows = _clips(n, seconds, seed, crossover, conditions)
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
    truth += _write_broken(out)
    df = pd.DataFrame(truth)
    df.to_csv(os.path.join(out, "_truth.csv"), index=False)
    return df


def _clips(n: int, seconds: float, seed: int, crossover: float, conditions: tuple[str, ...]) -> list[tuple]:
    """The n clips as (relative path, genre, samples, sample rate, format, subtype)."""
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
    return rows


def _write_broken(out: str) -> list[dict]:
    """Write the broken files under <out>/broken and return their `_truth.csv` rows."""
    truth = []
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
    return truth
