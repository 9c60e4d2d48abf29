"""The `mgc` command line. Each subcommand is a thin shell over a library function; the files
in jobs/ call the same functions for `ray job submit`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing

from mgc.errors import MgcError
from mgc.features import FeatureConfig


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
            group.add_argument(flag, action="store_true", help=f"(default: {f.default})")
        elif tup is not None:
            item = typing.get_args(tup)[0]
            scalar = next((t for t in options if t not in (tup, type(None))), None)

            def parse(v: str, item=item, scalar=scalar):
                if scalar is not None and "," not in v:
                    return scalar(v)
                return tuple(item(x) for x in v.split(",") if x)

            shown = f.default if not isinstance(f.default, tuple) else ",".join(map(str, f.default)) or "the model's"
            group.add_argument(flag, type=parse, default=f.default, help=f"comma-separated (default: {shown})")
        elif f.default is dataclasses.MISSING:
            group.add_argument(flag, type=kind, required=True, help="(required)")
        else:
            base = next((t for t in options if t is not type(None)), kind)
            group.add_argument(flag, type=base, default=f.default, help=f"(default: {f.default})")


def _feature_config(args: argparse.Namespace) -> FeatureConfig:
    return FeatureConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FeatureConfig)})


def _cmd_synth(args: argparse.Namespace) -> int:
    from mgc.synth import SynthConfig, generate

    cfg = SynthConfig(
        out=args.out, tracks=args.tracks, seconds=args.seconds, seed=args.seed, broken_share=args.broken_share,
        unlabelled_share=args.unlabelled_share, audio_dir=args.audio_dir, workers=args.workers,
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
    return manifest.from_folder(args.folder, seed=args.split_seed)


def _cmd_extract(args: argparse.Namespace) -> int:
    import ray

    from mgc.extract import ExtractConfig, run

    cfg = ExtractConfig(out=args.out, features=_feature_config(args), tracks_per_shard=args.tracks_per_shard, progress=not args.no_progress)
    m = load_manifest(args)  # before Ray starts: bad metadata fails fast
    if args.limit:
        m.tracks = m.tracks.head(args.limit)
    if not ray.is_initialized():
        ray.init(address=args.ray_address)
    summary = run(m, cfg)
    print(json.dumps(summary, indent=2))
    return 0


def _train_config(args: argparse.Namespace, model: str, name: str, skip: tuple[str, ...] = ()):
    from mgc.train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model", "name", "progress", *skip}
    return TrainConfig(model=model, name=name, progress=not args.no_progress, **{k: getattr(args, k) for k in fields})


def _cmd_train(args: argparse.Namespace) -> int:
    import ray

    from mgc.train import run

    cfg = _train_config(args, args.model, args.name)
    if not ray.is_initialized():
        ray.init(address=args.ray_address)
    out = run(cfg)
    print(json.dumps({"run_dir": cfg.run_dir, "best_epoch": out["best_epoch"], "test": {k: {m: v for m, v in d.items() if m != "confusion"} for k, d in out["test"].items()}}, indent=2))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import ray

    from mgc import storage
    from mgc.train import compare, run

    if not ray.is_initialized():
        ray.init(address=args.ray_address)
    runs = [run(_train_config(args, m, f"{args.name}{m}" if args.name else m)) for m in args.models.split(",")]
    table = compare(runs)
    storage.write_bytes(storage.join(args.storage_path, "comparison.csv"), table.to_csv(index=False).encode())
    storage.write_bytes(storage.join(args.storage_path, "comparison.md"), (table.to_markdown(index=False) + "\n").encode())
    print(table.to_string(index=False))
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    import ray

    from mgc import tune

    if not args.resume and not args.features:
        raise MgcError("--features is required (or --resume with --storage-path and --name of a sweep)")
    if not ray.is_initialized():
        ray.init(address=args.ray_address)
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
    import ray

    from mgc.label import LabelConfig, run

    fields = {f.name for f in dataclasses.fields(LabelConfig)} - {"progress"}
    cfg = LabelConfig(progress=not args.no_progress, **{k: getattr(args, k) for k in fields})
    if not ray.is_initialized():
        ray.init(address=args.ray_address)
    print(json.dumps(run(cfg), indent=2))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    import ray

    from mgc import recommend, storage

    if not ray.is_initialized():
        ray.init(address=args.ray_address)
    catalogue = recommend.embed(args.features, args.model)
    recommend.save_catalogue(catalogue, storage.join(args.out, "catalogue.parquet"))
    table = recommend.evaluate(catalogue, args.split)
    storage.write_bytes(storage.join(args.out, "precision_at_k.csv"), table.to_csv(index=False).encode())
    storage.write_bytes(storage.join(args.out, "precision_at_k.md"), (table.to_markdown(index=False) + "\n").encode())
    print(table.to_string(index=False))
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
    """The pipeline so far on a synthetic corpus: synthesise, extract, train and compare two models."""
    import os

    import ray

    from mgc import fma
    from mgc.extract import ExtractConfig
    from mgc.extract import run as extract
    from mgc.synth import SynthConfig, generate
    from mgc.train import TrainConfig, compare
    from mgc.train import run as train

    corpus, features, runs = (os.path.join(args.workdir, d) for d in ("fma", "features", "runs"))
    print(f"[1/3] synthetic FMA corpus: {args.tracks} tracks of {args.seconds:g} s -> {corpus}", flush=True)
    generate(SynthConfig(out=corpus, tracks=args.tracks, seconds=args.seconds, seed=args.seed))
    ray.init(address=args.ray_address)
    print("[2/3] extract log-mel and MFCC segments with Ray Data", flush=True)
    summary = extract(fma.manifest(corpus, "fma_large", "large"), ExtractConfig(out=features))
    print(f"      {summary['tracks_ok']} tracks ok, rejected: {summary['rejects_by_reason']}")
    print("[3/3] train cnn and cnn_lstm with Ray Train (small sizes for a laptop)", flush=True)
    cpus = ray.cluster_resources().get("CPU", 2)
    results = []
    for model in ("cnn", "cnn_lstm"):
        cfg = TrainConfig(
            features=features, model=model, epochs=args.epochs, storage_path=runs, batch_size=32, lr=3e-3, dropout=0.2,
            num_workers=2, cpus_per_worker=min(1.0, (cpus - 1) / 2), channels=(8, 16, 32, 32), dense=(64, 32),
            lstm_units=(64, 64), cache_data=True,
        )  # fmt: skip
        results.append(train(cfg))
    print(compare(results).to_string(index=False))
    print(f"\nfeatures: {features}\nruns:     {runs} (metrics.json, confusion_matrix.png, learning_curves.png, model/)")
    return 0


def build_parser(tune_defaults: dict | None = None) -> argparse.ArgumentParser:
    """The parser; `tune_defaults` (from a --config file) replace `mgc tune`'s defaults."""
    p = argparse.ArgumentParser(prog="mgc", description="Music genre classification at catalogue scale, on Ray.")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a deterministic synthetic corpus in the FMA layout")
    s.add_argument("--out", required=True, help="folder to write (fma_metadata/ and the audio folder)")
    s.add_argument("--tracks", type=int, default=400, help="number of tracks (default: 400)")
    s.add_argument("--seconds", type=float, default=30.0, help="clip length (default: 30)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    s.add_argument("--broken-share", type=float, default=0.05, help="share of broken files (default: 0.05)")
    s.add_argument("--unlabelled-share", type=float, default=0.03, help="share of tracks without genre_top (default: 0.03)")
    s.add_argument("--audio-dir", default="fma_large", help="audio folder name under --out (default: fma_large)")
    s.add_argument("--workers", type=int, default=0, help="processes (default: 0 = one per core)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_cmd_synth)

    e = sub.add_parser("extract", help="decode audio into log-mel/MFCC Parquet shards with Ray Data")
    add_source_options(e)
    e.add_argument("--out", required=True, help="output folder or URI (s3://bucket/prefix)")
    e.add_argument("--tracks-per-shard", type=int, default=32, help="tracks per task and Parquet file (default: 32)")
    e.add_argument("--limit", type=int, default=0, help="only the first N tracks by track_id (default: all)")
    e.add_argument("--ray-address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    e.add_argument("--no-progress", action="store_true")
    _add_dataclass_options(e, FeatureConfig, "feature options (stored in _config.json)")
    e.set_defaults(func=_cmd_extract)

    from mgc.models import MODELS
    from mgc.train import TrainConfig

    t = sub.add_parser("train", help="train a model on extracted shards with Ray Train (DDP)")
    t.add_argument("--model", default="cnn", choices=MODELS, help="network (default: cnn)")
    t.add_argument("--name", default="", help="run name under --storage-path (default: the model name); re-use it to resume")
    add_train_options(t, TrainConfig)
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser("compare", help="train several models on the same shards and tabulate their test metrics")
    c.add_argument("--models", default="cnn,cnn_lstm", help="comma-separated (default: cnn,cnn_lstm)")
    c.add_argument("--name", default="", help="prefix of the run names")
    add_train_options(c, TrainConfig)
    c.set_defaults(func=_cmd_compare)

    from mgc.tune import PER_TRIAL, SweepConfig

    u = sub.add_parser("tune", help="sweep learning rate and dropout with Ray Tune (ASHA), each trial a Ray Train run")
    u.add_argument("--model", default="cnn", choices=MODELS, help="network (default: cnn)")
    u.add_argument("--name", default="", help="sweep name under --storage-path (default: <model>-sweep)")
    u.add_argument("--config", help="TOML or JSON file of these options (keys as here, - or _); the command line overrides it")
    u.add_argument("--resume", action="store_true", help="continue the sweep --storage-path/--name after an interruption")
    add_train_options(u, TrainConfig, features_required=False, skip=PER_TRIAL)
    _add_dataclass_options(u, SweepConfig, "sweep options", skip=("train",))
    u.set_defaults(func=_cmd_tune, **(tune_defaults or {}))

    from mgc.label import LabelConfig

    b = sub.add_parser("label", help="label new audio files with genre probabilities and embeddings (Ray Data)")
    b.add_argument("--ray-address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    b.add_argument("--no-progress", action="store_true")
    _add_dataclass_options(b, LabelConfig, "labelling options", skip=("progress",))
    b.set_defaults(func=_cmd_label)

    m = sub.add_parser("embed", help="embed the tracks of an extraction output (a catalogue) and score recommendations")
    m.add_argument("--features", required=True, help="output folder (or URI) of mgc extract")
    m.add_argument("--model", required=True, help="model artifact directory")
    m.add_argument("--out", required=True, help="folder for catalogue.parquet and precision_at_k.csv/.md")
    m.add_argument("--split", default="test", help="the queries of the evaluation (default: test)")
    m.add_argument("--ray-address", default=None)
    m.set_defaults(func=_cmd_embed)

    r = sub.add_parser("similar", help="catalogue tracks that sound like a track or a file (cosine similarity)")
    r.add_argument("--catalogue", required=True, help="catalogue.parquet of mgc embed, or a labelling output folder")
    q = r.add_mutually_exclusive_group(required=True)
    q.add_argument("--track-id", help="an id in the catalogue (track id, or path for a labelling output)")
    q.add_argument("--file", help="an audio file, embedded with --model")
    r.add_argument("--model", help="model artifact (needed with --file)")
    r.add_argument("-k", type=int, default=10, help="how many (default: 10)")
    r.set_defaults(func=_cmd_similar)

    d = sub.add_parser("demo", help="run the pipeline on a synthetic corpus")
    d.add_argument("--workdir", default="demo", help="where the corpus and outputs go (default: demo)")
    d.add_argument("--tracks", type=int, default=240, help="synthetic tracks (default: 240)")
    d.add_argument("--seconds", type=float, default=30.0, help="clip length (default: 30)")
    d.add_argument("--epochs", type=int, default=8, help="training epochs per model (default: 8)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--ray-address", default=None)
    d.set_defaults(func=_cmd_demo)
    return p


def add_train_options(parser: argparse.ArgumentParser, cls, features_required: bool = True, skip: tuple[str, ...] = ()) -> None:
    """Where the features are, which cluster, and every TrainConfig option (less `skip`)."""
    parser.add_argument("--features", required=features_required, help="output folder (or URI) of mgc extract")
    parser.add_argument("--ray-address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    parser.add_argument("--no-progress", action="store_true")
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
    src.add_argument("--subset", default="large", choices=SUBSETS, help="FMA subset, smaller ones included (default: large)")
    src.add_argument("--split-seed", type=int, default=0, help="seed of the split made when the input has none (default: 0)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "config", None):
            from mgc.tune import config_file_values

            args = build_parser(config_file_values(args.config)).parse_args(argv)
        return args.func(args)
    except MgcError as e:
        if args.debug:
            raise
        print(f"mgc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mgc: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
