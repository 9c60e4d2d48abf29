"""Training targets: what each track is labelled with, read from a manifest apart from the feature
shards and joined on track_id when training reads them.

    genre_top    one class per track: its top genre (tracks without one are not trained on)
    genres       multi-label: the genres the track's artist chose
    genres_all   multi-label: those and all their ancestors in the genre tree (FMA's genres.csv)

A multi-label target is a multi-hot vector over the genres that at least `min_tracks` tracks of
the training split carry. genres_all's classes keep the tree (each class's nearest kept
ancestor), so that predictions are made consistent with it (`consistent`) and a track's top genre
is read from the root genres' scores (`Target.roots`). `genres` lists a chosen genre without its
parent (Punk, not Rock), so its classes keep no tree: each is a root.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mgc import fma, storage
from mgc import manifest as manifests
from mgc.errors import MgcError
from mgc.manifest import Manifest

TARGETS = ("genre_top", "genres", "genres_all")
MULTILABEL = ("genres", "genres_all")


def score(kind: str) -> str:
    """The validation score of a target that ranks checkpoints, trials and compared models: macro
    F1 of tracks; multi-label, micro average precision."""
    return "val_track_ap_micro" if kind in MULTILABEL else "val_track_f1_macro"


@dataclass
class Target:
    """One target over a corpus's tracks. `labels` per track of `track_ids` (sorted): the class
    (int16, -1 for none) for genre_top; multi-label, its multi-hot row packed by np.packbits.
    `top` per track: the class of its genre_top (-1 for none), for top-genre accuracy."""

    kind: str
    classes: list[str]
    parents: list[int]  # per class, its nearest ancestor among the classes (-1: none)
    track_ids: np.ndarray
    labels: np.ndarray
    top: np.ndarray

    @property
    def multilabel(self) -> bool:
        return self.kind in MULTILABEL

    @property
    def roots(self) -> list[int]:
        """The classes a top genre is read from: those without an ancestor among the classes."""
        return roots(self.parents)

    @property
    def score(self) -> str:
        """The validation score that ranks checkpoints (`score`)."""
        return score(self.kind)

    def _rows(self, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.searchsorted(self.track_ids, track_ids)
        idx = np.minimum(idx, len(self.track_ids) - 1)
        return idx, self.track_ids[idx] == track_ids

    def lookup(self, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labelled mask, targets) of these tracks: class indices (int64), or multi-hot rows
        (float32 [n, classes]) where a track carries at least one class."""
        idx, present = self._rows(np.asarray(track_ids, dtype=np.int64))
        if not self.multilabel:
            y = np.where(present, self.labels[idx], -1).astype(np.int64)
            return y >= 0, y
        y = np.unpackbits(self.labels[idx], axis=1, count=len(self.classes)).astype(np.float32)
        y[~present] = 0
        return y.any(1), y

    def labelled(self, track_ids: np.ndarray) -> np.ndarray:
        """Which of these tracks carry a class (`lookup`'s mask, without unpacking the rows)."""
        idx, present = self._rows(np.asarray(track_ids, dtype=np.int64))
        return present & (self.labels[idx] >= 0 if not self.multilabel else self.labels[idx].any(1))

    def tops(self, track_ids: np.ndarray) -> np.ndarray:
        """The class of each track's genre_top (-1: none)."""
        idx, present = self._rows(np.asarray(track_ids, dtype=np.int64))
        return np.where(present, self.top[idx], -1)

    def join(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A batch of segments with its `target` column, less the segments of unlabelled tracks
        (Ray Data's map_batches)."""
        mask, y = self.lookup(batch["track_id"])
        return {**{k: v[mask] for k, v in batch.items()}, "target": y[mask]}

    def pos_weight(self, track_ids: np.ndarray) -> list[float]:
        """Per class, sqrt(negatives / positives) over these (training) tracks: the long tail's
        few positives weigh more in the loss, without the plain ratio's hundredfold swings."""
        mask, y = self.lookup(track_ids)
        pos = y[mask].sum(0)
        return np.sqrt((mask.sum() - pos) / np.maximum(pos, 1)).tolist()

    def meta(self) -> dict[str, Any]:
        """What an artifact keeps of the target (mgc.artifact: model.json)."""
        return {"target": self.kind, "multilabel": self.multilabel, "parents": self.parents}


def consistent(probs: np.ndarray, parents: list[int]) -> np.ndarray:
    """Probabilities [n, classes] made consistent with the tree: no class's probability above its
    parent's (each is capped by its parent's, parents first)."""
    out = np.array(probs, copy=True)
    for c in _parents_first(parents):
        if parents[c] >= 0:
            np.minimum(out[:, c], out[:, parents[c]], out=out[:, c])
    return out


def tags(probs: np.ndarray, cut: np.ndarray, parents: list[int], depths: list[int] | None = None) -> np.ndarray:
    """One prediction's tags: the classes at or above their thresholds `cut`, with their ancestors
    (a tag's parent genre holds too), deepest first, then most probable first. `depths`: the
    tree's `depth(parents)`, given by a caller that tags many predictions."""
    depths = depth(parents) if depths is None else depths
    tagged = set(np.flatnonzero(probs >= cut).tolist())
    for c in list(tagged):
        while parents[c] >= 0 and parents[c] not in tagged:
            c = parents[c]
            tagged.add(c)
    return np.array(sorted(tagged, key=lambda c: (-depths[c], -probs[c])), dtype=int)


def roots(parents: list[int]) -> list[int]:
    """The classes of a tree without an ancestor among the classes: a top genre is one of them."""
    return [c for c, p in enumerate(parents) if p < 0]


def depth(parents: list[int]) -> list[int]:
    """Each class's depth in the tree (0: a root)."""
    out = []
    for c in range(len(parents)):
        d, p = 0, parents[c]
        while p >= 0 and d <= len(parents):
            d, p = d + 1, parents[p]
        out.append(d)
    return out


def _parents_first(parents: list[int]) -> list[int]:
    d = depth(parents)
    return sorted(range(len(parents)), key=d.__getitem__)


def build(m: Manifest, kind: str, shard_tracks: pd.DataFrame, min_tracks: int = 20) -> Target:
    """The target `kind` of the tracks in the shards (`shard_tracks`: track_id, split) from the
    manifest `m`'s labels. Multi-label classes: the genres of at least `min_tracks` training tracks."""
    if kind not in TARGETS:
        raise MgcError(f"unknown --target {kind!r}; choose one of {', '.join(TARGETS)}")
    tracks = (
        shard_tracks[["track_id", "split"]]
        .merge(m.tracks.drop(columns=["split"]), on="track_id", how="left")
        .sort_values("track_id")
    )
    ids = tracks["track_id"].to_numpy(np.int64)
    genre_top = tracks["genre_top"].where(tracks["genre_top"].notna(), None)
    if kind == "genre_top":
        classes = sorted({g for g in genre_top if g is not None})
        index = {g: i for i, g in enumerate(classes)}
        y = np.array([index[g] if g is not None else -1 for g in genre_top], dtype=np.int16)
        return Target(kind, classes, [-1] * len(classes), ids, y, y.copy())
    lists = [v if isinstance(v, list) else [] for v in tracks[kind]]
    if m.source.get("genre_lists") is False or not any(lists):
        raise MgcError(
            f"the manifest lists no {kind} for these tracks (a manifest from an older mgc, or a CSV without a genres "
            "column): pass --manifest with the FMA's tracks.csv (genres.csv beside it) or a CSV whose genres column "
            "lists each file's genres"
        )
    training = tracks["split"].to_numpy() == "training"
    counts = pd.Series([g for keep, gs in zip(training, lists) if keep for g in set(gs)], dtype=object).value_counts()
    classes = sorted(counts[counts >= min_tracks].index)
    if not classes:
        raise MgcError(f"no genre of --target {kind} is carried by {min_tracks} training tracks (--min-genre-tracks)")
    index = {g: i for i, g in enumerate(classes)}
    hot = np.zeros((len(ids), len(classes)), dtype=bool)
    for row, gs in enumerate(lists):
        hot[row, [index[g] for g in gs if g in index]] = True
    top = np.array([index.get(g, -1) if g is not None else -1 for g in genre_top], dtype=np.int16)
    parents = _kept_parents(classes, m.parents) if kind == "genres_all" else [-1] * len(classes)
    return Target(kind, classes, parents, ids, np.packbits(hot, axis=1), top)


def _kept_parents(classes: list[str], parents: dict[str, str]) -> list[int]:
    """Each class's nearest ancestor in `parents` that is a class too (-1: none)."""
    index = {g: i for i, g in enumerate(classes)}
    out = []
    for g in classes:
        seen, p = {g}, parents.get(g)
        while p is not None and p not in index and p not in seen:
            seen.add(p)
            p = parents.get(p)
        out.append(index.get(p, -1) if p is not None else -1)
    return out


def load_manifest(source: str, features: str) -> Manifest:
    """The labels to train with: `source` a manifest Parquet (extraction's _manifest.parquet), the
    FMA's tracks.csv (genres.csv beside it), or a CSV manifest (mgc.manifest.from_csv; without a
    track_id column its paths are matched to the extraction's); empty: the features' own."""
    extracted = storage.join(features, "_manifest.parquet")
    if not source:
        if not storage.exists(extracted):
            raise MgcError(
                f"{features}: no _manifest.parquet (not the output of mgc extract); pass --manifest with the "
                "tracks' labels"
            )
        return manifests.read(extracted)
    if not storage.exists(source):
        raise MgcError(f"{source}: manifest not found")
    if source.lower().endswith(".parquet"):
        return manifests.read(source)
    folder = posixpath.dirname(source) if storage.is_uri(source) else os.path.dirname(os.path.abspath(source))
    if os.path.basename(source) == "tracks.csv" and storage.exists(storage.join(folder, "genres.csv")):
        return fma.from_metadata(source, storage.join(folder, "genres.csv"), audio_root=folder, subset="full")
    m = manifests.from_csv(source)
    known = manifests.read(extracted) if storage.exists(extracted) else None
    df = m.tracks
    if "track_id" not in _csv_columns(source):  # ids by path, as the extraction numbered them
        if known is None:
            raise MgcError(
                f"{source}: no track_id column, and {features} has no _manifest.parquet to match its paths to"
            )
        ids = dict(zip(known.tracks["path"], known.tracks["track_id"]))
        df = df.assign(
            track_id=[ids.get(p, -1 - i) for i, p in enumerate(df["path"])]
        )  # unknown paths: ids no shard has
    # A CSV has no genre tree: the extraction's (FMA's genres.csv) gives genres_all its ancestors.
    # Built again, so that duplicate ids (a path listed twice) are refused too.
    return manifests.build(df, m.source, source, known.parents if known is not None else {})


def _csv_columns(path: str) -> list[str]:
    with storage.open_input(path) as f:
        return pd.read_csv(f, nrows=0).columns.tolist()
