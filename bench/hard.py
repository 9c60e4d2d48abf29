"""The hard corpus (the demo's, mgc.demo.HARD) over seeds: what calibration does to test ECE and
log loss, how often `uncertain` tracks are right, and the transfer `head` against the `baseline`
on the same input.

    .venv/bin/python bench/hard.py [--seeds 1,2,3] [--tracks 200] [--seconds 9]

Per seed: a hard corpus (a third more held out than the demo, so that validation and test have
~60 tracks each), extracted with log-mel, MFCC and the musicnn input (one patch a track); then
`baseline` (statistics), `baseline --input musicnn`, `head` (its defaults, on musicnn) and a small
`cnn` (the demo's sizes, 8 epochs). For each: test track accuracy, the temperature and how it was
chosen, test ECE and log loss before and after calibration, and the test tracks' accuracy where
the calibrated top probability is under 0.5 (what `mgc label` flags uncertain) and where not.
Printed per seed, then the mean and the spread (min-max) over seeds; bench/README.md ("The hard
corpus") quotes it. Joins RAY_ADDRESS, or starts a local Ray.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mgc import metrics  # noqa: E402
from mgc.demo import HARD, SMALL  # noqa: E402
from mgc.label import LabelConfig  # noqa: E402

MGC = str(Path(sys.executable).with_name("mgc"))
RUNS = {
    "baseline": ["--model", "baseline"],
    "baseline musicnn": ["--model", "baseline", "--input", "musicnn"],
    "head musicnn": ["--model", "head"],
    "cnn": ["--model", "cnn", "--epochs", "8", "--lr", "3e-3", "--dropout", "0.2", "--cache-data",
            *[a for k, v in SMALL.items() if k != "lstm_units" for a in (f"--{k.replace('_', '-')}", ",".join(map(str, v)) if isinstance(v, tuple) else str(v))]],
}  # fmt: skip


def corpus(work: Path, seed: int, tracks: int, seconds: float) -> Path:
    """The seed's hard corpus, extracted (made once)."""
    out = work / f"hard_{tracks}x{seconds:g}s_seed{seed}"
    if not (out / "features" / "_summary.json").exists():
        args = [
            f"--{k.replace('_', '-')}={','.join(v) if isinstance(v, tuple) else v}"
            for k, v in {**HARD, "held_out": 0.3}.items()
        ]
        subprocess.run(
            [
                MGC,
                "synth",
                "--out",
                str(out / "fma"),
                "--tracks",
                str(tracks),
                "--seconds",
                str(seconds),
                "--seed",
                str(seed),
                *args,
                "--no-progress",
            ],
            check=True,
        )
        subprocess.run([MGC, "extract", "--fma-root", str(out / "fma"), "--out", str(out / "features"), "--inputs", "logmel,mfcc,musicnn",
                        "--musicnn-patches", "1", "--no-progress"], check=True)  # fmt: skip
    return out


def score(run: Path) -> dict[str, float]:
    """The run's test figures, from metrics.json and test_predictions.parquet."""
    m = json.loads((run / "metrics.json").read_text())
    c = m["calibration"]
    pred = pd.read_parquet(run / "test_predictions.parquet")
    _, y, lp = metrics.track_level(
        pred["track_id"].to_numpy(), pred["label"].to_numpy(), np.stack(pred["logprobs"].to_numpy()), c["temperature"]
    )
    right = lp.argmax(1) == y
    flagged = np.exp(lp.max(1)) < LabelConfig.uncertain_below  # what `mgc label` flags by default
    return {
        "accuracy": m["test"]["track"]["accuracy"],
        "T": c["temperature"],
        "floored": c["temperature_fit"]["floored"],
        "ece before": c["test"]["ece_before"],
        "ece after": c["test"]["ece_after"],
        "log loss before": c["test"]["log_loss_before"],
        "log loss after": c["test"]["log_loss_after"],
        "uncertain share": float(flagged.mean()),
        "acc uncertain": float(right[flagged].mean()) if flagged.any() else np.nan,
        "acc rest": float(right[~flagged].mean()) if (~flagged).any() else np.nan,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--tracks", type=int, default=200)
    p.add_argument("--seconds", type=float, default=9.0)
    p.add_argument("--work", default=str(HERE / "out" / "hard"))
    a = p.parse_args()
    work = Path(a.work)
    rows = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        out = corpus(work, seed, a.tracks, a.seconds)
        for name, args in RUNS.items():
            run = out / "runs" / name.replace(" ", "_")
            if not (run / "metrics.json").exists():
                subprocess.run([MGC, "train", "--features", str(out / "features"), "--storage-path", str(run.parent), "--name", run.name,
                                "--no-progress", *args], check=True, capture_output=True)  # fmt: skip
            rows.append({"seed": seed, "model": name, **score(run)})
            print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
    df = pd.DataFrame(rows).drop(columns="floored")
    summary = df.drop(columns="seed").groupby("model", sort=False).agg(["mean", "min", "max"]).round(3)
    print("\nmean (min-max) over seeds", a.seeds)
    for model, r in summary.iterrows():
        print(
            model
            + ": "
            + ", ".join(
                f"{k} {r[(k, 'mean')]:.3f} ({r[(k, 'min')]:.3f}-{r[(k, 'max')]:.3f})"
                for k in df.columns
                if k not in ("seed", "model")
            )
        )
    (work / "hard.json").write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
