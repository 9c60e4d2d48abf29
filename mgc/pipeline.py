"""Decode -> network -> rows: the Ray Data pipeline that extraction and labelling share.

Rows of work (a chunk of tracks for extraction, one file for labelling) go to CPU tasks that decode
the audio and `prepare` the model's inputs (mgc.inputs, `decode`); an optional pool of actors then
loads a network once per actor (on a GPU with use_gpu) and turns the decoded rows into output
rows (`network_stage`). Prepared inputs travel to the actors as opaque bytes (`pack`, `unpack`).
A file that fails anywhere becomes an error row with the reason and detail `failure` gives; it
never sinks the other files. What the rows hold and what the driver does with them is the
caller's (mgc.extract, mgc.label); mgc.recommend's embedding uses the network stage alone.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable

from mgc import audio, inputs
from mgc.errors import Reject
from mgc.features import FeatureConfig

# About a decode's peak: a chunk of tracks, or one file capped at max_seconds.
DECODE_MEMORY = 512 * 2**20


def failure(path: str, e: Exception) -> tuple[str, str]:
    """(reason, detail) of a file that could not be decoded or featurised: a Reject's own (its
    detail naming `path`), else `feature_error` with the exception."""
    if isinstance(e, Reject):
        r = e.naming(path)
        return r.reason, r.detail
    return "feature_error", f"{path}: {type(e).__name__}: {e}"


def decode(path: str | audio.Upload, cfg: FeatureConfig, names: tuple[str, ...]) -> tuple[float, dict[str, list]]:
    """One file decoded (at most cfg.max_seconds) and the inputs `names` prepared: (seconds
    decoded, inputs.prepare's parts). Raises what audio.load and inputs.prepare raise (`failure`
    names it)."""
    y = audio.load(path, cfg)
    return len(y) / cfg.sample_rate, inputs.prepare(y, cfg, names)


def pack(prepared: Any) -> bytes:
    """Prepared inputs as one opaque value: their shapes vary per file and per input."""
    return pickle.dumps(prepared, protocol=5)


def unpack(blob: bytes) -> Any:
    """`pack`'s value back, in the actor that finishes it."""
    return pickle.loads(blob)


def decode_stage(ds, fn: Callable, fn_kwargs: dict[str, Any], apart: bool):
    """`ds` with `fn` (row -> row, never raising: failures are rows) mapped over it in tasks of
    one CPU. `apart`: kept apart from the network stage that follows, so that every CPU decodes and
    the actors only run the network; else Ray Data may fuse the two into the actors (no decoded
    inputs travel between processes)."""
    # Ray Data fuses operators whose resource requests match; a memory request (a decode's peak)
    # that the actors lack keeps the decode in tasks of its own.
    memory = {"memory": DECODE_MEMORY} if apart else {}
    return ds.map(fn, fn_kwargs=fn_kwargs, num_cpus=1, **memory)


def network_stage(
    ds,
    cls: type,
    kwargs: dict[str, Any],
    actors: int,
    use_gpu: bool = False,
    gpu_actor_cpus: float | None = None,
    batch_size: int | None = None,
):
    """`ds` through a pool of `actors` actors, each `cls(**kwargs)` once (loading its network),
    then called on rows: with `batch_size`, on numpy batches of that many rows (map_batches);
    without, on one row at a time, returning a list of rows (flat_map). One GPU per actor with
    `use_gpu`, and `gpu_actor_cpus` CPUs (None: Ray Data's default, one); one CPU otherwise."""
    import ray

    resources: dict[str, Any] = {"num_gpus": 1} if use_gpu else {"num_cpus": 1}
    if use_gpu and gpu_actor_cpus is not None:
        resources["num_cpus"] = gpu_actor_cpus
    compute = ray.data.ActorPoolStrategy(size=actors)
    if batch_size is None:
        return ds.flat_map(cls, fn_constructor_kwargs=kwargs, compute=compute, **resources)
    return ds.map_batches(
        cls, fn_constructor_kwargs=kwargs, batch_size=batch_size, compute=compute, batch_format="numpy", **resources
    )
