"""Musicnn benchmark: what the pretrained tagger costs in extraction, per core and with every core,
in float32 and under bfloat16 autocast (and what bfloat16 changes in its outputs), against the
log-mel + MFCC extraction of the same tracks; and the bytes per segment it stores.

    .venv/bin/python bench/musicnn.py [--tracks 32] [--seconds 30] [--repeats 3]

The tracks are synthetic MP3s (mgc synth, 30 s like FMA's clips), decoded as extraction decodes
(mono at the feature sample rate; the decode is timed too). Printed, and written to
bench/out/musicnn.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mgc import audio, fma, inputs, musicnn
from mgc.features import FeatureConfig
from mgc.segments import segment
from mgc.synth import SynthConfig, generate

HERE = Path(__file__).resolve().parent


def best_of(fn, repeats: int) -> float:
    """The fastest of `repeats` timed calls, in seconds (the least disturbed by other work)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def extraction_rates(corpus: Path) -> dict[str, float]:
    """Tracks/s of `mgc extract` on every core of a local Ray (the pipeline as users run it), with
    the default inputs, with musicnn beside them, and with musicnn on 3 segments per track."""
    from mgc.extract import ExtractConfig, run

    manifest = fma.manifest(str(corpus))
    rates = {}
    musicnn_inputs = ("logmel", "mfcc", "musicnn")
    # A first run warms the workers (imports, the network's weights in every worker), then each
    # setting runs on the same warm workers.
    for name, features in (("warm_up", FeatureConfig(inputs=musicnn_inputs)), ("default", FeatureConfig()),
                           ("with_musicnn", FeatureConfig(inputs=musicnn_inputs)), ("with_musicnn_3_patches", FeatureConfig(inputs=musicnn_inputs, musicnn_patches=3))):  # fmt: skip
        out = HERE / "out" / f"musicnn_extract_{name}"
        shutil.rmtree(out, ignore_errors=True)
        rates[name] = run(manifest, ExtractConfig(out=str(out), features=features, tracks_per_shard=2, progress=False))[
            "this_run"
        ]["tracks_per_s"]
        shutil.rmtree(out)
    del rates["warm_up"]
    rates["with_musicnn_vs_default"] = rates["default"] / rates["with_musicnn"]
    rates["with_musicnn_3_patches_vs_default"] = rates["default"] / rates["with_musicnn_3_patches"]
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracks", type=int, default=32)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cfg = FeatureConfig()
    corpus = HERE / "out" / f"musicnn_corpus_{args.tracks}x{args.seconds:g}s"
    if not (corpus / "fma_metadata").exists():
        generate(
            SynthConfig(out=str(corpus), tracks=args.tracks, seconds=args.seconds, broken_share=0.0, seed=11),
            progress=False,
        )
    paths = list(fma.manifest(str(corpus)).tracks["path"])
    tracks = [audio.load(p, cfg) for p in paths]
    musicnn.load()  # weights read once, outside the timings
    segments = [segment(y, cfg) for y in tracks]
    n_seg = sum(len(s) for s in segments)
    kind = inputs.get("musicnn")
    patches = np.concatenate([kind.prepare(s, cfg, {})[0] for s in segments])  # the stored input's own patches

    result: dict = {"tracks": args.tracks, "seconds": args.seconds, "segments": n_seg, "cores": os.cpu_count()}
    torch.set_num_threads(1)  # as in an extraction task: one core each
    r = {
        "decode_s": best_of(lambda: [audio.load(p, cfg) for p in paths], args.repeats),
        "logmel_mfcc_s": best_of(lambda: [inputs.compute(y, cfg, ("logmel", "mfcc")) for y in tracks], args.repeats),
        "front_end_s": best_of(lambda: [kind.prepare(s, cfg, {}) for s in segments], args.repeats),
        "network_f32_s": best_of(lambda: musicnn.run(patches), args.repeats),
        "network_bf16_s": best_of(lambda: musicnn.run(patches, bf16=True), args.repeats),
        "network_f32_batch_20_s": best_of(lambda: musicnn.run(patches, batch=20), args.repeats),
    }
    r = {k: v / args.tracks for k, v in r.items()}  # per track
    # Against the whole default extraction of a track: its decode, then log-mel and MFCC.
    r["musicnn_f32_vs_default_extraction"] = (r["front_end_s"] + r["network_f32_s"]) / (
        r["decode_s"] + r["logmel_mfcc_s"]
    )
    r["musicnn_bf16_vs_default_extraction"] = (r["front_end_s"] + r["network_bf16_s"]) / (
        r["decode_s"] + r["logmel_mfcc_s"]
    )
    r["bf16_speed_up"] = r["network_f32_s"] / r["network_bf16_s"]
    r["batch_2_vs_20_speed_up"] = r["network_f32_batch_20_s"] / r["network_f32_s"]
    result["one_core_per_track"] = r
    result["extraction_all_cores"] = extraction_rates(corpus)

    f32, bf16 = musicnn.run(patches), musicnn.run(patches, bf16=True)
    top5 = lambda t: np.sort(np.argsort(-t, 1)[:, :5], 1)  # noqa: E731
    cos = (
        (f32["embedding"] * bf16["embedding"]).sum(1)
        / np.linalg.norm(f32["embedding"], axis=1)
        / np.linalg.norm(bf16["embedding"], axis=1)
    )
    result["bf16_vs_f32"] = {
        "same_top5_tags_share": float((top5(f32["tags"]) == top5(bf16["tags"])).all(1).mean()),
        "max_tag_diff": float(np.abs(f32["tags"] - bf16["tags"]).max()),
        "embedding_cosine_min": float(cos.min()),
        "embedding_cosine_mean": float(cos.mean()),
    }
    stored = np.concatenate([f32["embedding"], f32["tags"]], 1).astype(np.float16)
    column = pa.FixedShapeTensorArray.from_numpy_ndarray(stored)
    path = HERE / "out" / "musicnn_column.parquet"
    path.parent.mkdir(exist_ok=True)
    pq.write_table(pa.table({"musicnn": column}), path, compression="zstd")  # as the shards are written
    result["bytes_per_segment"] = path.stat().st_size / n_seg
    path.unlink()
    (HERE / "out" / "musicnn.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
