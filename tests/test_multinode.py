"""Several nodes: a second node joins the session's head with the real `ray start --address`, its
own resources and ports; extraction submitted with `ray job submit` runs on both, and survives the
second node dying midway (Ray retries its tasks elsewhere; the output stays complete)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import _free_ports, submit_job
from helpers import assert_complete_and_unique

EXTRACTION = "FlatMap(process_chunk)"


NODE_PORTS = (
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
)


def _start_node(cluster: dict, log) -> subprocess.Popen:
    """`ray start --address` of a 2-CPU node with resource `second_node` on its own fresh ports,
    its output (Ray's own account of any subprocess that died) going to `log`."""
    ports = {f"--{p}": str(n) for p, n in zip(NODE_PORTS, _free_ports(len(NODE_PORTS)))}
    cmd = [cluster["ray"], "start", f"--address={cluster['address']}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
           "--object-store-memory=200000000", "--resources", json.dumps({"second_node": 1}), "--disable-usage-stats",
           "--block", *(f"{k}={v}" for k, v in ports.items())]  # fmt: skip
    return subprocess.Popen(cmd, env=cluster["env"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def second_node(ray_connected, tmp_path):
    """A node started as a user starts one; yields its node id and the process group to kill.
    Stopped (the whole group) at the end. The ports are probed free, then bound by Ray a moment
    later, so another process can take one in between; Ray's node then gives up at start-up (its
    raylet has 30 s to register, which a loaded machine can overrun too). Such a start is tried
    again on fresh ports (three tries), and a failure shows what Ray said each time."""
    import ray

    said = []
    for attempt in range(3):
        log_path = tmp_path / f"second_node_{attempt}.log"
        with open(log_path, "w") as log:
            proc = _start_node(ray_connected, log)
        deadline = time.time() + 120
        node = None
        while node is None and proc.poll() is None and time.time() < deadline:
            alive = [n for n in ray.nodes() if n["Alive"] and "second_node" in n["Resources"]]
            node = alive[0]["NodeID"] if alive else None
            time.sleep(0.5)
        if node is not None:
            break
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        said.append(f"try {attempt + 1}, exit {proc.returncode}:\n" + log_path.read_text()[-3000:])
    assert node is not None, "the second node did not join:\n" + "\n".join(said)
    yield node, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _wait_dead(node)


def _wait_dead(node_id: str, timeout: float = 120) -> None:
    """Until the head has marked the node dead (its resources leave the cluster)."""
    import ray

    deadline = time.time() + timeout
    while any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()):
        assert time.time() < deadline, "the head never marked the node dead"
        time.sleep(1)


def _submit(cluster, out, *wait: str):
    """Extraction of the session corpus, two tracks per task, as a user submits it; returns its id and a client."""
    from ray.job_submission import JobSubmissionClient

    sid = f"mgc-multinode-{time.time_ns()}"
    submit_job(
        cluster,
        "jobs/extract_full.py",
        "--fma-root",
        str(cluster["corpus"]),
        "--out",
        str(out),
        "--tracks-per-shard",
        "2",
        options=("--submission-id", sid, *wait),
        timeout=600,
    )
    return sid, JobSubmissionClient(cluster["dashboard"])


def _extraction_tasks(client, sid: str) -> list:
    from ray.util.state import list_tasks

    job_id = client.get_job_info(sid).job_id
    if job_id is None:  # the driver has not started yet
        return []
    return list_tasks(filters=[("job_id", "=", job_id)], detail=True, limit=10_000, raise_on_missing_output=False)


def test_extraction_runs_on_both_nodes_and_survives_losing_one(ray_connected, second_node, corpus, truth, tmp_path):
    """One extraction (two tracks per task) over the head and the second node; as soon as Ray's
    state API shows a task running on the second node, the node is killed. The job still succeeds:
    the tasks it lost ran again on the head, and every segment is there once."""
    from ray.job_submission import JobStatus

    node, group = second_node
    out = tmp_path / "features"
    sid, client = _submit({**ray_connected, "corpus": corpus}, out, "--no-wait")
    deadline = time.time() + 300
    # A node's first tasks include its workers' imports (seconds), so a running task is seen in time.
    while not any(
        t.state == "RUNNING" and t.node_id == node and t.name.startswith(EXTRACTION)
        for t in _extraction_tasks(client, sid)
    ):
        assert time.time() < deadline and not client.get_job_status(sid).is_terminal(), (
            "the second node never ran extraction tasks"
        )
        time.sleep(0.05)
    os.killpg(group.pid, signal.SIGKILL)  # the node's raylet, agents and workers at once
    group.wait()
    while not client.get_job_status(sid).is_terminal():
        assert time.time() < deadline, "the job did not finish after the node was lost"
        time.sleep(1)
    assert client.get_job_status(sid) == JobStatus.SUCCEEDED, client.get_job_logs(sid)[-3000:]

    tasks = [t for t in _extraction_tasks(client, sid) if t.name.startswith(EXTRACTION)]
    import ray

    head = ray.get_runtime_context().get_node_id()  # this driver's node
    assert {t.node_id for t in tasks} == {node, head}  # both nodes ran tasks
    lost = {t.task_id for t in tasks if t.node_id == node and t.state != "FINISHED"}
    assert lost, "no task was running on the node when it died"
    # Each lost task ran again on the head and finished.
    assert lost <= {t.task_id for t in tasks if t.attempt_number > 0 and t.state == "FINISHED" and t.node_id == head}
    assert_complete_and_unique(out, truth, segments_per_track=3)
