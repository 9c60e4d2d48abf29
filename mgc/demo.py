"""`mgc demo`: the whole pipeline a user later runs on a cluster, on the synthetic FMA-format corpus
and a local Ray instance, ending in the report.

    corpus -> extract -> train the baseline, cnn and cnn_lstm -> tune sweep -> label new uploads -> embed -> report

Each finished stage is recorded in WORKDIR/demo.json with its wall time; a re-run skips finished
stages (the corpus is reused) unless `fresh`. Sizes are small enough for a 2-core laptop.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from typing import Any, Callable

from mgc import fma, recommend, report, resources, session, storage
from mgc.errors import MgcError
from mgc.options import option, validate
from mgc.synth import SynthConfig, generate, uploads

# mgc.train, extract, tune and label are imported in the stages that run them: they import torch,
# which importing this module (the CLI's options) does without.

# Network sizes for a laptop; the literature's defaults are for GPUs (mgc train --help).
SMALL = {"channels": (8, 16, 32, 32), "dense": (64, 32), "lstm_units": (64, 64), "batch_size": 32}
# A corpus that is not solved, so that the comparison, the calibration and `uncertain` show
# something: artists who cross into a second genre, noisy training labels, uploads recorded off
# the bar and over background noise, and a fifth of the tracks each in validation and test so
# that the scores on them mean something.
HARD = {"crossover": 0.8, "label_noise": 0.1, "upload_conditions": ("offset", "noise"), "held_out": 0.2}


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    workdir: str = option("demo", help="where the corpus, every stage's output, demo.json and report/ go")
    tracks: int = option(200, low=1, help="synthetic tracks in the corpus")
    seconds: float = option(30.0, low=3, help="length of each synthetic clip, s (the FMA's are 30)")
    epochs: int = option(5, low=1, help="passes over the training split")
    trials: int = option(4, low=1, help="trials of the Tune sweep")
    sweep_epochs: int = option(3, low=1, help="epochs per sweep trial")
    uploads: int = option(24, low=0, help="synthetic new uploads to label (plus a long file and 3 broken ones)")
    seed: int = option(0, low=0, help="random seed of the corpus and the uploads")
    easy: bool = option(
        False,
        help="the easy corpus (every genre apart, clean labels, uploads recorded as the catalogue): models score "
        "near 1.0",
    )
    fresh: bool = option(False, help="delete the workdir and start again instead of reusing finished stages")
    ray_address: str | None = option(None, help="Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    progress: bool = option(True, help="show progress bars")

    def __post_init__(self) -> None:
        validate(self)

    def path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

    def shape(self) -> dict[str, Any]:
        """What the outputs depend on: a re-run with another shape cannot reuse them."""
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in ("workdir", "fresh", "ray_address", "progress")
        }


def _train_config(cfg: DemoConfig, model: str, at_once: int = 0, **kw: Any):
    """Small-model training options. Alone, a run takes as many workers as the cluster holds (one
    CPU each, one CPU left for Ray Data's reads); `at_once` single-worker runs share those CPUs."""
    import ray

    from mgc.train import TrainConfig

    cpus = resources.training_cpus(ray.cluster_resources())
    workers = {"num_workers": 1, "cpus_per_worker": min(1.0, cpus / at_once)} if at_once else {}
    return TrainConfig(
        features=cfg.path("features"),
        model=model,
        lr=3e-3,
        dropout=0.2,
        cache_data=True,
        progress=cfg.progress,
        **workers,
        **SMALL,
        **kw,
    )


def _corpus(cfg: DemoConfig) -> str:
    hard = {} if cfg.easy else HARD
    generate(
        SynthConfig(out=cfg.path("fma"), tracks=cfg.tracks, seconds=cfg.seconds, seed=cfg.seed, **hard),
        progress=cfg.progress,
    )
    return f"{cfg.tracks} tracks of {cfg.seconds:g} s in {cfg.path('fma')}"


def _extract(cfg: DemoConfig) -> str:
    from mgc.extract import ExtractConfig, run

    s = run(fma.manifest(cfg.path("fma")), ExtractConfig(out=cfg.path("features"), progress=cfg.progress))
    return f"{s['tracks_ok']} tracks ok, {s['segments']} segments; rejected: {s['rejects_by_reason'] or 'none'}"


def _train(cfg: DemoConfig) -> str:
    from mgc.train import compare, export_best, run

    results = [
        run(_train_config(cfg, m, epochs=cfg.epochs, storage_path=cfg.path("runs")))
        for m in ("baseline", "cnn", "cnn_lstm")
    ]
    table = compare(results, cfg.path("runs"))
    best = export_best(results, cfg.path("runs"))
    return (
        "\n"
        + table[["model", "track_accuracy", "track_f1_macro", "segment_accuracy", "segment_log_loss"]].to_string(
            index=False
        )
        + f"\nbest on validation: {best['run']}"
    )


def _tune(cfg: DemoConfig) -> str:
    from mgc import tune

    train = _train_config(
        cfg, "cnn", epochs=cfg.sweep_epochs, storage_path=cfg.path("sweeps"), at_once=2, name="cnn-sweep"
    )
    sweep = tune.SweepConfig(train=train, num_samples=cfg.trials, max_concurrent=2, grace_period=1, reduction_factor=2)
    # A demo stopped midway left the sweep's folder: continue it.
    started = storage.exists(storage.join(sweep.sweep_dir, "sweep.json"))
    best = tune.resume(train.storage_path, train.name) if started else tune.run(sweep)
    return (
        f"best of {best['trials']} trials: {best['metric']} {best['score']:.3f} at lr {best['config']['lr']:.2g}, "
        f"dropout {best['config']['dropout']:.2f}"
    )


def _label(cfg: DemoConfig) -> str:
    from mgc import label

    if not os.path.isfile(cfg.path("uploads", "_truth.csv")):
        hard = {} if cfg.easy else {"crossover": HARD["crossover"], "conditions": HARD["upload_conditions"]}
        uploads(cfg.path("uploads"), n=cfg.uploads, seconds=15.0, long_seconds=120.0, seed=100 + cfg.seed, **hard)
    s = label.run(
        label.LabelConfig(
            model=best_model(cfg), input=cfg.path("uploads"), out=cfg.path("labels"), progress=cfg.progress
        )
    )
    return f"{s['labelled']} files labelled, {s['errors']} errors"


def _embed(cfg: DemoConfig) -> str:
    table = recommend.build(cfg.path("features"), best_model(cfg), cfg.path("catalogue"), progress=cfg.progress)
    overall = table.set_index("genre").loc["all"]
    return (
        f"genre precision@5 {overall['precision@5']:.3f}, @10 {overall['precision@10']:.3f} "
        f"over {int(overall['tracks'])} test tracks"
    )


def best_model(cfg: DemoConfig) -> str:
    """The model a nightly job would label with: the best on validation of the compared models
    (`mgc compare --export-best`) and the sweep's best."""
    swept = storage.read_json(cfg.path("sweeps", "cnn-sweep", "best.json"))
    exported = cfg.path("runs", "best", "best.json")  # absent where the comparison exported no best model
    compared = storage.read_json(exported) if storage.exists(exported) else swept
    return (
        compared["artifact"]
        if compared["metric"] == swept["metric"] and compared["score"] > swept["score"]
        else swept["artifact"]
    )


STAGES: list[tuple[str, str, Callable[[DemoConfig], str]]] = [
    ("corpus", "synthesise the FMA-format corpus", _corpus),
    ("extract", "extract log-mel and MFCC segments with Ray Data", _extract),
    ("train", "fit the baseline, train cnn and cnn_lstm with Ray Train (DDP), test metrics side by side", _train),
    ("tune", "sweep learning rate x dropout of cnn with Ray Tune and ASHA", _tune),
    ("label", "label a folder of new uploads (mixed formats, a long file, broken files)", _label),
    ("embed", "embed the catalogue and score recommendations (genre precision@k)", _embed),
]


def _state(cfg: DemoConfig) -> dict[str, Any]:
    path = cfg.path("demo.json")
    if cfg.fresh and os.path.exists(cfg.workdir):
        if not os.path.isfile(path) and os.listdir(cfg.workdir):
            raise MgcError(f"{cfg.workdir}: not a demo folder (no demo.json): refusing to delete it for --fresh")
        shutil.rmtree(cfg.workdir)
    state = storage.read_json(path) if os.path.isfile(path) else {"config": cfg.shape(), "stages": {}}
    if state["config"] != cfg.shape():
        changed = sorted(k for k in cfg.shape() if state["config"].get(k) != cfg.shape()[k])
        raise MgcError(
            f"{cfg.workdir} was made with other settings ({', '.join(changed)}): add --fresh to start again, "
            "or choose another --workdir"
        )
    return state


def run(cfg: DemoConfig) -> str:
    """Run (or finish) the demo; returns the path of the HTML report."""
    state = _state(cfg)
    os.makedirs(cfg.workdir, exist_ok=True)
    total = len(STAGES) + 1
    for i, (name, what, fn) in enumerate(STAGES, 1):
        done = state["stages"].get(name)
        if done:
            print(f"[{i}/{total}] {what}: done in an earlier run ({done['wall_s']:.0f} s), reused", flush=True)
            continue
        print(f"[{i}/{total}] {what}", flush=True)
        if name != "corpus":
            if cfg.ray_address:
                os.environ[session.ADDRESS_ENV] = cfg.ray_address
            session.connect()
        started = time.time()
        outcome = fn(cfg)
        state["stages"][name] = {"wall_s": round(time.time() - started, 1), "outcome": outcome}
        storage.write_json(cfg.path("demo.json"), state)
        print(f"      {outcome}  ({state['stages'][name]['wall_s']:.0f} s)", flush=True)
    print(f"[{total}/{total}] write the report", flush=True)
    html, _ = report.write(cfg.workdir)
    return html
