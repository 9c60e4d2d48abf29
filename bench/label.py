"""Labelling benchmark: labelling vs extraction alone on the same files, and memory for an hour-long upload.

- throughput: `mgc.label.run` over the extraction benchmark's 200 synthetic 30 s MP3s against
  `mgc.extract.run` over the same files, on one local Ray instance with every core; steady
  rates are taken from the first output file written to the last (a run's start: workers,
  actors, the model, is left out), the median of `--repeats` runs. Labelling's
  extra work is the content hash and the network's forward pass, so with two networks: the
  training benchmark's mid-size cnn (1.13M parameters) and the tests' small one;
- memory: one hour of 44.1 kHz stereo FLAC labelled with the default cap (600 s analysed), the
  peak resident memory of any Ray worker process sampled every 50 ms.

    .venv/bin/python bench/label.py [--repeats 3]

Needs bench/out/corpus (bench/extract.py) and bench/out/train_runs/cnn/model (bench/train.py).
Results go to bench/out/label.json.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent


def peak_worker_rss(stop: threading.Event, out: list[int]) -> None:
    """Largest RSS of any ray:: worker process while `stop` is unset."""
    import psutil

    peak = 0
    while not stop.is_set():
        for p in psutil.process_iter(["cmdline", "memory_info"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if cmd.startswith("ray::") and p.info["memory_info"]:
                peak = max(peak, p.info["memory_info"].rss)
        time.sleep(0.05)
    out.append(peak)


def steady_rate(files, tracks_in) -> float:
    """Tracks per second from the first output file written to the last (by modification time):
    the pipeline's rate once it runs, without its start."""
    files = sorted(files, key=lambda f: f.stat().st_mtime_ns)
    span = (files[-1].stat().st_mtime_ns - files[0].stat().st_mtime_ns) / 1e9
    return sum(tracks_in(f) for f in files[1:]) / span


def main() -> None:
    import argparse

    import pyarrow.parquet as pq
    import ray
    import soundfile as sf

    from mgc import artifact, fma, label
    from mgc.extract import ExtractConfig
    from mgc.extract import run as extract
    from mgc.models import ModelConfig, build
    from mgc.synth import render

    work = HERE / "out"
    corpus, model = work / "corpus", work / "train_runs" / "cnn" / "model"
    if not (corpus / "fma_metadata").exists() or not model.exists():
        raise SystemExit("run bench/extract.py and bench/train.py first")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the median counts")
    repeats = parser.parse_args().repeats
    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)

    scratch = work / "label_bench"
    shutil.rmtree(scratch, ignore_errors=True)
    manifest = fma.manifest(str(corpus))
    extract(manifest, ExtractConfig(out=str(scratch / "warm"), tracks_per_shard=8, progress=False))  # start the workers
    # Steady rates come from the output files' times: a run's start (labelling starts its actors
    # and loads the model, ~8 s here) would otherwise dominate 200 tracks on 2 cores.
    ex_runs = [
        extract(manifest, ExtractConfig(out=str(scratch / f"features_{r}"), tracks_per_shard=8, progress=False))
        for r in range(repeats)
    ]

    def shard_tracks(f: Path) -> int:
        return len(pq.read_table(f, columns=["track_id"])["track_id"].unique())

    extract_rate = median(
        steady_rate((scratch / f"features_{r}" / "features").glob("*.parquet"), shard_tracks) for r in range(repeats)
    )
    extract_e2e = median(200 / r["this_run"]["wall_s"] for r in ex_runs)
    tracks = corpus / "_label_bench.csv"  # inside the corpus: manifests may not point outside their folder
    manifest.tracks[["path"]].to_csv(tracks, index=False)
    # The network's forward pass is labelling's extra cost, so two sizes: the training bench's
    # mid-size cnn, and the tests' small one (random weights: throughput does not depend on them).
    small_model = scratch / "small_model"
    _, meta = artifact.load(str(model))
    net = build(ModelConfig(name="cnn", n_classes=len(meta["labels"]), channels=(8, 16, 32, 32), dense=(64, 32)))
    artifact.save(str(small_model), net, meta["features"], meta["labels"])
    rates = {}
    for size, path in (("mid", model), ("small", small_model)):
        runs = [
            label.run(
                label.LabelConfig(
                    model=str(path),
                    input=str(tracks),
                    out=str(scratch / f"labels_{size}_{r}"),
                    files_per_batch=8,
                    progress=False,
                )
            )
            for r in range(repeats)
        ]
        steady = median(
            steady_rate(
                (scratch / f"labels_{size}_{r}" / "labels").glob("*.parquet"),
                lambda f: pq.ParquetFile(f).metadata.num_rows,
            )
            for r in range(repeats)
        )
        rates[size] = (steady, median(200 / r["seconds"] for r in runs))

    hour = scratch / "hour"
    hour.mkdir()
    x = render("Electronic", 1, 1, 3600.0, 44100)
    sf.write(hour / "one_hour.flac", x, 44100, format="FLAC", subtype="PCM_16")
    del x
    stop, peak = threading.Event(), []
    sampler = threading.Thread(target=peak_worker_rss, args=(stop, peak))
    sampler.start()
    long = label.run(
        label.LabelConfig(model=str(model), input=str(hour), out=str(scratch / "hour_labels"), progress=False)
    )
    stop.set()
    sampler.join()
    row = label.read_labels(str(scratch / "hour_labels")).iloc[0]

    result = {
        "cores": cores,
        "tracks": 200,
        "repeats": repeats,
        "extract_tracks_per_s_steady": round(extract_rate, 2),
        "extract_tracks_per_s_end_to_end": round(extract_e2e, 2),
        **{f"label_{size}_cnn_tracks_per_s_steady": round(r[0], 2) for size, r in rates.items()},
        **{f"label_{size}_cnn_tracks_per_s_end_to_end": round(r[1], 2) for size, r in rates.items()},
        **{f"label_{size}_cnn_vs_extract_steady": round(r[0] / extract_rate, 3) for size, r in rates.items()},
        "hour_file_status": row["status"],
        "hour_file_analysed_s": float(row["analysed_s"]),
        "hour_file_seconds": long["seconds"],
        "hour_file_peak_worker_rss_mib": round(peak[0] / 2**20, 1),
    }
    (work / "label.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\n{result['tracks']} tracks of 30 s, {cores} cores; tracks/s steady (first to last output file) and end to end"
    )
    print(f"extraction alone          {extract_rate:7.2f}   {extract_e2e:7.2f}")
    for size, (steady, e2e) in rates.items():
        print(
            f"labelling, {size:5s} cnn       {steady:7.2f}   {e2e:7.2f}   steady = {steady / extract_rate:.2f}x extraction (target >= 0.8x)"
        )
    print(
        f"one-hour upload: {row['status']}, {row['analysed_s']:.0f} s analysed, peak worker RSS {result['hour_file_peak_worker_rss_mib']:.0f} MiB (target < 1024)"
    )


if __name__ == "__main__":
    main()
