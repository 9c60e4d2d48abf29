"""Data-parallel training on the extracted shards with Ray Train (TorchTrainer, DDP).

The driver checks the shards and computes normalisation statistics of the training split before
any worker starts; each worker streams its share of the training split with a local shuffle
buffer and trains by the recipe (AdamW, warm-up then cosine, augmentation and mixup on its device:
mgc.augment); every epoch each rank scores its share of the validation tracks, and rank 0 scores
the gathered predictions at segment and track level, checkpoints, and stops every rank after
--patience epochs without a better score. Checkpoints are ranked by validation track-level macro
F1; a lost worker resumes from the latest one, and so does
a re-run with the same --name and --storage-path. After training, the best checkpoint is exported
as a model artifact with a temperature fitted on the validation split, and scored once on the
test split. A model fitted in closed form (the baseline) skips Ray Train: `fit`; one that starts
from a closed-form fit (the head) has it fitted in `prepare` and loaded by every worker.

The target (`--target`, mgc.targets) is joined to the shards' segments on track_id from a manifest
(the extraction's, or `--manifest`): genre_top trains a softmax with cross-entropy; genres and
genres_all a sigmoid per genre with binary cross-entropy (positive weights per genre), ranked by
validation track-level micro average precision, with per-genre thresholds chosen on validation.

Run directory (<storage_path>/<name>/): Ray Train's checkpoints, plus model/ (the artifact),
metrics.json, history.json, confusion_matrix.png, learning_curves.png, reliability.png,
genre_ap.png (multi-label), test_predictions.parquet.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mgc import artifact, inputs, metrics, plots, resources, storage, targets
from mgc.errors import MgcError
from mgc.features import FeatureConfig
from mgc.manifest import SPLITS
from mgc.models import ModelConfig, reads

SCORE = "val_track_f1_macro"
SCHEDULES = ("cosine", "constant")
# The recipe before issue 15, as TrainConfig overrides: plain Adam at a constant rate, no
# augmentation, no early stopping (bench/recipe.py and the tests compare the two).
PLAIN = {
    "weight_decay": 0.0,
    "schedule": "constant",
    "warmup_epochs": 0.0,
    "time_shift": 0.0,
    "spec_mask": 0.0,
    "gain_db": 0.0,
    "mixup": 0.0,
    "patience": 0,
}
# Ray Train's controller takes a worker's report when it polls the workers, every 2 s by default,
# and the worker's next report waits until it has: short epochs (a small catalogue, a sweep's
# trials) spent most of a run waiting (bench/poll.py). Polls are cheap; a user's own
# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S stands.
POLL_INTERVAL_S = 0.5
# What every epoch reports (besides throughput): the metrics Tune and checkpoint ranking can use.
REPORTED = (
    "train_loss",
    *(f"val_{level}_{k}" for level in ("segment", "track") for k in metrics.SCALARS + metrics.MULTILABEL_SCALARS),
)


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Empty sizes and input take the model's own (the literature's); tests
    shrink them."""

    features: str
    model: str = "cnn"
    target: str = "genre_top"  # or genres, genres_all: multi-label (mgc.targets)
    min_genre_tracks: int = 20  # multi-label: genres carried by fewer training tracks are left out
    manifest: str = ""  # the labels: a manifest (CSV, FMA tracks.csv, Parquet); empty: the extraction's
    input: str = ""  # another input the model can read (e.g. mfcc for cnn); empty: its own
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    dropout: float | tuple[float, ...] = 0.3  # shared, or one rate per dropout layer of the model
    num_workers: int = 0  # 0: what the cluster holds (with_workers)
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    gpus_per_worker: float = 1.0  # with use_gpu; fractions let several workers or trials share a GPU
    storage_path: str = "runs"
    name: str = ""
    class_weights: bool = False
    # Rows each worker shuffles locally; the shards' order is also shuffled every epoch. A buffer
    # larger than a worker's share of an epoch stalls compute until all of it is read (bench/README.md).
    shuffle_buffer: int = 512
    # Hold the decoded splits in Ray's object store after the first read (spills to disk when
    # they do not fit): later epochs skip Parquet decoding, which costs as much as a small model's step.
    cache_data: bool = False
    max_failures: int = 2
    seed: int = 0
    channels: tuple[int, ...] = ()
    dense: tuple[int, ...] = ()
    lstm_units: tuple[int, ...] = ()
    kernel: int = 0
    # The recipe for small, noisy collections: AdamW, a linear warm-up then a cosine decay,
    # augmentation on the worker (mgc.augment), early stopping. weight_decay 0, schedule
    # "constant", warmup_epochs 0, shift/mask/gain_db/mixup 0 and patience 0 are plain Adam at a
    # constant rate, the recipe before it (PLAIN).
    weight_decay: float = 0.01
    schedule: str = "cosine"  # or "constant"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    time_shift: float = 0.25  # largest time shift, share of a segment
    spec_mask: float = 0.15  # largest SpecAugment frequency and time mask, share of the axis
    gain_db: float = 6.0  # largest random gain of the waveform
    mixup: float = 0.2  # Beta(alpha, alpha); 0: off
    patience: int = 10  # epochs without a better validation score before stopping; 0: never
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.num_workers < 0 or self.min_genre_tracks < 1:
            raise MgcError("--epochs, --batch-size and --min-genre-tracks must be at least 1, --num-workers at least 0")
        if self.target not in targets.TARGETS:
            raise MgcError(f"unknown --target {self.target!r}; choose one of {', '.join(targets.TARGETS)}")
        if self.label_smoothing and self.target in targets.MULTILABEL:
            raise MgcError(
                f"--label-smoothing spreads one genre's target over the others: --target {self.target} has no one genre"
            )
        if not self.lr > 0:
            raise MgcError(f"learning rate {self.lr} must be positive")
        if self.schedule not in SCHEDULES:
            raise MgcError(f"unknown --schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if (
            min(
                self.weight_decay,
                self.warmup_epochs,
                self.label_smoothing,
                self.time_shift,
                self.spec_mask,
                self.gain_db,
                self.mixup,
                self.patience,
            )
            < 0
        ):
            raise MgcError(
                "--weight-decay, --warmup-epochs, --label-smoothing, --time-shift, --spec-mask, --gain-db, --mixup and --patience cannot be negative"
            )
        if self.label_smoothing >= 1 or self.time_shift > 1 or self.spec_mask > 1:
            raise MgcError("--label-smoothing must be below 1, --time-shift and --spec-mask at most 1")

    def augment(self, seed: int, device: str):
        """The training loop's augmentation (mgc.augment.Augment) with these settings."""
        from mgc.augment import Augment

        return Augment(self.time_shift, self.spec_mask, self.gain_db, self.mixup, seed, device)

    @property
    def run_name(self) -> str:
        return self.name or self.model

    @property
    def run_dir(self) -> str:
        return storage.join(self.storage_path, self.run_name)


@dataclass
class Prepared:
    """What the driver learns from the shards before training."""

    features: FeatureConfig
    target: targets.Target
    model: ModelConfig
    norm: dict[str, tuple[list[float], list[float]]]  # per input the model reads: (mean, std)
    class_weights: list[float] | None  # single-label: per class; multi-label: BCE's positive weights
    segments: dict[str, int] = field(default_factory=dict)
    tracks: dict[str, int] = field(default_factory=dict)  # labelled tracks per split
    start: dict[str, np.ndarray] | None = None  # the closed-form start's tensors (Architecture.start)

    @property
    def labels(self) -> list[str]:
        return self.target.classes


def _shards(cfg: TrainConfig) -> str:
    return storage.join(cfg.features, "features")


def _check_shards(cfg: TrainConfig, fcfg: FeatureConfig) -> None:
    """Every shard must hold the inputs, of the shapes, that _config.json promises."""
    fs, root = storage.resolve(_shards(cfg))
    want = {n: list(inputs.get(n).shape(fcfg)) for n in fcfg.inputs}
    for name in storage.list_files(_shards(cfg), ".parquet"):
        schema = pq.read_schema(fs.open_input_file(f"{root}/{name}"))
        for column, shape in want.items():
            typ = schema.field(column).type if column in schema.names else None
            if not isinstance(typ, pa.FixedShapeTensorType) or list(typ.shape) != shape:
                raise MgcError(
                    f"{storage.join(_shards(cfg), name)}: {column} is {typ}, but {cfg.features}/_config.json says "
                    f"{shape}: shards from a different FeatureConfig are mixed in; re-extract into a clean folder"
                )


def model_config(cfg: TrainConfig, fcfg: FeatureConfig, n_classes: int, where: str) -> ModelConfig:
    """The network cfg asks for, reading inputs that the features at `where` hold."""
    names = reads(cfg.model, cfg.input)
    missing = [n for n in names if n not in fcfg.inputs]
    if missing:
        raise MgcError(
            f"{cfg.model} reads {'+'.join(names)}, but {where} holds {', '.join(fcfg.inputs)}: "
            f"extract with --inputs {','.join(fcfg.inputs + tuple(missing))} (into a new --out)"
        )
    return ModelConfig(
        name=cfg.model, n_classes=n_classes, inputs=names, shapes=tuple(inputs.get(n).shape(fcfg) for n in names), channels=cfg.channels,
        kernel=cfg.kernel, dense=cfg.dense, lstm_units=cfg.lstm_units, dropout=cfg.dropout,
    )  # fmt: skip


def check(cfg: TrainConfig) -> Prepared:
    """Validate the features, the labels and the options, without Ray: what training needs, less
    the normalisation statistics (`prepare` adds them). Raises MgcError: missing folder, mixed
    FeatureConfigs, an input the shards lack, empty or leaking splits, labels in validation that
    training lacks, unknown model or target."""
    if not storage.exists(cfg.features):
        raise MgcError(f"{cfg.features}: feature directory not found")
    config_path = storage.join(cfg.features, "_config.json")
    if not storage.exists(config_path) or not storage.list_files(_shards(cfg), ".parquet"):
        raise MgcError(f"{cfg.features}: no _config.json or no shards in features/: not the output of mgc extract")
    config = storage.read_json(config_path)
    fcfg = FeatureConfig.from_dict(config["feature_config"])
    model_cfg = model_config(cfg, fcfg, 2, cfg.features)  # the model and its inputs checked before the shards are read
    _check_shards(cfg, fcfg)

    index = storage.read_parquet(_shards(cfg), columns=["track_id", "split"]).to_pandas()
    leaks = index.groupby("track_id")["split"].nunique()
    if (leaks > 1).any():
        raise MgcError(f"{cfg.features}: track {int(leaks.idxmax())} has segments in more than one split")
    labels = targets.load_manifest(cfg.manifest, cfg.features)
    target = targets.build(labels, cfg.target, index.drop_duplicates("track_id"), cfg.min_genre_tracks)
    labelled = target.labelled(index["track_id"].to_numpy())  # per segment: multi-hot rows would not fit at scale
    split = index["split"].to_numpy()
    segments = {s: int((labelled & (split == s)).sum()) for s in SPLITS}
    tracks = {s: int(index.loc[labelled & (split == s), "track_id"].nunique()) for s in SPLITS} | {
        "in_shards": int(index["track_id"].nunique())
    }
    for s, n in segments.items():
        if n == 0:
            listed = labels.tracks["track_id"].to_numpy()
            matched = int(np.isin(listed, index["track_id"].to_numpy()).sum())
            raise MgcError(
                f"{cfg.features}: the {s} split has no segments labelled for --target {cfg.target}; {matched} of the {len(listed)} "
                f"tracks in {cfg.manifest or 'its _manifest.parquet'} are among the shards' {tracks['in_shards']}"
            )
    training = labelled & (split == "training")
    if target.multilabel:
        weights = target.pos_weight(index.loc[training, "track_id"].drop_duplicates().to_numpy())
    else:
        y = target.lookup(index["track_id"].to_numpy())[1]
        seen = set(y[training])
        for s in ("validation", "test"):
            missing = sorted(set(y[labelled & (split == s)]) - seen)
            if missing:
                raise MgcError(
                    f"{cfg.features}: genre(s) {[target.classes[i] for i in missing]} appear in {s} but not in training"
                )
        weights = None
        if cfg.class_weights:
            counts = np.bincount(y[training], minlength=len(target.classes))
            weights = (counts.sum() / (len(target.classes) * np.maximum(counts, 1))).tolist()
    return Prepared(
        fcfg, target, dataclasses.replace(model_cfg, n_classes=len(target.classes)), {}, weights, segments, tracks
    )


def prepare(cfg: TrainConfig, checked: Prepared | None = None) -> Prepared:
    """`check` (unless done: `checked`), then each input's normalisation statistics over the
    training split (per band, or one for the input: mgc.inputs), in one Ray Data pass, and an
    architecture's closed-form start (Architecture.start), in another."""
    from mgc import session

    prep = checked or check(cfg)
    session.connect()
    names = prep.model.inputs

    def partial(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for n in names:
            x = batch[n].astype(np.float64)
            axes = inputs.get(n).stats_axes(x.ndim)
            s = np.atleast_1d(x.sum(axis=axes))
            out |= {
                f"{n}:n": np.array([x.size / s.size]),
                f"{n}:s": s[None],
                f"{n}:ss": np.atleast_1d((x**2).sum(axis=axes))[None],
            }
        return out

    parts = (
        dataset(cfg.features, "training", prep.target, list(names))
        .map_batches(partial, batch_format="numpy", batch_size=256)
        .take_all()
    )
    norm = {}
    for n in names:  # take_all() gives one row per batch
        count = sum(float(p[f"{n}:n"]) for p in parts)
        mean = np.sum([p[f"{n}:s"] for p in parts], axis=0) / count
        var = np.sum([p[f"{n}:ss"] for p in parts], axis=0) / count - mean**2
        norm[n] = (mean.tolist(), np.sqrt(np.maximum(var, 1e-8)).tolist())
    start = None
    if prep.model.architecture.start:
        from mgc.models import build

        net = build(prep.model, norm)
        fitted = prep.model.architecture.start(
            net, dataset(cfg.features, "training", prep.target, list(names)), prep.target.multilabel
        )
        session.note(f"train {cfg.run_name}: starts from a closed-form fit (training loss {fitted['train_loss']:.3f})")
        start = {k: v.numpy() for k, v in net.state_dict().items() if not k.startswith(("norm.", "head."))}
    return dataclasses.replace(prep, norm=norm, start=start)


def check_run_dir(cfg: TrainConfig, fcfg: FeatureConfig, model_cfg: ModelConfig) -> None:
    """A run resumed by name must be the same run: same features, labels and model."""
    path = storage.join(cfg.run_dir, "run_config.json")
    state = json.loads(
        json.dumps(
            {
                "feature_config": fcfg.to_dict(),
                "model_config": model_cfg.to_dict(),
                "features": cfg.features,
                "target": cfg.target,
                "manifest": cfg.manifest,
            }
        )
    )
    if not storage.exists(path):
        storage.write_json(path, state)
        return
    old = {
        "target": "genre_top",
        "manifest": "",
        **storage.read_json(path),
    }  # runs from before targets: the extraction's genre_top
    for key in state:
        if old.get(key) != state[key]:
            raise MgcError(f"{cfg.run_dir} holds a run with a different {key.replace('_', ' ')}; choose another --name")


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
    from mgc.inference import Predictor

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


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from mgc.models import build

    tc = TrainConfig(**config["train"])
    mc = ModelConfig.from_dict(config["model"])
    target: targets.Target = config["target"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(tc.seed)
    device = ray.train.torch.get_device()
    net = build(mc, config["norm"])
    if config["start"]:
        net.load_start(config["start"])
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = max(1, math.ceil(config["train_segments"] / world / tc.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(tc, steps_per_epoch))
    aug = tc.augment(tc.seed * 1009 + rank, str(device))  # each rank draws its own
    score_name, score_mode = config["score"]
    state: dict[str, Any] = {"epoch": 0, "history": [], "resumed_at": []}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            saved = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=True)
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if "scheduler" in saved:  # checkpoints of mgc before the schedule have none
            sched.load_state_dict(saved["scheduler"])
        state = {
            "epoch": saved["epoch"],
            "history": saved["history"],
            "resumed_at": saved["resumed_at"] + [saved["epoch"]],
        }
    model = ray.train.torch.prepare_model(net)  # DDP over the workers, on the worker's device
    weight = torch.tensor(config["class_weights"], device=device) if config["class_weights"] else None
    if target.multilabel:  # a sigmoid per genre; the weights are the positives'
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=weight)
    else:
        loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=tc.label_smoothing)
    batch_columns = {**batch_dtypes(mc, target.multilabel, half=device.type == "cuda"), "device": device}
    train_shard = ray.train.get_dataset_shard("train")
    val_data = ray.train.get_dataset_shard("val")

    for epoch in range(state["epoch"], tc.epochs):
        model.train()
        started = time.perf_counter()
        total = torch.zeros(2, device=device)
        seen = torch.zeros(2, dtype=torch.int64, device=device)  # this rank's rows, and their row_digest
        batches = train_shard.iter_torch_batches(
            batch_size=tc.batch_size, local_shuffle_buffer_size=tc.shuffle_buffer, local_shuffle_seed=tc.seed + epoch,
            prefetch_batches=2, pin_memory=device.type == "cuda", **batch_columns,
        )  # fmt: skip
        waits: list[float] = []
        for batch in _timed(batches, waits):
            y = batch["target"]
            # Targets as distributions (multi-hot rows, multi-label), so that mixup can blend them.
            hot = y if target.multilabel else torch.nn.functional.one_hot(y, mc.n_classes).float()
            x, mixed = aug.mix(
                {n: batch[n].float() for n in mc.inputs}, hot, batch["track_id"]
            )  # float16 on a GPU until here
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = loss_fn(model(x, augment=aug).float(), mixed)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # keeps the LSTMs' steps stable
            opt.step()
            sched.step()
            total += torch.stack([loss.detach().float() * len(y), torch.tensor(float(len(y)), device=device)])
            if world > 1:
                seen += torch.stack([torch.tensor(len(y), device=device), row_digest(batch["track_id"])])
        if world > 1:
            dist.all_reduce(total)
        train_s = time.perf_counter() - started
        if world > 1:
            # Every rank's weights, hashed: DDP keeps them identical, and the history shows it.
            digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in net.parameters())).hexdigest()[
                :16
            ]
            ranks: list[Any] = [None] * world
            dist.all_gather_object(ranks, (digest, seen.tolist()))
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": float(total[0] / total[1]),
            "train_segments": int(total[1]),
            "train_s": train_s,
            "train_segments_per_s": float(total[1]) / train_s,
            # Seconds this worker's loop waited for batches: the first (filling the shuffle
            # buffer), and all together; the rest of train_s is computing.
            "train_first_batch_s": waits[0] if waits else 0.0,
            "train_data_wait_s": sum(waits),
            "lr": sched.get_last_lr()[0],
            # Each rank's share of the split: [rows, row_digest]; together, every row once.
            **(
                {"weights_sha256": [r[0] for r in ranks], "train_share_by_rank": [r[1] for r in ranks]}
                if world > 1
                else {}
            ),
        }
        # Every rank scores its share of the validation tracks; rank 0 scores the gathered predictions.
        val_started = time.perf_counter()
        if world > 1:
            # DDP keeps the parameters equal, but each rank's batch-norm statistics follow its own
            # last batch: score with rank 0's, which its checkpoint holds.
            for buffer in net.buffers():
                dist.broadcast(buffer, src=0)
        # On the CPU, so that each rank copies only its share to its device (Predictor does).
        batches = val_data.iter_torch_batches(batch_size=256, **batch_dtypes(mc, target.multilabel))
        predicted = predict(net, _share(batches, rank, world), device, target.multilabel)
        if world > 1:
            shares: list[Any] = [None] * world
            dist.all_gather_object(shares, predicted)
            predicted = tuple(np.concatenate(parts) for parts in zip(*shares))
        with tempfile.TemporaryDirectory() as tmp:
            saved_checkpoint = None
            if rank == 0:
                row.update(
                    metrics.flat(evaluate(target, *predicted), "val"),
                    val_segments=len(predicted[0]),
                    val_s=time.perf_counter() - val_started,
                )
                row["early_stop"] = (
                    bool(tc.patience)
                    and epochs_since_best([*state["history"], row], score_name, score_mode) >= tc.patience
                )
                state["history"].append(row)
                storage.write_json(storage.join(tc.run_dir, "history.json"), state["history"])  # live progress
                torch.save(
                    {
                        "model": net.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "epoch": epoch + 1,
                        "history": state["history"],
                        "resumed_at": state["resumed_at"],
                    },  # fmt: skip
                    os.path.join(tmp, "state.pt"),
                )
                saved_checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(row, checkpoint=saved_checkpoint, checkpoint_dir_name=checkpoint_dir(epoch + 1))
        stop = torch.tensor([float(row.get("early_stop", False))], device=device)
        if world > 1:
            dist.broadcast(stop, src=0)  # rank 0 decides; every rank stops at the same epoch
        if stop.item():
            break


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
        train_loop_config={
            "train": dataclasses.asdict(cfg),
            "model": prep.model.to_dict(),
            "norm": prep.norm,
            "class_weights": prep.class_weights,
            "target": prep.target,
            "train_segments": prep.segments["training"],
            "score": list(score),
            "start": prep.start,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=_worker_resources(cfg)
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
        # all of validation and scores the tracks that fall to it (_share).
        dataset_config=DataConfig(datasets_to_split=["train"], execution_options={"train": ordered}),
    )


def _worker_resources(cfg: TrainConfig) -> dict[str, float]:
    return {"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if cfg.use_gpu else {})}


def check_resources(cfg: TrainConfig, cluster: dict[str, float]) -> None:
    """Training workers must leave resources.READ_CPUS for Ray Data's reads."""
    need_gpu = cfg.num_workers * cfg.gpus_per_worker if cfg.use_gpu else 0
    if cluster.get("GPU", 0) < need_gpu:
        raise MgcError(
            f"{cfg.num_workers} workers x {cfg.gpus_per_worker:g} GPU need {need_gpu:g} GPUs; the cluster has {cluster.get('GPU', 0):g}"
        )
    if cfg.num_workers * cfg.cpus_per_worker > resources.training_cpus(cluster):
        free = cluster.get("CPU", 0) - cfg.num_workers * cfg.cpus_per_worker
        raise MgcError(
            f"{cfg.num_workers} workers x {cfg.cpus_per_worker:g} CPU leave {free:g} of the cluster's {cluster.get('CPU', 0):g} CPUs "
            f"for reading data (at least {resources.READ_CPUS} is needed): lower --num-workers or --cpus-per-worker"
        )


def ray_storage(path: str) -> dict[str, Any]:
    """RunConfig's storage arguments, through our storage layer (so custom S3 endpoints hold)."""
    if not storage.is_uri(path):
        return {"storage_path": os.path.abspath(path)}
    fs, inner = storage.resolve(path)
    return {"storage_path": inner, "storage_filesystem": fs}


def checkpoint_dir(epoch: int) -> str:
    """The folder, under the run directory, of the checkpoint taken after `epoch`."""
    return f"epoch-{epoch:04d}"


def checkpoint_state(run_dir: str, epoch: int) -> dict[str, Any]:
    """The training state a run checkpointed after `epoch` (model, optimizer, history)."""
    import io

    import torch

    data = storage.read_bytes(storage.join(run_dir, checkpoint_dir(epoch), "state.pt"))
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _split_predictions(cfg: TrainConfig, prep: Prepared, net, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import torch

    multilabel = prep.target.multilabel
    batches = dataset(cfg.features, split, prep.target, list(prep.model.inputs)).iter_torch_batches(
        batch_size=256, **batch_dtypes(prep.model, multilabel)
    )
    return predict(net, batches, torch.device("cpu"), multilabel)


def _tensor(x: np.ndarray) -> pa.Array:
    return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(x, dtype=np.float32))


def _track_probs(
    target: targets.Target, ids: np.ndarray, ys: np.ndarray, lps: np.ndarray, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(targets, probabilities) per track, as labelling gives them (multi-label: tree-consistent)."""
    if target.multilabel:
        _, y, p = metrics.track_level_multilabel(ids, ys, lps, temperature)
        return y, targets.consistent(p, target.parents)
    _, y, lp = metrics.track_level(ids, ys, lps, temperature)
    return y, np.exp(lp)


def _calibration(target: targets.Target, y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """ECE, log loss and the reliability curve of track probabilities."""
    if target.multilabel:
        return {
            "ece": metrics.binary_ece(y, probs),
            "log_loss": metrics.binary_log_loss(y, probs),
            "curve": metrics.binary_reliability(y, probs),
        }
    lp = np.log(np.maximum(probs.astype(np.float64), 1e-300))  # in float32 the floor would be 0
    return {
        "ece": metrics.ece(y, lp),
        "log_loss": metrics.scores(y, lp, len(target.classes))["log_loss"],
        "curve": metrics.reliability(y, lp),
    }


def finish(
    cfg: TrainConfig, prep: Prepared, best: dict[str, Any], best_metrics: dict[str, Any], last: dict[str, Any]
) -> dict[str, Any]:
    """Export the `best` checkpointed state as an artifact into cfg.run_dir, with a temperature
    (and, multi-label, per-genre thresholds) fitted on the validation split's tracks; score the
    test split once, write the outputs; `last` is the latest state (for the whole history)."""
    from mgc.models import build

    history = last["history"]
    target = prep.target
    net = build(prep.model)
    net.load_state_dict(best["model"])
    run_dir = cfg.run_dir
    val = _split_predictions(cfg, prep, net, "validation")
    if target.multilabel:
        fitted = metrics.fit_temperature_multilabel(*val)
        cut = metrics.thresholds(*_track_probs(target, *val, fitted["temperature"]))
        extra = {**target.meta(), "thresholds": cut}
    else:
        fitted, cut, extra = metrics.fit_temperature(*metrics.track_level(*val)[1:]), None, {}
    temperature = fitted["temperature"]
    artifact.save(
        storage.join(run_dir, "model"),
        net,
        prep.features,
        prep.labels,
        {"epoch": best["epoch"], "run": cfg.run_name, "temperature": temperature, **extra},
    )

    ids, ys, lps = _split_predictions(cfg, prep, net, "test")
    test = evaluate(target, ids, ys, lps, temperature, cut)
    before = {
        split: _calibration(target, *_track_probs(target, *p))
        for split, p in (("validation", val), ("test", (ids, ys, lps)))
    }
    after = {
        split: _calibration(target, *_track_probs(target, *p, temperature))
        for split, p in (("validation", val), ("test", (ids, ys, lps)))
    }
    calibration = {
        "temperature": temperature,
        "temperature_fit": {k: v for k, v in fitted.items() if k != "temperature"},  # how T was chosen
        **{
            split: {"ece_before": before[split]["ece"], "ece_after": after[split]["ece"]}
            for split in ("validation", "test")
        },
    }
    calibration["test"] |= {"log_loss_before": before["test"]["log_loss"], "log_loss_after": after["test"]["log_loss"]}
    # Single-label: `label`, the class index, as before multi-label targets; multi-label: `target`, the multi-hot rows.
    predictions = pa.table(
        {"track_id": ids, **({"target": _tensor(ys)} if target.multilabel else {"label": ys}), "logprobs": _tensor(lps)}
    )
    storage.write_parquet(predictions, storage.join(run_dir, "test_predictions.parquet"))

    out = {
        "run": cfg.run_name,
        "model": prep.model.to_dict(),
        "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("progress",)},
        "target": cfg.target,
        "labels": prep.labels,
        "segments": prep.segments,
        "tracks": prep.tracks,
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "resumed_at": list(last["resumed_at"]),  # epochs resumed from a checkpoint (lost worker, re-run)
        "validation": {k: v for k, v in best_metrics.items() if k.startswith("val_")},
        "test": test,  # track level calibrated by the temperature, as labelling outputs it
        "calibration": calibration,
        "stopped_early": bool(history[-1].get("early_stop")),
        "parameters": int(sum(p.numel() for p in net.parameters())),
    }
    storage.write_json(storage.join(run_dir, "metrics.json"), out)
    storage.write_json(storage.join(run_dir, "history.json"), history)
    tops = [prep.labels[r] for r in target.roots]  # a multi-label model's top genres: its roots
    if test["track"]["confusion"]:  # none where no test track's genre_top is a class (--target genres)
        plots.confusion_matrix(
            test["track"]["confusion"],
            tops,
            storage.join(run_dir, "confusion_matrix.png"),
            f"{cfg.run_name}: test, track level" + (", top genres" if target.multilabel else ""),
        )
    plots.learning_curves(history, storage.join(run_dir, "learning_curves.png"), cfg.run_name)
    plots.reliability(
        {"before": before["test"]["curve"], f"after (T = {temperature:.2f})": after["test"]["curve"]},
        storage.join(run_dir, "reliability.png"), f"{cfg.run_name}: test tracks", target.multilabel,
    )  # fmt: skip
    if target.multilabel:
        plots.genre_ap(
            test["track"]["per_genre"],
            storage.join(run_dir, "genre_ap.png"),
            f"{cfg.run_name}: test AP per genre (top-genre accuracy {test['track']['accuracy']:.3f})",
        )
    return out


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
    from mgc import session

    cfg = absolute(cfg)
    checked = check(cfg)
    check_run_dir(cfg, checked.features, checked.model)
    t = checked.tracks
    session.note(f"train {cfg.run_name}: --target {cfg.target} labels {t['training'] + t['validation'] + t['test']} of the {t['in_shards']} tracks in the shards "
                 f"({t['training']} for training) with {len(checked.labels)} classes")  # fmt: skip
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
    from mgc import session
    from mgc.models import build

    session.note(f"train {cfg.run_name}: fitted on the driver from statistics that Ray Data computes")
    started = time.perf_counter()
    net = build(prep.model, prep.norm)
    training = dataset(cfg.features, "training", prep.target, list(prep.model.inputs))
    row: dict[str, Any] = {"epoch": 1, **prep.model.architecture.fit(net, training, prep.target.multilabel)}
    row["train_s"] = time.perf_counter() - started
    row.update(metrics.flat(evaluate(prep.target, *_split_predictions(cfg, prep, net, "validation")), "val"))
    state = {"model": net.state_dict(), "epoch": 1, "history": [row], "resumed_at": []}
    return finish(cfg, prep, state, row, state)


def export_best(runs: list[dict[str, Any]], storage_path: str, name: str = "best") -> dict[str, Any]:
    """Copy the artifact of the run with the best validation score (the target's: macro F1 of
    tracks, micro AP multi-label) to <storage_path>/<name>/model, with best.json beside it
    (the run, its score, every candidate's); returns best.json."""
    kinds = {r.get("target", "genre_top") for r in runs}
    if len(kinds) > 1:
        raise MgcError(
            f"--export-best compares models on one target's validation score; these runs have {', '.join(sorted(kinds))}"
        )
    score = targets.score(kinds.pop())
    scored = [r for r in runs if not math.isnan(r["validation"][score])]
    if not scored:
        raise MgcError(f"--export-best: no run has a {score} to compare (no validation positives?)")
    top = max(scored, key=lambda r: r["validation"][score])
    src, dest = storage.join(storage_path, top["run"]), storage.join(storage_path, name)
    for f in ("weights.pt", "model.json"):  # model.json last: it is what marks an artifact as there
        storage.write_bytes(storage.join(dest, "model", f), storage.read_bytes(storage.join(src, "model", f)))
    best = {"run": top["run"], "model": top["model"]["name"], "metric": score, "score": top["validation"][score],
            "artifact": storage.join(dest, "model"), "candidates": {r["run"]: r["validation"][score] for r in scored}}  # fmt: skip
    storage.write_json(storage.join(dest, "best.json"), best)
    return best


def compare(runs: list[dict[str, Any]], storage_path: str | None = None) -> pd.DataFrame:
    """The studies' table: one row per model, test metrics at segment and track level; written
    as comparison.csv and comparison.md under `storage_path` if given."""
    rows = []
    for r in runs:
        row = {
            "model": r["model"]["name"],
            "run": r["run"],
            "target": r.get("target", "genre_top"),
            "parameters": r["parameters"],
            "best_epoch": r["best_epoch"],
        }
        for level in ("segment", "track"):
            for k in metrics.SCALARS + metrics.MULTILABEL_SCALARS:  # multi-label runs' accuracy: the top genre's
                if k in r["test"][level]:
                    row[f"{level}_{k}"] = round(r["test"][level][k], 4)
        rows.append(row)
    table = pd.DataFrame(rows)
    if storage_path is not None:
        storage.write_bytes(storage.join(storage_path, "comparison.csv"), table.to_csv(index=False).encode())
        storage.write_bytes(
            storage.join(storage_path, "comparison.md"), (table.to_markdown(index=False) + "\n").encode()
        )
    return table
