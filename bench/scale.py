"""Scale benchmark: every stage at 1k, 10k and FMA large's 106,574 tracks on one machine.

Each size gets its own FMA-format corpus from `mgc synth --link-pool --fma-proportions` (a pool of
short clips hard-linked under every track's FMA path, a full-width tracks.csv with FMA large's
subset, split and genre_top shares), then, on one Ray head started here (`ray start --head`), each
stage runs as its own process so that its driver's memory is its own:

  1. metadata: tracks.csv read and the small / medium / large manifests built (mgc.fma); and,
     where ../shared/fma_sample is present, the read of a tracks.csv as wide as the real file's
     (its real records repeated), which the synthetic one, mostly empty cells, understates;
  2. extract: `mgc extract`, SIGKILLed at about half its shards, then the same command again;
     the re-run's planning (list the shards, skip the finished chunks) is timed on its own, and
     the output is checked: exactly one set of segments per good track;
  3. train path: `prepare()` (checks, index, normalisation statistics), one pass over the
     training split through Ray Data with no model, rank 0's validation pass, and a fixed number
     of training steps of the mid-size cnn fed by the same Ray Data iterator;
  4. label: `mgc label` over the corpus's audio folder as uploads, then 1,000 new files added and
     the command re-run (the re-run lists, hashes and skips what is done);
  5. embed: `mgc embed` over the extraction output, then `mgc similar`'s search: one query and
     1,000 at once against the whole catalogue.

Per stage and size: wall time, per-track cost (core-s), the driver's peak RSS and USS, Ray workers' peak USS, files
written. Results: bench/out/scale.json, bench/scale.png (bench/README.md shows it), and a
Markdown table on stdout.
Labelling and embedding use the baseline model (trained on the 1k corpus), so that they measure
the path, not CPU convolution.

    .venv/bin/python bench/scale.py [--sizes 1000,10000,106574] [--workdir bench/out/scale]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MGC = [sys.executable, "-m", "mgc.cli"]
MB = 1 << 20
SEGMENT_S = 4.0  # one 3 s segment a clip: decoding costs little, the path is what is measured
POOL = 256
TRAIN_STEPS = 40
# The real tracks.csv's first 682 records (not in a fresh clone): the synthetic file has every
# column, but the real one carries artists' bios and album notes, about 6x the bytes a row.
REAL_SAMPLE = REPO.parent / "shared" / "fma_sample" / "tracks.csv"
MID = ["--channels", "16,32,64,64", "--dense", "256,64,32"]


class Peak:
    """Samples, every 0.2 s while a process runs, its RSS and the private memory (USS) of Ray's
    worker processes: a worker's RSS also counts the object store's shared pages it maps."""

    def __init__(self, pid: int) -> None:
        self.pid, self.driver, self.driver_uss, self.worker = pid, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                info = proc.info
                if not info["memory_info"]:
                    continue
                if info["pid"] == self.pid:
                    self.driver = max(self.driver, info["memory_info"].rss)
                    with contextlib.suppress(psutil.Error):
                        self.driver_uss = max(self.driver_uss, proc.memory_full_info().uss)
                elif " ".join(info["cmdline"] or []).startswith("ray::") and "IDLE" not in " ".join(
                    info["cmdline"] or []
                ):
                    with contextlib.suppress(psutil.Error):
                        self.worker = max(self.worker, proc.memory_full_info().uss)
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def measure(cmd: list[str], env: dict[str, str], kill_when=None) -> dict:
    """Run `cmd`; its wall time, driver and worker peak RSS, and its JSON result (last stdout line
    of our own stages). `kill_when()` true: SIGKILL the process there."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = Peak(proc.pid)
    killed = False
    if kill_when is not None:
        while proc.poll() is None:
            if kill_when():
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.2)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    peak.stop()
    if proc.returncode != 0 and not killed:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    last = out.strip().splitlines()[-1] if out.strip() else ""
    result = json.loads(last) if last.startswith("{") else {}
    return {"wall_s": round(wall, 2), "driver_mib": round(peak.driver / MB), "driver_uss_mib": round(peak.driver_uss / MB),
            "worker_mib": round(peak.worker / MB), "killed": killed, "result": result}  # fmt: skip


def count_files(path: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(path)) if path.exists() else 0


# ---------------------------------------------------------------------------------------------
# Stages run in their own process (`bench/scale.py --stage NAME ARGS_JSON`), printing one JSON line.


def stage_metadata(root: str) -> dict:
    from mgc import fma

    t0 = time.perf_counter()
    tracks = fma.read_tracks(os.path.join(root, "fma_metadata", "tracks.csv"))
    read_s = time.perf_counter() - t0
    sizes, times = {}, {}
    for subset in ("small", "medium", "large"):
        t = time.perf_counter()
        sizes[subset] = len(fma.manifest(root, "fma_large", subset))
        times[subset] = round(time.perf_counter() - t, 2)
    return {"rows": len(tracks), "read_s": round(read_s, 2), "manifest_s": times, "tracks": sizes}


def real_width_csv(work: Path, n: int) -> Path:
    """A tracks.csv of n rows at the real file's width: the real sample's records repeated, their
    track ids renumbered 1..n (FMA large's real file is ~200 MB at this width)."""
    import numpy as np
    import pandas as pd

    path = work / f"real-width-{n}.csv"
    if not path.exists():
        sample = pd.read_csv(REAL_SAMPLE, header=[0, 1], index_col=0)
        rows = pd.concat([sample] * -(-n // len(sample))).iloc[:n]
        rows.index = pd.Index(np.arange(1, n + 1), name="track_id")
        rows.to_csv(path)
    return path


def stage_metadata_real_width(path: str) -> dict:
    """What mgc reads of a real-width tracks.csv: the columns it uses, streamed."""
    from mgc import fma

    t0 = time.perf_counter()
    tracks = fma.read_tracks(path)
    return {
        "rows": len(tracks),
        "read_s": round(time.perf_counter() - t0, 2),
        "file_mib": round(os.path.getsize(path) / MB),
    }


def stage_plan(root: str, out: str) -> dict:
    """What `mgc extract` does before its first task, on its re-run: the manifest, the shard listing, the plan."""
    from mgc import fma, storage
    from mgc.extract import plan_chunks, shard_name

    t0 = time.perf_counter()
    manifest = fma.manifest(root, "fma_large", "large")
    t1 = time.perf_counter()
    done = set(storage.list_files(storage.join(out, "features"), ".parquet"))
    t2 = time.perf_counter()
    todo = [c for c in plan_chunks(manifest, 32) if shard_name(c["chunk"]) not in done]
    t3 = time.perf_counter()
    return {
        "manifest_s": round(t1 - t0, 2),
        "list_s": round(t2 - t1, 2),
        "plan_s": round(t3 - t2, 2),
        "total_s": round(t3 - t0, 2),
        "done": len(done),
        "todo": len(todo),
    }


def stage_check_output(out: str, truth_csv: str) -> dict:
    """Every track of the corpus once: its segments exactly once in the shards, or one reject row."""
    import pandas as pd

    from mgc import storage

    rows = storage.read_parquet(os.path.join(out, "features"), columns=["track_id", "segment"]).to_pandas()
    rejected = storage.read_parquet(os.path.join(out, "rejects"), columns=["track_id"]).to_pandas()["track_id"]
    every = set(pd.read_csv(truth_csv)["track_id"])
    extracted = set(rows["track_id"])
    return {
        "segments": len(rows),
        "duplicate_segments": int(rows.duplicated().sum()),
        "tracks": len(extracted),
        "rejects": len(rejected),
        "duplicate_rejects": int(rejected.duplicated().sum()),
        "unaccounted": len(every - extracted - set(rejected)) + len(extracted & set(rejected)),
    }


def stage_train_path(features: str, runs: str) -> dict:
    import torch

    from mgc import session, train
    from mgc.models import build

    torch.set_num_threads(1)
    cfg = train.TrainConfig(features=features, model="cnn", channels=(16, 32, 64, 64), dense=(256, 64, 32), batch_size=32,
                            storage_path=runs, name="scale", progress=False)  # fmt: skip
    session.connect()
    t0 = time.perf_counter()
    checked = train.check(cfg)
    t1 = time.perf_counter()
    prep = train.prepare(cfg, checked)
    t2 = time.perf_counter()
    cols = list(prep.model.inputs)
    seen = 0
    for batch in train.dataset(features, "training", prep.target, cols).iter_batches(
        batch_size=256, batch_format="numpy"
    ):
        seen += len(batch["target"])
    t3 = time.perf_counter()
    net = build(prep.model, prep.norm)
    val = train.dataset(features, "validation", prep.target, cols).iter_torch_batches(
        batch_size=256, **train.batch_dtypes(prep.model, False)
    )
    ids, _, _ = train.predict(net, val, torch.device("cpu"), False)
    t4 = time.perf_counter()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    aug = cfg.augment(0, "cpu")
    first = None
    net.train()
    t5 = time.perf_counter()
    step = 0
    while step < TRAIN_STEPS + 5:  # small corpora: several passes
        batches = train.dataset(features, "training", prep.target, cols).iter_torch_batches(
            batch_size=32,
            local_shuffle_buffer_size=cfg.shuffle_buffer,
            local_shuffle_seed=step,
            **train.batch_dtypes(prep.model, False),
        )
        for batch in batches:
            if step == 5:
                first = time.perf_counter()  # after the shuffle buffer's first fill
            y = batch["target"]
            x, targets = aug.mix(
                {n: batch[n] for n in prep.model.inputs},
                torch.nn.functional.one_hot(y, prep.model.n_classes).float(),
                batch["track_id"],
            )
            loss = torch.nn.functional.cross_entropy(net(x, augment=aug), targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == TRAIN_STEPS + 5:
                break
    t6 = time.perf_counter()
    return {
        "check_s": round(t1 - t0, 2), "prepare_s": round(t2 - t1, 2), "train_segments": seen,
        "epoch_no_model_s": round(t3 - t2, 2), "segments_per_s": round(seen / (t3 - t2), 1),
        "validation_segments": len(ids), "validation_s": round(t4 - t3, 2),
        "first_steps_s": round(first - t5, 2), "steps_per_s": round(TRAIN_STEPS / (t6 - first), 2),
    }  # fmt: skip


def stage_search(catalogue: str) -> dict:
    import numpy as np

    from mgc import recommend

    t0 = time.perf_counter()
    cat = recommend.load_catalogue(catalogue)
    t1 = time.perf_counter()
    one = recommend.similar(cat, np.asarray(cat["embedding"].iloc[0]), k=10, exclude_id=str(cat["id"].iloc[0]))
    t2 = time.perf_counter()
    emb = np.stack(cat["embedding"].to_numpy())
    queries = emb[np.random.default_rng(0).choice(len(emb), size=min(1000, len(emb)), replace=False)]
    t3 = time.perf_counter()
    idx, _ = recommend.nearest(queries, emb, 10)
    t4 = time.perf_counter()
    assert len(one) == 10 and idx.shape == (len(queries), 10)
    return {
        "catalogue": len(cat),
        "load_s": round(t1 - t0, 2),
        "one_query_s": round(t2 - t1, 3),
        "queries": len(queries),
        "batch_s": round(t4 - t3, 2),
    }


STAGES = {
    "metadata": stage_metadata,
    "metadata_real_width": stage_metadata_real_width,
    "plan": stage_plan,
    "check_output": stage_check_output,
    "train_path": stage_train_path,
    "search": stage_search,
}


def own(stage: str, *args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--stage", stage, json.dumps(args)]


# ---------------------------------------------------------------------------------------------
# The driver of the benchmark


def corpus(work: Path, n: int) -> Path:
    root = work / f"corpus-{n}"
    subprocess.run([*MGC, "synth", "--out", str(root), "--tracks", str(n), "--seconds", str(SEGMENT_S), "--link-pool", str(POOL),
                    "--fma-proportions", "--broken-share", "0.01", "--no-progress"], check=True, cwd=REPO)  # fmt: skip
    return root


def run_size(work: Path, n: int, env: dict[str, str], model: Path, cores: int) -> dict:
    root = corpus(work, n)
    features, labels, catalogue = work / f"features-{n}", work / f"labels-{n}", work / f"catalogue-{n}"
    for p in (features, labels, catalogue, work / f"runs-{n}"):
        subprocess.run(["rm", "-rf", str(p)], check=True)
    stages: dict[str, dict] = {}

    stages["metadata"] = measure(own("metadata", str(root)), env)
    print(f"[{n}] metadata {stages['metadata']['wall_s']} s", flush=True)
    if REAL_SAMPLE.exists():
        stages["metadata_real_width"] = measure(own("metadata_real_width", str(real_width_csv(work, n))), env)
        print(f"[{n}] metadata at the real file's width {stages['metadata_real_width']}", flush=True)

    chunks = -(-n // 32)
    extract = [*MGC, "extract", "--fma-root", str(root), "--subset", "large", "--out", str(features), "--no-progress"]
    first = measure(extract, env, kill_when=lambda: count_files(features / "features") >= chunks // 2)
    plan = measure(own("plan", str(root), str(features)), env)
    second = measure(extract, env)
    check = measure(own("check_output", str(features), str(root / "fma_metadata" / "synth_truth.csv")), env)["result"]
    assert check["duplicate_segments"] == check["duplicate_rejects"] == check["unaccounted"] == 0, check
    stages["extract"] = {
        "wall_s": round(first["wall_s"] + second["wall_s"], 2), "driver_mib": max(first["driver_mib"], second["driver_mib"]),
        "driver_uss_mib": max(first["driver_uss_mib"], second["driver_uss_mib"]),
        "worker_mib": max(first["worker_mib"], second["worker_mib"]), "killed_at_shards": plan["result"]["done"], "shards": chunks,
        "rerun_plan": plan["result"], "rerun_wall_s": second["wall_s"], "output": check, "files": count_files(features),
    }  # fmt: skip
    print(f"[{n}] extract {stages['extract']}", flush=True)

    stages["train_path"] = measure(own("train_path", str(features), str(work / f"runs-{n}")), env)
    print(f"[{n}] train path {stages['train_path']}", flush=True)

    audio = root / "fma_large"
    new = audio / "new"
    shutil.rmtree(new, ignore_errors=True)  # a previous run's uploads: the first labelling is of the corpus alone
    label = [*MGC, "label", "--model", str(model), "--input", str(audio), "--out", str(labels), "--no-progress"]
    stages["label"] = measure(label, env)
    stages["label"]["files"] = count_files(labels)
    # 1,000 new uploads (links to pool clips under new paths), then the same command again.
    pool = sorted((root / "_link_pool").glob("*.mp3"))
    new.mkdir()
    for i in range(1000):
        target = new / f"upload-{i:04d}.mp3"
        os.link(pool[i % len(pool)], target)
    listing = measure([sys.executable, "-c", f"import time,json; t=time.perf_counter(); from mgc.label import list_inputs; n=len(list_inputs({str(audio)!r}).rows); print(json.dumps({{'files': n, 's': round(time.perf_counter()-t, 2)}}))"], env)  # fmt: skip
    again = measure(label, env)
    stages["label"]["rerun"] = {**again, "listing_s": listing["result"]["s"], "listed": listing["result"]["files"],
                                "summary": json.loads((labels / "_summary.json").read_text())}  # fmt: skip
    print(f"[{n}] label {stages['label']}", flush=True)

    embed = [
        *MGC,
        "embed",
        "--features",
        str(features),
        "--model",
        str(model),
        "--out",
        str(catalogue),
        "--no-progress",
    ]
    stages["embed"] = measure(embed, env)
    stages["embed"]["files"] = count_files(catalogue)
    stages["search"] = measure(own("search", str(catalogue / "catalogue.parquet")), env)
    print(f"[{n}] embed {stages['embed']['wall_s']} s, search {stages['search']['result']}", flush=True)

    # What grows with the corpus: the whole stage, less fixed-size work (the train path's steps,
    # the search's query batch, which are reported as rates).
    t = stages["train_path"]["result"]
    stages["train_path"]["scaled_s"] = round(
        t["check_s"] + t["prepare_s"] + t["epoch_no_model_s"] + t["validation_s"], 2
    )
    stages["search"]["scaled_s"] = stages["search"]["result"]["load_s"]
    for s in stages.values():
        s["core_ms_per_track"] = round(s.get("scaled_s", s["wall_s"]) * cores / n * 1000, 3)
    return stages


def plot(results: dict, path: Path) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(int(n) for n in results)
    names = list(results[str(sizes[0])])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        line = a.plot(sizes, [results[str(n)][name]["core_ms_per_track"] for n in sizes], marker="o", label=name)[0]
        b.plot(sizes, [results[str(n)][name]["driver_mib"] for n in sizes], marker="o", color=line.get_color())
        b.plot(
            sizes,
            [results[str(n)][name].get("driver_uss_mib", np.nan) for n in sizes],
            marker=".",
            linestyle="--",
            color=line.get_color(),
        )
    for ax, title in ((a, "per-track cost (core-ms)"), (b, "driver peak RSS (solid), USS (dashed), MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tracks in the corpus")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: dict, cores: int) -> str:
    """Per stage: each size's wall s and core-ms per track, then the marginal core-ms per added
    track between consecutive sizes (what a linear stage keeps constant), and driver peak RSS."""
    sizes = sorted(int(n) for n in results)
    names = list(results[str(sizes[0])])
    head = [f"{n:,} tracks" for n in sizes] + [f"marginal {a:,}->{b:,}" for a, b in zip(sizes, sizes[1:])]
    head += ["driver RSS MiB", "driver USS MiB", "worker USS MiB"]
    lines = ["| stage | " + " | ".join(head) + " |", "| --- |" + " --- |" * len(head)]
    for name in names:
        cells = [results[str(n)][name] for n in sizes]
        scaled = [c.get("scaled_s", c["wall_s"]) for c in cells]
        row = [f"{c['wall_s']} s, {c['core_ms_per_track']} core-ms" for c in cells]
        row += [
            f"{(scaled[i + 1] - scaled[i]) * cores / (b - a) * 1000:.3f} core-ms"
            for i, (a, b) in enumerate(zip(sizes, sizes[1:]))
        ]
        row += [" / ".join(str(c[k]) for c in cells) for k in ("driver_mib", "driver_uss_mib", "worker_mib")]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def start_head(env: dict[str, str], cores: int) -> tuple[subprocess.Popen, str]:
    """A Ray head of this benchmark's own (`ray start --head --block`, its own temporary folder
    and process group), once it says it runs."""
    temp = tempfile.mkdtemp(prefix="mgcscale", dir="/tmp")  # short: Ray's socket paths live under it
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port=6399", "--node-ip-address=127.0.0.1",
           f"--num-cpus={cores}", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    for line in proc.stdout:
        if "Ray runtime started" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, temp
    raise SystemExit("ray start --head ended before it started")


def stop_head(head: tuple[subprocess.Popen, str]) -> None:
    """Its process group, then anything left that names its temporary folder; never `ray stop`,
    which would stop every Ray of this user."""
    proc, temp = head
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    for p in psutil.process_iter(["cmdline"]):
        if any(temp in part for part in p.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                p.kill()
    shutil.rmtree(temp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,106574")
    ap.add_argument("--workdir", default=str(HERE / "out" / "scale"))
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("args", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        print(json.dumps(STAGES[args.stage](*json.loads(args.args))), flush=True)
        return

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    cores = os.cpu_count() or 1
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:6399", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex(),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_maximum_startup_concurrency": "16",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip
    head = start_head(env, cores)
    results: dict[str, dict] = {}
    out_json = HERE / "out" / "scale.json"
    try:
        # The model for labelling and embedding: the baseline, trained once on the smallest corpus.
        smallest = min(sizes)
        root = corpus(work, smallest)
        model_features = work / "model-features"
        if not (work / "model" / "baseline" / "model" / "model.json").exists():
            subprocess.run(
                [*MGC, "extract", "--fma-root", str(root), "--out", str(model_features), "--no-progress"],
                check=True,
                cwd=REPO,
                env=env,
                capture_output=True,
            )
            subprocess.run([*MGC, "train", "--features", str(model_features), "--model", "baseline", "--storage-path", str(work / "model"), "--no-progress"],
                           check=True, cwd=REPO, env=env, capture_output=True)  # fmt: skip
        model = work / "model" / "baseline" / "model"
        for n in sizes:
            results[str(n)] = run_size(work, n, env, model, cores)
            out_json.write_text(json.dumps({"cores": cores, "results": results}, indent=2) + "\n")
    finally:
        stop_head(head)
    plot(results, HERE / "scale.png")  # shown in bench/README.md
    print(table(results, cores))


if __name__ == "__main__":
    main()
