"""The extraction job: a manifest of tracks in, Parquet feature shards and a rejects table out.

Layout of an output (local path or URI):

    _config.json          FeatureConfig, top genres, manifest fingerprint, shard size
    _manifest.parquet     the tracks this output covers, with their splits and labels (the
                          labels training reads unless given another manifest: mgc.targets)
    _summary.json         tracks ok / rejected by reason, segments, wall time, tracks/s
    features/part-NNNNNN.parquet   one row per segment (see feature_schema: an array per input)
    rejects/part-NNNNNN.parquet    one row per rejected track: track_id, path, reason, detail

The manifest, sorted by track_id, is cut into fixed chunks of `tracks_per_shard` tracks; chunk k
is one Ray task that writes rejects/part-k then features/part-k, each atomically. A chunk is done
when its features file exists, so a killed run re-run with the same command skips done chunks and
rewrites any others whole: every good track ends with exactly one set of segments, even when Ray
retries a task or a late task of the killed run finishes after the new run started.
"""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

import mgc
from mgc import inputs, pipeline, session, storage
from mgc import manifest as manifests
from mgc.errors import MgcError
from mgc.features import FeatureConfig
from mgc.manifest import Manifest
from mgc.options import option, validate

REJECT_SCHEMA = pa.schema(
    [("track_id", pa.int64()), ("path", pa.string()), ("reason", pa.string()), ("detail", pa.string())]
)


# No labels: they live in the manifest, so that relabelling needs no re-extraction.
SCALARS = [("track_id", pa.int64()), ("segment", pa.int16()), ("split", pa.string())]
SHARD_FORMAT = 2  # 2: labels left the shards for the manifest
SCALAR_COLUMNS = [name for name, _ in SCALARS]


def feature_schema(cfg: FeatureConfig) -> pa.Schema:
    """Shard rows: one per segment, each of cfg.inputs a fixed-shape float16 tensor."""
    return pa.schema(SCALARS + [(n, pa.fixed_shape_tensor(pa.float16(), inputs.get(n).shape(cfg))) for n in cfg.inputs])


@dataclass(frozen=True)
class ExtractConfig:
    """One extraction run."""

    out: str = option(help="output folder or URI (s3://bucket/prefix)")
    features: FeatureConfig = option(factory=FeatureConfig, help="how audio becomes model input")
    tracks_per_shard: int = option(
        32, low=1, help="tracks per task and per Parquet file; a killed run resumes at this granularity"
    )
    progress: bool = option(True, help="show progress bars")
    # A network input's actors are fed by the decode tasks, on CPUs.
    use_gpu: bool = option(
        False,
        help="run the musicnn input's network in GPU actors (one per GPU unless --network-actors), fed by CPU "
        "decode tasks",
    )
    network_actors: int = option(
        0,
        low=0,
        help="actors that run the musicnn input's network (0: one per GPU with --use-gpu, else none: it runs in the "
        "decode tasks)",
    )

    def __post_init__(self) -> None:
        validate(self)


WAVE = 512  # chunks per Ray Data run, at least (see run)


def shard_name(chunk: int) -> str:
    return f"part-{chunk:06d}.parquet"


def decode_chunk(chunk: dict[str, Any], cfg: FeatureConfig) -> dict[str, Any]:
    """Decode one chunk of tracks and `prepare` their inputs (mgc.pipeline.decode): {"chunk",
    "tracks": (track_id, path, split, prepared inputs) per good track, "rejects", "status"}."""
    tracks, rejects, status = [], [], []
    for tid, path, split in zip(chunk["track_id"], chunk["path"], chunk["split"]):
        tid = int(tid)
        try:
            tracks.append((tid, path, split, pipeline.decode(path, cfg, cfg.inputs)[1]))
        except Exception as e:  # noqa: BLE001 - one odd file must not sink the other tracks
            _reject(rejects, status, tid, path, e)
    return {"chunk": int(chunk["chunk"]), "tracks": tracks, "rejects": rejects, "status": status}


def _reject(rejects: list[dict], status: list[dict], tid: int, path: str, e: Exception) -> None:
    """A failed track's reject row and status row."""
    reason, detail = pipeline.failure(path, e)
    rejects.append({"track_id": tid, "path": path, "reason": reason, "detail": detail})
    status.append({"track_id": tid, "reason": reason, "segments": 0})


def write_chunk(decoded: dict[str, Any], out: str, cfg: FeatureConfig, device: str = "cpu") -> list[dict[str, Any]]:
    """Finish a decoded chunk's inputs (the networks run here, on `device`), write its shard and
    rejects, and return one status row per track (the driver only ever sees these small rows)."""
    schema = feature_schema(cfg)
    columns: dict[str, list] = {name: [] for name in schema.names}
    status = list(decoded["status"])
    rejects = list(decoded["rejects"])
    for tid, path, split, prepared in decoded["tracks"]:
        try:
            arrays = inputs.finish(prepared, device)
        except Exception as e:  # noqa: BLE001 - as in decode_chunk: one track's failure is its reject
            _reject(rejects, status, tid, path, e)
            continue
        n = len(arrays[cfg.inputs[0]])
        columns["track_id"] += [tid] * n
        columns["segment"] += list(range(n))
        columns["split"] += [split] * n
        for name in cfg.inputs:
            columns[name].append(arrays[name])
        status.append({"track_id": tid, "reason": "ok", "segments": n})

    name = shard_name(decoded["chunk"])
    storage.write_parquet(pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA), storage.join(out, "rejects", name))
    groups = None
    if columns["track_id"]:
        # One row group per split, in track order within each: training's reads of one split
        # skip the other row groups by their statistics.
        key = columns["split"]
        order = sorted(range(len(key)), key=key.__getitem__)
        arrays = [pa.array([columns[c][i] for i in order], type=schema.field(c).type) for c in SCALAR_COLUMNS]
        arrays += [pa.FixedShapeTensorArray.from_numpy_ndarray(np.concatenate(columns[c])[order]) for c in cfg.inputs]
        table = pa.Table.from_arrays(arrays, schema=schema)
        groups = [sum(1 for _ in g) for _, g in itertools.groupby(key[i] for i in order)]
    else:
        table = schema.empty_table()
    # Written last: its existence marks the chunk done.
    storage.write_parquet(table, storage.join(out, "features", name), scalar_columns=SCALAR_COLUMNS, row_groups=groups)
    return status


def process_chunk(chunk: dict[str, Any], out: str, cfg: FeatureConfig) -> list[dict[str, Any]]:
    """One chunk decoded, featurised and written in one task (the networks too, on its CPU)."""
    return write_chunk(decode_chunk(chunk, cfg), out, cfg)


class ChunkWriter:
    """Ray Data actor for inputs computed by a network: loads it once (on its GPU with use_gpu),
    then finishes and writes the chunks that the decode tasks prepared."""

    def __init__(self, out: str, cfg: FeatureConfig, use_gpu: bool):
        import torch

        if use_gpu and not torch.cuda.is_available():
            raise MgcError(
                "--use-gpu: this actor was given a GPU, but torch sees no CUDA device (a CPU-only torch build?)"
            )
        self.out, self.cfg = out, cfg
        self.device = "cuda" if use_gpu else "cpu"

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        return write_chunk(pipeline.unpack(row["decoded"]), self.out, self.cfg, self.device)


def _decoded(chunk: dict[str, Any], cfg: FeatureConfig) -> dict[str, Any]:
    return {"decoded": pipeline.pack(decode_chunk(chunk, cfg))}


def plan_chunks(manifest: Manifest, tracks_per_shard: int) -> list[dict[str, Any]]:
    t = manifest.tracks
    chunks = []
    for k, start in enumerate(range(0, len(t), tracks_per_shard)):
        part = t.iloc[start : start + tracks_per_shard]
        chunks.append(
            {
                "chunk": k,
                "track_id": part["track_id"].tolist(),
                "path": part["path"].tolist(),
                "split": part["split"].tolist(),
            }
        )
    return chunks


def _check_or_write_config(manifest: Manifest, cfg: ExtractConfig) -> None:
    """Refuse to mix shards of different features or track lists in one output."""
    path = storage.join(cfg.out, "_config.json")
    state = {
        "mgc_version": mgc.__version__,
        "feature_config": cfg.features.to_dict(),
        "shard_format": SHARD_FORMAT,
        "labels": manifest.labels,
        "manifest_fingerprint": manifest.fingerprint(),
        "tracks": len(manifest),
        "tracks_per_shard": cfg.tracks_per_shard,
        "source": manifest.source,
    }
    if not storage.exists(path):
        storage.write_json(path, state)
        manifests.write(manifest, storage.join(cfg.out, "_manifest.parquet"))
        return
    old = storage.read_json(path)
    if old.get("shard_format") != SHARD_FORMAT:
        raise MgcError(
            f"{cfg.out} was written by an older mgc, whose shards carry their labels: training still reads it, "
            "but to extract more tracks write to a new --out"
        )
    old_features = FeatureConfig.from_dict(old["feature_config"])
    if old_features != cfg.features:
        raise MgcError(
            f"{cfg.out} holds features made with a different FeatureConfig "
            f"({'; '.join(old_features.diff(cfg.features))}); "
            "write to a new --out, or delete it to start over"
        )
    for key, what in (("manifest_fingerprint", "track list"), ("tracks_per_shard", "--tracks-per-shard")):
        if old.get(key) != state[key]:
            raise MgcError(
                f"{cfg.out} was written for a different {what} ({old.get(key)!r:.80} vs {state[key]!r:.80}); "
                "re-run with the original options, or write to a new --out"
            )


def _network_actors(cfg: ExtractConfig) -> int:
    """How many actors run the networks of cfg's inputs (0: none, they run in the decode tasks)."""
    import ray

    if not any(inputs.get(n).network for n in cfg.features.inputs):
        return 0
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if cfg.use_gpu and not gpus:
        raise MgcError("--use-gpu: the cluster has no GPUs")
    if cfg.use_gpu and cfg.network_actors > gpus:
        raise MgcError(
            f"--network-actors {cfg.network_actors} with --use-gpu: the cluster has {gpus} GPU(s), one per actor"
        )
    # A pool per wave of chunks (see run): the network loads once per actor and wave.
    return cfg.network_actors or (gpus if cfg.use_gpu else 0)


def summarize(out: str) -> dict[str, Any]:
    """Totals over everything written under `out` (all runs that contributed)."""
    summary: dict[str, Any] = {"tracks_ok": 0, "segments": 0, "tracks_rejected": 0, "rejects_by_reason": {}}
    if storage.list_files(storage.join(out, "features"), ".parquet"):
        ids = storage.read_parquet(storage.join(out, "features"), columns=["track_id"]).column("track_id")
        summary["segments"] = len(ids)
        summary["tracks_ok"] = len(ids.unique())
    if storage.list_files(storage.join(out, "rejects"), ".parquet"):
        reasons = storage.read_parquet(storage.join(out, "rejects"), columns=["reason"]).column("reason").to_pylist()
        summary["tracks_rejected"] = len(reasons)
        summary["rejects_by_reason"] = {r: reasons.count(r) for r in sorted(set(reasons))}
    return summary


def run(manifest: Manifest, cfg: ExtractConfig) -> dict[str, Any]:
    """Extract features for every track of `manifest` into cfg.out on the Ray cluster (joined
    after the checks). Returns the summary also written to _summary.json."""
    import ray

    if len(manifest) == 0:
        raise MgcError("the manifest holds no tracks: nothing to extract")
    storage.ensure_writable_dir(cfg.out)
    _check_or_write_config(manifest, cfg)
    for sub in ("features", "rejects"):
        storage.remove_stale_temporaries(storage.join(cfg.out, sub))

    done = set(storage.list_files(storage.join(cfg.out, "features"), ".parquet"))
    todo = [c for c in plan_chunks(manifest, cfg.tracks_per_shard) if shard_name(c["chunk"]) not in done]
    n_todo = sum(len(c["track_id"]) for c in todo)
    started = time.time()
    if todo:
        _process(todo, n_todo, cfg)
    wall = time.time() - started
    summary = summarize(cfg.out)
    summary["this_run"] = {
        "tracks_processed": n_todo,
        "chunks_processed": len(todo),
        "chunks_skipped": len(done),
        "wall_s": round(wall, 3),
        "tracks_per_s": round(n_todo / wall, 3) if n_todo and wall > 0 else None,
        "cluster_cpus": ray.cluster_resources().get("CPU") if ray.is_initialized() else None,
    }
    storage.write_json(storage.join(cfg.out, "_summary.json"), summary)
    return summary


def _process(todo: list[dict[str, Any]], n_tracks: int, cfg: ExtractConfig) -> None:
    """Decode, featurise and write the chunks `todo` (of `n_tracks` tracks) on Ray Data, in waves,
    with a progress bar of tracks."""
    import ray
    from tqdm.auto import tqdm

    cpus = session.connect().get("CPU", 1)
    ctx = ray.data.DataContext.get_current()
    # Reservations keep resources for other operators; this pipeline has one, and on a
    # small node they left a third of the CPUs idle (bench/README.md).
    ctx.op_resource_reservation_enabled = False
    actors = _network_actors(cfg)
    # Waves of chunks, one Ray Data run each: Ray Data keeps ~50 KB of bookkeeping per block
    # in the driver until its run ends (bench/README.md, "Scale"), and a wave of 8 chunks
    # per CPU leaves little idle at its end.
    wave = max(WAVE, 8 * int(cpus))
    counts: dict[str, int] = {}
    with tqdm(total=n_tracks, unit="track", desc="extract", disable=not cfg.progress, mininterval=1.0) as bar:
        for lo in range(0, len(todo), wave):
            part = todo[lo : lo + wave]
            # One block per chunk, so that each chunk is one task and chunks spread over all CPUs.
            ds = _stages(ray.data.from_items(part, override_num_blocks=len(part)), cfg, actors)
            for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
                for reason, n in batch["reason"].value_counts().items():
                    counts[reason] = counts.get(reason, 0) + int(n)
                bar.update(len(batch))
                bar.set_postfix(rejected=sum(v for k, v in counts.items() if k != "ok"), refresh=False)


def _stages(ds, cfg: ExtractConfig, actors: int):
    """Chunks to status rows: each chunk in one task, or, with `actors`, decoded in tasks and
    finished and written by the network's actors (mgc.pipeline)."""
    if not actors:
        return ds.flat_map(functools.partial(process_chunk, out=cfg.out, cfg=cfg.features), num_cpus=1)
    ds = pipeline.decode_stage(ds, _decoded, {"cfg": cfg.features}, apart=True)
    # A GPU actor holds no CPU: every CPU decodes.
    writer = {"out": cfg.out, "cfg": cfg.features, "use_gpu": cfg.use_gpu}
    return pipeline.network_stage(ds, ChunkWriter, writer, actors, cfg.use_gpu, gpu_actor_cpus=0)
