"""Nothing waits forever: every training and sweep gives back what it reserved, and a stage whose
work waits for CPUs says what holds them (mgc.resources)."""

from __future__ import annotations

import shutil
import signal
import time

import pytest
from conftest import PLAIN_RECIPE, wait_for_free_cpus

from mgc import resources
from mgc.cli import main

TINY = [
    "--channels",
    "4,8,8,8",
    "--dense",
    "16",
    "--lstm-units",
    "16",
    "--batch-size",
    "32",
    "--no-progress",
    *PLAIN_RECIPE,
]


def _held_by_this_job() -> tuple[set[str], list[str]]:
    """This job's placement groups not removed, and its live Ray Train controllers."""
    import ray
    from ray.util.state import list_actors

    job = ray.get_runtime_context().get_job_id()
    alive = list_actors(
        filters=[("job_id", "=", job), ("class_name", "=", "TrainController"), ("state", "!=", "DEAD")],
        raise_on_missing_output=False,
    )
    return resources.our_groups(), [a.actor_id for a in alive]


def _assert_all_given_back(stage: str) -> None:
    wait_for_free_cpus(30, after=stage)
    deadline = time.time() + 30
    while (held := _held_by_this_job()) != (set(), []):  # a released controller dies a moment later
        assert time.time() < deadline, (
            f"after {stage}: placement groups {held[0]}, Ray Train controllers {held[1]} left behind"
        )
        time.sleep(0.5)


@pytest.mark.slow
def test_the_demos_stages_one_after_another_leave_every_cpu_free(ray_connected, features, inbox, tmp_path):
    """compare (a closed-form fit and a network, as the demo's training stage), a sweep whose
    ASHA stops trials, label and embed, one after another in this one process on the session's
    cluster: after each stage every CPU is free again, and the stage left no placement group nor
    Ray Train controller of this job behind. (Every other test that trains or sweeps, `mgc train`
    among them, is followed by the same check of the CPUs: _cpus_free_after_each_test.)"""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for f in sorted(inbox[0].rglob("*.wav"))[:4]:
        shutil.copy(f, uploads)
    common = ["--features", str(features), "--num-workers", "1", *TINY]
    runs = tmp_path / "runs"
    model = str(runs / "cnn_lstm" / "model")
    stages = [
        ("compare", ["compare", "--models", "baseline,cnn_lstm", "--epochs", "1", "--storage-path", str(runs),
                     "--cpus-per-worker", "1", *common]),
        # Half a CPU per trial, two at once: ASHA stops some of the three trials after their first epoch.
        ("tune", ["tune", "--model", "cnn", "--epochs", "2", "--num-samples", "3", "--max-concurrent", "2", "--grace-period", "1",
                  "--reduction-factor", "2", "--storage-path", str(tmp_path / "sweeps"), "--name", "sw", "--cpus-per-worker", "0.5",
                  *common]),
        ("label", ["label", "--model", model, "--input", str(uploads), "--out", str(tmp_path / "labels"), "--no-progress"]),
        ("embed", ["embed", "--features", str(features), "--model", model, "--out", str(tmp_path / "catalogue"), "--no-progress"]),
    ]  # fmt: skip
    for name, argv in stages:
        started = time.time()
        assert main(argv) == 0, f"{name} failed"
        ran = time.time() - started
        _assert_all_given_back(name)
        print(f"{name} {ran:.1f} s, given back in {time.time() - started - ran:.1f} s")


def test_a_placement_group_left_behind_is_released_and_an_earlier_one_kept(ray_connected):
    """`released` removes this job's groups made inside it (as a trial's controller stopped by Tune
    leaves its workers' group) and no other; the SIGINT handler is the one from before."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    earlier = placement_group([{"CPU": 0.5}])
    ray.get(earlier.ready())
    before = signal.getsignal(signal.SIGINT)
    try:
        with resources.released():
            signal.signal(signal.SIGINT, lambda *_: None)  # as Ray Train's fit() does
            leaked = placement_group([{"CPU": 1}])
            ray.get(leaked.ready())
        assert signal.getsignal(signal.SIGINT) is before
        groups = resources.our_groups()
        assert earlier.id.hex() in groups and leaked.id.hex() not in groups
        deadline = time.time() + 10  # the cluster's resource view follows a removal within a second or so
        while (
            ray.available_resources().get("CPU", 0) != ray.cluster_resources()["CPU"] - 0.5 and time.time() < deadline
        ):
            time.sleep(0.1)
        assert ray.available_resources().get("CPU", 0) == pytest.approx(ray.cluster_resources()["CPU"] - 0.5)
    finally:
        remove_placement_group(earlier)


def test_work_waiting_for_cpus_is_told_what_holds_them(ray_connected):
    """A task that cannot get a CPU for the watchdog's bound (2 s here, 60 s in use): the message
    names the task, the placement group holding every CPU and how to free it; once the group is
    removed, the task runs."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group([{"CPU": ray.cluster_resources()["CPU"]}])
    ray.get(group.ready())
    said: list[str] = []
    dog = resources.Watchdog(after_s=2, every_s=0.5, say=said.append)
    dog.start()

    @ray.remote(num_cpus=1)
    def needs_a_cpu() -> int:
        return 7

    ref = needs_a_cpu.remote()
    try:
        deadline = time.time() + 60
        while not said and time.time() < deadline:
            time.sleep(0.2)
        assert said, "the watchdog said nothing"
        text = said[0]
        assert "task needs_a_cpu (1 CPU)" in text and f"placement group {group.id.hex()[:12]}" in text, text
        assert (
            "no live actor" in text
            and "ray job stop" in text
            and f"0 of {ray.cluster_resources()['CPU']:g} CPUs free" in text
        ), text
    finally:
        dog.stopped.set()
        remove_placement_group(group)
    assert ray.get(ref, timeout=60) == 7
