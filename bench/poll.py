"""Poll benchmark: what Ray Train's controller poll interval costs a run with short epochs.

A worker's `ray.train.report` waits until the controller has taken its previous report, and the
controller takes reports when it polls the workers: every 2 s by default. mgc's trainer polls
every `mgc.train.POLL_INTERVAL_S` unless RAY_TRAIN_HEALTH_CHECK_INTERVAL_S is set. This trains
one small cnn for a few short epochs with Ray's default and with mgc's interval, interleaved,
and prints each run's wall time (the `mgc.train.run` call: start, epochs, scoring, artifact) and
the ratio of the medians. Results go to <workdir>/poll.json.

    .venv/bin/python bench/poll.py [--tracks 80] [--seconds 6] [--epochs 6] [--repeats 2] [--workdir bench/out]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=80)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", default=str(HERE / "out"))
    args = ap.parse_args()

    import ray

    # Ray's own name and default for the interval, not copies that could drift with its version.
    from ray.train.v2._internal.constants import DEFAULT_HEALTH_CHECK_INTERVAL_S as RAY_DEFAULT_S
    from ray.train.v2._internal.constants import HEALTH_CHECK_INTERVAL_S_ENV_VAR as ENV

    from mgc import fma
    from mgc.extract import ExtractConfig
    from mgc.extract import run as extract
    from mgc.synth import SynthConfig, generate
    from mgc.train import PLAIN, POLL_INTERVAL_S, TrainConfig
    from mgc.train import run as train

    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    ray.init(include_dashboard=False, log_to_driver=False)
    work = Path(args.workdir) / f"poll_{args.tracks}x{args.seconds:g}s"
    features = work / "features"
    if not (features / "_summary.json").exists():
        generate(
            SynthConfig(out=str(work / "corpus"), tracks=args.tracks, seconds=args.seconds, seed=3), progress=False
        )
        extract(
            fma.manifest(str(work / "corpus")), ExtractConfig(out=str(features), tracks_per_shard=16, progress=False)
        )
    runs = work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    # One untimed round first: Ray's first trainings in a session start its worker processes.
    # The order alternates by round, so that neither interval always runs second.
    intervals = {"ray": RAY_DEFAULT_S, "mgc": POLL_INTERVAL_S}
    times: dict[str, list[float]] = {k: [] for k in intervals}
    for repeat in range(-1, args.repeats):
        for name, interval in sorted(intervals.items(), reverse=repeat % 2 == 1):
            os.environ[ENV] = str(interval)  # read by fit(), which passes it to the run's controller
            started = time.perf_counter()
            train(TrainConfig(features=str(features), model="cnn", epochs=args.epochs, channels=(8, 16, 32, 32), dense=(64, 32), batch_size=16,
                              num_workers=1, cache_data=True, progress=False, storage_path=str(runs), name=f"{name}-{repeat}", **PLAIN))  # fmt: skip
            if repeat >= 0:
                times[name].append(round(time.perf_counter() - started, 2))
                print(f"{name} ({interval:g} s) repeat {repeat}: {times[name][-1]:.1f} s", flush=True)
    ratio = float(np.median(times["ray"]) / np.median(times["mgc"]))
    result = {
        "tracks": args.tracks,
        "seconds": args.seconds,
        "epochs": args.epochs,
        "intervals_s": intervals,
        "run_s": times,
        "ratio": round(ratio, 2),
    }
    (Path(args.workdir) / "poll.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.epochs} epochs: Ray's {RAY_DEFAULT_S:g} s poll {np.median(times['ray']):.1f} s, mgc's {POLL_INTERVAL_S:g} s "
          f"{np.median(times['mgc']):.1f} s: {ratio:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
