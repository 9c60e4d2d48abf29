"""Checks on an extraction output, and a control copy of one, shared by the tests."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mgc import manifest, storage
from mgc.options import flag


def read_output(out: Path | str):
    """The shards' segments (track_id, segment, split, and the manifest's genre_top and label)
    and the rejects."""
    feats = storage.read_parquet(
        storage.join(str(out), "features"), columns=["track_id", "segment", "split"]
    ).to_pandas()
    labels = manifest.read(storage.join(str(out), "_manifest.parquet")).tracks[["track_id", "genre_top", "label"]]
    feats = feats.merge(labels, on="track_id", how="left")
    rejects = storage.read_parquet(storage.join(str(out), "rejects")).to_pandas()
    return feats, rejects


def assert_complete_and_unique(out: Path | str, truth, segments_per_track: int):
    """Every good track has exactly segments 0..n-1 once; every broken one exactly one reject with
    the reason the corpus planned."""
    feats, rejects = read_output(out)
    assert not feats.duplicated(["track_id", "segment"]).any(), "duplicate segments"
    assert not rejects["track_id"].duplicated().any(), "duplicate rejects"
    assert set(feats["track_id"]).isdisjoint(rejects["track_id"])
    per_track = feats.groupby("track_id")["segment"].agg(["count", "max"])
    assert (per_track["max"] == per_track["count"] - 1).all()
    good = truth[truth["expected"] == "ok"]
    assert set(per_track.index) == set(good["track_id"])
    full = good[good["kind"] == "ok"]["track_id"]
    assert (per_track.loc[full, "count"] == segments_per_track).all()
    got = dict(zip(rejects["track_id"], rejects["reason"]))
    assert got == dict(
        zip(truth.loc[truth["expected"] != "ok", "track_id"], truth.loc[truth["expected"] != "ok", "expected"])
    )
    return feats, rejects


def first_shard_tensors(out: Path):
    name = sorted(p for p in (out / "features").glob("part-*.parquet"))[0]
    table = pq.read_table(name)
    return (
        table.column("logmel").combine_chunks().to_numpy_ndarray(),
        table.column("mfcc").combine_chunks().to_numpy_ndarray(),
        np.asarray(table.column("track_id")),
    )


def shuffled_manifest(features, dest) -> str:
    """The features' manifest with the training tracks' labels (every target's) permuted across
    them, written to `dest` (a .parquet): `--manifest` trains on the same shards with them."""
    m = manifest.read(str(features / "_manifest.parquet"))
    t = m.tracks
    train = t.index[t["split"] == "training"]
    order = np.random.default_rng(0).permutation(train)
    for c in ("genre_top", "label", "genres", "genres_all"):
        t.loc[train, c] = t.loc[order, c].to_numpy()
    manifest.write(m, str(dest))
    return str(dest)


def cli_flags(options: dict) -> list[str]:
    """Options as the command line spells them: True a bare flag, a tuple comma-separated."""
    return [flag(k) + ("" if v is True else "=" + (",".join(map(str, v)) if isinstance(v, tuple) else str(v)))
            for k, v in options.items()]  # fmt: skip
