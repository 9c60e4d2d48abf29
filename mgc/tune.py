"""Ray Tune sweeps over learning rate and dropout; every trial is a real Ray Train run.

The Train V2 pattern: a Tune function per trial builds and fits mgc.train's TorchTrainer, whose
TuneReportCallback passes each epoch's metrics to Tune and so to the ASHA scheduler. A killed
sweep resumes from its directory: finished trials are kept, interrupted ones continue from their
last Ray Train checkpoint.

Sweep directory (<storage_path>/<name>/), besides Tune's own state and trial folders:

    sweep.json          the sweep's configuration (what --resume reads back)
    runs/<trial_id>/    each trial's Ray Train run: checkpoints, attempts.json (start times)
    trials.csv          one row per trial: configuration, last and best score, epochs, stop reason
    best.json           the best trial: configuration, score, epoch, test metrics
    search_plane.png    learning rate x dropout, coloured by each trial's best score
    best/               the best trial's best checkpoint as a training run directory: model/
                        (the artifact), metrics.json (test split scored once), plots
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mgc import metrics, plots, resources, session, storage, targets
from mgc import train as training
from mgc.errors import MgcError
from mgc.models import architecture
from mgc.options import option, validate
from mgc.targets import MULTILABEL
from mgc.train import TrainConfig

SEARCHERS = ("random", "optuna", "hyperopt")
STOPPED_EARLY = "stopped early by ASHA"  # trials.csv stop reasons
PATIENCE = "stopped early: no better score in --patience epochs"
SEARCHED = ("weight_decay", "mixup")  # recipe options a sweep may sample beside lr and dropout
# TrainConfig fields that a sweep samples or derives for each trial, so not options of a sweep.
PER_TRIAL = ("lr", "dropout", "use_gpu", "gpus_per_worker")


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: search space, search algorithm, ASHA early stopping and trial resources.
    `train` is every trial's run, less the learning rate and dropout the sweep samples;
    the sweep directory is its storage_path/name."""

    train: TrainConfig = option(help="every trial's run, less what the sweep samples")
    num_samples: int = option(16, low=1, help="trials to run")
    max_concurrent: int = option(0, low=0, help="trials at once (0: as many as the cluster fits)")
    lr_min: float = option(1e-5, above=0, high=1, help="lowest learning rate sampled (log-uniform)")
    lr_max: float = option(1e-2, above=0, high=1, help="highest learning rate sampled")
    dropout_min: float = option(0.1, low=0, below=1, help="lowest dropout sampled (uniform)")
    dropout_max: float = option(0.7, low=0, below=1, help="highest dropout sampled")
    dropout_per_layer: bool = option(False, help="sample one dropout rate per dropout layer instead of one shared")
    weight_decay_min: float = option(
        0.0,
        low=0,
        help="lowest weight decay sampled (log-uniform; searched when --weight-decay-max is above 0)",
    )
    weight_decay_max: float = option(
        0.0, low=0, help="highest weight decay sampled (0: every trial takes --weight-decay)"
    )
    mixup_min: float = option(
        0.0, low=0, help="lowest mixup alpha sampled (uniform; searched when --mixup-max is above 0)"
    )
    mixup_max: float = option(0.0, low=0, help="highest mixup alpha sampled (0: every trial takes --mixup)")
    search: str = option(
        "random",
        choices=SEARCHERS,
        help="searcher: random, optuna or hyperopt (the latter two need their package)",
    )
    metric: str = option(
        "",
        help="what ASHA and the best trial are judged by (loss and ECE metrics are minimised); empty: the target's "
        "score, val_track_f1_macro or, multi-label, val_track_ap_micro",
    )
    grace_period: int = option(1, low=1, help="epochs every trial runs before ASHA may stop it")
    reduction_factor: int = option(3, low=2, help="ASHA keeps 1 in this many trials at each rung")
    gpus_per_trial: float = option(
        0.0, low=0, help="GPUs per trial, split over its workers; fractions let trials share a GPU"
    )

    def __post_init__(self) -> None:
        validate(self)
        if not self.metric:
            object.__setattr__(self, "metric", targets.score(self.train.target))

    @property
    def mode(self) -> str:
        return "min" if self.metric.endswith(("loss", "ece")) else "max"

    @property
    def sweep_dir(self) -> str:
        return self.train.run_dir

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepConfig":
        lists = {k: tuple(v) for k, v in d["train"].items() if isinstance(v, list)}  # JSON turned tuples into lists
        return cls(**{**d, "train": TrainConfig(**{**d["train"], **lists})})


def check_options(sweep: SweepConfig) -> None:
    """Everything that can be wrong with the options, before Ray is joined, as one MgcError."""
    if architecture(sweep.train.model).fit:
        raise MgcError(f"{sweep.train.model} is fitted in closed form: it has no learning rate or dropout to tune")
    if not 0 < sweep.lr_min < sweep.lr_max:
        raise MgcError(
            f"learning-rate range [{sweep.lr_min:g}, {sweep.lr_max:g}] is empty or inverted: "
            "need 0 < --lr-min < --lr-max"
        )
    if not 0 <= sweep.dropout_min < sweep.dropout_max < 1:
        raise MgcError(
            f"dropout range [{sweep.dropout_min:g}, {sweep.dropout_max:g}] is empty or inverted: "
            "need 0 <= --dropout-min < --dropout-max < 1"
        )
    if sweep.weight_decay_max and not 0 < sweep.weight_decay_min < sweep.weight_decay_max:
        raise MgcError(
            f"weight-decay range [{sweep.weight_decay_min:g}, {sweep.weight_decay_max:g}] is empty or inverted: "
            "need 0 < --weight-decay-min < --weight-decay-max"
        )
    if sweep.mixup_max and not 0 <= sweep.mixup_min < sweep.mixup_max:
        raise MgcError(
            f"mixup range [{sweep.mixup_min:g}, {sweep.mixup_max:g}] is empty or inverted: "
            "need 0 <= --mixup-min < --mixup-max"
        )
    if sweep.metric not in training.REPORTED:
        raise MgcError(
            f"metric {sweep.metric!r} is not reported by training; choose one of {', '.join(training.REPORTED)}"
        )
    if sweep.train.target not in MULTILABEL and sweep.metric.endswith(metrics.MULTILABEL_SCALARS):
        raise MgcError(
            f"metric {sweep.metric!r} scores multi-label models; "
            f"--target {sweep.train.target} reports {', '.join(metrics.SCALARS)}"
        )
    if sweep.grace_period > sweep.train.epochs:
        raise MgcError(f"ASHA needs --grace-period <= --epochs ({sweep.train.epochs})")
    _searcher(sweep)


def check_cluster(sweep: SweepConfig, cluster: dict[str, float]) -> None:
    """Whether the cluster can run a trial (after check_options), as one clear MgcError."""
    gpus = cluster.get("GPU", 0)
    if sweep.gpus_per_trial > gpus:
        raise MgcError(f"--gpus-per-trial {sweep.gpus_per_trial:g} is more than the cluster's {gpus:g} GPUs")
    training.check_resources(trial_config(sweep, {"lr": sweep.lr_min, "dropout": sweep.dropout_min}, "check"), cluster)


def trial_config(
    sweep: SweepConfig, params: dict[str, Any], trial_id: str, layers: tuple[str, ...] = ()
) -> TrainConfig:
    """One trial's training run: the sampled learning rate, dropout (and weight decay, mixup where
    searched), under runs/<trial_id>."""
    dropout = tuple(params[f"dropout_{name}"] for name in layers) if sweep.dropout_per_layer else params["dropout"]
    gpus = sweep.gpus_per_trial
    return dataclasses.replace(
        sweep.train,
        lr=params["lr"],
        dropout=dropout,
        weight_decay=params.get("weight_decay", sweep.train.weight_decay),
        mixup=params.get("mixup", sweep.train.mixup),
        storage_path=storage.join(sweep.sweep_dir, "runs"),
        name=trial_id,
        use_gpu=gpus > 0,
        gpus_per_worker=gpus / sweep.train.num_workers if gpus else 1.0,
        progress=False,
    )


def _space(sweep: SweepConfig, layers: tuple[str, ...]) -> dict[str, Any]:
    from ray import tune

    dropout = tune.uniform(sweep.dropout_min, sweep.dropout_max)
    names = [f"dropout_{name}" for name in layers] if sweep.dropout_per_layer else ["dropout"]
    space = {"lr": tune.loguniform(sweep.lr_min, sweep.lr_max), **{n: dropout for n in names}}
    if sweep.weight_decay_max:
        space["weight_decay"] = tune.loguniform(sweep.weight_decay_min, sweep.weight_decay_max)
    if sweep.mixup_max:
        space["mixup"] = tune.uniform(sweep.mixup_min, sweep.mixup_max)
    return space


def _searcher(sweep: SweepConfig, max_concurrent: int = 1):
    """Tune's search algorithm named by sweep.search, seeded with the training seed, running at
    most `max_concurrent` trials at once (Tune ignores TuneConfig's limit for random search)."""
    from ray.tune.search import ConcurrencyLimiter

    if sweep.search == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=sweep.train.seed, max_concurrent=max_concurrent)
    try:
        if sweep.search == "optuna":
            import optuna  # noqa: F401
            from ray.tune.search.optuna import OptunaSearch

            return ConcurrencyLimiter(OptunaSearch(seed=sweep.train.seed), max_concurrent)
        import hyperopt  # noqa: F401
        from ray.tune.search.hyperopt import HyperOptSearch

        return ConcurrencyLimiter(HyperOptSearch(random_state_seed=sweep.train.seed), max_concurrent)
    except ImportError as e:
        raise MgcError(
            f"--search {sweep.search} needs the {sweep.search} package ({e}): pip install {sweep.search}"
        ) from None


def _trial(params: dict[str, Any], sweep: SweepConfig, prep: training.Prepared) -> None:
    """One trial, in its Tune actor: a Ray Train run of the sampled configuration. Its start is
    recorded, so trials.csv shows which trials an interruption restarted."""
    import ray
    from ray.tune.integration.ray_train import TuneReportCallback

    ray.data.DataContext.get_current().enable_progress_bars = False  # the trial's logs stay short
    cfg = trial_config(sweep, params, ray.tune.get_context().get_trial_id(), prep.model.dropout_layers)
    attempts_path = storage.join(cfg.run_dir, "attempts.json")
    attempts = storage.read_json(attempts_path) if storage.exists(attempts_path) else []
    storage.write_json(attempts_path, attempts + [time.time()])
    trial = _with_dropout(prep, cfg.dropout)
    training.check_run_dir(cfg, trial.features, trial.model)
    training.trainer(cfg, trial, callbacks=[TuneReportCallback()], score=(sweep.metric, sweep.mode)).fit()


def _with_dropout(prep: training.Prepared, dropout) -> training.Prepared:
    return dataclasses.replace(prep, model=dataclasses.replace(prep.model, dropout=dropout))


def _best(values: pd.Series, mode: str):
    """Index of the best value: highest for mode 'max', lowest for 'min'."""
    return values.idxmax() if mode == "max" else values.idxmin()


def concurrency(sweep: SweepConfig, cluster: dict[str, float]) -> int:
    """Trials at once: what the cluster holds, keeping a CPU for Ray Data, unless set."""
    if sweep.max_concurrent:
        return sweep.max_concurrent
    per_trial = sweep.train.num_workers * sweep.train.cpus_per_worker
    n = int(resources.training_cpus(cluster) // per_trial)
    if sweep.gpus_per_trial:
        n = min(n, int(cluster.get("GPU", 0) // sweep.gpus_per_trial))
    return max(1, n)


def _absolute(sweep: SweepConfig, storage_path: str | None = None) -> SweepConfig:
    """The sweep with its local paths made absolute (storage.absolute)."""
    # One worker per trial unless asked: trials, not workers, use the cluster's width.
    train = dataclasses.replace(
        training.absolute(sweep.train),
        storage_path=storage.absolute(storage_path or sweep.train.storage_path),
        num_workers=sweep.train.num_workers or 1,
    )
    return dataclasses.replace(sweep, train=train)


def run(sweep: SweepConfig) -> dict[str, Any]:
    """Run a new sweep to the end; returns what best.json holds."""
    sweep = _absolute(sweep)
    if storage.exists(storage.join(sweep.sweep_dir, "sweep.json")):
        raise MgcError(f"{sweep.sweep_dir} already holds a sweep: resume it with --resume, or choose another --name")
    return _fit(sweep, resume=False)


def resume(storage_path: str, name: str) -> dict[str, Any]:
    """Continue the sweep stored at storage_path/name: finished trials are kept."""
    saved = storage.join(storage_path, name, "sweep.json")
    if not storage.exists(saved):
        raise MgcError(f"{storage.join(storage_path, name)}: no sweep to resume (no sweep.json)")
    # The sweep's folder is where it is now, whatever path it was started with.
    return _fit(_absolute(SweepConfig.from_dict(storage.read_json(saved)), storage_path), resume=True)


def _trial_bar(sweep: SweepConfig):
    """A Tune callback (it runs on the driver): a progress bar of finished trials, with the best score."""
    from ray import tune
    from tqdm.auto import tqdm

    class TrialBar(tune.Callback):
        def __init__(self) -> None:
            self.bar = tqdm(
                total=sweep.num_samples,
                desc=f"tune {sweep.train.run_name}",
                unit="trial",
                disable=not sweep.train.progress,
            )
            self.best: float | None = None

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            score = result.get(sweep.metric)
            if score is not None and (
                self.best is None or (score > self.best if sweep.mode == "max" else score < self.best)
            ):
                self.best = score
                self.bar.set_postfix({sweep.metric: f"{score:.3f}"})

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.bar.update(1)

        on_trial_error = on_trial_complete

        def on_experiment_end(self, trials, **info) -> None:
            self.bar.close()

    return TrialBar()


def free_finished_worker_groups() -> None:
    """Remove this job's placement groups whose Ray Train workers are all dead.

    Ray Train V2 leaves a trial's worker group reserved when Tune ends the trial's actor before
    its controller has released it (ray-project/ray#54305); on a small cluster the next trial's
    Ray Data reads then wait forever for the CPU it holds. A group that never held a worker
    (one being started) is left alone."""
    import ray
    from ray.util.state import list_actors, list_placement_groups

    job = ray.get_runtime_context().get_job_id()
    created = {
        g.placement_group_id
        for g in list_placement_groups(filters=[("state", "=", "CREATED"), ("creator_job_id", "=", job)], limit=10_000)
    }
    if not created:
        return
    states: dict[str, set[str]] = {}
    for a in list_actors(
        filters=[("class_name", "=", "RayTrainWorker"), ("job_id", "=", job)], detail=True, limit=10_000
    ):
        if a.placement_group_id in created:
            states.setdefault(a.placement_group_id, set()).add(a.state)
    for group, seen in states.items():
        if seen == {"DEAD"}:
            resources.remove_group(group)


def _worker_group_reaper(every_s: float = 2.0):
    """A Tune callback (on the driver) that runs free_finished_worker_groups as trials end and
    every `every_s` seconds of Tune's loop (a trial's workers die a moment after it ends)."""
    from ray import tune
    from ray.util.state.exception import RayStateApiException

    class Reaper(tune.Callback):
        last = 0.0

        def free(self) -> None:
            self.last = time.monotonic()
            with contextlib.suppress(RayStateApiException):  # the state API busy: the next step tries again
                free_finished_worker_groups()

        def on_step_begin(self, iteration, trials, **info) -> None:
            if time.monotonic() - self.last >= every_s:
                self.free()

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.free()

        on_trial_error = on_trial_complete

    return Reaper()


def _fit(sweep: SweepConfig, resume: bool) -> dict[str, Any]:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    check_options(sweep)
    checked = training.check(sweep.train)
    cluster = session.connect()
    check_cluster(sweep, cluster)
    prep = training.prepare(sweep.train, checked)
    if not resume:
        storage.write_json(storage.join(sweep.sweep_dir, "sweep.json"), sweep.to_dict())
    # The Tune function only drives its Ray Train run: it reserves memory, not a CPU that the
    # workers or Ray Data's reads need (Tune requires it to reserve something).
    trainable = tune.with_resources(tune.with_parameters(_trial, sweep=sweep, prep=prep), {"memory": 512 * 2**20})
    where = training.ray_storage(sweep.train.storage_path)
    experiment = f"{where['storage_path'].rstrip('/')}/{sweep.train.run_name}"
    if resume and tune.Tuner.can_restore(experiment, storage_filesystem=where.get("storage_filesystem")):
        tuner = tune.Tuner.restore(
            experiment,
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=where.get("storage_filesystem"),
        )
    else:  # a new sweep, or one killed before Tune saved any state
        tuner = tune.Tuner(
            trainable,
            param_space=_space(sweep, prep.model.dropout_layers),
            tune_config=tune.TuneConfig(
                metric=sweep.metric,
                mode=sweep.mode,
                search_alg=_searcher(sweep, concurrency(sweep, cluster)),
                num_samples=sweep.num_samples,
                scheduler=ASHAScheduler(
                    time_attr="epoch",
                    max_t=sweep.train.epochs,
                    grace_period=sweep.grace_period,
                    reduction_factor=sweep.reduction_factor,
                ),
            ),
            # Tune's own tables stay off (verbose 0): the bar shows finished trials and the best score.
            run_config=tune.RunConfig(
                name=sweep.train.run_name,
                failure_config=tune.FailureConfig(max_failures=1),
                verbose=0,
                callbacks=[_trial_bar(sweep), _worker_group_reaper()],
                **where,
            ),
        )
    with resources.released():  # trials' groups that Tune's ends of trials left behind
        grid = tuner.fit()
    return summarise(sweep, prep, grid)


def _trial_rows(sweep: SweepConfig, grid, layers: tuple[str, ...]) -> pd.DataFrame:
    """trials.csv: one row per trial from Tune's per-epoch results."""
    rows = []
    dropout_keys = [f"dropout_{name}" for name in layers] if sweep.dropout_per_layer else ["dropout"]
    for result in grid:
        # Tune adds trial_id to every report; a trial that failed before reporting has its folder's name.
        trial_id = result.metrics.get("trial_id") or result.path.rstrip("/").rsplit("/", 1)[-1]
        config = result.config or {}
        searched = [k for k in SEARCHED if k in config]
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "lr": config.get("lr"),
            **{k: config.get(k) for k in [*dropout_keys, *searched]},
        }
        history = result.metrics_dataframe
        if history is not None and "epoch" in history:
            # A restarted trial may report an epoch twice: keep the latest report of each.
            history = history.dropna(subset=["epoch"]).drop_duplicates("epoch", keep="last").sort_values("epoch")
        if history is not None and len(history) and sweep.metric in history:
            # Ray keeps a trial's best checkpoints; among epochs with tied scores, take one it kept.
            trial_dir = storage.join(sweep.sweep_dir, "runs", trial_id)
            kept = {
                int(p.split("/")[0].removeprefix("epoch-"))
                for p in storage.list_files(trial_dir, "state.pt", recursive=True)
            }
            scored = history[history["epoch"].isin(kept)] if kept else history
            best = scored.loc[_best(scored[sweep.metric], sweep.mode)]
            row.update(
                {
                    "epochs_run": int(history["epoch"].iloc[-1]),
                    f"last_{sweep.metric}": float(history[sweep.metric].iloc[-1]),
                    f"best_{sweep.metric}": float(best[sweep.metric]),
                    "best_epoch": int(best["epoch"]),
                    "last_val_track_accuracy": float(history["val_track_accuracy"].iloc[-1]),
                }
            )
        else:
            row.update(
                {
                    "epochs_run": 0,
                    f"last_{sweep.metric}": None,
                    f"best_{sweep.metric}": None,
                    "best_epoch": None,
                    "last_val_track_accuracy": None,
                }
            )
        if result.error:
            row["stop_reason"] = f"error: {str(result.error).strip().splitlines()[-1][:200]}"
        elif row["epochs_run"] >= sweep.train.epochs:
            row["stop_reason"] = "completed"
        elif history is not None and "early_stop" in history and bool(history["early_stop"].fillna(False).iloc[-1]):
            row["stop_reason"] = PATIENCE
        else:
            row["stop_reason"] = STOPPED_EARLY
        attempts = storage.join(sweep.sweep_dir, "runs", trial_id, "attempts.json")
        row["attempts"] = len(storage.read_json(attempts)) if storage.exists(attempts) else 0
        rows.append(row)
    return pd.DataFrame(rows).sort_values("trial_id").reset_index(drop=True)


def summarise(sweep: SweepConfig, prep: training.Prepared, grid) -> dict[str, Any]:
    """Write trials.csv, the search-plane PNG, the best trial's artifact and best.json."""
    layers = prep.model.dropout_layers
    table = _trial_rows(sweep, grid, layers)
    best_col = f"best_{sweep.metric}"
    storage.write_bytes(storage.join(sweep.sweep_dir, "trials.csv"), table.to_csv(index=False).encode())
    scored = table.dropna(subset=[best_col])
    if scored.empty:
        raise MgcError(f"{sweep.sweep_dir}: no trial reported {sweep.metric}; see trials.csv for the trials' errors")
    top = scored.loc[_best(scored[best_col], sweep.mode)]
    dropout_cols = [c for c in table.columns if c.startswith("dropout")]
    plots.search_plane(
        table["lr"],
        table[dropout_cols].mean(axis=1),
        table[best_col].astype(float),
        table["stop_reason"] != "completed",
        int(top.name),
        storage.join(sweep.sweep_dir, "search_plane.png"),
        sweep.metric,
        "dropout" if len(dropout_cols) == 1 else "mean dropout over layers",
    )

    searched = [c for c in SEARCHED if c in table]
    params = {"lr": float(top["lr"]), **{c: float(top[c]) for c in [*dropout_cols, *searched]}}
    cfg = trial_config(sweep, params, str(top["trial_id"]), layers)
    best_state = training.checkpoint_state(cfg.run_dir, int(top["best_epoch"]))
    last_state = training.checkpoint_state(cfg.run_dir, int(top["epochs_run"]))
    best_metrics = next(h for h in last_state["history"] if h["epoch"] == int(top["best_epoch"]))
    exported = dataclasses.replace(cfg, storage_path=sweep.sweep_dir, name="best")
    out = training.finish(exported, _with_dropout(prep, cfg.dropout), best_state, best_metrics, last_state)
    best = {
        "trial_id": str(top["trial_id"]),
        "metric": sweep.metric,
        "mode": sweep.mode,
        "score": float(top[best_col]),
        "epoch": int(top["best_epoch"]),
        "config": {"lr": cfg.lr, "dropout": cfg.dropout, **{c: getattr(cfg, c) for c in searched}},
        "train_run": cfg.run_dir,
        "artifact": storage.join(exported.run_dir, "model"),
        "test": {level: {k: v for k, v in m.items() if k != "confusion"} for level, m in out["test"].items()},
        "trials": int(len(table)),
        "stopped_early": int((table["stop_reason"] == STOPPED_EARLY).sum()),
    }
    storage.write_json(storage.join(sweep.sweep_dir, "best.json"), best)
    return best


def config_file_values(path: str) -> dict[str, Any]:
    """Options from a TOML or JSON sweep file (keys as the command line's, - or _), checked."""
    import json
    import tomllib

    if not storage.exists(path):
        raise MgcError(f"{path}: sweep config file not found")
    text = storage.read_bytes(path).decode("utf-8")
    try:
        values = tomllib.loads(text) if path.endswith(".toml") else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise MgcError(f"{path}: not valid {'TOML' if path.endswith('.toml') else 'JSON'}: {e}") from None
    known = {f.name for f in dataclasses.fields(SweepConfig)} | {f.name for f in dataclasses.fields(TrainConfig)}
    known -= {"train", "progress", *PER_TRIAL}
    out = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise MgcError(f"{path}: unknown option {key!r}")
        out[name] = tuple(value) if isinstance(value, list) else value
    return out
