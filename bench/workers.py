"""Idle-worker benchmark: what the raylet's idle-worker limit costs a sequence of short runs.

Ray stops idle worker processes beyond `num_workers_soft_limit` (by default the node's CPUs),
and a training run's controller and helper actors count against it: at Ray's default the idle
workers that Ray Data's reads run in are stopped during every run, and the reads after it (the
export's scoring of validation and test, the next run's statistics) each start a new process.
mgc raises the limit for the local Ray it starts (`mgc.session.idle_workers_kept`). This trains
one small cnn `--runs` times in a row on a local Ray of its own, once with Ray's limit and once
with mgc's (each in a fresh process, the order alternating by repeat), and prints the median
wall time of a run (the `mgc.train.run` call) each way and their ratio. The first run of each
Ray is not timed (it starts the cluster's first workers). Results go to <work>/workers.json.

    .venv/bin/python bench/workers.py [--tracks 200] [--seconds 9] [--epochs 2] [--runs 5] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from datapath import extraction  # noqa: E402

from mgc.session import idle_workers_kept  # noqa: E402

ENV = "RAY_num_workers_soft_limit"


def runs(features: str, out: str, epochs: int, n: int) -> list[float]:
    """Wall seconds of n small single-worker cnn runs after one untimed run (in this process's Ray)."""
    from mgc import session
    from mgc.train import PLAIN, TrainConfig
    from mgc.train import run as train

    session.connect()
    times = []
    for i in range(n + 1):
        started = time.perf_counter()
        train(TrainConfig(features=features, model="cnn", epochs=epochs, channels=(8, 16, 32, 32), dense=(64, 32), num_workers=1,
                          cache_data=True, progress=False, storage_path=out, name=f"r{i}", **PLAIN))  # fmt: skip
        if i:
            times.append(round(time.perf_counter() - started, 2))
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracks", type=int, default=200)
    p.add_argument("--seconds", type=float, default=9.0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--work", default=str(HERE / "out" / "workers"))
    p.add_argument("--child", help=argparse.SUPPRESS)  # the runs folder of one timed sequence
    a = p.parse_args()
    features = extraction(Path(a.work), a.tracks, a.seconds)
    if a.child:
        print(json.dumps(runs(str(features), a.child, a.epochs, a.runs)))
        return
    cpus = os.cpu_count() or 1
    limits = {"ray": "-1", "mgc": str(idle_workers_kept(cpus))}  # -1: Ray's default, the node's CPUs
    times: dict[str, list[float]] = {k: [] for k in limits}
    for repeat in range(a.repeats):
        for name, limit in sorted(limits.items(), reverse=repeat % 2 == 1):
            env = {**os.environ, "RAY_ADDRESS": "local", ENV: limit}
            child = [sys.executable, __file__, "--tracks", str(a.tracks), "--seconds", str(a.seconds), "--epochs", str(a.epochs),
                     "--runs", str(a.runs), "--work", a.work, "--child", str(Path(a.work) / "runs" / f"{name}-{repeat}")]  # fmt: skip
            out = subprocess.run(child, env=env, check=True, capture_output=True, text=True).stdout
            times[name] += json.loads(out.strip().splitlines()[-1])
            print(f"{name} ({ENV}={limit}) repeat {repeat}: {times[name][-a.runs :]} s", flush=True)
    ratio = float(np.median(times["ray"]) / np.median(times["mgc"]))
    result = {"cpus": cpus, "epochs": a.epochs, "limits": limits, "run_s": times, "ratio": round(ratio, 2)}
    (Path(a.work) / "workers.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"a run of {a.epochs} epochs: Ray's limit ({cpus} idle workers) {np.median(times['ray']):.1f} s, mgc's "
          f"({limits['mgc']}) {np.median(times['mgc']):.1f} s: {ratio:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
