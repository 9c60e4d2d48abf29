"""Reading shards through Ray Data: Ray 2.60's default Parquet reader (DataSource V2) against Ray
Data's first one (V1, `DataContext.use_datasource_v2 = False`, which mgc uses), on the same
files in one run, interleaved. What is timed is what training does with its shards at least five
times a run (the normalisation pass, the training and validation splits, validation and test
predictions; without --cache-data the two splits are read again every epoch): one split's
segments, filtered and projected, read whole. Then the same on a folder of many small shards (FMA
large has 3,331, here a training and a validation row each), for the listing's cost.

    .venv/bin/python bench/read.py [--features bench/out/features] [--repeats 5] [--files 3331]

It reuses bench/out/features from bench/extract.py, extracting it first if needed. Results go to
bench/out/read.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_FEATURES = str(HERE / "out" / "features")


def one_read(path: str, v2: bool, columns: list[str]) -> tuple[float, int]:
    """Seconds to read the validation split's `columns` of the shards at `path`, and its rows."""
    import ray.data
    from ray.data.expressions import col

    ray.data.DataContext.get_current().use_datasource_v2 = v2
    started = time.perf_counter()
    ds = ray.data.read_parquet(path)
    rows = len(ds.filter(expr=col("split") == "validation").select_columns(columns).take_all())
    return time.perf_counter() - started, rows


def compare(path: str, repeats: int, columns: list[str]) -> dict:
    """Both readers on `path`, alternating, after one untimed read each (workers warm)."""
    times: dict[str, list[float]] = {"v1": [], "v2": []}
    counts = set()
    for step in range(2 * (repeats + 1)):
        name = "v2" if step % 2 else "v1"
        s, rows = one_read(path, name == "v2", columns)
        counts.add(rows)
        if step >= 2:
            times[name].append(s)
    assert len(counts) == 1, f"the readers disagree on the rows: {counts}"
    out = {k: statistics.median(v) for k, v in times.items()}
    return {"rows": counts.pop(), "median_s": out, "v2_over_v1": out["v2"] / out["v1"], "all_s": times}


def many_files(features: str, n: int, work: Path) -> str:
    """`n` copies of two rows of one shard: its first training and its first validation row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = sorted(Path(features, "features").glob("*.parquet"))[0]
    table = pq.read_table(shard, columns=["track_id", "split"])
    pieces = [
        table.filter(table["split"].to_numpy(zero_copy_only=False) == s).slice(0, 1) for s in ("training", "validation")
    ]
    small = pa.concat_tables(pieces)
    out = work / "many"
    out.mkdir()
    for i in range(n):
        pq.write_table(small, out / f"part-{i:05d}.parquet")
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--features", default=DEFAULT_FEATURES, help="an extraction's output folder (its _config.json and features/)"
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--files", type=int, default=3331, help="small shards in the listing case (0: skip it)")
    args = ap.parse_args()

    if not Path(args.features, "_config.json").exists():
        if args.features != DEFAULT_FEATURES:
            sys.exit(f"{args.features}: no _config.json: not the output of mgc extract")
        subprocess.run([sys.executable, str(HERE / "extract.py")], check=True)
    from mgc import session

    session.connect()
    results = {"features": compare(str(Path(args.features, "features")), args.repeats, ["logmel", "track_id"])}
    r = results["features"]
    print(f"{args.features}: validation split, {r['rows']} segments: V1 {r['median_s']['v1']:.2f} s, "
          f"V2 (Ray's default, mgc's) {r['median_s']['v2']:.2f} s: {r['v2_over_v1']:.1f}x")  # fmt: skip
    if args.files:
        with tempfile.TemporaryDirectory() as tmp:
            path = many_files(args.features, args.files, Path(tmp))
            results["many_files"] = {"files": args.files, **compare(path, args.repeats, ["track_id"])}
        r = results["many_files"]
        print(f"{args.files} small shards, validation rows {r['rows']}: V1 {r['median_s']['v1']:.2f} s, "
              f"V2 (Ray's default, mgc's) {r['median_s']['v2']:.2f} s: {r['v2_over_v1']:.1f}x")  # fmt: skip
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "read.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
