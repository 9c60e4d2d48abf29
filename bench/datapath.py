"""The CPU data path's cost per training segment: the training split read through Ray Data as a
worker reads it (mgc.train.dataset: the Parquet reader, the split filter, the target join, then
iter_torch_batches with the loop's batch size, shuffle buffer and float32 conversion), without a
model, streamed from the shards and cached in the object store (`--cache-data`).

    .venv/bin/python bench/datapath.py [--tracks 300] [--seconds 30] [--epochs 10]

Makes (once) an easy synthetic corpus and its log-mel + MFCC extraction under bench/out/datapath,
then times `--epochs` passes each way after one untimed pass, on a local Ray of this machine's
cores (or RAY_ADDRESS). Prints segments/s and core-ms a segment (the cluster's CPUs x seconds per
segment): what sizes the CPUs a GPU needs to be fed (bench/README.md, "Training").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mgc import session  # noqa: E402
from mgc.train import TrainConfig, batch_dtypes, check, dataset  # noqa: E402

MGC = str(Path(sys.executable).with_name("mgc"))


def extraction(work: Path, tracks: int, seconds: float) -> Path:
    """The corpus's features (made once)."""
    features = work / f"easy_{tracks}x{seconds:g}s" / "features"
    if not (features / "_summary.json").exists():
        corpus = features.parent / "fma"
        subprocess.run(
            [MGC, "synth", "--out", str(corpus), "--tracks", str(tracks), "--seconds", str(seconds), "--no-progress"],
            check=True,
        )
        subprocess.run([MGC, "extract", "--fma-root", str(corpus), "--out", str(features), "--no-progress"], check=True)
    return features


def rate(ds, cfg: TrainConfig, dtypes: dict, epochs: int) -> tuple[float, int]:
    """(segments/s over `epochs` timed passes after an untimed one, segments a pass)."""
    counts, started = [], 0.0
    for epoch in range(epochs + 1):
        if epoch == 1:
            started = time.perf_counter()
        n = 0
        for batch in ds.iter_torch_batches(
            batch_size=cfg.batch_size, local_shuffle_buffer_size=cfg.shuffle_buffer, local_shuffle_seed=epoch, **dtypes
        ):
            n += len(batch["target"])
        counts.append(n)
    return sum(counts[1:]) / (time.perf_counter() - started), counts[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracks", type=int, default=300)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--work", default=str(HERE / "out" / "datapath"))
    a = p.parse_args()
    features = extraction(Path(a.work), a.tracks, a.seconds)
    cfg = TrainConfig(features=str(features), model="cnn")
    prep = check(cfg)
    cpus = session.connect()["CPU"]
    dtypes = batch_dtypes(prep.model, prep.target.multilabel)
    columns = list(prep.model.inputs)
    results = {}
    for name, cache in (("streaming", False), ("cached", True)):
        segments_per_s, n = rate(
            dataset(cfg.features, "training", prep.target, columns, cache=cache), cfg, dtypes, a.epochs
        )
        results[name] = {
            "segments_per_s": segments_per_s,
            "core_ms_per_segment": 1000 * cpus / segments_per_s,
            "segments": n,
        }
        print(
            f"{name:10s} {segments_per_s:9.0f} segments/s  {1000 * cpus / segments_per_s:6.3f} core-ms a segment  ({n} segments a pass, {cpus:g} CPUs)",
            flush=True,
        )
    print(f"cached / streaming: {results['cached']['segments_per_s'] / results['streaming']['segments_per_s']:.1f}x")
    (Path(a.work) / "datapath.json").write_text(json.dumps({"cpus": cpus, "inputs": columns, **results}, indent=1))


if __name__ == "__main__":
    main()
