"""The eight genres: the FMA genre tree they are listed under and how each one is composed.

A genre is a composer (RENDERERS) that renders a track into a stereo mix from an artist's style
(`_style`: where in its genre's space the artist sits) and a per-track random stream. The genres
differ the way real ones do (tempo, rhythm pattern, timbre, harmony, noise colour). A sub-genre
adds a voice of its own over its parent's mix (`_add_voice`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mgc.synth.sound import _drum, _env, _midi, _Mix, _noise, _note, _rms

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


# ---------------------------------------------------------------------------------------------
# Scales, chords and drum patterns the composers share

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


# ---------------------------------------------------------------------------------------------
# Genres: each renders a track from an artist style and a per-track random stream.


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
    tempo = {
        "Electronic": (122, 134), "Hip-Hop": (82, 96), "Rock": (110, 150), "Folk": (80, 115),
        "Pop": (98, 124), "Instrumental": (60, 84), "International": (90, 112), "Experimental": (60, 60),
    }[genre]  # fmt: skip
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
