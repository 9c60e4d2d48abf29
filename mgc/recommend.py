"""Similar tracks: exact cosine nearest neighbours over model embeddings, and their evaluation.

A catalogue is a table of items with an `id`, a `genre` and an `embedding` (the model's
penultimate layer averaged over a track's segments): made from extracted features by `embed`
(ids are track ids, genres the true top genres), or read from a labelling output (ids are paths,
genres the predicted top genres). Search normalises rows and multiplies matrices, a block of the
catalogue at a time, so memory stays at (queries x block) however large the catalogue: a million
32-float embeddings take 128 MB.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mgc import artifact, label, pipeline, session, storage
from mgc import manifest as manifests
from mgc.errors import MgcError
from mgc.features import FeatureConfig
from mgc.inference import Predictor

BLOCK = 65_536  # catalogue rows per matrix product
# Query rows x catalogue rows per product: a product and its top-k selection take about 28 bytes
# an element, so this bounds search memory at ~120 MB whatever the numbers of queries and tracks.
PRODUCT = 1 << 22


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest(
    queries: np.ndarray, catalogue: np.ndarray, k: int, exclude: np.ndarray | None = None, block: int = BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine similarities), each [n_queries, k], best first. `exclude[i]` is a
    catalogue row query i may not return (itself), or -1. Exact search, a block of the catalogue
    against a slice of the queries at a time."""
    q = normalise(queries)
    k = min(k, len(catalogue) - (0 if exclude is None else 1))
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), k), dtype=np.int64)
    step = max(1, PRODUCT // block)
    for start in range(0, len(catalogue), block):
        c = normalise(catalogue[start : start + block])
        for lo in range(0, len(q), step):
            hi = min(lo + step, len(q))
            s = q[lo:hi] @ c.T
            if exclude is not None:
                rows = np.flatnonzero((exclude[lo:hi] >= start) & (exclude[lo:hi] < start + len(c)))
                s[rows, exclude[lo:hi][rows] - start] = -np.inf
            cand_s = np.concatenate([best_s[lo:hi], s], axis=1)
            cand_i = np.concatenate([best_i[lo:hi], np.broadcast_to(np.arange(start, start + len(c)), s.shape)], axis=1)
            top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
            best_s[lo:hi], best_i[lo:hi] = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1), np.take_along_axis(best_s, order, 1)


def precision_at_k(genres: np.ndarray, neighbours: np.ndarray, ks: tuple[int, ...] = (5, 10)) -> pd.DataFrame:
    """The literature's table: per query genre and overall, the mean share of each query's top-k
    neighbours whose genre is the query's own. `neighbours` holds catalogue genres [queries, >=k]."""
    same = neighbours == genres[:, None]
    frame = pd.DataFrame({"genre": genres, **{f"precision@{k}": same[:, :k].mean(1) for k in ks}})
    table = (
        frame.groupby("genre")
        .agg(tracks=("genre", "size"), **{f"precision@{k}": (f"precision@{k}", "mean") for k in ks})
        .reset_index()
    )
    overall = {"genre": "all", "tracks": len(frame), **{f"precision@{k}": frame[f"precision@{k}"].mean() for k in ks}}
    return pd.concat([table, pd.DataFrame([overall])], ignore_index=True).round(4)


def embed(features: str, model_path: str, progress: bool = True) -> pd.DataFrame:
    """Catalogue of the tracks in an extraction output: id (track_id), genre (genre_top), split,
    embedding; a track's embedding is the mean over its segments. Runs on Ray Data, joined after
    the artifact and the features are checked."""
    model, meta = artifact.load(model_path)
    names = list(model.cfg.inputs)
    shards = _check_features(features, model_path, meta, names)
    session.connect()
    ds = storage.ray_read_parquet(shards).select_columns(["track_id", "split", *names])  # pushed down into the read
    total = ds.count()  # from the Parquet footers
    ds = pipeline.network_stage(ds, _Embedder, {"model_path": model_path}, actors=1, batch_size=256)
    tracks = _track_means(ds, total, progress)
    if tracks is None:
        raise MgcError(f"{features}: no segments to embed")
    unique, mean, splits = tracks
    known = manifests.read(storage.join(features, "_manifest.parquet")).tracks.set_index("track_id").reindex(unique)
    # Labels are the manifest's; so is each track's audio file, which `mgc serve` plays.
    return pd.DataFrame(
        {
            "id": unique,
            "genre": known["genre_top"].to_numpy(),
            "split": splits,
            "embedding": list(mean),
            "path": known["path"].to_numpy(),
        }
    )


def _check_features(features: str, model_path: str, meta: dict[str, Any], names: list[str]) -> str:
    """The shards folder of the extraction output `features`, refused unless it holds the inputs
    `names` of the model at `model_path`, extracted as it was trained."""
    shards = storage.join(features, "features")
    if not storage.list_files(shards, ".parquet"):
        raise MgcError(f"{features}: no shards in features/: not the output of mgc extract")
    stored = FeatureConfig.from_dict(storage.read_json(storage.join(features, "_config.json"))["feature_config"])
    # The built-in tagger reads whatever musicnn input the shards hold: no training config to match.
    if (
        model_path != artifact.BUILTIN
        and dataclasses.replace(stored, inputs=meta["features"].inputs) != meta["features"]
    ):
        raise MgcError(
            f"{features} was extracted with another feature config than the model {model_path} was trained on"
        )
    missing = [n for n in names if n not in stored.inputs]
    if missing:
        raise MgcError(
            f"{features} holds {', '.join(stored.inputs)}, not {', '.join(missing)}, which the model {model_path} reads"
        )
    return shards


def _track_means(ds, total: int, progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(track ids, mean embeddings [tracks, dim] float32, splits) of `ds`'s segment embeddings (of
    `total` segments), in id order; None without a batch."""
    from tqdm.auto import tqdm

    # Per-track sums as batches arrive: the driver holds one vector per track, never one per
    # segment (10 per FMA clip). A track cut by a batch boundary is summed in two parts.
    ids, sums, counts, splits = [], [], [], []
    with tqdm(total=total, unit="segment", desc="embed", disable=not progress, mininterval=1.0) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            unique, first, inverse = np.unique(batch["track_id"], return_index=True, return_inverse=True)
            part = np.zeros((len(unique), batch["embedding"].shape[1]), np.float64)
            np.add.at(part, inverse, batch["embedding"])
            ids.append(unique)
            sums.append(part)
            counts.append(np.bincount(inverse))
            splits.append(batch["split"][first])
            bar.update(len(batch["track_id"]))
    if not ids:
        return None
    unique, first, inverse = np.unique(np.concatenate(ids), return_index=True, return_inverse=True)
    total_sum = np.zeros((len(unique), sums[0].shape[1]), np.float64)
    np.add.at(total_sum, inverse, np.concatenate(sums))
    n = np.bincount(inverse, weights=np.concatenate(counts))
    return unique, (total_sum / n[:, None]).astype(np.float32), np.concatenate(splits)[first]


class _Embedder:
    """Ray Data actor: the model loaded once, segment embeddings out."""

    def __init__(self, model_path: str):
        self.predict = Predictor.load(model_path)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        _, h = self.predict(batch)
        return {"track_id": batch["track_id"], "split": batch["split"], "embedding": h}


def evaluate(catalogue: pd.DataFrame, split: str = "test", ks: tuple[int, ...] = (5, 10)) -> pd.DataFrame:
    """precision@k for the labelled tracks of `split` as queries, against every other labelled
    track of the catalogue (the query itself excluded)."""
    cat = catalogue[catalogue["genre"].notna()].reset_index(drop=True)
    queries = np.flatnonzero((cat["split"] == split).to_numpy())
    if not len(queries):
        raise MgcError(f"the catalogue has no labelled tracks in the {split} split")
    emb = np.stack(cat["embedding"].to_numpy())
    idx, _ = nearest(emb[queries], emb, max(ks), exclude=queries)
    genres = cat["genre"].to_numpy()
    return precision_at_k(genres[queries], genres[idx], ks)


def build(features: str, model_path: str, out: str, split: str = "test", progress: bool = True) -> pd.DataFrame:
    """`mgc embed`: the catalogue of `features` embedded by the model, saved as out/catalogue.parquet,
    and its precision@5/@10 per genre over `split`, written as out/precision_at_k.csv and .md."""
    catalogue = embed(features, model_path, progress)
    save_catalogue(catalogue, storage.join(out, "catalogue.parquet"))
    table = evaluate(catalogue, split)
    storage.write_bytes(storage.join(out, "precision_at_k.csv"), table.to_csv(index=False).encode())
    storage.write_bytes(storage.join(out, "precision_at_k.md"), (table.to_markdown(index=False) + "\n").encode())
    return table


def save_catalogue(catalogue: pd.DataFrame, path: str) -> None:
    emb = np.stack(catalogue["embedding"].to_numpy()).astype(np.float32)
    table = pa.table(
        {
            "id": pa.array(catalogue["id"].astype(str)),
            "genre": pa.array(catalogue["genre"], pa.string()),
            "split": pa.array(catalogue.get("split", pd.Series([None] * len(catalogue))), pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), emb.shape[1]),
        }
    )
    if "path" in catalogue.columns:  # each track's audio file (catalogues of earlier mgc have none)
        table = table.append_column("path", pa.array(catalogue["path"], pa.string()))
    storage.write_parquet(table, path, scalar_columns=["id", "genre", "split", "path"])


def load_catalogue(path: str) -> pd.DataFrame:
    """A catalogue from `embed` (a .parquet file) or a labelling output folder (its ok rows);
    `path` is each item's audio file where known."""
    if path.endswith(".parquet"):
        if not storage.exists(path):
            raise MgcError(f"{path}: catalogue not found")
        return storage.read_parquet(path).to_pandas()
    rows = label.current(path)
    rows = rows[rows["status"] == "ok"]
    if rows.empty:
        raise MgcError(f"{path}: no labelled files to search (not a labelling output?)")
    return pd.DataFrame(
        {
            "id": rows["path"],
            "genre": rows["top_genres"].map(lambda g: g[0]),
            "split": None,
            "embedding": list(rows["embedding"]),
            "path": rows["path"],
        }
    )


def similar(catalogue: pd.DataFrame, query: np.ndarray, k: int = 10, exclude_id: str | None = None) -> pd.DataFrame:
    """The k catalogue items most like `query` (an embedding): id, genre, score."""
    emb = np.stack(catalogue["embedding"].to_numpy())
    ids = catalogue["id"].astype(str).to_numpy()
    exclude = np.flatnonzero(ids == exclude_id)[:1] if exclude_id is not None else np.array([], dtype=np.int64)
    idx, score = nearest(query[None, :], emb, k, exclude=exclude if len(exclude) else None)
    return pd.DataFrame({"id": ids[idx[0]], "genre": catalogue["genre"].to_numpy()[idx[0]], "score": score[0].round(4)})
