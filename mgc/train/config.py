"""A training run's options (`TrainConfig`), what the driver learns before training (`Prepared`)
and what every epoch reports."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mgc import metrics, storage, targets
from mgc.augment import Augment
from mgc.errors import MgcError
from mgc.features import FeatureConfig
from mgc.models import ModelConfig
from mgc.options import option, validate

SCORE = "val_track_f1_macro"
SCHEDULES = ("cosine", "constant")
# The plain recipe, as TrainConfig overrides: Adam at a constant rate, no augmentation, no early
# stopping (bench/recipe.py and the tests compare it with the default one).
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

    features: str = option(help="output folder (or URI) of mgc extract")
    model: str = option("cnn", registry="models", help="network")
    target: str = option(
        "genre_top",
        choices=tuple(targets.TARGETS),
        help="what to learn: genre_top (a track's one top genre; a softmax), genres or genres_all (multi-label: every "
        "genre the track lists, or those with their ancestors in the genre tree; a sigmoid per genre)",
    )
    min_genre_tracks: int = option(
        20, low=1, help="multi-label targets: genres carried by fewer training tracks are left out"
    )
    manifest: str = option(
        "",
        help="the labels to train with, joined to the shards on track_id: the FMA's tracks.csv (genres.csv beside "
        "it), a CSV manifest (path, label, optional genres joined by |, track_id) or a manifest .parquet; empty: the "
        "extraction's own (relabelling needs no re-extraction)",
    )
    input: str = option(
        "",
        help="other inputs for a model that can read them, several joined by + (e.g. mfcc for cnn, cnn_lstm, "
        "cnn_bilstm; musicnn+logmel+mfcc for head); empty: the model's own",
    )
    epochs: int = option(30, low=1, help="passes over the training split")
    batch_size: int = option(64, low=1, help="segments per step and worker")
    lr: float = option(1e-3, above=0, high=1, help="Adam's learning rate")
    dropout: float | tuple[float, ...] = option(
        0.3,
        low=0,
        below=1,
        help="one rate for every dropout layer, or comma-separated rates per layer (between LSTMs, then the head)",
    )
    num_workers: int = option(
        0,
        low=0,
        help="DDP workers (processes; one GPU each with --use-gpu); 0: what the cluster holds, every GPU with "
        "--use-gpu, else every CPU but one (a sweep: one per trial)",
    )
    cpus_per_worker: float = option(
        1.0,
        above=0,
        help="CPUs reserved per worker; at least one CPU of the cluster must stay free for Ray Data's reads",
    )
    use_gpu: bool = option(False, help="train on GPUs, with bf16 autocast and pinned prefetch")
    gpus_per_worker: float = option(
        1.0, above=0, help="with --use-gpu: GPUs per worker; fractions let workers share one"
    )
    storage_path: str = option(
        "runs", help="folder or URI where run directories (checkpoints, artifact, metrics, plots) go"
    )
    name: str = option("", help="run name under --storage-path (empty: the model name); re-use it to resume")
    class_weights: bool = option(
        False,
        help="weight the loss by inverse class frequency (for FMA medium/large's unbalanced genres; multi-label "
        "targets always weight each genre's positives)",
    )
    # A buffer larger than a worker's share of an epoch stalls compute until all of it is read
    # (bench/README.md).
    shuffle_buffer: int = option(
        512, low=0, help="rows each worker shuffles locally (the shard order is also shuffled every epoch)"
    )
    # Later epochs skip Parquet decoding, which costs as much as a small model's step.
    cache_data: bool = option(
        False, help="keep the decoded splits in Ray's object store after epoch 1 (faster when they fit)"
    )
    max_failures: int = option(
        2, low=0, help="times a lost worker is replaced and the run resumed from its last checkpoint"
    )
    seed: int = option(
        0,
        low=0,
        help="random seed (weights, shuffling, sampling); with one worker on CPU, the same seed trains the same model",
    )
    channels: tuple[int, ...] = option((), low=1, empty="the model's", help="filters of the conv blocks or stages")
    dense: tuple[int, ...] = option((), low=1, empty="the model's", help="units of the dense head's layers")
    lstm_units: tuple[int, ...] = option((), low=1, empty="the model's", help="units of the stacked LSTMs")
    kernel: int = option(
        0, low=0, high=33, help="conv kernel size (0: the model's own: 3 in 2-D, 9 in 1-D; mm_crnn: its 1-D stages)"
    )
    # The recipe for small, noisy collections: AdamW, a linear warm-up then a cosine decay,
    # augmentation on the worker (mgc.augment), early stopping; PLAIN turns it all off.
    weight_decay: float = option(0.01, low=0, help="AdamW's decoupled weight decay (0: plain Adam)")
    schedule: str = option(
        "cosine",
        choices=SCHEDULES,
        help="learning rate after the warm-up: cosine (decays to 0 at the last epoch) or constant",
    )
    warmup_epochs: float = option(1.0, low=0, help="epochs over which the learning rate rises linearly from 0")
    label_smoothing: float = option(
        0.0, low=0, below=1, help="share of each target spread over the other genres (--target genre_top)"
    )
    time_shift: float = option(
        0.25, low=0, high=1, help="augmentation: largest random time shift (circular), share of a segment; 0: off"
    )
    spec_mask: float = option(
        0.15,
        low=0,
        high=1,
        help="augmentation: largest SpecAugment frequency and time mask on spectra, share of the axis; 0: off",
    )
    gain_db: float = option(6.0, low=0, help="augmentation: largest random gain of the waveform, dB; 0: off")
    mixup: float = option(
        0.2, low=0, help="augmentation: mixup of segments of different tracks, Beta(alpha, alpha); 0: off"
    )
    patience: int = option(
        10,
        low=0,
        help="stop after this many epochs without a better validation score (the best checkpoint is kept); 0: never",
    )
    progress: bool = option(True, help="show progress bars")

    def __post_init__(self) -> None:
        validate(self)
        if self.label_smoothing and self.target in targets.MULTILABEL:
            raise MgcError(
                f"--label-smoothing spreads one genre's target over the others: --target {self.target} has no one genre"
            )

    def augment(self, seed: int, device: str):
        """The training loop's augmentation (mgc.augment.Augment) with these settings."""
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
