"""One clip: a genre as an artist plays it, with the layers the options add (a sub-genre's voice,
a blend with a second genre, the artist's crossover genre), mastered as the catalogue holds it or
recorded as a new upload records it."""

from __future__ import annotations

import numpy as np

from mgc.synth.genres import RENDERERS, SUBGENRE_PARENT, SUBGENRES, _add_voice, _style
from mgc.synth.sound import _Mix, _noise, _rms

# How a new upload can be recorded unlike the catalogue (record_upload says how each is drawn).
UPLOAD_CONDITIONS = ("offset", "band", "noise", "level")

# A new upload with the "offset" condition starts up to this far into the music.
UPLOAD_OFFSET_S = 2.0


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
    `crossover_level` of its RMS. The extras draw from random generators of their own,
    so that without them the clip is the same."""
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
        _add_crossover(mix, style, crossover, crossover_level, artist_seed, track_seed)
    if blend is not None:
        _add_blend(mix, style, blend, blend_subgenre, artist_seed, track_seed)
    x = mix.buf.T / (np.abs(mix.buf).max() + 1e-9)
    level = rng.uniform(0.3, 0.9)
    if not upload:
        return (x * level).astype(np.float32)
    x, level = record_upload(x, sr, int(seconds * sr), upload, level, np.random.default_rng([track_seed, 1]))
    return (x / (np.abs(x).max() + 1e-9) * level).astype(np.float32)


def _add_crossover(mix: _Mix, style: dict, crossover: str, level: float, artist_seed: int, track_seed: int) -> None:
    """Mix `crossover`, the artist's second genre, played in the clip's tempo and key, under `mix`
    at `level` of its RMS."""
    second_style = _style(crossover, np.random.default_rng([artist_seed, 5]))
    second_style.update(bpm=style["bpm"], root=style["root"])
    second = _Mix(mix.seconds, mix.sr)
    RENDERERS[crossover](second, np.random.default_rng([track_seed, 5]), second_style)
    mix.buf = mix.buf / _rms(mix.buf) + second.buf / _rms(second.buf) * level


def _add_blend(
    mix: _Mix, style: dict, blend: str, blend_subgenre: int | None, artist_seed: int, track_seed: int
) -> None:
    """Mix `blend` (with `blend_subgenre`'s voice if given) into `mix` at equal RMS, give or take
    3 dB: played in the clip's key and a tempo of its own."""
    other_style = _style(blend, np.random.default_rng([artist_seed, 3]))
    other_rng = np.random.default_rng([track_seed, 3])
    other_style["bpm"] *= other_rng.uniform(0.96, 1.04)
    other_style["root"] = style["root"]  # one key: a blend, not two pieces played at once
    other = _Mix(mix.seconds, mix.sr)
    RENDERERS[blend](other, other_rng, other_style)
    if blend_subgenre is not None:
        _add_voice(other, blend_subgenre, other_style, np.random.default_rng([track_seed, 4]))
    # Equal RMS, give or take 3 dB. (Balancing instead so that each genre is the louder in about
    # half of the spectrogram's cells left a dense genre 15-20 dB under a sparse one, and
    # models heard the two no better.)
    balance = 10 ** (other_rng.uniform(-3, 3) / 20)
    mix.buf = mix.buf / _rms(mix.buf) + other.buf / _rms(other.buf) * balance


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
