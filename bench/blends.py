"""Blend benchmark: how often a `--target genres_all` model tags both genres of a two-genre track,
as the synthetic corpus grows.

tests/test_multilabel.py trains on 160 tracks of 6 s (half of them blends of two genres, whose
rhythm and timbre come from different genres; sub-genres audible) and finds both genres of a
test blend tagged for about half of its 14 test blends. This script asks whether that is the
method or the corpus: the same setting (cnn at the tests' small size, the test's plain recipe or
mgc's default one, 30 epochs, one worker) on corpora of several sizes, and for each the test blends' count, the share
with both genres tagged at the artifact's thresholds (as `mgc label` tags), the share whose two
most probable top genres are theirs, and validation micro-AP. Printed and written to
bench/out/blends.json.

    .venv/bin/python bench/blends.py [--tracks 160,320,640] [--recipes plain,default] [--seconds 6] [--epochs 30] [--seed 5] [--train-seeds 0]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
SMALL = dict(
    model="cnn", channels=(8, 16, 32, 32), dense=(64, 32), batch_size=16, lr=3e-3, dropout=0.2, min_genre_tracks=3
)  # the test's


def blend_scores(run: Path) -> dict[str, float | None]:
    """Of the run's test tracks that list two or more top genres (the blends: a single-genre
    track's genres, sub-genre included, have one root): how many, the share with every listed top
    genre tagged, and the share whose most probable top genres are exactly the listed."""
    import pyarrow.parquet as pq

    from mgc import metrics, targets

    saved = pq.read_table(run / "test_predictions.parquet")
    meta = json.loads((run / "model" / "model.json").read_text())
    _, y, p = metrics.track_level_multilabel(saved["track_id"].to_numpy(), saved["target"].combine_chunks().to_numpy_ndarray(),
                                               saved["logprobs"].combine_chunks().to_numpy_ndarray(), meta["temperature"])  # fmt: skip
    roots = [c for c, q in enumerate(meta["parents"]) if q < 0]
    listed, p = y[:, roots] > 0, targets.consistent(p, meta["parents"])[:, roots]
    blend = listed.sum(1) >= 2
    if not blend.any():
        return {"test_blends": 0, "all_tagged": None, "top_k_listed": None}
    listed, p = listed[blend], p[blend]
    tagged = p >= np.array(meta["thresholds"])[roots]
    top = np.argsort(-p, axis=1)
    top_k = [set(t[: row.sum()]) == set(np.flatnonzero(row)) for t, row in zip(top, listed)]
    return {
        "test_blends": int(blend.sum()),
        "all_tagged": round(float((tagged | ~listed).all(1).mean()), 3),
        "top_k_listed": round(float(np.mean(top_k)), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", default="160,320,640")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument(
        "--recipes",
        default="plain,default",
        help="plain: the test's (Adam, constant rate, no augmentation); default: mgc's",
    )
    ap.add_argument("--seed", type=int, default=5, help="corpus seed (the test's: 5)")
    ap.add_argument(
        "--train-seeds",
        default="0",
        help="training seeds: each recipe trains once per seed (the spread says what one run can show)",
    )
    ap.add_argument("--workdir", default=str(HERE / "out"))
    args = ap.parse_args()

    from mgc.train import PLAIN

    recipes = {"plain": PLAIN, "default": {"patience": 0}}
    if unknown := set(args.recipes.split(",")) - set(recipes):
        ap.error(f"--recipes: no recipe {', '.join(sorted(unknown))} (choose from {', '.join(recipes)})")
    try:
        seeds = sorted({int(s) for s in args.train_seeds.split(",")})
    except ValueError:
        ap.error(f"--train-seeds: integers joined by commas, not {args.train_seeds!r}")

    import ray

    from mgc import fma
    from mgc.extract import ExtractConfig
    from mgc.extract import run as extract
    from mgc.synth import SynthConfig, generate
    from mgc.train import TrainConfig
    from mgc.train import run as train

    work = Path(args.workdir)
    ray.init(include_dashboard=False, log_to_driver=False)
    rows = []
    for tracks in map(int, args.tracks.split(",")):
        base = work / f"blends_{tracks}x{args.seconds:g}s_seed{args.seed}"
        features = base / "features"
        if not (features / "_summary.json").exists():
            generate(SynthConfig(out=str(base / "corpus"), tracks=tracks, seconds=args.seconds, broken_share=0.0, unlabelled_share=0.0,
                                 multi_genre=0.5, subgenres=True, seed=args.seed), progress=False)  # fmt: skip
            extract(
                fma.manifest(str(base / "corpus")),
                ExtractConfig(out=str(features), tracks_per_shard=16, progress=False),
            )
        runs = base / "runs"
        shutil.rmtree(runs, ignore_errors=True)
        for recipe in args.recipes.split(","):
            for seed in seeds:
                name = f"{recipe}_seed{seed}"
                out = train(TrainConfig(features=str(features), target="genres_all", epochs=args.epochs, num_workers=1, cache_data=True, progress=False,
                                        storage_path=str(runs), name=name, seed=seed, **SMALL, **recipes[recipe]))  # fmt: skip
                rows.append({"tracks": tracks, "recipe": recipe, "seed": seed, "training_tracks": out["tracks"]["training"], "classes": len(out["labels"]),
                             "val_track_ap_micro": round(out["validation"]["val_track_ap_micro"], 3),
                             **blend_scores(runs / name)})  # fmt: skip
                print(rows[-1], flush=True)
    result = {
        "seconds": args.seconds,
        "epochs": args.epochs,
        "corpus_seed": args.seed,
        "sizes": SMALL,
        "recipes": args.recipes.split(","),
        "runs": rows,
    }
    (work / "blends.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\n{'tracks':>6} {'recipe':>8} {'seed':>4} {'trained on':>10} {'val mAP':>8} {'test blends':>11} {'both tagged':>11} {'top 2 theirs':>12}"
    )
    for r in rows:
        share = {
            k: "-" if r[k] is None else f"{r[k]:.3f}" for k in ("all_tagged", "top_k_listed")
        }  # "-": no test blends
        print(f"{r['tracks']:>6} {r['recipe']:>8} {r['seed']:>4} {r['training_tracks']:>10} {r['val_track_ap_micro']:>8.3f} {r['test_blends']:>11} "
              f"{share['all_tagged']:>11} {share['top_k_listed']:>12}")  # fmt: skip


if __name__ == "__main__":
    main()
