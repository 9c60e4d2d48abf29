"""How many workers a run takes and what each reserves, checked against the cluster before Ray
Train starts."""

from __future__ import annotations

import dataclasses

from mgc import resources
from mgc.errors import MgcError
from mgc.train.config import TrainConfig


def with_workers(cfg: TrainConfig, cluster: dict[str, float]) -> TrainConfig:
    """cfg with --num-workers 0 made what the cluster holds: every GPU with use_gpu, else its
    resources.training_cpus."""
    if cfg.num_workers:
        return cfg
    if cfg.use_gpu:
        n = cluster.get("GPU", 0) // cfg.gpus_per_worker
    else:
        n = resources.training_cpus(cluster) // cfg.cpus_per_worker
    return dataclasses.replace(cfg, num_workers=max(1, int(n)))


def worker_resources(cfg: TrainConfig) -> dict[str, float]:
    """What one worker reserves."""
    return {"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if cfg.use_gpu else {})}


def check_resources(cfg: TrainConfig, cluster: dict[str, float]) -> None:
    """Training workers must leave resources.READ_CPUS for Ray Data's reads."""
    need_gpu = cfg.num_workers * cfg.gpus_per_worker if cfg.use_gpu else 0
    if cluster.get("GPU", 0) < need_gpu:
        raise MgcError(
            f"{cfg.num_workers} workers x {cfg.gpus_per_worker:g} GPU need {need_gpu:g} GPUs; the cluster has "
            f"{cluster.get('GPU', 0):g}"
        )
    if cfg.num_workers * cfg.cpus_per_worker > resources.training_cpus(cluster):
        free = cluster.get("CPU", 0) - cfg.num_workers * cfg.cpus_per_worker
        raise MgcError(
            f"{cfg.num_workers} workers x {cfg.cpus_per_worker:g} CPU leave {free:g} of the cluster's "
            f"{cluster.get('CPU', 0):g} CPUs for reading data (at least {resources.READ_CPUS} is needed): "
            "lower --num-workers or --cpus-per-worker"
        )
