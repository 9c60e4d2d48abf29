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

from mgc.train.config import PLAIN, POLL_INTERVAL_S, REPORTED, SCHEDULES, SCORE, Prepared, TrainConfig
from mgc.train.data import batch_dtypes, dataset, evaluate, predict
from mgc.train.driver import absolute, checkpoint_state, epoch_bar, fit, ray_storage, run, trainer
from mgc.train.export import compare, export_best, finish, split_predictions
from mgc.train.loop import WorkerConfig, checkpoint_dir, epochs_since_best, lr_factor, row_digest, train_loop
from mgc.train.prepare import check, check_run_dir, model_config, prepare
from mgc.train.workers import check_resources, with_workers, worker_resources

__all__ = [
    "PLAIN", "POLL_INTERVAL_S", "REPORTED", "SCHEDULES", "SCORE", "Prepared", "TrainConfig", "WorkerConfig",
    "absolute", "batch_dtypes", "check", "check_resources", "check_run_dir", "checkpoint_dir", "checkpoint_state",
    "compare", "dataset", "epoch_bar", "epochs_since_best", "evaluate", "export_best", "finish", "fit", "lr_factor",
    "model_config", "predict", "prepare", "ray_storage", "row_digest", "run", "split_predictions", "train_loop",
    "trainer", "with_workers", "worker_resources",
]  # fmt: skip
