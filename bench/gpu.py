"""Every GPU figure mgc needs, in one run of a few minutes, on a bare CUDA machine: PyTorch and
pyarrow only (no Ray, librosa, soundfile or soxr; mgc's model and musicnn modules import without them).

    python bench/gpu.py --features SHARDS [--device cuda] [--out bench/out/gpu.json]

SHARDS is a small extraction with every input, made here beforehand (a few MB):

    .venv/bin/mgc synth --out /tmp/g --tracks 24 --seconds 9 --broken-share 0 --no-progress
    .venv/bin/mgc extract --fma-root /tmp/g --inputs logmel,mfcc,waveform,musicnn --out gpu_shards --no-progress

Measured, each printed as a table and written as JSON:
- host-to-device copy of a batch of 256 float16 log-mel segments, pinned and pageable (GB/s);
- per model of the registry at its default size, training steps under bf16 autocast at each
  batch size (default 64 and 256), as mgc's training loop takes them (float16 batches copied to the
  device, converted there; AdamW): step time, segments/s, the share of a step the copy takes, the
  peak memory;
- the pretrained musicnn network's patches/s at batch 256, float32 and bf16.

`--device cpu` runs the same code on the CPU in seconds (one step at batch 2 per model; the test
suite runs it so); its figures say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # mgc from the copied tree, not installed

from mgc import inputs as input_kinds  # noqa: E402
from mgc import musicnn  # noqa: E402
from mgc.features import FeatureConfig  # noqa: E402
from mgc.models import ARCHITECTURES, ModelConfig, build, reads  # noqa: E402


def load_segments(features: Path, limit: int) -> tuple[FeatureConfig, dict[str, np.ndarray]]:
    """The extraction's FeatureConfig and up to `limit` segments of every input it holds, as the
    shards store them (float16), read with pyarrow alone."""
    fcfg = FeatureConfig.from_dict(json.loads((features / "_config.json").read_text())["feature_config"])
    columns: dict[str, list[np.ndarray]] = {n: [] for n in fcfg.inputs}
    for shard in sorted((features / "features").glob("*.parquet")):
        table = pq.read_table(shard, columns=list(fcfg.inputs))
        for n in fcfg.inputs:
            columns[n].append(table.column(n).combine_chunks().to_numpy_ndarray())
        if sum(len(c) for c in columns[fcfg.inputs[0]]) >= limit:
            break
    return fcfg, {n: np.concatenate(c)[:limit] for n, c in columns.items()}


class Clock:
    """Elapsed milliseconds between marks: CUDA events on a GPU (what the device did), wall time on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def ms(self, start, end) -> float:
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end)
        return (end - start) * 1000


def host_batch(
    segments: dict[str, np.ndarray], names: tuple[str, ...], batch: int, pin: bool, rng
) -> dict[str, torch.Tensor]:
    """`batch` float16 rows of each input (drawn with replacement from the segments read)."""
    rows = rng.integers(0, len(next(iter(segments.values()))), batch)
    out = {n: torch.from_numpy(np.ascontiguousarray(segments[n][rows])) for n in names}
    return {n: t.pin_memory() for n, t in out.items()} if pin else out


def copy_rate(segments: dict[str, np.ndarray], device: torch.device, repeats: int) -> dict[str, float]:
    """GB/s of a host-to-device copy of 256 float16 log-mel segments, from pinned and pageable memory."""
    clock, rng, out = Clock(device), np.random.default_rng(0), {}
    for pinned in (True, False):
        x = host_batch(segments, ("logmel",), 256, pinned and device.type == "cuda", rng)["logmel"]
        times = []
        for _ in range(repeats + 1):
            start = clock.mark()
            x.to(device, non_blocking=pinned)
            times.append(clock.ms(start, clock.mark()))
        out["pinned_gb_s" if pinned else "pageable_gb_s"] = (
            x.numel() * x.element_size() / statistics.median(times[1:]) / 1e6
        )
    out["batch_mb"] = x.numel() * x.element_size() / 1e6
    return out


def train_steps(
    name: str,
    fcfg: FeatureConfig,
    segments: dict[str, np.ndarray],
    batch: int,
    device: torch.device,
    warmup: int,
    steps: int,
) -> dict:
    """Training steps of `name` at its default size, as mgc's loop takes them."""
    names = reads(name)
    cfg = ModelConfig(
        name=name, n_classes=16, inputs=names, shapes=tuple(input_kinds.get(n).shape(fcfg) for n in names)
    )
    torch.manual_seed(0)
    net = build(cfg).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    clock, rng, cuda = Clock(device), np.random.default_rng(0), device.type == "cuda"
    hosts = [host_batch(segments, names, batch, cuda, rng) for _ in range(4)]
    y = torch.from_numpy(rng.integers(0, cfg.n_classes, batch)).to(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    step_ms, copy_ms = [], []
    for i in range(warmup + steps):
        start = clock.mark()
        x = {n: t.to(device, non_blocking=True) for n, t in hosts[i % len(hosts)].items()}
        x = {n: t.float() for n, t in x.items()}  # float16 over the bus, float32 on the device
        copied = clock.mark()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        end = clock.mark()
        if i >= warmup:
            step_ms.append(clock.ms(start, end))
            copy_ms.append(clock.ms(start, copied))
    step = statistics.median(step_ms)
    return {
        "model": name, "inputs": "+".join(names), "batch": batch, "parameters": int(sum(p.numel() for p in net.parameters())),
        "step_ms": step, "segments_per_s": batch / step * 1000, "copy_share": statistics.median(copy_ms) / step,
        "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
    }  # fmt: skip


@torch.no_grad()
def musicnn_rates(device: torch.device, batch: int, repeats: int) -> dict[str, float]:
    """Patches/s of the pretrained network at `batch`, float32 and under bf16 autocast."""
    net, clock, out = musicnn.load(str(device)), Clock(device), {}
    x = torch.randn(batch, musicnn.FRAMES, musicnn.N_MELS, device=device)
    for label, bf16 in (("fp32", False), ("bf16", True)):
        times = []
        for _ in range(repeats + 1):
            start = clock.mark()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                net(x)
            times.append(clock.ms(start, clock.mark()))
        out[f"{label}_patches_per_s"] = batch / statistics.median(times[1:]) * 1000
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--features", required=True, type=Path, help="an extraction output (with every input the models read)"
    )
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--batch-sizes", help="comma-separated (default: 64,256; on CPU 2)")
    p.add_argument("--steps", type=int, help="timed training steps per model and batch size (default: 20; on CPU 1)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default: 3; on CPU 0)")
    p.add_argument(
        "--models", default=",".join(ARCHITECTURES), help="comma-separated (default: every model of the registry)"
    )
    p.add_argument("--musicnn-batch", type=int, help="patches per musicnn pass (default: 256; on CPU 4)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "gpu.json")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    # On the CPU, enough to run every code path in seconds: its figures are not the point.
    for k, gpu, cpu in (("batch_sizes", "64,256", "2"), ("steps", 20, 1), ("warmup", 3, 0), ("musicnn_batch", 256, 4)):
        if getattr(args, k) is None:
            setattr(args, k, gpu if device.type == "cuda" else cpu)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device (--device cpu runs the same code on the CPU)")
    started = time.perf_counter()
    fcfg, segments = load_segments(args.features, limit=512)
    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
        "segments_read": len(next(iter(segments.values()))), "inputs": list(fcfg.inputs), "copy": copy_rate(segments, device, repeats=20),
        "training": [], "skipped": {},
    }  # fmt: skip
    for name in args.models.split(","):
        missing = [n for n in reads(name) if n not in segments]
        if ARCHITECTURES[name].fit or missing:  # the baseline has no training step
            result["skipped"][name] = (
                "fitted in closed form" if ARCHITECTURES[name].fit else f"the shards lack {', '.join(missing)}"
            )
            continue
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            result["training"].append(train_steps(name, fcfg, segments, batch, device, args.warmup, args.steps))
            print(json.dumps(result["training"][-1]), flush=True)
    result["musicnn"] = musicnn_rates(device, args.musicnn_batch, repeats=max(1, args.steps // 2))
    result["wall_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\n{result['device']}, torch {result['torch']}: host-to-device {result['copy']['pinned_gb_s']:.1f} GB/s pinned, "
          f"{result['copy']['pageable_gb_s']:.1f} GB/s pageable ({result['copy']['batch_mb']:.1f} MB batch)")  # fmt: skip
    print(f"{'model':<11} {'inputs':<22} {'batch':>5} {'step ms':>8} {'segments/s':>11} {'copy':>6} {'peak MiB':>9}")
    for r in result["training"]:
        memory = f"{r['peak_memory_mb']:9.0f}" if r["peak_memory_mb"] is not None else f"{'-':>9}"
        print(
            f"{r['model']:<11} {r['inputs']:<22} {r['batch']:>5} {r['step_ms']:8.1f} {r['segments_per_s']:11.0f} {r['copy_share']:6.1%} {memory}"
        )
    for name, why in result["skipped"].items():
        print(f"{name}: skipped ({why})")
    m = result["musicnn"]
    print(
        f"musicnn at batch {args.musicnn_batch}: {m['fp32_patches_per_s']:.0f} patches/s fp32, {m['bf16_patches_per_s']:.0f} bf16"
    )
    print(f"{result['wall_s']:.0f} s in all; written to {args.out}")
    return result


if __name__ == "__main__":
    main()
