"""Target benchmark: what a multi-label target (`--target genres_all`: a sigmoid per genre, binary
cross-entropy with positive weights) costs in training against the single-label one (`genre_top`:
a softmax, cross-entropy), on the same shards.

Measured two ways, both printed and written to bench/out/targets.json:
- per training step, apart from Ray's noise: cnn at the mid size on one core, the same batch, a
  head of 8 classes with cross-entropy against heads of 24 and of 161 classes (FMA's genre tree)
  with positive-weighted BCE, interleaved step by step; and the part that differs (the output
  layer and the loss, forward and backward) timed alone, as a share of a step;
- end to end, through `mgc train`: training segments/s (median over epochs after the first) of
  each target on one synthetic corpus with audible blends and sub-genres (`mgc synth
  --multi-genre 0.3 --subgenres`), the two targets' runs interleaved, and how many of the corpus's
  tracks each target trains on.

    .venv/bin/python bench/targets.py [--tracks 200] [--seconds 15] [--epochs 4] [--repeats 2]
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
SIZES = dict(channels=(16, 32, 64, 64), dense=(256, 64, 32))  # bench/train.py's mid size


def step_cost(batch_size: int = 32, steps: int = 40) -> dict[str, float]:
    """Median seconds per training step (forward, loss, backward, AdamW) on one core: 8 classes
    with cross-entropy, 24 and 161 with BCE and positive weights, interleaved."""
    import torch
    import torch.nn.functional as F

    from mgc.models import ModelConfig, build

    torch.set_num_threads(1)
    torch.manual_seed(0)
    heads = {"genre_top (8, CE)": 8, "genres_all (24, BCE)": 24, "genres_all (161, BCE)": 161}
    nets = {k: build(ModelConfig(name="cnn", n_classes=n, **SIZES)).train() for k, n in heads.items()}
    opts = {k: torch.optim.AdamW(v.parameters(), lr=1e-3) for k, v in nets.items()}
    cfg = next(iter(nets.values())).cfg
    x = {n: torch.randn(batch_size, *s) for n, s in zip(cfg.inputs, cfg.shapes)}
    times: dict[str, list[float]] = {k: [] for k in heads}
    for step in range(steps + 2):
        for k, n in heads.items():
            started = time.perf_counter()
            logits = nets[k](x)
            if n == 8:
                loss = F.cross_entropy(logits, torch.randint(0, n, (batch_size,)))
            else:
                y = (torch.rand(batch_size, n) < 0.1).float()
                loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.full((n,), 3.0))
            opts[k].zero_grad()
            loss.backward()
            opts[k].step()
            if step >= 2:
                times[k].append(time.perf_counter() - started)
    base = float(np.median(times["genre_top (8, CE)"]))
    out = {
        k: {"step_s": round(float(np.median(v)), 5), "vs_genre_top": round(float(np.median(v)) / base - 1, 4)}
        for k, v in times.items()
    }
    # The part that differs, timed alone (a shared machine's noise swamps it in whole steps): the
    # output layer over the head's last 32 units and the loss, forward and backward.
    h = torch.randn(batch_size, cfg.dense[-1] if cfg.dense else 32, requires_grad=True)
    for k, n in heads.items():
        layer = torch.nn.Linear(h.shape[1], n)
        y = torch.randint(0, n, (batch_size,)) if n == 8 else (torch.rand(batch_size, n) < 0.1).float()
        w = torch.full((n,), 3.0)
        reps, started = 2000, time.perf_counter()
        for _ in range(reps):
            z = layer(h)
            loss = F.cross_entropy(z, y) if n == 8 else F.binary_cross_entropy_with_logits(z, y, pos_weight=w)
            loss.backward()
        out[k]["head_and_loss_s"] = round((time.perf_counter() - started) / reps, 7)
        out[k]["head_and_loss_share_of_step"] = round(out[k]["head_and_loss_s"] / base, 5)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", default=str(HERE / "out"))
    args = ap.parse_args()

    import ray

    from mgc import fma
    from mgc.extract import ExtractConfig
    from mgc.extract import run as extract
    from mgc.synth import SynthConfig, generate
    from mgc.train import TrainConfig
    from mgc.train import run as train

    work = Path(args.workdir)
    ray.init(include_dashboard=False, log_to_driver=False)
    base_dir = work / f"targets_{args.tracks}x{args.seconds:g}s"
    features = base_dir / "features"
    if not (features / "_summary.json").exists():
        generate(
            SynthConfig(
                out=str(base_dir / "corpus"),
                tracks=args.tracks,
                seconds=args.seconds,
                broken_share=0.0,
                multi_genre=0.3,
                subgenres=True,
                seed=5,
            ),
            progress=False,
        )
        extract(
            fma.manifest(str(base_dir / "corpus")),
            ExtractConfig(out=str(features), tracks_per_shard=16, progress=False),
        )
    runs = work / "targets_runs"
    shutil.rmtree(runs, ignore_errors=True)
    rows = []
    for r in range(args.repeats):
        for target in ("genre_top", "genres_all"):
            cfg = TrainConfig(features=str(features), model="cnn", target=target, min_genre_tracks=3, epochs=args.epochs, batch_size=32, num_workers=1,
                              cache_data=True, patience=0, storage_path=str(runs), name=f"{target}-{r}", progress=False, **SIZES)  # fmt: skip
            out = train(cfg)
            history = json.loads((runs / cfg.name / "history.json").read_text())
            rows.append({"target": target, "repeat": r, "classes": len(out["labels"]), "tracks": out["tracks"],
                         "segments_per_s": round(float(np.median([h["train_segments_per_s"] for h in history[1:]])), 2)})  # fmt: skip
    rates = {
        t: float(np.mean([r["segments_per_s"] for r in rows if r["target"] == t])) for t in ("genre_top", "genres_all")
    }
    cost = step_cost()
    result = {"corpus": {"tracks": args.tracks, "seconds": args.seconds, "multi_genre": 0.3, "subgenres": True}, "sizes": SIZES, "epochs": args.epochs,
              "runs": rows, "segments_per_s": rates, "genres_all_vs_genre_top": round(rates["genres_all"] / rates["genre_top"], 4), "step_cost": cost}  # fmt: skip
    (work / "targets.json").write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(
            f"{r['target']:<11} repeat {r['repeat']}: {r['classes']} classes, trains on {r['tracks']['training']} of {r['tracks']['in_shards']} tracks, {r['segments_per_s']} segments/s"
        )
    print(
        f"training segments/s, genres_all / genre_top: {result['genres_all_vs_genre_top']:.3f} (mean of {args.repeats} runs each; target: above 0.95)"
    )
    for k, v in cost.items():
        print(
            f"one step, {k}: {v['step_s'] * 1000:.1f} ms ({v['vs_genre_top']:+.1%} vs genre_top); its output layer and loss alone: "
            f"{v['head_and_loss_s'] * 1e6:.0f} us, {v['head_and_loss_share_of_step']:.3%} of a step"
        )


if __name__ == "__main__":
    main()
