"""The `mgc` command line. Each subcommand is a thin shell over a library function; the files
in jobs/ call the same functions for `ray job submit`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing

from mgc import inputs
from mgc.errors import MgcError
from mgc.features import FeatureConfig
from mgc.inputs import INPUTS
from mgc.models import MODELS, architecture

DEBUG = "show the full traceback of an error instead of one line"
VERBOSE = (
    "show Ray's own logs and the workers' output (also: MGC_LOG=debug); by default they go to Ray's session log folder"
)
RAY_ADDRESS = "Ray cluster to join (default: RAY_ADDRESS, else a local one)"
NO_PROGRESS = "no progress bars (for logs)"

# What each config field means, for --help (the default is appended); "Class.field" where two
# configs share a field name. tests/test_cli.py checks that every option of every subcommand has
# an explanation.
EXPLAIN = {
    # FeatureConfig
    "sample_rate": "every file is mixed to mono and resampled to this rate, Hz",
    "segment_seconds": "length of one training example; a 30 s clip gives 10",
    "n_fft": "FFT window of the spectrogram, samples",
    "hop_length": "step between spectrogram frames, samples",
    "n_mels": "mel bands of the log-mel spectrogram",
    "n_mfcc": "MFCC coefficients kept",
    "silence_db": "a track whose RMS level is below this is rejected as silent, dBFS",
    "max_seconds": "analyse at most this much of each file from its start, s (none: all of it)",
    "musicnn_patches": "musicnn input only: run the network on this many evenly spaced segments of every 32 (a 30 s clip's 10), the others copying the nearest (0: every segment; the network is most of the input's cost)",
    "inputs": "what each segment is stored as, among: "
    + "; ".join(f"{n}: {k.about}" for n, k in INPUTS.items())
    + "; the models read some of them",
    # ExtractConfig
    "tracks_per_shard": "tracks per task and per Parquet file; a killed run resumes at this granularity",
    # TrainConfig
    "target": "what to learn: genre_top (a track's one top genre; a softmax), genres or genres_all (multi-label: every genre the track lists, or those with their ancestors in the genre tree; a sigmoid per genre)",
    "min_genre_tracks": "multi-label targets: genres carried by fewer training tracks are left out",
    "TrainConfig.manifest": "the labels to train with, joined to the shards on track_id: the FMA's tracks.csv (genres.csv beside it), a CSV manifest (path, label, optional genres joined by |, track_id) or a manifest .parquet; empty: the extraction's own (relabelling needs no re-extraction)",
    "epochs": "passes over the training split",
    "batch_size": "segments per step and worker",
    "lr": "Adam's learning rate",
    "dropout": "one rate for every dropout layer, or comma-separated rates per layer (between LSTMs, then the head)",
    "num_workers": "DDP workers (processes; one GPU each with --use-gpu); 0: what the cluster holds, every GPU with --use-gpu, else every CPU but one (a sweep: one per trial)",
    "cpus_per_worker": "CPUs reserved per worker; at least one CPU of the cluster must stay free for Ray Data's reads",
    "use_gpu": "train on GPUs, with bf16 autocast and pinned prefetch",
    "gpus_per_worker": "with --use-gpu: GPUs per worker; fractions let workers share one",
    "storage_path": "folder or URI where run directories (checkpoints, artifact, metrics, plots) go",
    "class_weights": "weight the loss by inverse class frequency (for FMA medium/large's unbalanced genres; multi-label targets always weight each genre's positives)",
    "shuffle_buffer": "rows each worker shuffles locally (the shard order is also shuffled every epoch)",
    "cache_data": "keep the decoded splits in Ray's object store after epoch 1 (faster when they fit)",
    "max_failures": "times a lost worker is replaced and the run resumed from its last checkpoint",
    "seed": "random seed (weights, shuffling, sampling); with one worker on CPU, the same seed trains the same model",
    "TrainConfig.input": "other inputs for a model that can read them, several joined by + (e.g. mfcc for cnn, cnn_lstm, cnn_bilstm; musicnn+logmel+mfcc for head); empty: the model's own",
    "channels": "filters of the conv blocks or stages (empty: the model's own)",
    "dense": "units of the dense head's layers (empty: the model's own)",
    "lstm_units": "units of the stacked LSTMs (empty: the model's own)",
    "kernel": "conv kernel size (0: the model's own: 3 in 2-D, 9 in 1-D; mm_crnn: its 1-D stages)",
    "weight_decay": "AdamW's decoupled weight decay (0: plain Adam)",
    "schedule": "learning rate after the warm-up: cosine (decays to 0 at the last epoch) or constant",
    "warmup_epochs": "epochs over which the learning rate rises linearly from 0",
    "label_smoothing": "share of each target spread over the other genres (--target genre_top)",
    "time_shift": "augmentation: largest random time shift (circular), share of a segment; 0: off",
    "spec_mask": "augmentation: largest SpecAugment frequency and time mask on spectra, share of the axis; 0: off",
    "gain_db": "augmentation: largest random gain of the waveform, dB; 0: off",
    "mixup": "augmentation: mixup of segments of different tracks, Beta(alpha, alpha); 0: off",
    "patience": "stop after this many epochs without a better validation score (the best checkpoint is kept); 0: never",
    # SweepConfig
    "num_samples": "trials to run",
    "max_concurrent": "trials at once (0: as many as the cluster fits)",
    "lr_min": "lowest learning rate sampled (log-uniform)",
    "lr_max": "highest learning rate sampled",
    "dropout_min": "lowest dropout sampled (uniform)",
    "dropout_max": "highest dropout sampled",
    "dropout_per_layer": "sample one dropout rate per dropout layer instead of one shared",
    "search": "searcher: random, optuna or hyperopt (the latter two need their package)",
    "metric": "what ASHA and the best trial are judged by (loss and ECE metrics are minimised); empty: the target's score, val_track_f1_macro or, multi-label, val_track_ap_micro",
    "weight_decay_min": "lowest weight decay sampled (log-uniform; searched when --weight-decay-max is above 0)",
    "weight_decay_max": "highest weight decay sampled (0: every trial takes --weight-decay)",
    "mixup_min": "lowest mixup alpha sampled (uniform; searched when --mixup-max is above 0)",
    "mixup_max": "highest mixup alpha sampled (0: every trial takes --mixup)",
    "grace_period": "epochs every trial runs before ASHA may stop it",
    "reduction_factor": "ASHA keeps 1 in this many trials at each rung",
    "gpus_per_trial": "GPUs per trial, split over its workers; fractions let trials share a GPU",
    # LabelConfig
    "model": "model artifact directory (run_dir/model, or a sweep's best/model), or musicnn: the pretrained tagger's 50 MSD tags, no training needed",
    "LabelConfig.input": "folder or URI prefix searched recursively for audio, or a CSV/Parquet manifest with a path column",
    "out": "output folder or URI: labels/part-*.parquet, summary.csv",
    "top_k": "genres kept per file, with probabilities",
    "uncertain_below": "a file whose top probability is below this is flagged uncertain",
    "files_per_batch": "files per Ray Data block (decoding task and inference batch)",
    "actors": "inference actors (0: one per CPU, or per GPU with --use-gpu)",
    "follow_links": "follow symbolic links that stay inside the input folder (links leading out of it are never read)",
    # DemoConfig
    "workdir": "where the corpus, every stage's output, demo.json and report/ go",
    "tracks": "synthetic tracks in the corpus",
    "seconds": "length of each synthetic clip, s (the FMA's are 30)",
    "trials": "trials of the Tune sweep",
    "sweep_epochs": "epochs per sweep trial",
    "uploads": "synthetic new uploads to label (plus a long file and 3 broken ones)",
    "easy": "the easy corpus (every genre apart, clean labels, uploads recorded as the catalogue): models score near 1.0",
    "fresh": "delete the workdir and start again instead of reusing finished stages",
    "ray_address": RAY_ADDRESS,
}


# The range of every numeric option, (low, high, low included, high included); None: unbounded.
# Values outside are refused when the command line is parsed. tests/test_cli.py checks that every
# numeric option of every subcommand has one.
LIMITS: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "sample_rate": (1000, None, True, False), "segment_seconds": (0, None, False, False), "n_fft": (16, None, True, False),
    "hop_length": (1, None, True, False), "n_mels": (1, None, True, False), "n_mfcc": (1, None, True, False),
    "silence_db": (-200, 0, True, True), "max_seconds": (0, None, False, False), "musicnn_patches": (0, None, True, False), "network_actors": (0, None, True, False), "tracks_per_shard": (1, None, True, False),
    "limit": (0, None, True, False), "split_seed": (0, None, True, False), "epochs": (1, None, True, False), "min_genre_tracks": (1, None, True, False),
    "batch_size": (1, None, True, False), "lr": (0, 1, False, True), "dropout": (0, 1, True, False),
    "num_workers": (0, None, True, False), "cpus_per_worker": (0, None, False, False), "gpus_per_worker": (0, None, False, False),
    "shuffle_buffer": (0, None, True, False), "max_failures": (0, None, True, False), "seed": (0, None, True, False),
    "channels": (1, None, True, False), "dense": (1, None, True, False), "lstm_units": (1, None, True, False),
    "kernel": (0, 33, True, True), "num_samples": (1, None, True, False), "max_concurrent": (0, None, True, False),
    "lr_min": (0, 1, False, True), "lr_max": (0, 1, False, True), "dropout_min": (0, 1, True, False),
    "dropout_max": (0, 1, True, False), "grace_period": (1, None, True, False), "reduction_factor": (2, None, True, False),
    "gpus_per_trial": (0, None, True, False), "top_k": (1, None, True, False), "uncertain_below": (0, 1, True, True),
    "files_per_batch": (1, None, True, False), "actors": (0, None, True, False), "tracks": (1, None, True, False),
    "seconds": (3, None, True, False), "trials": (1, None, True, False), "sweep_epochs": (1, None, True, False),
    "uploads": (0, None, True, False), "link_pool": (0, None, True, False), "broken_share": (0, 1, True, False), "unlabelled_share": (0, 1, True, False), "label_noise": (0, 1, True, False), "multi_genre": (0, 1, True, True), "crossover": (0, 1, True, True), "held_out": (0, 0.4, False, True),
    "workers": (0, None, True, False), "k": (1, None, True, False), "weight_decay": (0, None, True, False),
    "warmup_epochs": (0, None, True, False), "label_smoothing": (0, 1, True, False), "time_shift": (0, 1, True, True),
    "spec_mask": (0, 1, True, True), "gain_db": (0, None, True, False), "mixup": (0, None, True, False), "patience": (0, None, True, False),
    "weight_decay_min": (0, None, True, False), "weight_decay_max": (0, None, True, False), "mixup_min": (0, None, True, False),
    "mixup_max": (0, None, True, False),
}  # fmt: skip


def _range_text(limits: tuple[float | None, float | None, bool, bool]) -> str:
    lo, hi, lo_in, hi_in = limits
    parts = ([f"{'at least' if lo_in else 'above'} {lo:g}"] if lo is not None else []) + (
        [f"{'at most' if hi_in else 'below'} {hi:g}"] if hi is not None else []
    )
    return " and ".join(parts)


def ranged(kind, name: str):
    """An argparse type: `kind`, refused with one line when outside LIMITS[name]."""
    limits = LIMITS[name]
    lo, hi, lo_in, hi_in = limits

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if (
            value != value
            or (lo is not None and (value < lo or (value == lo and not lo_in)))
            or (hi is not None and (value > hi or (value == hi and not hi_in)))
        ):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {_range_text(limits)}")
        return value

    parse.limits = limits  # type: ignore[attr-defined]
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like the rest of mgc's."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def _help(name: str, default: str, cls: type | None = None) -> str:
    text = EXPLAIN.get(f"{cls.__name__}.{name}", EXPLAIN.get(name, "")) if cls else EXPLAIN.get(name, "")
    return f"{text} ({default})".strip()


def _add_dataclass_options(parser: argparse.ArgumentParser, cls, title: str, skip: tuple[str, ...] = ()) -> None:
    """One --option per field of a config dataclass, with its default shown in --help: bools are
    flags, tuples comma-separated, a scalar-or-tuple field either, optionals take their inner type."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag, kind = f"--{f.name.replace('_', '-')}", hints[f.name]
        options = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
        tup = next((t for t in options if typing.get_origin(t) is tuple), None)
        if kind is bool:
            group.add_argument(flag, action="store_true", help=_help(f.name, "a flag", cls))
        elif tup is not None:
            item = typing.get_args(tup)[0]
            scalar = next((t for t in options if t not in (tup, type(None))), None)
            item = ranged(item, f.name) if item in (int, float) else input_name if f.name == "inputs" else item
            scalar = scalar and ranged(scalar, f.name)

            def parse(v: str, item=item, scalar=scalar):
                if scalar is not None and "," not in v:
                    return scalar(v)
                return tuple(item(x) for x in v.split(",") if x)

            if hasattr(item, "limits"):
                parse.limits = item.limits  # type: ignore[attr-defined]

            shown = f.default if not isinstance(f.default, tuple) else ",".join(map(str, f.default)) or "the model's"
            group.add_argument(
                flag, type=parse, default=f.default, help=_help(f.name, f"comma-separated; default: {shown}", cls)
            )
        elif f.default is dataclasses.MISSING:
            group.add_argument(flag, type=kind, required=True, help=_help(f.name, "required", cls))
        else:
            base = next((t for t in options if t is not type(None)), kind)
            base = ranged(base, f.name) if base in (int, float) else base
            group.add_argument(flag, type=base, default=f.default, help=_help(f.name, f"default: {f.default}", cls))


def _use_ray_address(args: argparse.Namespace) -> None:
    """The library joins Ray lazily, after its checks (so bad input fails without a cluster):
    --ray-address reaches its ray.init() as RAY_ADDRESS."""
    if args.ray_address:
        os.environ["RAY_ADDRESS"] = args.ray_address


def _feature_config(args: argparse.Namespace) -> FeatureConfig:
    return FeatureConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FeatureConfig)})


def _cmd_synth(args: argparse.Namespace) -> int:
    from mgc.synth import SynthConfig, generate, uploads

    if args.uploads:
        truth = uploads(
            args.out,
            n=args.uploads,
            seconds=min(args.seconds, 30.0),
            long_seconds=120.0,
            seed=100 + args.seed,
            crossover=args.crossover,
            conditions=args.upload_conditions,
        )
        print(
            f"{len(truth)} uploads in {args.out} ({(truth['status'] == 'error').sum()} broken); what each is: {args.out}/_truth.csv"
        )
        return 0
    cfg = SynthConfig(
        out=args.out, tracks=args.tracks, seconds=args.seconds, seed=args.seed, broken_share=args.broken_share,
        unlabelled_share=args.unlabelled_share, label_noise=args.label_noise, upload_conditions=args.upload_conditions,
        held_out=args.held_out, audio_dir=args.audio_dir, workers=args.workers, link_pool=args.link_pool, fma_proportions=args.fma_proportions,
        multi_genre=args.multi_genre, subgenres=args.subgenres, crossover=args.crossover,
    )  # fmt: skip
    print(generate(cfg, progress=not args.no_progress))
    return 0


def load_manifest(args: argparse.Namespace):
    """The manifest named by --fma-root / --manifest / --folder."""
    from mgc import fma, manifest

    if args.fma_root:
        return fma.manifest(args.fma_root, args.audio_dir, args.subset)
    if args.manifest:
        return manifest.from_csv(args.manifest, seed=args.split_seed)
    m = manifest.from_folder(args.folder, seed=args.split_seed, follow_links=args.follow_links)
    from mgc.session import note

    for link in m.source["links_outside"]:
        note(f"not read: {link}, outside {args.folder}")
    if m.source["links_skipped"]:
        note(f"{m.source['links_skipped']} symbolic link(s) inside {args.folder} skipped; --follow-links follows them")
    return m


def _cmd_extract(args: argparse.Namespace) -> int:
    from mgc.extract import ExtractConfig, run

    cfg = ExtractConfig(out=args.out, features=_feature_config(args), tracks_per_shard=args.tracks_per_shard, progress=not args.no_progress,
                        use_gpu=args.use_gpu, network_actors=args.network_actors)  # fmt: skip
    m = load_manifest(args)  # before Ray starts: bad metadata fails fast
    if args.limit:
        m.tracks = m.tracks.head(args.limit)
    _use_ray_address(args)
    summary = run(m, cfg)
    print(json.dumps(summary, indent=2))
    return 0


def _train_config(args: argparse.Namespace, model: str, name: str, skip: tuple[str, ...] = (), **given):
    """A TrainConfig from the parsed options, less `skip`, with `given` fields set as passed."""
    from mgc.train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model", "name", "progress", *skip, *given}
    return TrainConfig(
        model=model, name=name, progress=not args.no_progress, **{k: getattr(args, k) for k in fields}, **given
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from mgc.train import run

    cfg = _train_config(args, args.model, args.name)
    _use_ray_address(args)
    out = run(cfg)
    print(
        json.dumps(
            {
                "run_dir": cfg.run_dir,
                "best_epoch": out["best_epoch"],
                "tracks": out["tracks"],
                "test": {k: {m: v for m, v in d.items() if m != "confusion"} for k, d in out["test"].items()},
            },
            indent=2,
        )
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from mgc import train

    # One run per model and target; a target other than genre_top names its runs, so both fit one --storage-path.
    configs = [
        train.absolute(_train_config(args, m, f"{args.name}{m}{'' if t == 'genre_top' else '-' + t}", target=t))
        for t in args.targets.split(",")
        for m in args.models.split(",")
    ]
    if args.export_best and "," in args.targets:
        raise MgcError("--export-best compares models on one target's validation score: give one --targets")
    for cfg in configs:  # every model's checks before the first trains
        train.check(cfg)
    _use_ray_address(args)
    runs = [train.run(cfg) for cfg in configs]
    print(train.compare(runs, args.storage_path).to_string(index=False))
    if args.export_best:
        best = train.export_best(runs, configs[0].storage_path, f"{args.name}best")
        print(
            f"best on validation: {best['run']} ({best['metric']} {best['score']:.4f}), exported to {best['artifact']}"
        )
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from mgc import tune

    if not args.resume and not args.features:
        raise MgcError("--features is required (or --resume with --storage-path and --name of a sweep)")
    _use_ray_address(args)
    name = args.name or f"{args.model}-sweep"
    if args.resume:
        best = tune.resume(args.storage_path, name)
    else:
        train = _train_config(args, args.model, name, skip=tune.PER_TRIAL)
        fields = {f.name for f in dataclasses.fields(tune.SweepConfig)} - {"train"}
        best = tune.run(tune.SweepConfig(train=train, **{k: getattr(args, k) for k in fields}))
    print(json.dumps(best, indent=2))
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    from mgc.label import LabelConfig, run

    fields = {f.name for f in dataclasses.fields(LabelConfig)} - {"progress"}
    cfg = LabelConfig(progress=not args.no_progress, **{k: getattr(args, k) for k in fields})
    _use_ray_address(args)
    print(json.dumps(run(cfg), indent=2))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from mgc import recommend

    _use_ray_address(args)
    print(
        recommend.build(args.features, args.model, args.out, args.split, progress=not args.no_progress).to_string(
            index=False
        )
    )
    return 0


def _cmd_similar(args: argparse.Namespace) -> int:
    import numpy as np

    from mgc import recommend

    catalogue = recommend.load_catalogue(args.catalogue)
    if args.track_id is not None:
        ids = catalogue["id"].astype(str).to_numpy()
        hit = np.flatnonzero(ids == str(args.track_id))
        if not len(hit):
            raise MgcError(f"{args.track_id} is not in the catalogue {args.catalogue}")
        query, exclude = np.asarray(catalogue["embedding"].iloc[hit[0]], dtype=np.float32), str(args.track_id)
    else:
        if not args.model:
            raise MgcError("--file needs --model, the artifact whose embeddings the catalogue holds")
        from mgc.label import label_file

        query, exclude = np.asarray(label_file(args.file, args.model)["embedding"], dtype=np.float32), args.file
    print(recommend.similar(catalogue, query, args.k, exclude_id=exclude).to_string(index=False))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mgc.demo import DemoConfig, run

    fields = {f.name for f in dataclasses.fields(DemoConfig)} - {"progress"}
    html = run(DemoConfig(progress=not args.no_progress, **{k: getattr(args, k) for k in fields}))
    print(f"\nThe report: {html}\n  open it in a browser, or read report.md beside it")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from mgc import report

    html, md = report.write(args.run_dir, args.out)
    print(f"report: {html}\n        {md}")
    return 0


def build_parser(tune_defaults: dict | None = None) -> argparse.ArgumentParser:
    """The parser; `tune_defaults` (from a --config file) replace `mgc tune`'s defaults."""
    p = Parser(
        prog="mgc",
        description="Music genre classification at catalogue scale, on Ray: synth -> extract -> train/compare -> tune -> "
        "label -> embed/similar -> report. `mgc demo` runs them all on a synthetic corpus. Every path may be local or a URI (s3://...).",
        epilog="`mgc COMMAND --help` explains each command's options. The same commands run on a cluster as jobs/*.py under `ray job submit`.",
    )
    p.add_argument("--debug", action="store_true", help=DEBUG)
    p.add_argument("--verbose", action="store_true", help=VERBOSE)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a deterministic synthetic corpus in the FMA layout")
    s.add_argument("--out", required=True, help="folder to write (fma_metadata/ and the audio folder)")
    s.add_argument("--tracks", type=ranged(int, "tracks"), default=400, help="number of tracks (default: 400)")
    s.add_argument("--seconds", type=ranged(float, "seconds"), default=30.0, help="clip length (default: 30)")
    s.add_argument("--seed", type=ranged(int, "seed"), default=0, help="random seed (default: 0)")
    s.add_argument(
        "--broken-share", type=ranged(float, "broken_share"), default=0.05, help="share of broken files (default: 0.05)"
    )
    s.add_argument(
        "--unlabelled-share",
        type=ranged(float, "unlabelled_share"),
        default=0.03,
        help="share of tracks without genre_top (default: 0.03)",
    )
    s.add_argument(
        "--label-noise",
        type=ranged(float, "label_noise"),
        default=0.0,
        help="share of training tracks given another genre at random in tracks.csv, the audio unchanged: noisy labels (default: 0)",
    )
    s.add_argument(
        "--upload-conditions",
        type=lambda v: tuple(x for x in v.split(",") if x),
        default="",
        metavar="LIST",
        help="record the validation and test tracks as new uploads, unlike the catalogue training sees: any of offset (not starting on a bar), "
        "band (band-limited, EQ tilt), noise (background noise), level (peak -30 to -1 dBFS), comma-separated (default: none)",
    )
    s.add_argument(
        "--held-out",
        type=ranged(float, "held_out"),
        default=0.1,
        metavar="SHARE",
        help="share of the tracks in validation and in test, each, by artist (default: 0.1, as the FMA's split)",
    )
    s.add_argument("--audio-dir", default="fma_large", help="audio folder name under --out (default: fma_large)")
    s.add_argument(
        "--workers", type=ranged(int, "workers"), default=0, help="processes writing audio (default: 0 = one per core)"
    )
    s.add_argument(
        "--link-pool",
        type=ranged(int, "link_pool"),
        default=0,
        metavar="N",
        help="render only N clips and hard-link every track to one of its genre's: FMA large's 106,574 tracks in minutes, for scale benchmarks (default: 0 = render every track)",
    )
    s.add_argument(
        "--fma-proportions",
        action="store_true",
        help="FMA large's subset sizes (7.5%% small, 16%% more medium) and genre_top coverage (47%%) instead of even subsets and --unlabelled-share",
    )
    s.add_argument(
        "--multi-genre",
        type=ranged(float, "multi_genre"),
        default=0.0,
        metavar="SHARE",
        help="share of the usable tracks rendered as an audible blend of their genre and another, listed with both genres and no genre_top; "
        "with it (or --subgenres) tracks.csv lists only genres the audio has (default: 0)",
    )
    s.add_argument(
        "--subgenres",
        action="store_true",
        help="each artist plays one of its genre's two sub-genres, audibly (an extra low pad or high ostinato over the genre), and tracks.csv lists it",
    )
    s.add_argument(
        "--crossover",
        type=ranged(float, "crossover"),
        default=0.0,
        metavar="SHARE",
        help="each artist also plays a second genre, in its tempo and key, mixed under its own at up to SHARE of its loudness (per track): "
        "genres that share instruments, tempi and keys; the label stays the artist's genre (default: 0; the demo's hard corpus: 0.8)",
    )
    s.add_argument(
        "--uploads",
        type=ranged(int, "uploads"),
        default=0,
        metavar="N",
        help="instead of a corpus, write N 'new uploads' of mixed formats, rates and channels, a 2-minute file and 3 broken files, to label",
    )
    s.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    s.set_defaults(func=_cmd_synth)

    e = sub.add_parser(
        "extract", help="decode audio into Parquet shards of model inputs (log-mel, MFCC, waveform) with Ray Data"
    )
    add_source_options(e)
    e.add_argument("--out", required=True, help="output folder or URI (s3://bucket/prefix)")
    e.add_argument(
        "--tracks-per-shard",
        type=ranged(int, "tracks_per_shard"),
        default=32,
        help="tracks per task and Parquet file (default: 32)",
    )
    e.add_argument(
        "--limit", type=ranged(int, "limit"), default=0, help="only the first N tracks by track_id (default: all)"
    )
    e.add_argument(
        "--use-gpu",
        action="store_true",
        help="run the musicnn input's network in GPU actors (one per GPU unless --network-actors), fed by CPU decode tasks",
    )
    e.add_argument("--network-actors", type=ranged(int, "network_actors"), default=0,
                   help="actors that run the musicnn input's network (default 0: one per GPU with --use-gpu, else none: it runs in the decode tasks)")  # fmt: skip
    e.add_argument("--ray-address", default=None, help=RAY_ADDRESS)
    e.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    _add_dataclass_options(e, FeatureConfig, "feature options (stored in _config.json)")
    e.set_defaults(func=_cmd_extract)

    from mgc.train import TrainConfig

    t = sub.add_parser(
        "train",
        help="train a model on extracted shards with Ray Train (DDP)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=models_help(),
    )
    t.add_argument("--model", default="cnn", choices=MODELS, help="network, from the list below (default: cnn)")
    t.add_argument(
        "--name", default="", help="run name under --storage-path (default: the model name); re-use it to resume"
    )
    add_train_options(t, TrainConfig)
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser(
        "compare",
        help="train several models on the same shards and tabulate their test metrics",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=models_help(),
    )
    c.add_argument(
        "--models",
        type=model_list,
        default="baseline,cnn,cnn_lstm",
        help="comma-separated, from the list below; keep baseline among them to see what a network adds (default: baseline,cnn,cnn_lstm)",
    )
    c.add_argument("--name", default="", help="prefix of the run names")
    c.add_argument("--targets", type=target_list, default="genre_top",
                   help="comma-separated --target values, each model trained for each; a multi-label run's accuracy is its top genre's, "
                        "on the tracks that have one, as a genre_top run's (default: genre_top)")  # fmt: skip
    c.add_argument("--export-best", action="store_true",
                   help="copy the model best on validation to <storage-path>/<name>best/model, with best.json (the artifact to label with)")  # fmt: skip
    add_train_options(c, TrainConfig, skip=("target",))
    c.set_defaults(func=_cmd_compare)

    from mgc.tune import PER_TRIAL, SweepConfig

    u = sub.add_parser(
        "tune",
        help="sweep learning rate and dropout with Ray Tune (ASHA), each trial a Ray Train run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=models_help(),
    )
    u.add_argument("--model", default="cnn", choices=MODELS, help="network, from the list below (default: cnn)")
    u.add_argument("--name", default="", help="sweep name under --storage-path (default: <model>-sweep)")
    u.add_argument(
        "--config", help="TOML or JSON file of these options (keys as here, - or _); the command line overrides it"
    )
    u.add_argument(
        "--resume", action="store_true", help="continue the sweep --storage-path/--name after an interruption"
    )
    add_train_options(u, TrainConfig, features_required=False, skip=PER_TRIAL)
    _add_dataclass_options(u, SweepConfig, "sweep options", skip=("train",))
    u.set_defaults(func=_cmd_tune, **(tune_defaults or {}))

    from mgc.label import LabelConfig

    b = sub.add_parser("label", help="label new audio files with genre probabilities and embeddings (Ray Data)")
    b.add_argument("--ray-address", default=None, help=RAY_ADDRESS)
    b.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    _add_dataclass_options(b, LabelConfig, "labelling options", skip=("progress",))
    b.set_defaults(func=_cmd_label)

    m = sub.add_parser("embed", help="embed the tracks of an extraction output (a catalogue) and score recommendations")
    m.add_argument("--features", required=True, help="output folder (or URI) of mgc extract")
    m.add_argument(
        "--model", required=True, help="model artifact directory, or musicnn (the pretrained tagger's embedding)"
    )
    m.add_argument("--out", required=True, help="folder for catalogue.parquet and precision_at_k.csv/.md")
    m.add_argument("--split", default="test", help="the queries of the evaluation (default: test)")
    m.add_argument("--ray-address", default=None, help=RAY_ADDRESS)
    m.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    m.set_defaults(func=_cmd_embed)

    r = sub.add_parser("similar", help="catalogue tracks that sound like a track or a file (cosine similarity)")
    r.add_argument("--catalogue", required=True, help="catalogue.parquet of mgc embed, or a labelling output folder")
    q = r.add_mutually_exclusive_group(required=True)
    q.add_argument("--track-id", help="an id in the catalogue (track id, or path for a labelling output)")
    q.add_argument("--file", help="an audio file, embedded with --model")
    r.add_argument("--model", help="model artifact (needed with --file)")
    r.add_argument("-k", type=ranged(int, "k"), default=10, help="how many similar tracks to list (default: 10)")
    r.set_defaults(func=_cmd_similar)

    from mgc.demo import DemoConfig

    d = sub.add_parser(
        "demo", help="the whole pipeline on a synthetic corpus, ending in a report (re-runs reuse finished stages)"
    )
    d.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    _add_dataclass_options(d, DemoConfig, "demo options", skip=("progress",))
    d.set_defaults(func=_cmd_demo)

    o = sub.add_parser(
        "report", help="render a run directory (as mgc demo lays it out) as HTML with figures, and Markdown"
    )
    o.add_argument("run_dir", help="folder holding features/, runs/, sweeps/, labels/, catalogue/ (any may be missing)")
    o.add_argument("--out", default=None, help="where report.html and report.md go (default: RUN_DIR/report)")
    o.set_defaults(func=_cmd_report)

    # --debug and --verbose are accepted after the subcommand too, where people type them.
    for parser in sub.choices.values():
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG)
        parser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE)
    return p


def models_help() -> str:
    """The models of the registry, what each is and reads, for --help."""
    from mgc.models import ARCHITECTURES

    lines = ["models (--model), and the inputs each reads (--input chooses another where listed):"]
    for a in ARCHITECTURES.values():
        lines.append(f"  {a.name:<11} {a.about}; reads {' or '.join('+'.join(r) for r in a.reads)}")
    return "\n".join(lines)


def input_name(text: str) -> str:
    """An input of the registry (mgc.inputs)."""
    try:
        return inputs.get(text).name
    except MgcError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def model_list(text: str) -> str:
    """--models: comma-separated names of the registry's models."""
    try:
        return ",".join(architecture(m).name for m in text.split(","))
    except MgcError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def target_list(text: str) -> str:
    """--targets: comma-separated names of mgc.targets' targets."""
    from mgc.targets import TARGETS

    bad = [t for t in text.split(",") if t not in TARGETS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown target(s) {bad}; choose from {', '.join(TARGETS)}")
    return text


def add_train_options(
    parser: argparse.ArgumentParser, cls, features_required: bool = True, skip: tuple[str, ...] = ()
) -> None:
    """Where the features are, which cluster, and every TrainConfig option (less `skip`)."""
    parser.add_argument("--features", required=features_required, help="output folder (or URI) of mgc extract")
    parser.add_argument("--ray-address", default=None, help=RAY_ADDRESS)
    parser.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    _add_dataclass_options(parser, cls, "training options", skip=("features", "model", "name", "progress", *skip))


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """Where the tracks come from: an FMA download, a CSV manifest or genre folders."""
    from mgc.fma import SUBSETS

    src = parser.add_argument_group("input (one of)")
    one = src.add_mutually_exclusive_group(required=True)
    one.add_argument("--fma-root", help="FMA download: fma_metadata/ and the audio folder beneath it")
    one.add_argument("--manifest", help="CSV with path, label and optional split, track_id")
    one.add_argument("--folder", help="one sub-folder per genre (GTZAN layout)")
    src.add_argument("--audio-dir", default="fma_large", help="audio folder under --fma-root (default: fma_large)")
    src.add_argument(
        "--subset", default="large", choices=SUBSETS, help="FMA subset, smaller ones included (default: large)"
    )
    src.add_argument(
        "--split-seed",
        type=ranged(int, "split_seed"),
        default=0,
        help="seed of the split made when the input has none (default: 0)",
    )
    src.add_argument("--follow-links", action="store_true", help="with --folder: " + EXPLAIN["follow_links"])


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; errors print as one line (exit 2) unless --debug."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        from mgc.session import LOG_ENV

        os.environ[LOG_ENV] = "debug"
    try:
        if getattr(args, "config", None):
            from mgc.tune import config_file_values

            args = build_parser(config_file_values(args.config)).parse_args(argv)
        return args.func(args)
    except KeyboardInterrupt:
        print("mgc: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        # A problem we diagnosed names the file and the fix; anything else gets its first line and a pointer.
        text = (
            str(e)
            if isinstance(e, MgcError)
            else f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]} (--debug shows the traceback)"
        )
        from mgc.session import logs_dir

        logs = logs_dir()
        print(f"mgc: error: {text}" + (f" (Ray's logs: {logs})" if logs else ""), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
