"""Training benchmark: our Ray Train loop vs a plain single-process PyTorch loop on the same Parquet.

Both train the same network with the same batch size and optimizer on the training split of one
extraction output. The plain loop loads the split into memory once (untimed: the most favourable
case for it) and steps through shuffled batches on one core; ours runs `mgc.train` with 2 DDP
workers, streaming from Parquet through Ray Data. Segments per second are taken from epochs after
the first (warm-up) and compared per core; the plain loop runs before and after ours, and the
mean of the two is the base. Results go to bench/out/train.json.

    .venv/bin/python bench/train.py [--epochs 4] [--model cnn]

It reuses bench/out/features from bench/extract.py, extracting it first if needed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
# Mid-sized networks: the literature's 35M-parameter CNN trains at ~10 segments/s on one core,
# too slow for a benchmark on 2 cores; the ratio is what this measures.
SIZES = dict(channels=(16, 32, 64, 64), dense=(256, 64, 32), lstm_units=(64, 64))


def plain_loop(features: str, model_cfg, norm, target, epochs: int, batch_size: int, lr: float) -> list[float]:
    """Segments/s per epoch of a textbook loop: one process, data in memory, shuffled batches."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import torch

    from mgc.models import build

    torch.set_num_threads(1)
    t = pq.read_table(os.path.join(features, "features"), columns=["split", "track_id", *model_cfg.inputs])
    t = t.filter(pc.equal(t["split"], "training"))
    labelled, y = target.lookup(t["track_id"].to_numpy())
    t = t.filter(labelled)
    x = {n: t[n].combine_chunks().to_numpy_ndarray() for n in model_cfg.inputs}
    y = torch.from_numpy(y[labelled])
    torch.manual_seed(0)
    model = build(model_cfg, norm)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    rates = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for idx in np.array_split(np.random.permutation(len(y)), max(1, len(y) // batch_size)):
            xb = {n: torch.from_numpy(v[idx].astype(np.float32)) for n, v in x.items()}
            loss = loss_fn(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
        rates.append(len(y) / (time.perf_counter() - started))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--shuffle-buffer", type=int, default=512, help="rows in each worker's local shuffle buffer")
    ap.add_argument("--workdir", default=str(HERE / "out"))
    args = ap.parse_args()

    import ray

    from mgc import fma
    from mgc.extract import ExtractConfig
    from mgc.extract import run as extract
    from mgc.models import build
    from mgc.synth import SynthConfig, generate
    from mgc.train import TrainConfig, prepare
    from mgc.train import run as train

    work = Path(args.workdir)
    features = work / "features"
    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    if not (features / "_summary.json").exists():
        corpus = work / "corpus"
        generate(SynthConfig(out=str(corpus), tracks=200, seconds=30.0, broken_share=0.0, seed=11))
        extract(fma.manifest(str(corpus)), ExtractConfig(out=str(features), tracks_per_shard=8, progress=False))

    runs = work / "train_runs"
    shutil.rmtree(runs, ignore_errors=True)
    # 2 workers at 0.5 CPU each leave one CPU of this 2-core machine for Ray Data's reads.
    cfg = TrainConfig(
        features=str(features), model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, shuffle_buffer=args.shuffle_buffer,
        num_workers=2, cpus_per_worker=cores / 4, storage_path=str(runs), progress=False, **SIZES,
    )  # fmt: skip
    prep = prepare(cfg)
    shutil.rmtree(runs, ignore_errors=True)
    plain = plain_loop(str(features), prep.model, prep.norm, prep.target, args.epochs, args.batch_size, cfg.lr)
    # The same loop in one process per core at once: what the cores give when all of them work,
    # Ray or no Ray (shared caches, memory bandwidth, the OS); a diagnostic, not the target's base.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn")) as pool:
        loops = [
            pool.submit(
                plain_loop, str(features), prep.model, prep.norm, prep.target, args.epochs, args.batch_size, cfg.lr
            )
            for _ in range(cores)
        ]
        side_by_side = [f.result() for f in loops]
    train(cfg)
    history = json.loads((runs / cfg.run_name / "history.json").read_text())
    ours = [h["train_segments_per_s"] for h in history]
    cached_cfg = dataclasses.replace(cfg, name=f"{cfg.run_name}-cached", cache_data=True)
    train(cached_cfg)
    cached_history = json.loads((runs / cached_cfg.run_name / "history.json").read_text())
    cached = [h["train_segments_per_s"] for h in cached_history]
    # Where a worker's epoch goes (rank 0, epochs after the first): waiting for the first batch
    # (the shuffle buffer filling), waiting for later batches, computing.
    later = cached_history[1:] or cached_history
    first_wait = float(np.median([h["train_first_batch_s"] / h["train_s"] for h in later]))
    other_wait = float(np.median([(h["train_data_wait_s"] - h["train_first_batch_s"]) / h["train_s"] for h in later]))

    # The plain loop again after the Ray runs: this machine's speed drifts by 10-30% over minutes,
    # so its base is the mean of the loop before and after them.
    plain_after = plain_loop(str(features), prep.model, prep.norm, prep.target, args.epochs, args.batch_size, cfg.lr)
    plain_rate = float(np.mean([np.median(r[1:] or r) for r in (plain, plain_after)]))
    side_rate = float(np.mean([np.median(r[1:] or r) for r in side_by_side]))
    ours_rate = float(np.median(ours[1:] or ours))
    cached_rate = float(np.median(cached[1:] or cached))
    result = {
        "model": args.model,
        "shuffle_buffer": args.shuffle_buffer,
        "sizes": SIZES,
        "parameters": int(sum(p.numel() for p in build(prep.model).parameters())),
        "training_segments": prep.segments["training"],
        "cores": cores,
        "plain_segments_per_s": round(plain_rate, 1),
        "plain_segments_per_s_before_and_after": [round(float(np.median(r[1:] or r)), 1) for r in (plain, plain_after)],
        "ray_train_segments_per_s": round(ours_rate, 1),
        "plain_side_by_side_segments_per_s_per_core": round(side_rate, 1),
        "ray_train_workers": 2,
        "per_core_overhead": round(1 - (ours_rate / cores) / plain_rate, 3),
        "ray_train_cached_segments_per_s": round(cached_rate, 1),
        "per_core_overhead_cached": round(1 - (cached_rate / cores) / plain_rate, 3),
        "per_core_overhead_cached_vs_side_by_side": round(1 - (cached_rate / cores) / side_rate, 3),
        "cached_epoch_share_waiting_first_batch": round(first_wait, 3),
        "cached_epoch_share_waiting_later_batches": round(other_wait, 3),
    }
    (work / "train.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\nmodel {args.model} ({result['parameters']:,} parameters), {result['training_segments']} training segments, batch {args.batch_size}"
    )
    print(
        f"plain PyTorch loop, 1 process, 1 core   {plain_rate:8.1f} segments/s   (epochs before: {[round(r) for r in plain]}, after: {[round(r) for r in plain_after]})"
    )
    print(f"plain loops, one per core, at once      {side_rate:8.1f} segments/s per core")
    print(f"mgc.train, Ray Train, 2 DDP workers     {ours_rate:8.1f} segments/s   (epochs: {[round(r) for r in ours]})")
    print(
        f"  with --cache-data                     {cached_rate:8.1f} segments/s   (epochs: {[round(r) for r in cached]})"
    )
    print(f"per-core overhead of Ray Train          {result['per_core_overhead']:8.1%}      (target < 15%)")
    print(f"  with --cache-data                     {result['per_core_overhead_cached']:8.1%}")
    print(
        f"  with --cache-data, vs the plain loops side by side  {result['per_core_overhead_cached_vs_side_by_side']:8.1%}"
    )
    print(
        f"  with --cache-data, an epoch's share waiting for its first batch {first_wait:.1%}, for later batches {other_wait:.1%}"
    )


if __name__ == "__main__":
    main()
