"""Free Music Archive metadata: tracks.csv, genres.csv, subsets, splits and audio paths.

Formats as published in fma_metadata.zip: tracks.csv has two header rows (column group, name)
and a third naming the index `track_id`; genres.csv is indexed by `genre_id`.
"""

from __future__ import annotations

import re

import pandas as pd

from mgc import storage
from mgc.errors import MgcError
from mgc.manifest import Manifest, build

# ('set', 'subset') is ordered: a track of 'small' is also in 'medium' and 'large'. 'full' holds
# every track, with untrimmed audio (fma_full).
SUBSETS = ("small", "medium", "large", "full")
TRACK_COLUMNS = [("set", "subset"), ("set", "split"), ("track", "genre_top")]
# What a manifest reads besides: every genre a track's artist chose, and those with their ancestors.
GENRE_LIST_COLUMNS = [("track", "genres"), ("track", "genres_all")]
GENRE_COLUMNS = ["#tracks", "parent", "title", "top_level"]


def metadata_dir(fma_root: str) -> str:
    """fma_metadata/ under the root as in the FMA download, else the root itself."""
    candidate = storage.join(fma_root, "fma_metadata")
    return candidate if storage.exists(storage.join(candidate, "tracks.csv")) else fma_root


def _read_csv(path: str, what: str, **kwargs) -> pd.DataFrame:
    try:
        with storage.open_input(path) as f:
            return pd.read_csv(f, encoding="utf-8", **kwargs)
    except FileNotFoundError:
        raise MgcError(f"{path}: not found (FMA {what} expected here)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, IndexError) as e:
        raise MgcError(f"{path}: cannot parse as FMA {what}: {e}") from None


def read_tracks(path: str, columns: list[tuple[str, str]] | None = TRACK_COLUMNS) -> pd.DataFrame:
    """tracks.csv's `columns` (two-level names; None: all), indexed by track_id.

    Only those columns are parsed: the full file has 52 (artists' bios, album notes), and parsing
    them all more than doubles the peak memory of reading FMA large's (378 vs 159 MiB)."""
    header = _read_csv(path, "tracks.csv", header=[0, 1], index_col=0, nrows=0)
    if not isinstance(header.columns, pd.MultiIndex) or header.index.name != "track_id":
        raise MgcError(f"{path}: not in FMA tracks.csv format (two header rows, then a row naming 'track_id')")
    columns = list(dict.fromkeys([*TRACK_COLUMNS, *(header.columns if columns is None else columns)]))
    missing = [c for c in columns if c not in header.columns]
    if missing:
        raise MgcError(f"{path}: missing column(s) {missing} of FMA tracks.csv")
    # pandas takes no usecols with a two-row header: skip the three header rows and name the
    # columns kept (in file order, as usecols returns them).
    keep = sorted(header.columns.get_loc(c) for c in columns)
    tracks = _read_csv(path, "tracks.csv", header=None, skiprows=3, index_col=0, usecols=[0] + [k + 1 for k in keep])
    tracks.columns = header.columns[keep]
    tracks.index.name = "track_id"
    if not pd.api.types.is_integer_dtype(tracks.index):
        raise MgcError(f"{path}: track_id column holds non-integer values")
    subsets = tracks[("set", "subset")]
    bad = sorted(set(subsets.dropna()) - set(SUBSETS[:3]))
    if bad or subsets.isna().any():
        raise MgcError(f"{path}: ('set','subset') holds {bad or 'empty values'}; expected small, medium or large")
    return tracks


def read_genres(path: str) -> pd.DataFrame:
    genres = _read_csv(path, "genres.csv", index_col=0)
    missing = [c for c in GENRE_COLUMNS if c not in genres.columns]
    if genres.index.name != "genre_id" or missing:
        raise MgcError(f"{path}: not in FMA genres.csv format (index genre_id; columns {GENRE_COLUMNS})")
    return genres


def select_subset(tracks: pd.DataFrame, subset: str) -> pd.DataFrame:
    """Tracks of `subset` and of the smaller subsets it contains."""
    if subset not in SUBSETS:
        raise MgcError(f"unknown subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    if subset == "full":
        return tracks
    order = {s: i for i, s in enumerate(SUBSETS)}
    return tracks[tracks[("set", "subset")].map(order) <= order[subset]]


def audio_path(audio_root: str, track_id: int) -> str:
    """<audio_root>/<first 3 digits>/<6-digit id>.mp3, as in fma_large/000/000002.mp3."""
    tid = f"{int(track_id):06d}"
    return storage.join(audio_root, tid[:3], f"{tid}.mp3")


def manifest(fma_root: str, audio_dir: str = "fma_large", subset: str = "large") -> Manifest:
    """The manifest of an FMA subset under `fma_root`, with the FMA's own split."""
    if subset not in SUBSETS:
        raise MgcError(f"unknown subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    if not storage.exists(fma_root):
        raise MgcError(f"{fma_root}: FMA root not found")
    audio_root = storage.join(fma_root, audio_dir)
    if not storage.exists(audio_root):
        raise MgcError(f"{audio_root}: audio folder not found (see --audio-dir)")
    meta = metadata_dir(fma_root)
    source = {"kind": "fma", "root": fma_root, "audio_dir": audio_dir, "subset": subset}
    return from_metadata(storage.join(meta, "tracks.csv"), storage.join(meta, "genres.csv"), audio_root, subset, source)


def from_metadata(
    tracks_csv: str, genres_csv: str, audio_root: str, subset: str = "large", source: dict | None = None
) -> Manifest:
    """The manifest of `subset` from FMA metadata files, audio paths under `audio_root`."""
    tracks = select_subset(read_tracks(tracks_csv, TRACK_COLUMNS + GENRE_LIST_COLUMNS), subset)
    genres = read_genres(genres_csv)
    top_titles = set(genres.loc[genres["parent"] == 0, "title"])
    title = genres["title"].astype(str).to_dict()
    genre_top = tracks[("track", "genre_top")]
    unknown = sorted(set(genre_top.dropna()) - top_titles)
    if unknown:
        raise MgcError(f"{tracks_csv}: genre_top value(s) {unknown} are not top-level genres in {genres_csv}")
    df = pd.DataFrame(
        {
            "track_id": tracks.index.astype("int64"),
            "path": [audio_path(audio_root, t) for t in tracks.index],
            "split": tracks[("set", "split")].to_numpy(),
            "genre_top": genre_top.to_numpy(),
            **{c: _titles(tracks[("track", c)], title, tracks_csv, c) for _, c in GENRE_LIST_COLUMNS},
        }
    )
    if df["split"].isna().any():
        raise MgcError(
            f"{tracks_csv}: ('set','split') is empty for track {int(df.loc[df['split'].isna(), 'track_id'].iloc[0])}"
        )
    parents = {title[g]: title[int(p)] for g, p in genres["parent"].items() if int(p) in title}
    return build(df, source or {"kind": "fma", "tracks": tracks_csv, "subset": subset}, tracks_csv, parents)


def _titles(cells: pd.Series, title: dict[int, str], where: str, column: str) -> list[list[str]]:
    """tracks.csv's genre lists ("[21, 100]": genre ids) as lists of genre titles."""
    out = []
    for tid, cell in cells.items():
        ids = [int(i) for i in re.findall(r"\d+", cell)] if isinstance(cell, str) else []
        unknown = [i for i in ids if i not in title]
        if unknown:
            raise MgcError(f"{where}: track {tid}'s {column} lists genre id(s) {unknown} that genres.csv lacks")
        out.append([title[i] for i in ids])
    return out
