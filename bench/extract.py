"""Extraction benchmark: our Ray Data job vs the published notebooks' loop and the decode floor.

On one synthetic corpus of 30 s 320 kbit/s stereo MP3s (FMA-like), measured in one run:
  (a) naive: the notebooks' sequential loop, librosa.load + melspectrogram + MFCC per segment;
  (b) floor: decode + resample only (mgc.audio.load), one core;
  (c) ours:  mgc.extract on a local Ray instance using every core (the default inputs, log-mel
      and MFCC), then again with --inputs logmel,mfcc,waveform.
Prints per-track costs, the ratios the targets are stated in, the projected wall time of the full
FMA (106,574 tracks) on a 16-core node, peak worker memory, whether the driver's memory grows
with the corpus (4x the tracks), and each input's bytes per segment in the Parquet shards with the
storage that projects to for FMA large. Results also go to bench/out/extract.json.

    .venv/bin/python bench/extract.py [--tracks 200]
"""

from __future__ import annotations

import os

# One thread per process everywhere, as Ray gives each task one CPU.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402

FMA_LARGE = 106_574
HERE = Path(__file__).resolve().parent


def naive(paths: list[str]) -> None:
    import librosa

    for p in paths:
        y, sr = librosa.load(p, sr=22050, mono=True)
        for i in range(len(y) // 66150):
            seg = y[i * 66150 : (i + 1) * 66150]
            S = librosa.power_to_db(
                librosa.feature.melspectrogram(y=seg, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
            )
            librosa.feature.mfcc(S=S, n_mfcc=20)


def floor(paths: list[str]) -> None:
    from mgc.audio import load
    from mgc.features import FeatureConfig

    cfg = FeatureConfig()
    for p in paths:
        load(p, cfg)


class WorkerMemory:
    """Samples the RSS of Ray worker processes (proctitle 'ray::...') while a job runs."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if cmd.startswith("ray::") and "IDLE" not in cmd and proc.info["memory_info"]:
                    self.peak = max(self.peak, proc.info["memory_info"].rss)
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bytes_per_segment(out: Path) -> dict[str, float]:
    """Each column's compressed bytes in the shards, per segment (row)."""
    import pyarrow.parquet as pq

    totals: dict[str, int] = {}
    rows = 0
    for f in sorted((out / "features").glob("part-*.parquet")):
        meta = pq.ParquetFile(f).metadata
        rows += meta.num_rows
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                name = column.path_in_schema.split(".")[0]
                totals[name] = totals.get(name, 0) + column.total_compressed_size
    return {name: size / rows for name, size in totals.items()}


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=200)
    ap.add_argument("--workdir", default=str(HERE / "out"))
    args = ap.parse_args()

    import ray

    from mgc import fma
    from mgc.extract import ExtractConfig, run
    from mgc.features import FeatureConfig
    from mgc.manifest import Manifest
    from mgc.synth import SynthConfig, generate

    work = Path(args.workdir)
    corpus = work / "corpus"
    print(f"corpus: {args.tracks} synthetic 30 s tracks (320 kbit/s stereo MP3) in {corpus}")
    generate(SynthConfig(out=str(corpus), tracks=args.tracks, seconds=30.0, broken_share=0.0, seed=11))
    manifest = fma.manifest(str(corpus), "fma_large", "large")
    paths = manifest.tracks["path"].tolist()
    n = len(paths)
    cores = os.cpu_count() or 1

    t_floor = timed(floor, paths)
    t_naive = timed(naive, paths)

    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    mb = 1 << 20
    quarter = Manifest(manifest.tracks.head(n // 4), manifest.labels, manifest.source)

    def extract(m, name: str, features: FeatureConfig = FeatureConfig()) -> tuple[float, dict]:
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        summary = run(m, ExtractConfig(out=str(out), tracks_per_shard=8, features=features, progress=False))
        return time.perf_counter() - t0, summary

    with WorkerMemory() as mem:
        _, cold = extract(quarter, "features_cold")  # starts the workers
        t_quarter, _ = extract(quarter, "features_quarter")
        driver_quarter = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t_ours, summary = extract(manifest, "features")
        driver_full = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Every input: the same corpus again (warm workers), shards beside bench/models.py's input.
    t_all, _ = extract(manifest, "features_all", FeatureConfig(inputs=("logmel", "mfcc", "waveform")))
    assert summary["tracks_ok"] == n, summary

    per_floor = t_floor / n
    per_naive = t_naive / n
    per_core_ours = t_ours * cores / n
    # Steady state: the extra tracks of the full run over the quarter run, free of the fixed
    # start-up of a Ray Data job (about a second) that a 200-track run cannot amortise.
    marginal = (t_ours - t_quarter) * cores / (n - len(quarter))
    fixed = max(0.0, t_ours - n * marginal / cores)
    projected = fixed + FMA_LARGE * marginal / 16
    result = {
        "tracks": n,
        "cores": cores,
        "naive_s_per_track": round(per_naive, 4),
        "floor_s_per_track": round(per_floor, 4),
        "ours_wall_s": round(t_ours, 2),
        "ours_tracks_per_s": round(n / t_ours, 2),
        "ours_cold_tracks_per_s": cold["this_run"]["tracks_per_s"],
        "ours_core_s_per_track": round(per_core_ours, 4),
        "ours_marginal_core_s_per_track": round(marginal, 4),
        "ours_fixed_s": round(fixed, 2),
        "ratio_ours_per_core_vs_floor": round(per_core_ours / per_floor, 3),
        "ratio_ours_marginal_vs_floor": round(marginal / per_floor, 3),
        "speedup_vs_naive": round(t_naive / t_ours, 2),
        "projected_fma_large_16_cores_min": round(projected / 60, 1),
        "worker_peak_rss_mib": round(mem.peak / mb),
        "driver_peak_rss_mib": {
            f"{len(quarter)} tracks": round(driver_quarter / mb),
            f"{n} tracks": round(driver_full / mb),
        },
        "every_input_tracks_per_s": round(n / t_all, 2),
        "ratio_every_input_vs_default_tracks_per_s": round(t_ours / t_all, 3),
        "bytes_per_segment": {k: round(v) for k, v in bytes_per_segment(work / "features_all").items()},
    }
    # FMA large: 106,574 clips of 30 s, 10 segments each (a few are shorter or broken: an upper bound).
    result["fma_large_gb"] = {
        k: round(v * FMA_LARGE * 10 / 1e9, 1)
        for k, v in result["bytes_per_segment"].items()
        if k in ("logmel", "mfcc", "waveform")
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "extract.json").write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{'stage':<48}{'s/track':>10}")
    print(f"{'(a) naive loop, librosa, 1 core':<48}{per_naive:>10.4f}")
    print(f"{'(b) decode+resample floor, 1 core':<48}{per_floor:>10.4f}")
    print(f"{f'(c) mgc.extract on Ray, {cores} cores, core-s, end to end':<48}{per_core_ours:>10.4f}")
    print(f"{f'(c) mgc.extract on Ray, {cores} cores, core-s, steady':<48}{marginal:>10.4f}")
    print(f"\n(c)/(b) per core, steady      {result['ratio_ours_marginal_vs_floor']:.2f}x   (target <= 1.3)")
    print(
        f"(c)/(b) per core, end to end  {result['ratio_ours_per_core_vs_floor']:.2f}x   (includes {fixed:.1f} s fixed start-up)"
    )
    print(f"(c) speed-up over (a)         {result['speedup_vs_naive']:.2f}x   (target >= 1.7 on 2 cores)")
    print(
        f"(c) throughput                {result['ours_tracks_per_s']:.1f} tracks/s warm, {result['ours_cold_tracks_per_s']} cold"
    )
    print(f"FMA large on 16 cores         {result['projected_fma_large_16_cores_min']:.1f} min projected (target < 10)")
    print(f"worker peak RSS               {result['worker_peak_rss_mib']} MiB (target < 1024)")
    print(
        f"driver peak RSS               {driver_quarter / mb:.0f} MiB at {len(quarter)} tracks, {driver_full / mb:.0f} MiB at {n} tracks"
    )
    print(
        f"with the waveform too         {result['every_input_tracks_per_s']:.1f} tracks/s, {result['ratio_every_input_vs_default_tracks_per_s']:.2f}x the default inputs' rate"
    )
    for name, size in result["bytes_per_segment"].items():
        if name in result["fma_large_gb"]:
            print(
                f"  {name:<10} {size / 1024:8.1f} KiB per 3 s segment in Parquet, {result['fma_large_gb'][name]:7.1f} GB for FMA large"
            )


if __name__ == "__main__":
    main()
