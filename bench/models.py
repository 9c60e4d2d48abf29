"""Model benchmark: training segments/s of each model through `mgc train`, on the same shards, in
one run, as ratios against the first model (cnn).

The shards hold log-mel, MFCC and the waveform of 200 synthetic 30 s tracks (bench/extract.py's
corpus, extracted with --inputs logmel,mfcc,waveform into bench/out/features_all, made if
missing). Each model trains at the mid size of bench/train.py with the workers the machine holds
(`--num-workers 0`) and --cache-data; its rate is the median of the epochs after the first.
Results go to bench/out/models.json.

    .venv/bin/python bench/models.py [--models cnn,cnn1d,mm_crnn] [--epochs 3] [--use-gpu]
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
SIZES = dict(channels=(16, 32, 64, 64), dense=(256, 64, 32), lstm_units=(64, 64))  # bench/train.py's mid size
ALL_INPUTS = ("logmel", "mfcc", "waveform")


def features_with_every_input(work: Path) -> Path:
    """bench/out/features_all: the benchmark corpus with every input, extracted once."""
    from mgc import fma
    from mgc.extract import ExtractConfig, run
    from mgc.features import FeatureConfig
    from mgc.synth import SynthConfig, generate

    out = work / "features_all"
    if not (out / "_summary.json").exists():
        corpus = work / "corpus"
        generate(SynthConfig(out=str(corpus), tracks=200, seconds=30.0, broken_share=0.0, seed=11), progress=False)
        run(
            fma.manifest(str(corpus)),
            ExtractConfig(out=str(out), tracks_per_shard=8, features=FeatureConfig(inputs=ALL_INPUTS), progress=False),
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="cnn,cnn1d,mm_crnn")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--use-gpu", action="store_true")
    ap.add_argument("--workdir", default=str(HERE / "out"))
    args = ap.parse_args()

    import ray

    from mgc.train import TrainConfig
    from mgc.train import run as train

    work = Path(args.workdir)
    ray.init(include_dashboard=False, log_to_driver=False)
    features = features_with_every_input(work)
    runs = work / "model_runs"
    shutil.rmtree(runs, ignore_errors=True)
    rows = []
    for model in args.models.split(","):
        sizes = {k: v for k, v in SIZES.items() if k != "lstm_units"} if model in ("crnn", "mm_crnn") else SIZES
        cfg = TrainConfig(
            features=str(features), model=model, epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, use_gpu=args.use_gpu,
            cache_data=True, storage_path=str(runs), progress=False, **sizes,
        )  # fmt: skip
        out = train(cfg)
        history = json.loads((runs / model / "history.json").read_text())
        rates = [h["train_segments_per_s"] for h in history]
        rows.append({"model": model, "inputs": out["model"]["inputs"], "parameters": out["parameters"], "workers": out["train"]["num_workers"],
                     "segments_per_s": round(float(np.median(rates[1:] or rates)), 1), "epochs": [round(r, 1) for r in rates],
                     "data_wait_share": round(float(np.median([h["train_data_wait_s"] / h["train_s"] for h in history[1:] or history])), 3)})  # fmt: skip
    base = rows[0]["segments_per_s"]
    for r in rows:
        r["vs_first"] = round(r["segments_per_s"] / base, 3)
    result = {
        "device": "gpu" if args.use_gpu else f"cpu, {os.cpu_count()} cores",
        "sizes": SIZES,
        "batch_size": args.batch_size,
        "models": rows,
    }
    (work / "models.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\ntraining segments/s, {result['device']}, batch {args.batch_size}, mid sizes {SIZES}")
    for r in rows:
        print(f"{r['model']:<11} {'+'.join(r['inputs']):<16} {r['parameters']:>10,} params  {r['segments_per_s']:>8.1f} seg/s  "
              f"{r['vs_first']:>5.2f}x {rows[0]['model']}  (waiting for data {r['data_wait_share']:.0%})")  # fmt: skip


if __name__ == "__main__":
    main()
