"""Serving benchmark: `mgc serve` against the same work in a plain process, per model.

For one clip (a 30 s synthetic MP3) and each model given:

- latency: p50/p99 of POST /label, one request at a time, against the same decode + features +
  forward pass in this process (`mgc.serve.service.Service.label`, what a replica runs), and
  their ratio: what Serve, HTTP and the batch queue add;
- throughput: requests/s at concurrency 1, 8 and 32, with batching (--max-batch-size 32) and
  without (1), one CPU replica;
- memory: the replica's resident memory before and after `--memory-requests` uploads (first model
  only), and every non-200 answer counted as an error.

    .venv/bin/python bench/serve.py --models baseline=runs/baseline/model,cnn=runs/cnn/model,head=runs/head/model \\
        --clip clip30.mp3 [--memory-requests 2000]

Starts a Ray of its own (RAY_ADDRESS=local) and Serve on a free port, and stops them. Results go to
bench/out/serve.json and print as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

HERE = Path(__file__).resolve().parent
LEVELS = {1: 16, 8: 48, 32: 96}  # concurrency -> requests sent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plain(model: str, data: bytes, n: int) -> list[float]:
    """Seconds per upload of the replica's own work (Service.label) in this process."""
    from mgc.serve.config import ServeConfig
    from mgc.serve.service import Service

    service = Service(ServeConfig(model=model))
    service.label([(data, "clip")])  # warm-up
    times = []
    for _ in range(n):
        t = time.perf_counter()
        assert service.label([(data, "clip")])[0]["status"] == "ok"
        times.append(time.perf_counter() - t)
    return times


def deploy(model: str, port: int, batch: int) -> str:
    from ray import serve

    from mgc.serve import app
    from mgc.serve.config import ServeConfig

    cfg = ServeConfig(model=model, port=port, max_batch_size=batch, batch_wait_s=0.01, name="bench")
    serve.run(app.application(cfg), name=cfg.name, route_prefix="/")
    return f"http://127.0.0.1:{port}"


def post(url: str, data: bytes) -> tuple[float, int]:
    t = time.perf_counter()
    try:
        status = requests.post(url + "/label", data=data, timeout=300).status_code
    except requests.RequestException:
        status = 0
    return time.perf_counter() - t, status


def throughput(url: str, data: bytes, concurrency: int, total: int) -> dict:
    """Requests/s with `concurrency` clients sending `total` uploads, and the errors."""
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda _: post(url, data), range(total)))
    wall = time.perf_counter() - start
    return {"rps": round(total / wall, 2), "errors": sum(s != 200 for _, s in results)}


def replica_rss(url: str) -> int:
    import psutil

    return psutil.Process(requests.get(url + "/health", timeout=30).json()["pid"]).memory_info().rss


def bench_model(name: str, model: str, data: bytes, port: int, memory_requests: int) -> dict:
    """Every figure of one model."""
    from ray import serve

    out: dict = {"model": name}
    local = plain(model, data, 20)
    out["plain_p50_ms"], out["plain_p99_ms"] = (round(1000 * float(np.percentile(local, q)), 1) for q in (50, 99))
    for batch in (32, 1):
        url = deploy(model, port, batch)
        key = "batched" if batch > 1 else "unbatched"
        for _ in range(3):  # warm-up: a new replica's first forward passes are slower
            post(url, data)
        if batch > 1:
            served = [post(url, data) for _ in range(20)]
            lat = [t for t, s in served]
            out["serve_p50_ms"], out["serve_p99_ms"] = (round(1000 * float(np.percentile(lat, q)), 1) for q in (50, 99))
            out["ratio_p50"] = round(out["serve_p50_ms"] / out["plain_p50_ms"], 2)
            out["latency_errors"] = sum(s != 200 for _, s in served)
        for c, total in LEVELS.items():
            out[f"{key}_c{c}"] = throughput(url, data, c, total)
        if batch > 1 and memory_requests:
            before = replica_rss(url)
            run = throughput(url, data, 8, memory_requests)
            out["memory"] = {"requests": memory_requests, "rss_before_mb": round(before / 2**20, 1),
                             "rss_after_mb": round(replica_rss(url) / 2**20, 1), **run}  # fmt: skip
        serve.delete("bench")
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["| model | plain p50 / p99 ms | served p50 / p99 ms | served / plain, p50 | "
             + " | ".join(f"req/s c={c} batched / unbatched" for c in LEVELS) + " | errors |",
             "| --- " * (5 + len(LEVELS)) + "|"]  # fmt: skip
    for r in rows:
        errors = r["latency_errors"] + sum(r[f"{k}_c{c}"]["errors"] for k in ("batched", "unbatched") for c in LEVELS)
        cells = [f"{r['batched_c' + str(c)]['rps']} / {r['unbatched_c' + str(c)]['rps']}" for c in LEVELS]
        lines.append(f"| {r['model']} | {r['plain_p50_ms']} / {r['plain_p99_ms']} | {r['serve_p50_ms']} / "
                     f"{r['serve_p99_ms']} | {r['ratio_p50']} | " + " | ".join(cells) + f" | {errors} |")  # fmt: skip
    for r in rows:
        if "memory" in r:
            m = r["memory"]
            lines.append(f"\nReplica memory ({r['model']}): {m['rss_before_mb']} MB before, {m['rss_after_mb']} MB "
                         f"after {m['requests']} uploads at concurrency 8 ({m['rps']} req/s, {m['errors']} errors).")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", required=True, help="name=artifact,... (e.g. baseline=runs/baseline/model)")
    p.add_argument("--clip", required=True, help="the audio file every request uploads (a 30 s clip)")
    p.add_argument("--memory-requests", type=int, default=2000, help="uploads between the two memory readings")
    args = p.parse_args()
    os.environ["RAY_ADDRESS"] = "local"  # a Ray of its own: never a `ray start` cluster's Serve, which it shuts down
    from ray import serve

    from mgc import session

    session.connect()
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    data = Path(args.clip).read_bytes()
    rows = []
    try:
        for i, item in enumerate(args.models.split(",")):
            name, model = item.split("=", 1)
            rows.append(bench_model(name, model, data, port, args.memory_requests if i == 0 else 0))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        serve.shutdown()
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "serve.json").write_text(json.dumps(rows, indent=2))
    print(markdown(rows))


if __name__ == "__main__":
    main()
