"""The manifest: which tracks to process, where their audio is, their split and labels.

Built from FMA metadata (`mgc.fma`), a CSV of paths and labels, or a folder with one sub-folder
per genre (GTZAN's layout). Columns: track_id (int64), path (str), split (training / validation /
test), genre_top (str or None), label (int16, -1 when unlabelled), genres (the track's own genres,
a list of names) and genres_all (those and their ancestors in the genre tree). `parents` is the
tree (genre -> parent genre; roots absent), FMA's genres.csv or empty. A manifest without genre
lists gives each labelled track its genre_top as its genres.

Labels live here, not in the feature shards: extraction writes the manifest beside the shards
(`write`, `_manifest.parquet`) and training joins a manifest's labels on track_id (mgc.targets),
so a catalogue is relabelled without re-extraction.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from mgc import storage
from mgc.errors import MgcError

SPLITS = ("training", "validation", "test")
# A CSV manifest's `genres` cell lists several genres joined by this.
GENRE_SEPARATOR = "|"
# The tree's key in _manifest.parquet's schema metadata.
TREE_KEY = b"mgc.genre_parents"
# The files mgc reads as audio, wherever it lists a folder (extraction and labelling).
AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au")


@dataclass
class Manifest:
    tracks: pd.DataFrame
    labels: list[str]
    source: dict[str, Any] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Identifies the track list (ids, paths, splits; not the labels, which can change
        without re-extraction), to refuse mixing outputs."""
        h = hashlib.sha256()
        for col in ("track_id", "path", "split"):
            h.update("\x1f".join(map(str, self.tracks[col].tolist())).encode())
            h.update(b"\x1e")
        return h.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.tracks)


def build(df: pd.DataFrame, source: dict[str, Any], where: str, parents: dict[str, str] | None = None) -> Manifest:
    """Validate a frame with track_id, path, split, genre_top (and optional genres, genres_all:
    lists of names; without them a track's genres are its genre_top) and attach labels (sorted
    top genres). genres_all gets every ancestor in `parents` of the track's genres."""
    if df["track_id"].duplicated().any():
        dup = df.loc[df["track_id"].duplicated(), "track_id"].iloc[0]
        raise MgcError(f"{where}: track_id {dup} appears more than once")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise MgcError(f"{where}: unknown split value(s) {bad}; expected {list(SPLITS)}")
    genre = df["genre_top"].astype(object).where(df["genre_top"].notna(), None)
    labels = sorted({g for g in genre if g is not None})
    index = {g: i for i, g in enumerate(labels)}
    parents = dict(parents or {})
    own = (
        df["genres"]
        if "genres" in df.columns
        else pd.Series([[g] if g is not None else [] for g in genre], index=df.index)
    )
    every = df["genres_all"] if "genres_all" in df.columns else own
    every = [sorted(set(_with_ancestors([*a, *([g] if g is not None else [])], parents))) for a, g in zip(every, genre)]
    out = pd.DataFrame(
        {
            "track_id": df["track_id"].astype("int64"),
            "path": df["path"].astype(str),
            "split": df["split"].astype(str),
            "genre_top": genre,
            "label": np.array([index.get(g, -1) if g is not None else -1 for g in genre], dtype=np.int16),
            "genres": [list(g) for g in own],
            "genres_all": every,
        }
    )
    return Manifest(out.sort_values("track_id", ignore_index=True), labels, source, parents)


def _with_ancestors(genres: list[str], parents: dict[str, str]) -> list[str]:
    out = list(genres)
    for g in genres:
        seen = {g}
        while (g := parents.get(g)) and g not in seen:  # `seen`: a cycle in a user's tree ends here
            out.append(g)
            seen.add(g)
    return out


def write(m: Manifest, path: str) -> None:
    """The manifest as Parquet, its tree in the schema's metadata (`read` reads it back)."""
    table = pa.Table.from_pandas(m.tracks, preserve_index=False)
    meta = {TREE_KEY: json.dumps(m.parents).encode(), b"mgc.source": json.dumps(m.source).encode()}
    storage.write_parquet(table.replace_schema_metadata({**(table.schema.metadata or {}), **meta}), path)


def read(path: str) -> Manifest:
    """A manifest that `write` wrote (extraction's _manifest.parquet). One without the genres and
    genres_all columns says so in its source (`genre_lists` false), and multi-label targets refuse
    it (mgc.targets)."""
    table = storage.read_parquet(path)
    meta = table.schema.metadata or {}
    df = table.to_pandas()
    missing = [c for c in ("track_id", "path", "split", "genre_top") if c not in df.columns]
    if missing:
        raise MgcError(f"{path}: not an mgc manifest (no column(s) {missing})")
    for c in ("genres", "genres_all"):
        if c in df.columns:
            df[c] = [list(v) if v is not None else [] for v in df[c]]
    source = json.loads(meta.get(b"mgc.source", b"{}"))
    if "genres_all" not in df.columns:
        source["genre_lists"] = False
    return build(df, source, path, json.loads(meta.get(TREE_KEY, b"{}")))


def stratified_split(track_ids, genres, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> list[str]:
    """Deterministic split by track, stratified by genre: the same track always lands in the same
    split for a given seed, whatever the row order."""
    keys = [hashlib.sha1(f"{seed}:{t}".encode()).hexdigest() for t in track_ids]
    frame = pd.DataFrame({"key": keys, "genre": [g if g is not None else "" for g in genres]})
    split = pd.Series("training", index=frame.index, dtype=object)
    for _, group in frame.groupby("genre"):
        order = group.sort_values("key").index
        n = len(order)
        n_val, n_test = int(round(n * fractions[1])), int(round(n * fractions[2]))
        split[order[:n_val]] = "validation"
        split[order[n_val : n_val + n_test]] = "test"
    return split.tolist()


def _resolve_against(base_dir: str, p: str) -> str:
    if storage.is_uri(p) or os.path.isabs(p):
        return p
    return posixpath.join(base_dir, p) if storage.is_uri(base_dir) else os.path.normpath(os.path.join(base_dir, p))


def from_csv(path: str, seed: int = 0) -> Manifest:
    """A CSV with columns path, label (genre name) and optional split, track_id and genres (a
    track's several genres joined by "|"; its label is among them).

    Relative paths resolve against the CSV's folder. Without a split column a stratified split is
    made (see `stratified_split`) and recorded in the manifest's source.
    """
    try:
        with storage.open_input(path) as f:
            df = pd.read_csv(f, encoding="utf-8", dtype={"path": str, "label": str})
    except FileNotFoundError:
        raise MgcError(f"{path}: manifest not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise MgcError(f"{path}: cannot parse manifest CSV: {e}") from None
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise MgcError(
            f"{path}: manifest lacks column(s) {missing}; it needs path and label (split, track_id optional)"
        )
    if df.empty:
        raise MgcError(f"{path}: the manifest has a header but no rows: no tracks to read")
    if df["path"].isna().any():
        raise MgcError(f"{path}: row {int(df['path'].isna().idxmax()) + 2} has an empty path")
    base = posixpath.dirname(path) if storage.is_uri(path) else os.path.dirname(os.path.abspath(path))
    df["path"] = [_resolve_against(base, p) for p in df["path"]]
    if "track_id" not in df.columns:
        df["track_id"] = np.arange(len(df))
    elif df["track_id"].isna().any() or not pd.api.types.is_integer_dtype(df["track_id"]):
        raise MgcError(f"{path}: track_id must be an integer in every row")
    df["genre_top"] = (
        df["label"].astype(object).where(df["label"].notna() & (df["label"].astype(str).str.strip() != ""), None)
    )
    if "genres" in df.columns:
        listed = [
            [g.strip() for g in v.split(GENRE_SEPARATOR) if g.strip()] if isinstance(v, str) else []
            for v in df["genres"]
        ]
        df["genres"] = [list(dict.fromkeys(g + ([t] if pd.notna(t) else []))) for g, t in zip(listed, df["genre_top"])]
    source: dict[str, Any] = {"kind": "csv", "path": path}
    if "split" not in df.columns:
        df["split"] = stratified_split(df["track_id"], df["genre_top"], seed)
        source["split"] = {"method": "stratified", "seed": seed, "fractions": [0.8, 0.1, 0.1]}
    return build(df, source, path)


def from_folder(root: str, seed: int = 0, follow_links: bool = False) -> Manifest:
    """One sub-folder per genre (GTZAN's layout): root/<genre>/<file>. Split made as in from_csv.
    Symbolic links leading out of the root are never read (listed in the source as
    `links_outside`); links inside it are followed only with `follow_links`."""
    fs, p = storage.resolve(root)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        raise MgcError(f"{root}: folder not found")
    tree = storage.list_tree(root, AUDIO_EXTENSIONS, follow_links)
    # Files directly under the root carry no genre.
    rows = [
        (storage.join(root, *parts), parts[0]) for parts in (rel.split("/") for rel in tree.files) if len(parts) >= 2
    ]
    if not rows:
        raise MgcError(f"{root}: no audio files in genre sub-folders (expected root/<genre>/<file>.mp3|wav|flac|ogg)")
    df = pd.DataFrame(rows, columns=["path", "genre_top"])
    df["track_id"] = np.arange(len(df))
    df["split"] = stratified_split(df["track_id"], df["genre_top"], seed)
    source = {
        "kind": "folder",
        "path": root,
        "split": {"method": "stratified", "seed": seed, "fractions": [0.8, 0.1, 0.1]},
        "links_outside": [f"{link} -> {target}" for link, target in tree.outside],
        "links_skipped": tree.skipped,
    }
    return build(df, source, root)
