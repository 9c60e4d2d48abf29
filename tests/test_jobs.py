"""The jobs as users run them: the real `ray job submit` client against `ray start --head`, and a
driver killed with SIGKILL midway then re-run."""

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from conftest import REPO, submit_job
from helpers import assert_complete_and_unique


def test_ray_job_submit_extracts_the_corpus(ray_cluster, corpus, truth, tmp_path):
    out = tmp_path / "features"
    submit_job(
        ray_cluster,
        "jobs/extract_full.py",
        "--fma-root",
        str(corpus),
        "--subset",
        "large",
        "--out",
        str(out),
        "--tracks-per-shard",
        "8",
        timeout=600,
    )
    assert_complete_and_unique(out, truth, segments_per_track=3)


def test_ray_job_submit_needs_the_token(ray_cluster, tmp_path):
    env = {k: v for k, v in ray_cluster["env"].items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    cmd = [ray_cluster["ray"], "job", "submit", "--address", ray_cluster["dashboard"], "--", "echo", "hi"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "token" in (proc.stdout + proc.stderr).lower()


@pytest.mark.parametrize(
    "inputs,options",
    [("logmel,mfcc", []), ("logmel,mfcc,musicnn", ["--network-actors", "1"])],
    ids=["default", "musicnn_in_an_actor"],
)
def test_driver_killed_midway_resumes_without_duplicates(ray_cluster, corpus, truth, tmp_path, inputs, options):
    """The defaults, and the pretrained network in an actor pool fed by the decode tasks."""
    out = tmp_path / "features"
    cmd = [
        sys.executable,
        str(REPO / "jobs" / "extract_full.py"),
        "--fma-root",
        str(corpus),
        "--out",
        str(out),
        "--tracks-per-shard",
        "1",
        "--inputs",
        inputs,
        *options,
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd, env=ray_cluster["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "features").glob("part-*.parquet"))) >= 2 if (out / "features").exists() else False:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list((out / "features").glob("part-*.parquet")))
    assert 2 <= written < 48, f"not killed midway: {written} of 48 chunks written"

    rerun = subprocess.run(cmd, env=ray_cluster["env"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert '"chunks_skipped"' in rerun.stdout
    assert_complete_and_unique(out, truth, segments_per_track=3)
    assert not list((out / "features").glob(".*.tmp"))
    assert pq.read_schema(next((out / "features").glob("part-*.parquet"))).names[
        -len(inputs.split(",")) :
    ] == inputs.split(",")


@pytest.mark.slow
def test_the_suites_cluster_stops_without_stopping_another(tmp_path):
    """Someone's own Ray, started before the suite, outlives the suite's cluster: the suite ends
    its own processes, never `ray stop`."""
    from conftest import cluster_env, start_head, stop_head

    env = cluster_env()
    theirs = start_head(env)
    try:
        ours = start_head(env)
        assert ours["proc"].poll() is None
        stop_head(ours)
        assert ours["proc"].poll() is not None
        # `ray start --block` ends, killing its node, as soon as one of its processes dies.
        assert theirs["proc"].poll() is None, "".join(theirs["output"])[-3000:]
        for _ in range(3):  # a loaded 2-core machine can keep a live GCS from answering in time
            try:
                status = subprocess.run(
                    [theirs["ray"], "status", "--address", theirs["address"]],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
            except subprocess.TimeoutExpired as e:
                status = subprocess.CompletedProcess(
                    e.cmd, 124, e.stdout or "", f"ray status: no answer in {e.timeout} s"
                )
            if status.returncode == 0 or theirs["proc"].poll() is not None:
                break
        assert status.returncode == 0 and "Active:" in status.stdout, (
            status.stdout + status.stderr + "".join(theirs["output"])[-3000:]
        )
        assert theirs["proc"].poll() is None
    finally:
        stop_head(theirs)
