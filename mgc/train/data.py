"""The splits as Ray Datasets, their batches as tensors, and a model's predictions and scores on
them: what the workers, the driver's fits and the export all read the same way."""

from __future__ import annotations

from typing import Any

import numpy as np

from mgc import metrics, storage, targets
from mgc.inference import Predictor
from mgc.models import ModelConfig


def dataset(features: str, split: str, target: targets.Target, columns: list[str], cache: bool = False):
    """The labelled segments of one split as a Ray Dataset: the inputs `columns`, track_id and
    the target joined from `target` (materialized in the object store if `cache`)."""
    from ray.data.expressions import col

    ds = storage.ray_read_parquet(storage.join(features, "features"))
    ds = ds.filter(expr=col("split") == split).select_columns([*columns, "track_id"])
    ds = ds.map_batches(target.join, batch_format="numpy")
    if cache:
        # Cached in read order, not in the order the reads finish: a seed's shuffle of the
        # cached blocks is then the same on every run.
        ds.context.execution_options.preserve_order = True
        cached = ds.materialize()
        # materialize() was an execution of the copy whose context the cached dataset keeps:
        # counted, it would give a seeded randomize_block_order other orders than the streamed
        # dataset's (RandomSeedConfig(reseed_after_execution=True) seeds with the count).
        cached.context._execution_idx = 0
        return cached
    return ds


def batch_dtypes(mc: ModelConfig, multilabel: bool, half: bool = False) -> dict[str, Any]:
    """iter_torch_batches' dtypes for a model: its inputs as float32 (`half`: float16, as the
    shards hold them, for a GPU to convert after the copy: half the bytes over the bus), track
    ids and class targets as int64, multi-hot targets as float32."""
    import torch

    x = torch.float16 if half else torch.float32
    return {
        "dtypes": {
            **{n: x for n in mc.inputs},
            "target": torch.float32 if multilabel else torch.int64,
            "track_id": torch.int64,
        }
    }


def predict(model, batches, device, multilabel: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(track_ids, targets, segment log-probabilities: log-sigmoids if multilabel) of every
    batch, by the model's inference form."""
    predictor = Predictor(model, device, {"multilabel": multilabel})
    ids, ys, lps = [], [], []
    for batch in batches:
        lps.append(predictor({n: batch[n].float() for n in model.cfg.inputs})[0])
        ids.append(batch["track_id"].cpu().numpy())
        ys.append(batch["target"].cpu().numpy())
    if not ids:  # a rank whose share of the validation split is empty
        n = model.cfg.n_classes
        return (
            np.empty(0, np.int64),
            np.empty((0, n) if multilabel else 0, np.float32 if multilabel else int),
            np.empty((0, n), np.float32),
        )
    y = np.concatenate(ys)
    return np.concatenate(ids), y if multilabel else y.astype(int), np.concatenate(lps)


def evaluate(
    target: targets.Target,
    ids: np.ndarray,
    ys: np.ndarray,
    lps: np.ndarray,
    temperature: float = 1.0,
    cut: list[float] | None = None,
) -> dict[str, dict[str, Any]]:
    """A split's scores at segment and track level, for the target's kind of model."""
    if target.multilabel:
        return metrics.evaluate_multilabel(
            ids, ys, lps, target.tops(ids), target.parents, temperature, cut, target.classes
        )
    return metrics.evaluate(ids, ys, lps, len(target.classes), temperature)
