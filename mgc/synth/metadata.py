"""The corpus's fma_metadata: tracks.csv and genres.csv in the FMA's published format, and
synth_truth.csv, what each track is and sounds like."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from mgc.synth.config import SynthConfig
from mgc.synth.genres import GENRE_IDS, GENRES, SUBGENRE_PARENT, SUBGENRE_TITLES, SUBGENRES, TOP_GENRES

# tracks.csv columns in the FMA's order.
_ALBUM = "comments date_created date_released engineer favorites id information listens producer tags title tracks type"
_ARTIST = (
    "active_year_begin active_year_end associated_labels bio comments date_created favorites id latitude location "
    "longitude members name related_projects tags website wikipedia_page"
)
_TRACK = (
    "bit_rate comments composer date_created date_recorded duration favorites genre_top genres genres_all information "
    "interest language_code license listens lyricist number publisher tags title"
)
TRACKS_COLUMNS = (
    [("album", c) for c in _ALBUM.split()]
    + [("artist", c) for c in _ARTIST.split()]
    + [("set", "split"), ("set", "subset")]
    + [("track", c) for c in _TRACK.split()]
)


def write_metadata(df: pd.DataFrame, cfg: SynthConfig, meta_dir: str) -> None:
    """Write tracks.csv, genres.csv and synth_truth.csv of the planned corpus `df` into `meta_dir`."""
    os.makedirs(meta_dir, exist_ok=True)
    _tracks_csv(df, cfg).to_csv(os.path.join(meta_dir, "tracks.csv"))
    _genres_csv(df, cfg).to_csv(os.path.join(meta_dir, "genres.csv"))
    _truth_csv(df).to_csv(os.path.join(meta_dir, "synth_truth.csv"), index=False)


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


CREATED = "2016-01-01 00:00:00"
# Columns the FMA fills for some tracks only; filled on every 7th (the first included), so that
# they read back with the real file's dtypes (an all-empty column reads as float).
SPARSE = {
    ("album", "date_released"): CREATED,
    ("album", "engineer"): "Synthetic Engineer",
    ("album", "producer"): "Synthetic Producer",
    ("artist", "active_year_begin"): CREATED,
    ("artist", "active_year_end"): CREATED,
    ("artist", "associated_labels"): "Synthetic Records",
    ("artist", "bio"): "<p>A synthetic artist.</p>",
    ("artist", "latitude"): 41.39,
    ("artist", "location"): "Barcelona",
    ("artist", "longitude"): 2.17,
    ("artist", "members"): "Synthetic Member",
    ("artist", "related_projects"): "Side projects",
    ("artist", "website"): "http://example.org",
    ("artist", "wikipedia_page"): "http://example.org/wiki",
    ("track", "composer"): "Synthetic Composer",
    ("track", "date_recorded"): CREATED,
    ("track", "information"): "<p></p>",
    ("track", "lyricist"): "Synthetic Lyricist",
    ("track", "publisher"): "Synthetic Publisher",
}


def _genre_lists(df: pd.DataFrame, cfg: SynthConfig) -> tuple[list[str], list[str]]:
    """The genres and genres_all columns: what the audio has, or (without `truthful`) lists drawn
    regardless of it."""
    if cfg.truthful:
        genres_col, genres_all = ([str(ids) for ids in c] for c in _listed(df))
        return genres_col, genres_all
    rng = np.random.default_rng(cfg.seed + 1)
    genres_col, genres_all = [], []
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
    return genres_col, genres_all


def _tracks_csv(df: pd.DataFrame, cfg: SynthConfig) -> pd.DataFrame:
    out = pd.DataFrame(
        index=pd.Index(df["track_id"], name="track_id"), columns=pd.MultiIndex.from_tuples(TRACKS_COLUMNS)
    )
    out.loc[:, :] = ""
    genres_col, genres_all = _genre_lists(df, cfg)
    album = df["artist_id"].to_numpy()
    cols = {
        ("album", "comments"): 0,
        ("album", "date_created"): CREATED,
        ("album", "favorites"): 0,
        ("album", "id"): album,
        ("album", "information"): "<p></p>",
        ("album", "listens"): 0,
        ("album", "tags"): "[]",
        ("album", "title"): [f"Album {a}" for a in album],
        ("album", "tracks"): df.groupby("artist_id")["track_id"].transform("size").to_numpy(),
        ("album", "type"): "Album",
        ("artist", "comments"): 0,
        ("artist", "date_created"): CREATED,
        ("artist", "favorites"): 0,
        ("artist", "id"): album,
        ("artist", "name"): [f"Synthetic Artist {a}" for a in album],
        ("artist", "tags"): "[]",
        ("set", "split"): df["split"].to_numpy(),
        ("set", "subset"): df["subset"].to_numpy(),
        ("track", "bit_rate"): 320000,
        ("track", "comments"): 0,
        ("track", "date_created"): CREATED,
        ("track", "duration"): int(cfg.seconds),
        ("track", "favorites"): 0,
        ("track", "genre_top"): np.where(df["labelled"] & (df["blend"] == ""), df["listed_genre"], ""),
        ("track", "genres"): genres_col,
        ("track", "genres_all"): genres_all,
        ("track", "interest"): 0,
        ("track", "language_code"): "en",
        ("track", "license"): "Attribution 4.0 International",
        ("track", "listens"): 0,
        ("track", "number"): df.groupby("artist_id").cumcount().to_numpy() + 1,
        ("track", "tags"): "[]",
        ("track", "title"): [f"Track {t}" for t in df["track_id"]],
    }
    some = np.arange(len(df)) % 7 == 0
    cols.update({k: np.where(some, v, np.nan if isinstance(v, float) else "") for k, v in SPARSE.items()})
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


def _truth_csv(df: pd.DataFrame) -> pd.DataFrame:
    """synth_truth.csv: each track's genre, listing, split, kind and layers, and what it sounds like."""
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
    return truth
