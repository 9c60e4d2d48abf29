"""GPU-ready without a GPU: the GPU benchmark runs (on the CPU) with PyTorch and pyarrow alone, and
the float16 batches a GPU is sent convert to the float32 batches the CPU gets."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

from mgc.models import ARCHITECTURES

# bench/gpu.py as on a bare CUDA machine: Ray, librosa, soundfile and soxr cannot be imported.
BARE = """import runpy, sys
for m in ("ray", "librosa", "soundfile", "soxr"):
    sys.modules[m] = None
sys.argv = ["bench/gpu.py", *sys.argv[1:]]
runpy.run_path("bench/gpu.py", run_name="__main__")
"""


def test_the_gpu_benchmark_runs_on_the_cpu_with_torch_and_pyarrow_alone(all_inputs, tagged, tmp_path):
    """`bench/gpu.py --device cpu` over shards with the waveform, then shards with the musicnn
    input: every trainable model of the registry takes its training steps once, and every figure
    is there and positive."""
    import pyarrow.parquet as pq

    trained = set()
    for features in (all_inputs, tagged):
        # Every input is stored as float16: what the training loop sends a GPU as it is.
        schema = pq.read_schema(next((features / "features").glob("*.parquet")))
        stored = {f.name: str(f.type.value_type) for f in schema if hasattr(f.type, "value_type")}
        assert stored and set(stored.values()) == {"halffloat"}, stored
        out = tmp_path / f"{features.name}.json"
        proc = subprocess.run([sys.executable, "-c", BARE, "--features", str(features), "--device", "cpu", "--out", str(out)],
                              cwd=REPO, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(out.read_text())
        assert result["device"] == "cpu" and result["copy"]["pinned_gb_s"] > 0 and result["copy"]["batch_mb"] > 0
        for row in result["training"]:
            assert (
                row["step_ms"] > 0
                and row["segments_per_s"] > 0
                and 0 <= row["copy_share"] < 1
                and row["parameters"] > 0
            ), row
            trained.add(row["model"])
        assert result["musicnn"]["fp32_patches_per_s"] > 0 and result["musicnn"]["bf16_patches_per_s"] > 0
        assert "segments/s" in proc.stdout and "musicnn at batch" in proc.stdout
    assert trained == {name for name, arch in ARCHITECTURES.items() if not arch.fit}


def test_float16_batches_converted_after_the_copy_equal_float32_ones(ray_connected, features):
    """On a GPU the training loop asks Ray Data for the shards' float16 and converts on the device;
    on the CPU for float32. The same split read both ways gives equal inputs, bit for bit."""
    import torch

    from mgc.train import TrainConfig, batch_dtypes, check, dataset

    prep = check(TrainConfig(features=str(features), model="baseline"))  # it reads logmel and mfcc
    mc, names = prep.model, prep.model.inputs
    ds = dataset(str(features), "validation", prep.target, list(names))
    ds.context.execution_options.preserve_order = True  # both reads in the same order
    full = list(ds.iter_torch_batches(batch_size=64, **batch_dtypes(mc, False)))
    half = list(ds.iter_torch_batches(batch_size=64, **batch_dtypes(mc, False, half=True)))
    assert len(full) == len(half) > 0
    for a, b in zip(full, half):
        assert torch.equal(a["track_id"], b["track_id"])
        for n in names:
            assert a[n].dtype == torch.float32 and b[n].dtype == torch.float16
            assert torch.equal(a[n], b[n].float())
