"""One run end to end on the driver: checks, Ray Train's TorchTrainer (or a closed-form fit),
checkpoints, progress, then the export."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import threading
import time
from typing import Any

from mgc import metrics, resources, session, storage
from mgc.models import build
from mgc.sealed import Sealed
from mgc.train.config import POLL_INTERVAL_S, Prepared, TrainConfig
from mgc.train.data import dataset, evaluate
from mgc.train.export import finish, split_predictions
from mgc.train.loop import WorkerConfig, checkpoint_dir, train_loop
from mgc.train.prepare import check, check_run_dir, prepare
from mgc.train.workers import check_resources, with_workers, worker_resources


def trainer(cfg: TrainConfig, prep: Prepared, callbacks: list | None = None, score: tuple[str, str] | None = None):
    """The TorchTrainer for a run (Tune builds one per trial the same way); checkpoints are kept
    by the reported metric `score` = (name, "max" | "min"), by default the target's score."""
    import ray
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    read = list(prep.model.inputs)
    score = score or (prep.target.score, "max")
    # Read from this process's environment by fit(), which passes it to the run's controller.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(POLL_INTERVAL_S))
    # One worker gets the blocks in their seeded order, not as their reads finish: a seed then
    # gives the same batches, so the same model, on every run. Several workers take blocks as
    # they ask for them, so order buys them nothing.
    # (A copy of the context's options, as DataConfig.default_ingest_options makes, whose
    # constructor call prints a deprecation warning in Ray 2.60.)
    ordered = copy.deepcopy(ray.data.DataContext.get_current().execution_options)
    ordered.preserve_order = cfg.num_workers == 1
    return TorchTrainer(
        train_loop,
        # Opened by the workers alone: the controller only passes it on (mgc.sealed).
        train_loop_config={
            "worker": Sealed.seal(
                WorkerConfig(
                    cfg,
                    prep.model,
                    prep.norm,
                    prep.target,
                    prep.segments["training"],
                    score,
                    prep.class_weights,
                    prep.start,
                )
            )
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=worker_resources(cfg)
        ),
        run_config=RunConfig(
            name=cfg.run_name,
            **ray_storage(cfg.storage_path),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=score[0], checkpoint_score_order=score[1]
            ),
            callbacks=callbacks or [],
        ),
        datasets={
            "train": dataset(cfg.features, "training", prep.target, read, cache=cfg.cache_data).randomize_block_order(
                seed=ray.data.RandomSeedConfig(seed=cfg.seed, reseed_after_execution=True)  # a new order each epoch
            ),
            "val": dataset(cfg.features, "validation", prep.target, read, cache=cfg.cache_data),
        },
        # Only training is split across workers (Ray's equal split may drop rows); every rank reads
        # all of validation and scores the tracks that fall to it (_share). One worker reads its
        # splits itself: a split across one would cost an actor (SplitCoordinator) a run.
        dataset_config=DataConfig(
            datasets_to_split=["train"] if cfg.num_workers > 1 else [], execution_options={"train": ordered}
        ),
    )


def ray_storage(path: str) -> dict[str, Any]:
    """RunConfig's storage arguments, through our storage layer (so custom S3 endpoints hold)."""
    if not storage.is_uri(path):
        return {"storage_path": os.path.abspath(path)}
    fs, inner = storage.resolve(path)
    return {"storage_path": inner, "storage_filesystem": fs}


def checkpoint_state(run_dir: str, epoch: int) -> dict[str, Any]:
    """The training state a run checkpointed after `epoch` (model, optimizer, history)."""
    import io

    import torch

    data = storage.read_bytes(storage.join(run_dir, checkpoint_dir(epoch), "state.pt"))
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def absolute(cfg: TrainConfig) -> TrainConfig:
    """cfg with its local paths made absolute (storage.absolute)."""
    return dataclasses.replace(
        cfg,
        features=storage.absolute(cfg.features),
        storage_path=storage.absolute(cfg.storage_path),
        manifest=cfg.manifest and storage.absolute(cfg.manifest),
    )


@contextlib.contextmanager
def epoch_bar(cfg: TrainConfig):
    """A progress bar of epochs (with the validation score) while a run trains, from the
    history.json that rank 0 rewrites every epoch."""
    from tqdm.auto import tqdm

    path, stop = storage.join(cfg.run_dir, "history.json"), threading.Event()
    bar = tqdm(total=cfg.epochs, desc=f"train {cfg.run_name}", unit="epoch", disable=not cfg.progress)

    def watch() -> None:
        while not stop.wait(1.0):
            try:
                history = storage.read_json(path) if storage.exists(path) else []
            except (OSError, ValueError):  # mid-write on a store without atomic renames
                continue
            if len(history) > bar.n:
                bar.set_postfix(
                    val_track_acc=f"{history[-1]['val_track_accuracy']:.3f}", refresh=False
                )  # multi-label: top genre
                bar.update(len(history) - bar.n)

    watcher = threading.Thread(target=watch, daemon=True)
    if cfg.progress:
        watcher.start()
    try:
        yield
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
        bar.close()


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train one model end to end; returns what metrics.json holds. The features and options
    are checked before Ray is joined."""
    cfg = absolute(cfg)
    checked = check(cfg)
    check_run_dir(cfg, checked.features, checked.model)
    t = checked.tracks
    session.note(
        f"train {cfg.run_name}: --target {cfg.target} labels {t['training'] + t['validation'] + t['test']} of the "
        f"{t['in_shards']} tracks in the shards ({t['training']} for training) with {len(checked.labels)} classes"
    )
    if checked.model.architecture.fit:
        return fit(cfg, prepare(cfg, checked))
    cluster = session.connect()
    cfg = with_workers(cfg, cluster)
    check_resources(cfg, cluster)
    session.note(
        f"train {cfg.run_name}: {cfg.num_workers} worker(s) x {cfg.cpus_per_worker:g} CPU"
        + (f" + {cfg.gpus_per_worker:g} GPU" if cfg.use_gpu else "")
    )
    prep = prepare(cfg, checked)
    with resources.released(), epoch_bar(cfg):
        result = trainer(cfg, prep).fit()
    best_epoch, best_metrics = max(
        ((m["epoch"], m) for _, m in result.best_checkpoints), key=lambda em: em[1][prep.target.score]
    )
    return finish(
        cfg,
        prep,
        checkpoint_state(cfg.run_dir, best_epoch),
        best_metrics,
        checkpoint_state(cfg.run_dir, result.metrics["epoch"]),
    )


def fit(cfg: TrainConfig, prep: Prepared) -> dict[str, Any]:
    """A model fitted in closed form (the baseline), in one pass over the training split; scored
    on validation as an epoch would be, then exported and tested as a trained network is."""
    session.note(f"train {cfg.run_name}: fitted on the driver from statistics that Ray Data computes")
    started = time.perf_counter()
    net = build(prep.model, prep.norm)
    training = dataset(cfg.features, "training", prep.target, list(prep.model.inputs))
    row: dict[str, Any] = {"epoch": 1, **prep.model.architecture.fit(net, training, prep.target.multilabel)}
    row["train_s"] = time.perf_counter() - started
    row.update(metrics.flat(evaluate(prep.target, *split_predictions(cfg, prep, net, "validation")), "val"))
    state = {"model": net.state_dict(), "epoch": 1, "history": [row], "resumed_at": []}
    return finish(cfg, prep, state, row, state)
