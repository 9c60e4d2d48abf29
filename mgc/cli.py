"""The `mgc` command line. Each subcommand is a thin shell over a library function; the files
in jobs/ call the same functions for `ray job submit`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from typing import Callable

from mgc import demo, extract, fma, inputs, label, manifest, options, recommend, report, session, synth, train, tune
from mgc.demo import DemoConfig
from mgc.errors import MgcError
from mgc.extract import ExtractConfig
from mgc.features import FeatureConfig
from mgc.fma import SUBSETS
from mgc.inputs import INPUTS
from mgc.label import LabelConfig
from mgc.models import ARCHITECTURES, architecture
from mgc.serve import ServeConfig
from mgc.synth import SynthConfig
from mgc.targets import TARGETS
from mgc.train import TrainConfig
from mgc.tune import PER_TRIAL, SweepConfig

DEBUG = "show the full traceback of an error instead of one line"
VERBOSE = (
    "show Ray's own logs and the workers' output (also: MGC_LOG=debug); by default they go to Ray's session log folder"
)
RAY_ADDRESS = "Ray cluster to join (default: RAY_ADDRESS, else a local one)"
NO_PROGRESS = "no progress bars (for logs)"


def _registries() -> dict[str, options.Registry]:
    """The registries whose names config fields take (`option(registry=...)`): a parser of one
    name, and what the registry holds, for --help."""
    listing = "; ".join(f"{n}: {k.about}" for n, k in INPUTS.items())
    return {
        "inputs": (input_name, f"among: {listing}; the models read some of them"),
        "models": (model_name, "from the list below"),
    }


def add_options(parser: argparse.ArgumentParser, cls: type, title: str, skip: tuple[str, ...] = ()) -> None:
    """One --option per field of a config dataclass (mgc.options), less `skip` and `progress`
    (--no-progress is every command's own)."""
    options.add_options(parser, cls, title, skip=("progress", *skip), registries=_registries())


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like the rest of mgc's."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def _help(cls: type, name: str) -> str:
    """A field's declared help, for an option the parser adds itself."""
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["help"]


def _use_ray_address(args: argparse.Namespace) -> None:
    """The library joins Ray lazily, after its checks (so bad input fails without a cluster):
    --ray-address reaches its ray.init() as RAY_ADDRESS."""
    if args.ray_address:
        os.environ["RAY_ADDRESS"] = args.ray_address


def _cmd_synth(args: argparse.Namespace) -> int:
    if args.uploads:
        truth = synth.uploads(
            args.out,
            n=args.uploads,
            seconds=min(args.seconds, 30.0),
            long_seconds=120.0,
            seed=100 + args.seed,
            crossover=args.crossover,
            conditions=args.upload_conditions,
        )
        print(
            f"{len(truth)} uploads in {args.out} ({(truth['status'] == 'error').sum()} broken); "
            f"what each is: {args.out}/_truth.csv"
        )
        return 0
    cfg = options.from_args(SynthConfig, args, skip=("sample_rate",))
    print(synth.generate(cfg, progress=not args.no_progress))
    return 0


def load_manifest(args: argparse.Namespace):
    """The manifest named by --fma-root / --manifest / --folder."""
    if args.fma_root:
        return fma.manifest(args.fma_root, args.audio_dir, args.subset)
    if args.manifest:
        return manifest.from_csv(args.manifest, seed=args.split_seed)
    m = manifest.from_folder(args.folder, seed=args.split_seed, follow_links=args.follow_links)
    for link in m.source["links_outside"]:
        session.note(f"not read: {link}, outside {args.folder}")
    if m.source["links_skipped"]:
        skipped = m.source["links_skipped"]
        session.note(f"{skipped} symbolic link(s) inside {args.folder} skipped; --follow-links follows them")
    return m


def _cmd_extract(args: argparse.Namespace) -> int:
    features = options.from_args(FeatureConfig, args)
    cfg = options.from_args(ExtractConfig, args, features=features, progress=not args.no_progress)
    m = load_manifest(args)  # before Ray starts: bad metadata fails fast
    if args.limit:
        m.tracks = m.tracks.head(args.limit)
    _use_ray_address(args)
    summary = extract.run(m, cfg)
    print(json.dumps(summary, indent=2))
    return 0


def _train_config(args: argparse.Namespace, model: str, name: str, skip: tuple[str, ...] = (), **given):
    """A TrainConfig from the parsed options, less `skip`, with `given` fields set as passed."""
    return options.from_args(
        TrainConfig, args, skip=skip, model=model, name=name, progress=not args.no_progress, **given
    )


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = _train_config(args, args.model, args.name)
    _use_ray_address(args)
    out = train.run(cfg)
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
    if not args.resume and not args.features:
        raise MgcError("--features is required (or --resume with --storage-path and --name of a sweep)")
    _use_ray_address(args)
    name = args.name or f"{args.model}-sweep"
    if args.resume:
        best = tune.resume(args.storage_path, name)
    else:
        trial = _train_config(args, args.model, name, skip=PER_TRIAL)
        best = tune.run(options.from_args(SweepConfig, args, train=trial))
    print(json.dumps(best, indent=2))
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    cfg = options.from_args(LabelConfig, args, progress=not args.no_progress)
    _use_ray_address(args)
    print(json.dumps(label.run(cfg), indent=2))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    _use_ray_address(args)
    print(
        recommend.build(args.features, args.model, args.out, args.split, progress=not args.no_progress).to_string(
            index=False
        )
    )
    return 0


def _cmd_similar(args: argparse.Namespace) -> int:
    import numpy as np

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
        query, exclude = np.asarray(label.label_file(args.file, args.model)["embedding"], dtype=np.float32), args.file
    print(recommend.similar(catalogue, query, args.k, exclude_id=exclude).to_string(index=False))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from mgc.serve import app  # Ray Serve and FastAPI: imported by this command only, not at every command's start

    cfg = options.from_args(ServeConfig, args)
    if cfg.write_config:
        app.write_config(cfg, cfg.write_config)
        print(f"Serve config: {cfg.write_config}\n  serve deploy {cfg.write_config}  (on the cluster's head)")
        return 0
    _use_ray_address(args)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a service manager's stop is a Ctrl-C
    url = app.start(cfg)  # a start that fails leaves nothing deployed
    print(f"mgc serve: {url} (the listening page; POST /label, /similar), Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        app.stop(cfg)  # its replicas' CPUs back to the cluster
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    html = demo.run(options.from_args(DemoConfig, args, progress=not args.no_progress))
    print(f"\nThe report: {html}\n  open it in a browser, or read report.md beside it")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    html, md = report.write(args.run_dir, args.out)
    print(f"report: {html}\n        {md}")
    return 0


def build_parser(tune_defaults: dict | None = None) -> argparse.ArgumentParser:
    """The parser; `tune_defaults` (from a --config file) replace `mgc tune`'s defaults."""
    p = Parser(
        prog="mgc",
        description="Music genre classification at catalogue scale, on Ray: synth -> extract -> train/compare -> "
        "tune -> label -> embed/similar -> report. `mgc demo` runs them all on a synthetic corpus. Every path may be "
        "local or a URI (s3://...).",
        epilog="`mgc COMMAND --help` explains each command's options. The same commands run on a cluster as "
        "jobs/*.py under `ray job submit`.",
    )
    p.add_argument("--debug", action="store_true", help=DEBUG)
    p.add_argument("--verbose", action="store_true", help=VERBOSE)
    sub = p.add_subparsers(dest="command", required=True)
    _add_synth(sub)
    _add_extract(sub)
    _add_training(sub, tune_defaults)
    _add_labelling(sub)
    _add_serve(sub)
    _add_demo(sub)
    # --debug and --verbose are accepted after the subcommand too, where people type them.
    for parser in sub.choices.values():
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG)
        parser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE)
    return p


def _count(low: int) -> Callable[[str], int]:
    """An integer option's type: at least `low`."""
    return options.parse_type(int, options.Range(low=low))


def _add_synth(sub) -> None:
    s = sub.add_parser("synth", help="write a deterministic synthetic corpus in the FMA layout")
    add_options(s, SynthConfig, "corpus options", skip=("sample_rate",))
    s.add_argument(
        "--uploads",
        type=_count(0),
        default=0,
        metavar="N",
        help="instead of a corpus, write N 'new uploads' of mixed formats, rates and channels, a 2-minute "
        "file and 3 broken files, to label (default: 0)",
    )
    s.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    s.set_defaults(func=_cmd_synth)


def _add_extract(sub) -> None:
    e = sub.add_parser(
        "extract", help="decode audio into Parquet shards of model inputs (log-mel, MFCC, waveform) with Ray Data"
    )
    add_source_options(e)
    e.add_argument("--limit", type=_count(0), default=0, help="only the first N tracks by track_id (default: all)")
    e.add_argument("--ray-address", default=None, help=RAY_ADDRESS)
    e.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    add_options(e, ExtractConfig, "extraction options", skip=("features",))
    add_options(e, FeatureConfig, "feature options (stored in _config.json)")
    e.set_defaults(func=_cmd_extract)


def _add_training(sub, tune_defaults: dict | None) -> None:

    models = {"formatter_class": argparse.RawDescriptionHelpFormatter, "epilog": models_help()}
    t = sub.add_parser("train", help="train a model on extracted shards with Ray Train (DDP)", **models)
    add_train_options(t, TrainConfig, named=True)
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser(
        "compare", help="train several models on the same shards and tabulate their test metrics", **models
    )
    c.add_argument(
        "--models",
        type=model_list,
        default="baseline,cnn,cnn_lstm",
        help="comma-separated, from the list below; keep baseline among them to see what a network adds "
        "(default: baseline,cnn,cnn_lstm)",
    )
    c.add_argument("--name", default="", help="prefix of the run names")
    c.add_argument(
        "--targets",
        type=target_list,
        default="genre_top",
        help="comma-separated --target values, each model trained for each; a multi-label run's accuracy "
        "is its top genre's, on the tracks that have one, as a genre_top run's (default: genre_top)",
    )
    c.add_argument(
        "--export-best",
        action="store_true",
        help="copy the model best on validation to <storage-path>/<name>best/model, with best.json (the "
        "artifact to label with)",
    )
    add_train_options(c, TrainConfig, skip=("target",))
    c.set_defaults(func=_cmd_compare)

    u = sub.add_parser(
        "tune", help="sweep learning rate and dropout with Ray Tune (ASHA), each trial a Ray Train run", **models
    )
    u.add_argument("--name", default="", help="sweep name under --storage-path (default: <model>-sweep)")
    u.add_argument(
        "--config", help="TOML or JSON file of these options (keys as here, - or _); the command line overrides it"
    )
    u.add_argument(
        "--resume", action="store_true", help="continue the sweep --storage-path/--name after an interruption"
    )
    add_train_options(u, TrainConfig, features_required=False, skip=PER_TRIAL, modelled=True)
    add_options(u, SweepConfig, "sweep options", skip=("train",))
    u.set_defaults(func=_cmd_tune, **(tune_defaults or {}))


def _add_labelling(sub) -> None:
    b = sub.add_parser("label", help="label new audio files with genre probabilities and embeddings (Ray Data)")
    b.add_argument("--ray-address", default=None, help=RAY_ADDRESS)
    b.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    add_options(b, LabelConfig, "labelling options")
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
    r.add_argument("-k", type=_count(1), default=10, help="how many similar tracks to list (default: 10)")
    r.set_defaults(func=_cmd_similar)


def _add_serve(sub) -> None:
    s = sub.add_parser(
        "serve",
        help="label uploads as they arrive and find similar catalogue tracks (Ray Serve), with a listening page",
    )
    s.add_argument("--ray-address", default=None, help=RAY_ADDRESS)
    add_options(s, ServeConfig, "serving options")
    s.set_defaults(func=_cmd_serve)


def _add_demo(sub) -> None:
    d = sub.add_parser(
        "demo", help="the whole pipeline on a synthetic corpus, ending in a report (re-runs reuse finished stages)"
    )
    d.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    add_options(d, DemoConfig, "demo options")
    d.set_defaults(func=_cmd_demo)

    o = sub.add_parser(
        "report", help="render a run directory (as mgc demo lays it out) as HTML with figures, and Markdown"
    )
    o.add_argument("run_dir", help="folder holding features/, runs/, sweeps/, labels/, catalogue/ (any may be missing)")
    o.add_argument("--out", default=None, help="where report.html and report.md go (default: RUN_DIR/report)")
    o.set_defaults(func=_cmd_report)


def models_help() -> str:
    """The models of the registry, what each is and reads, for --help."""
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


def model_name(text: str) -> str:
    """A model of the registry (mgc.models)."""
    try:
        return architecture(text).name
    except MgcError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def model_list(text: str) -> str:
    """--models: comma-separated names of the registry's models."""
    return ",".join(model_name(m) for m in text.split(","))


def target_list(text: str) -> str:
    """--targets: comma-separated names of mgc.targets' targets."""
    bad = [t for t in text.split(",") if t not in TARGETS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown target(s) {bad}; choose from {', '.join(TARGETS)}")
    return text


def add_train_options(
    parser: argparse.ArgumentParser,
    cls: type,
    features_required: bool = True,
    skip: tuple[str, ...] = (),
    named: bool = False,
    modelled: bool = False,
) -> None:
    """Where the features are, which cluster, and every TrainConfig option (less `skip`); `named`:
    --model and --name as the config's, `modelled`: --model only (a sweep names itself)."""
    parser.add_argument("--features", required=features_required, help=_help(cls, "features"))
    parser.add_argument("--ray-address", default=None, help=RAY_ADDRESS)
    parser.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    own = ("name",) if modelled else () if named else ("model", "name")
    add_options(parser, cls, "training options", skip=("features", *own, *skip))


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """Where the tracks come from: an FMA download, a CSV manifest or genre folders."""

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
        "--split-seed", type=_count(0), default=0, help="seed of the split made when the input has none (default: 0)"
    )
    src.add_argument("--follow-links", action="store_true", help="with --folder: " + _help(LabelConfig, "follow_links"))


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; errors print as one line (exit 2) unless --debug."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ[session.LOG_ENV] = "debug"
    try:
        if getattr(args, "config", None):
            args = build_parser(tune.config_file_values(args.config)).parse_args(argv)
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
        logs = session.logs_dir()
        print(f"mgc: error: {text}" + (f" (Ray's logs: {logs})" if logs else ""), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
