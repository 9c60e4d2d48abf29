"""Labelling benchmark: labelling vs extraction alone on the same files, and memory for an hour-long upload.

- throughput: `mgc.label.run` over the extraction benchmark's 200 synthetic 30 s MP3s against
  `mgc.extract.run` over the same files, on one local Ray instance with every core; steady
  rates are the marginal cost of the last 150 of 200 tracks over a 50-track run. Labelling's
  extra work is the content hash and the network's forward pass, so with two networks: the
  training benchmark's mid-size cnn (1.13M parameters) and the tests' small one;
- memory: one hour of 44.1 kHz stereo FLAC labelled with the default cap (600 s analysed), the
  peak resident memory of any Ray worker process sampled every 50 ms.

    .venv/bin/python bench/label.py

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


def main() -> None:
    import ray
    import soundfile as sf

    from mgc import artifact, fma, label
    from mgc.models import ModelConfig, build
    from mgc.extract import ExtractConfig
    from mgc.extract import run as extract
    from mgc.synth import render

    work = HERE / "out"
    corpus, model = work / "corpus", work / "train_runs" / "cnn" / "model"
    if not (corpus / "fma_metadata").exists() or not model.exists():
        raise SystemExit("run bench/extract.py and bench/train.py first")
    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)

    scratch = work / "label_bench"
    shutil.rmtree(scratch, ignore_errors=True)
    manifest = fma.manifest(str(corpus))
    extract(manifest, ExtractConfig(out=str(scratch / "warm"), tracks_per_shard=8, progress=False))  # start the workers
    # Each figure twice, on the first 50 tracks and on all 200: the difference is the steady
    # rate, free of a run's fixed start (labelling starts its actors and loads the model).
    small = fma.manifest(str(corpus))
    small.tracks = small.tracks.head(50)
    ex = {n: extract(m, ExtractConfig(out=str(scratch / f"features{n}"), tracks_per_shard=8, progress=False))["this_run"]["wall_s"] for n, m in ((50, small), (200, manifest))}
    lists = {}
    for n, m in ((50, small), (200, manifest)):
        lists[n] = corpus / f"_label_bench_{n}.csv"  # inside the corpus: manifests may not point outside their folder
        m.tracks[["path"]].to_csv(lists[n], index=False)
    # The network's forward pass is labelling's extra cost, so two sizes: the training bench's
    # mid-size cnn, and the tests' small one (random weights: throughput does not depend on them).
    small_model = scratch / "small_model"
    _, meta = artifact.load(str(model))
    net = build(ModelConfig(name="cnn", n_classes=len(meta["labels"]), channels=(8, 16, 32, 32), dense=(64, 32)))
    artifact.save(str(small_model), net, meta["features"], meta["labels"])
    rates = {}
    for size, path in (("mid", model), ("small", small_model)):
        lab = {n: label.run(label.LabelConfig(model=str(path), input=str(lists[n]), out=str(scratch / f"labels_{size}{n}"), files_per_batch=8, progress=False)) for n in (50, 200)}
        rates[size] = (150 / (lab[200]["seconds"] - lab[50]["seconds"]), 200 / lab[200]["seconds"])
    extract_rate = 150 / (ex[200] - ex[50])

    hour = scratch / "hour"
    hour.mkdir()
    x = render("Electronic", 1, 1, 3600.0, 44100)
    sf.write(hour / "one_hour.flac", x, 44100, format="FLAC", subtype="PCM_16")
    del x
    stop, peak = threading.Event(), []
    sampler = threading.Thread(target=peak_worker_rss, args=(stop, peak))
    sampler.start()
    long = label.run(label.LabelConfig(model=str(model), input=str(hour), out=str(scratch / "hour_labels"), progress=False))
    stop.set()
    sampler.join()
    row = label.read_labels(str(scratch / "hour_labels")).iloc[0]

    result = {
        "cores": cores,
        "tracks": 200,
        "extract_tracks_per_s_steady": round(extract_rate, 2),
        "extract_tracks_per_s_end_to_end": round(200 / ex[200], 2),
        **{f"label_{size}_cnn_tracks_per_s_steady": round(r[0], 2) for size, r in rates.items()},
        **{f"label_{size}_cnn_tracks_per_s_end_to_end": round(r[1], 2) for size, r in rates.items()},
        **{f"label_{size}_cnn_vs_extract_steady": round(r[0] / extract_rate, 3) for size, r in rates.items()},
        "hour_file_status": row["status"],
        "hour_file_analysed_s": float(row["analysed_s"]),
        "hour_file_seconds": long["seconds"],
        "hour_file_peak_worker_rss_mib": round(peak[0] / 2**20, 1),
    }
    (work / "label.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{result['tracks']} tracks of 30 s, {cores} cores; tracks/s steady (200 - 50 tracks) and end to end (200)")
    print(f"extraction alone          {extract_rate:7.2f}   {200 / ex[200]:7.2f}")
    for size, (steady, e2e) in rates.items():
        print(f"labelling, {size:5s} cnn       {steady:7.2f}   {e2e:7.2f}   steady = {steady / extract_rate:.2f}x extraction (target >= 0.8x)")
    print(f"one-hour upload: {row['status']}, {row['analysed_s']:.0f} s analysed, peak worker RSS {result['hour_file_peak_worker_rss_mib']:.0f} MiB (target < 1024)")


if __name__ == "__main__":
    main()
