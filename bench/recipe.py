"""Recipe benchmark: mgc's training recipe (AdamW, warm-up then cosine decay, time shift,
SpecAugment masks, mixup, early stopping; then temperature calibration) against the plain one
(Adam at a constant rate, nothing else: mgc.train.PLAIN), on the same shards and seeds.

The corpus is synthetic with a share of the training tracks' genres flipped at random (`mgc
synth --label-noise`); validation and test keep their true genres and, with --upload-conditions,
are recorded as new uploads are, unlike the catalogue training sees (`mgc synth
--upload-conditions`: a start off the bar, band-limiting, background noise, another level).
Printed and written to bench/out/recipe.json: validation track accuracy and ECE per epoch of each
recipe, their best epochs, the test ECE before and after calibration, training segments/s of each
run, and the cost of augmentation and mixup per training step, measured apart (one core, the same
batch, with and without, interleaved), since run-to-run rates through Ray vary by more than that cost.

    .venv/bin/python bench/recipe.py [--tracks 400] [--seconds 15] [--noise 0.2] [--upload-conditions offset,noise] [--epochs 20] [--seeds 0,1]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZES = dict(channels=(16, 32, 64, 64), dense=(256, 64, 32))  # bench/train.py's mid size
SMALL = dict(channels=(8, 16, 32, 32), dense=(64, 32))  # the tests' size
NO_AUGMENTATION = {"time_shift": 0.0, "spec_mask": 0.0, "gain_db": 0.0, "mixup": 0.0}


def noisy_features(
    work: Path,
    tracks: int,
    seconds: float,
    noise: float,
    upload: tuple[str, ...] = (),
    seed: int = 5,
    held_out: float = 0.1,
) -> Path:
    """A synthetic corpus with `noise` of its training labels flipped, `held_out` of its tracks in
    validation and in test, and those recorded under the `upload` conditions, extracted (made once)."""
    from mgc import fma
    from mgc.extract import ExtractConfig, run
    from mgc.synth import SynthConfig, generate

    out = (
        work
        / f"noisy_{tracks}x{seconds:g}s_{noise:g}{'_' + '+'.join(upload) if upload else ''}{f'_seed{seed}' if seed != 5 else ''}{f'_held{held_out:g}' if held_out != 0.1 else ''}"
    )
    if not (out / "features" / "_summary.json").exists():
        generate(
            SynthConfig(
                out=str(out / "corpus"),
                tracks=tracks,
                seconds=seconds,
                broken_share=0.0,
                label_noise=noise,
                upload_conditions=upload,
                seed=seed,
                held_out=held_out,
            ),
            progress=False,
        )
        run(
            fma.manifest(str(out / "corpus")),
            ExtractConfig(out=str(out / "features"), tracks_per_shard=16, progress=False),
        )
    return out / "features"


def augmentation_cost(model: str, batch_size: int = 32, steps: int = 40) -> dict[str, float]:
    """Seconds per training step (forward, backward, AdamW) of `model` at the mid size on one
    core, with the default augmentation and mixup and without, on the same batch, the two
    interleaved step by step so that both see the same machine: the cost without Ray's noise."""
    import time

    import torch
    import torch.nn.functional as F

    from mgc.models import ModelConfig, build
    from mgc.train import TrainConfig

    torch.set_num_threads(1)
    cfg = ModelConfig(name=model, **SIZES)
    net = build(cfg).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    x = {n: torch.randn(batch_size, *s) for n, s in zip(cfg.inputs, cfg.shapes)}
    y, ids = torch.randint(0, cfg.n_classes, (batch_size,)), torch.arange(batch_size)
    on, off = (
        TrainConfig(features="-").augment(0, "cpu"),
        TrainConfig(features="-", **NO_AUGMENTATION).augment(0, "cpu"),
    )
    times: dict[str, list[float]] = {"on": [], "off": []}
    for step in range(2 * steps + 4):
        name, aug = ("on", on) if step % 2 else ("off", off)
        started = time.perf_counter()
        xb, targets = aug.mix(x, F.one_hot(y, cfg.n_classes).float(), ids)
        loss = F.cross_entropy(net(xb, augment=aug), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 4:  # the first steps warm the allocator up
            times[name].append(time.perf_counter() - started)
    on_s, off_s = float(np.median(times["on"])), float(np.median(times["off"]))
    return {"step_s_on": round(on_s, 5), "step_s_off": round(off_s, 5), "slowdown": round(on_s / off_s - 1, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=400)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--noise", type=float, default=0.2)
    ap.add_argument(
        "--upload-conditions",
        default="",
        help="validation and test recorded as uploads: any of offset,band,noise,level (default: none)",
    )
    ap.add_argument("--corpus-seed", type=int, default=5)
    ap.add_argument(
        "--held-out", type=float, default=0.1, help="share of the tracks in validation and in test, each (default: 0.1)"
    )
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument(
        "--sizes",
        choices=("mid", "small"),
        default="mid",
        help="small: the tests' channels 8-16-32-32, dense 64-32, lr 3e-3",
    )
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--recipes", default="plain,mgc,no-augmentation", help="which recipes to run (default: all three)")
    ap.add_argument(
        "--speed-only", action="store_true", help="only the per-step cost of augmentation (no Ray, no corpus)"
    )
    ap.add_argument("--workdir", default=str(HERE / "out"))
    args = ap.parse_args()

    from mgc.train import PLAIN

    known = {
        "plain": PLAIN,
        "mgc": {"patience": 0},
        "no-augmentation": {"patience": 0, **NO_AUGMENTATION},
    }  # no-augmentation: mgc's, without it
    if unknown := set(args.recipes.split(",")) - set(known):
        ap.error(f"--recipes: no recipe {', '.join(sorted(unknown))} (choose from {', '.join(known)})")
    recipes = {name: options for name, options in known.items() if name in args.recipes.split(",")}
    if args.speed_only:
        print(json.dumps(augmentation_cost(args.model)))
        return

    import ray

    from mgc.train import TrainConfig
    from mgc.train import run as train

    work = Path(args.workdir)
    ray.init(include_dashboard=False, log_to_driver=False)
    upload = tuple(c for c in args.upload_conditions.split(",") if c)
    features = noisy_features(work, args.tracks, args.seconds, args.noise, upload, args.corpus_seed, args.held_out)
    sizes, lr = (SMALL, 3e-3) if args.sizes == "small" else (SIZES, 1e-3)
    runs = work / "recipe_runs"
    shutil.rmtree(runs, ignore_errors=True)
    base = TrainConfig(
        features=str(features),
        model=args.model,
        epochs=args.epochs,
        batch_size=32,
        lr=lr,
        cache_data=True,
        storage_path=str(runs),
        progress=False,
        **sizes,
    )
    rows = []
    for seed in map(int, args.seeds.split(",")):
        for recipe, options in recipes.items():
            out = train(dataclasses.replace(base, seed=seed, name=f"{recipe}-{seed}", **options))
            history = json.loads((runs / out["run"] / "history.json").read_text())
            rows.append({
                "recipe": recipe, "seed": seed, "best_epoch": out["best_epoch"],
                "val_track_accuracy": [round(h["val_track_accuracy"], 3) for h in history],
                "val_track_ece": [round(h["val_track_ece"], 3) for h in history],
                "best_val_track_accuracy": max(h["val_track_accuracy"] for h in history),
                "last3_val_track_accuracy": round(float(np.mean([h["val_track_accuracy"] for h in history[-3:]])), 3),
                "test_track_accuracy": round(out["test"]["track"]["accuracy"], 3),
                "test_ece_before": round(out["calibration"]["test"]["ece_before"], 4), "test_ece_after": round(out["calibration"]["test"]["ece_after"], 4),
                "temperature": round(out["calibration"]["temperature"], 3),
                "segments_per_s": round(float(np.median([h["train_segments_per_s"] for h in history[1:]])), 1),
            })  # fmt: skip
    summary = {}
    for recipe in recipes:
        mine = [r for r in rows if r["recipe"] == recipe]
        summary[recipe] = {k: round(float(np.mean([r[k] for r in mine])), 4) for k in
                           ("best_val_track_accuracy", "last3_val_track_accuracy", "test_track_accuracy", "test_ece_before", "test_ece_after", "segments_per_s")}  # fmt: skip
    cost = augmentation_cost(args.model)
    result = {"corpus": {"tracks": args.tracks, "seconds": args.seconds, "label_noise": args.noise, "upload_conditions": list(upload), "seed": args.corpus_seed, "held_out": args.held_out},
              "model": args.model, "sizes": sizes, "lr": lr,
              "epochs": args.epochs, "runs": rows, "summary": summary, "augmentation": cost}  # fmt: skip
    (work / "recipe.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\n{args.model}, {args.tracks} tracks of {args.seconds:g} s, {args.noise:.0%} of training labels flipped, validation and test recorded with {'+'.join(upload) or 'no upload conditions'}, {args.epochs} epochs, seeds {args.seeds}"
    )
    for r in rows:
        print(f"{r['recipe']:<22} seed {r['seed']}  val track acc by epoch {r['val_track_accuracy']}")
    print(
        f"\n{'recipe':<22} {'best val acc':>12} {'last 3 val acc':>14} {'test acc':>9} {'test ECE before':>15} {'after':>7} {'seg/s':>7}"
    )
    for recipe, s in summary.items():
        print(f"{recipe:<22} {s['best_val_track_accuracy']:>12.3f} {s['last3_val_track_accuracy']:>14.3f} {s['test_track_accuracy']:>9.3f} "
              f"{s['test_ece_before']:>15.4f} {s['test_ece_after']:>7.4f} {s['segments_per_s']:>7.1f}")  # fmt: skip
    print(
        f"a training step with augmentation and mixup: {cost['step_s_on'] * 1000:.1f} ms, without: {cost['step_s_off'] * 1000:.1f} ms "
        f"({cost['slowdown']:+.1%}; target: under +5 %)"
    )


if __name__ == "__main__":
    main()
