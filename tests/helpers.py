"""Checks on an extraction output, and a control copy of one, shared by the tests."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mgc import storage


def read_output(out: Path | str):
    feats = storage.read_parquet(storage.join(str(out), "features"), columns=["track_id", "segment", "split", "genre_top", "label"]).to_pandas()
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
    assert got == dict(zip(truth.loc[truth["expected"] != "ok", "track_id"], truth.loc[truth["expected"] != "ok", "expected"]))
    return feats, rejects


def first_shard_tensors(out: Path):
    name = sorted(p for p in (out / "features").glob("part-*.parquet"))[0]
    table = pq.read_table(name)
    return table.column("logmel").combine_chunks().to_numpy_ndarray(), table.column("mfcc").combine_chunks().to_numpy_ndarray(), np.asarray(table.column("label"))


def shuffled_copy(features, dest):
    """The same shards with the training labels permuted across tracks."""
    shutil.copytree(features, dest)
    rng = np.random.default_rng(0)
    files = sorted((dest / "features").glob("part-*.parquet"))
    tables = [pq.read_table(f) for f in files]
    index = pd.concat([t.select(["track_id", "split", "label"]).to_pandas() for t in tables]).drop_duplicates("track_id")
    train = index[(index["split"] == "training") & (index["label"] >= 0)]
    mapping = dict(zip(train["track_id"], rng.permutation(train["label"].to_numpy())))
    for f, t in zip(files, tables):
        labels = [mapping.get(tid, lab) for tid, lab in zip(t["track_id"].to_pylist(), t["label"].to_pylist())]
        pq.write_table(t.set_column(t.schema.get_field_index("label"), "label", pa.array(labels, pa.int16())), f)
    return dest
