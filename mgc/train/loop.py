"""The worker loop Ray Train runs on every rank (`train_loop`), and the pieces of it that are pure:
the learning-rate schedule, early stopping, each rank's share of the rows."""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from mgc import metrics, storage, targets
from mgc.models import ModelConfig, build
from mgc.train.config import TrainConfig
from mgc.train.data import batch_dtypes, evaluate, predict


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker takes from the driver: the run's options, the network, its normalisation
    statistics and closed-form start (Architecture.start), the target, the loss's weights and the
    reported metric checkpoints are ranked by: (name, "max" | "min")."""

    train: TrainConfig
    model: ModelConfig
    norm: dict[str, Any]
    target: targets.Target
    train_segments: int
    score: tuple[str, str]
    class_weights: list[float] | None = None
    start: dict[str, Any] | None = None


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker (`config["worker"]`: a sealed WorkerConfig): restores the latest
    checkpoint, then every epoch trains on this rank's share, scores validation with the other
    ranks and reports, rank 0 with a checkpoint, until the last epoch or early stopping."""
    import ray.train
    import ray.train.torch
    import torch

    w: WorkerConfig = config["worker"].open()
    tc = w.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(tc.seed)
    device = ray.train.torch.get_device()
    net = build(w.model, w.norm)
    if w.start:
        net.load_start(w.start)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = max(1, math.ceil(w.train_segments / world / tc.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(tc, steps_per_epoch))
    aug = tc.augment(tc.seed * 1009 + rank, str(device))  # each rank draws its own
    state = _restore(ray.train.get_checkpoint(), net, opt, sched)
    model = ray.train.torch.prepare_model(net)  # DDP over the workers, on the worker's device
    worker = _Rank(w, rank, world, device, net, model, opt, sched, _loss(w, device), aug)
    train_shard, val_data = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    for epoch in range(state["epoch"], tc.epochs):
        row = worker.train_epoch(train_shard, epoch)
        started = time.perf_counter()
        predicted = worker.validate(val_data)
        if worker.report(state, row, predicted, epoch, started):
            break


def _restore(checkpoint, net, opt, sched) -> dict[str, Any]:
    """The training state to go on from: the checkpoint's (loaded into net, opt and sched), or
    epoch 0's."""
    import torch

    if not checkpoint:
        return {"epoch": 0, "history": [], "resumed_at": []}
    with checkpoint.as_directory() as d:
        saved = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=True)
    net.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    if "scheduler" in saved:  # older checkpoints hold none
        sched.load_state_dict(saved["scheduler"])
    return {"epoch": saved["epoch"], "history": saved["history"], "resumed_at": saved["resumed_at"] + [saved["epoch"]]}


def _loss(w: WorkerConfig, device):
    """The target's loss: a sigmoid per genre (the weights are the positives') or a softmax."""
    import torch

    weight = torch.tensor(w.class_weights, device=device) if w.class_weights else None
    if w.target.multilabel:
        return torch.nn.BCEWithLogitsLoss(pos_weight=weight)
    return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=w.train.label_smoothing)


@dataclass
class _Rank:
    """One worker's part of the run: its rank, the network (`model`: its DDP wrapper), optimiser,
    schedule, loss and augmentation."""

    w: WorkerConfig
    rank: int
    world: int
    device: Any
    net: Any
    model: Any
    opt: Any
    sched: Any
    loss_fn: Any
    aug: Any

    def train_epoch(self, shard, epoch: int) -> dict[str, Any]:
        """One pass over this rank's share of the training split; the epoch's history row."""
        import torch
        import torch.distributed as dist

        tc, mc, multilabel, device = self.w.train, self.w.model, self.w.target.multilabel, self.device
        self.model.train()
        started = time.perf_counter()
        total = torch.zeros(2, device=device)
        seen = torch.zeros(2, dtype=torch.int64, device=device)  # this rank's rows, and their row_digest
        batches = shard.iter_torch_batches(
            batch_size=tc.batch_size,
            local_shuffle_buffer_size=tc.shuffle_buffer,
            local_shuffle_seed=tc.seed + epoch,
            prefetch_batches=2,
            pin_memory=device.type == "cuda",
            device=device,
            **batch_dtypes(mc, multilabel, half=device.type == "cuda"),
        )
        waits: list[float] = []
        for batch in _timed(batches, waits):
            y = batch["target"]
            # Targets as distributions (multi-hot rows, multi-label), so that mixup can blend them.
            hot = y if multilabel else torch.nn.functional.one_hot(y, mc.n_classes).float()
            # float16 on a GPU until here
            x, mixed = self.aug.mix({n: batch[n].float() for n in mc.inputs}, hot, batch["track_id"])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = self.loss_fn(self.model(x, augment=self.aug).float(), mixed)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)  # keeps the LSTMs' steps stable
            self.opt.step()
            self.sched.step()
            total += torch.stack([loss.detach().float() * len(y), torch.tensor(float(len(y)), device=device)])
            if self.world > 1:
                seen += torch.stack([torch.tensor(len(y), device=device), row_digest(batch["track_id"])])
        if self.world > 1:
            dist.all_reduce(total)
        train_s = time.perf_counter() - started
        return {
            "epoch": epoch + 1,
            "train_loss": float(total[0] / total[1]),
            "train_segments": int(total[1]),
            "train_s": train_s,
            "train_segments_per_s": float(total[1]) / train_s,
            # Seconds this worker's loop waited for batches: the first (filling the shuffle
            # buffer), and all together; the rest of train_s is computing.
            "train_first_batch_s": waits[0] if waits else 0.0,
            "train_data_wait_s": sum(waits),
            "lr": self.sched.get_last_lr()[0],
            **self._in_step(seen),
        }

    def _in_step(self, seen) -> dict[str, Any]:
        """With several ranks: every rank's weights, hashed (DDP keeps them identical, and the
        history shows it), and each rank's share of the split: [rows, row_digest]; together,
        every row once."""
        import torch.distributed as dist

        if self.world == 1:
            return {}
        params = b"".join(p.detach().cpu().numpy().tobytes() for p in self.net.parameters())
        ranks: list[Any] = [None] * self.world
        dist.all_gather_object(ranks, (hashlib.sha256(params).hexdigest()[:16], seen.tolist()))
        return {"weights_sha256": [r[0] for r in ranks], "train_share_by_rank": [r[1] for r in ranks]}

    def validate(self, data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every rank scores its share of the validation tracks; all get the gathered predictions."""
        import torch.distributed as dist

        if self.world > 1:
            # DDP keeps the parameters equal, but each rank's batch-norm statistics follow its own
            # last batch: score with rank 0's, which its checkpoint holds.
            for buffer in self.net.buffers():
                dist.broadcast(buffer, src=0)
        # On the CPU, so that each rank copies only its share to its device (Predictor does).
        batches = data.iter_torch_batches(batch_size=256, **batch_dtypes(self.w.model, self.w.target.multilabel))
        predicted = predict(self.net, _share(batches, self.rank, self.world), self.device, self.w.target.multilabel)
        if self.world > 1:
            shares: list[Any] = [None] * self.world
            dist.all_gather_object(shares, predicted)
            predicted = tuple(np.concatenate(parts) for parts in zip(*shares))
        return predicted

    def report(self, state: dict[str, Any], row: dict[str, Any], predicted, epoch: int, started: float) -> bool:
        """Report the epoch to Ray Train; rank 0 scores it, decides early stopping and
        checkpoints. Whether every rank stops now."""
        import ray.train
        import torch
        import torch.distributed as dist

        with tempfile.TemporaryDirectory() as tmp:
            saved = None
            if self.rank == 0:
                row.update(
                    metrics.flat(evaluate(self.w.target, *predicted), "val"),
                    val_segments=len(predicted[0]),
                    val_s=time.perf_counter() - started,
                )
                patience, (name, mode) = self.w.train.patience, self.w.score
                row["early_stop"] = (
                    bool(patience) and epochs_since_best([*state["history"], row], name, mode) >= patience
                )
                state["history"].append(row)
                storage.write_json(
                    storage.join(self.w.train.run_dir, "history.json"), state["history"]
                )  # live progress
                torch.save(
                    {
                        "model": self.net.state_dict(),
                        "optimizer": self.opt.state_dict(),
                        "scheduler": self.sched.state_dict(),
                        "epoch": epoch + 1,
                        "history": state["history"],
                        "resumed_at": state["resumed_at"],
                    },
                    os.path.join(tmp, "state.pt"),
                )
                saved = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(row, checkpoint=saved, checkpoint_dir_name=checkpoint_dir(epoch + 1))
        stop = torch.tensor([float(row.get("early_stop", False))], device=self.device)
        if self.world > 1:
            dist.broadcast(stop, src=0)  # rank 0 decides; every rank stops at the same epoch
        return bool(stop.item())


def checkpoint_dir(epoch: int) -> str:
    """The folder, under the run directory, of the checkpoint taken after `epoch`."""
    return f"epoch-{epoch:04d}"


_MIX = -7046029254386353131  # splitmix64's increment 0x9E3779B97F4A7C15, as a signed 64-bit integer


def row_digest(track_ids):
    """A checksum of rows by their track ids (int64 tensor or array; arithmetic wraps): equal for
    any order and any partition of the same rows, so the ranks' digests add up to the split's only
    if together they read each row once."""
    h = track_ids * _MIX
    h = h ^ (h >> 29)
    return (h * _MIX).sum()


def _share(batches, rank: int, world: int):
    """The rows of `batches` whose track falls to this rank (track id modulo the ranks): every
    segment of a track on one rank, each track on exactly one."""
    for batch in batches:
        if world == 1:
            yield batch
            continue
        keep = batch["track_id"] % world == rank
        if keep.any():
            yield {k: v[keep] for k, v in batch.items()}


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate's multiplier after k optimiser steps: a linear warm-up over
    cfg.warmup_epochs, then constant or a cosine decay that reaches 0 after cfg.epochs."""
    warm, total = cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch

    def factor(k: int) -> float:
        if k < warm:
            return (k + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (k - warm) / max(1.0, total - warm))))

    return factor


def epochs_since_best(history: list[dict[str, Any]], name: str, mode: str) -> int:
    """Epochs since the best score `name` (the first of ties: a tie is no improvement)."""
    values = np.array([h[name] for h in history])
    return len(values) - 1 - int(values.argmax() if mode == "max" else values.argmin())


def _timed(batches, waits: list[float]):
    """The batches, appending to `waits` how long each took to arrive."""
    it = iter(batches)
    while True:
        started = time.perf_counter()
        batch = next(it, None)
        if batch is None:
            return
        waits.append(time.perf_counter() - started)
        yield batch
