"""The corpus planned before any audio: its tracks and artists, their splits and subsets, the
broken files, and what each track sounds like and is listed as. One row per track; every column
derives from the seed, each option's from a random generator of its own."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mgc.synth.config import SynthConfig
from mgc.synth.genres import GENRES, SUBGENRES

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


def plan(cfg: SynthConfig) -> pd.DataFrame:
    """The corpus before any audio: one row per track with artist, genre, split, subset, kind,
    seeds, listed genre and what the options add (sub-genre, blend, crossover)."""
    rng = np.random.default_rng(cfg.seed)
    df = _tracks(cfg, rng)
    df["split"] = df["artist_id"].map(_splits(df, cfg, rng))
    _add_subsets(df, cfg, rng)
    _add_broken(df, cfg, rng)
    df["artist_seed"] = cfg.seed * 1_000_003 + df["artist_id"]
    df["track_seed"] = cfg.seed * 1_000_003 + df["track_id"] * 7919 + 1
    _add_listed_genre(df, cfg)
    # The tracks recorded as uploads: validation and test, with upload conditions.
    df["upload"] = (df["split"] != "training") & bool(cfg.upload_conditions)
    # What the options add (0 and "": nothing), each from a generator of its own so that every
    # column above is the same with the option on or off.
    df["subgenre"] = df["listed_subgenre"] = df["blend_subgenre"] = 0
    df["blend"] = ""
    if cfg.subgenres:
        _add_subgenres(df, cfg)
    if cfg.multi_genre:
        _add_blends(df, cfg)
    df["crossover"], df["crossover_level"] = "", 0.0
    if cfg.crossover:
        _add_crossovers(df, cfg)
    return df


def _tracks(cfg: SynthConfig, rng) -> pd.DataFrame:
    """Track ids, artists and genres."""
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
    return pd.DataFrame(rows)


def _splits(df: pd.DataFrame, cfg: SynthConfig, rng) -> dict:
    """Each artist's split: artist-filtered splits, stratified by genre (every artist's tracks share
    one split). The first artists of a genre seed validation and test so that small corpora cover
    every genre."""
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
    return split_of


def _add_subsets(df: pd.DataFrame, cfg: SynthConfig, rng) -> None:
    """The FMA subset of each track and whether it has a genre_top."""
    shares = FMA_SUBSET_SHARES if cfg.fma_proportions else {"small": 0.4, "medium": 0.3, "large": 0.3}
    df["subset"] = rng.choice(list(shares), size=len(df), p=list(shares.values()))
    unlabelled = FMA_UNLABELLED_IN_LARGE if cfg.fma_proportions else cfg.unlabelled_share / shares["large"]
    df["labelled"] = ~((df["subset"] == "large") & (rng.random(len(df)) < unlabelled))


def _add_broken(df: pd.DataFrame, cfg: SynthConfig, rng) -> None:
    """The broken files: each track's kind and the reject reason extraction must give it."""
    df["kind"] = "ok"
    n_broken = int(round(cfg.broken_share * len(df)))
    if n_broken:
        idx = rng.choice(len(df), size=n_broken, replace=False)
        kinds = list(BROKEN_EXPECTED)
        df.loc[idx, "kind"] = [kinds[i % len(kinds)] for i in range(n_broken)]
    df["expected"] = df["kind"].map(lambda k: BROKEN_EXPECTED.get(k, "ok"))


def _add_listed_genre(df: pd.DataFrame, cfg: SynthConfig) -> None:
    """The genre tracks.csv lists: with label noise, another genre for that share of the training
    tracks. Drawn from a generator of its own, so that label noise changes no other column."""
    noise = np.random.default_rng(cfg.seed + 2)
    flipped = (df["split"] == "training").to_numpy() & (noise.random(len(df)) < cfg.label_noise)
    others = [[g for g in GENRES if g != genre] for genre in df["genre"]]
    df["listed_genre"] = [o[int(noise.integers(len(o)))] if f else g for g, o, f in zip(df["genre"], others, flipped)]


def _add_subgenres(df: pd.DataFrame, cfg: SynthConfig) -> None:
    """The sub-genre each track plays and is listed as."""
    # Per artist, as an artist's style is: within a genre the artists (by id) alternate
    # between its two sub-genres from a random start, so that small corpora have both.
    start = dict(zip(GENRES, np.random.default_rng(cfg.seed + 4).integers(0, 2, len(GENRES))))
    rank = df.groupby("genre")["artist_id"].rank(method="dense").astype(int).to_numpy() - 1
    which = [(r + start[g]) % 2 for g, r in zip(df["genre"], rank)]
    df["subgenre"] = [SUBGENRES[g][w][0] for g, w in zip(df["genre"], which)]
    # A flipped label names the other genre's sub-genre of the same rank: wrong at both levels.
    df["listed_subgenre"] = [SUBGENRES[g][w][0] for g, w in zip(df["listed_genre"], which)]


def _add_blends(df: pd.DataFrame, cfg: SynthConfig) -> None:
    """The genre (and sub-genre) the blended tracks add, and their listing."""
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


def _add_crossovers(df: pd.DataFrame, cfg: SynthConfig) -> None:
    """Each artist's second genre and each track's level of it."""
    cx = np.random.default_rng(cfg.seed + 5)
    second = {
        a: [g for g in GENRES if g != genre][int(cx.integers(len(GENRES) - 1))]
        for a, genre in df.groupby("artist_id")["genre"].first().items()
    }
    df["crossover"] = df["artist_id"].map(second)
    df["crossover_level"] = cfg.crossover * cx.uniform(0.2, 1.0, len(df))
