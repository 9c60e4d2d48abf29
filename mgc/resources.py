"""What a stage holds on the cluster, giving it back, and saying who holds it when a stage waits.

Ray Train reserves a run's workers in a placement group that its controller removes when the run
ends well. A controller that ends otherwise (Tune stopping its trial, a lost worker, an error)
can leave the group reserved, and a placement group lives as long as the job that created it
(ray-project/ray#54305, #58515): the next stage's work then waits for those CPUs forever. So
every training and sweep gives back what it reserved (`released`), and while a process is joined
to Ray a watchdog names what holds the cluster's CPUs whenever this job's work has waited for
them a minute (`Watchdog`).

Everything here reads Ray's state API (the dashboard, part of `ray[default]`); a cluster without
it is found out once per process, and then nothing is released or watched.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator

WATCHDOG = "mgc-watchdog"  # the thread's name: one per process
# CPUs kept free for Ray Data's reads: training that takes every CPU waits for its data forever.
READ_CPUS = 1


def training_cpus(cluster: dict[str, float]) -> float:
    """The CPUs of `cluster` (ray.cluster_resources()) that training workers and sweep trials
    may take: every one but READ_CPUS."""
    return cluster.get("CPU", 0) - READ_CPUS


@functools.lru_cache(maxsize=4)
def _state_api(gcs_address: str) -> bool:
    """Whether the cluster at this address answers Ray's state API (it has a dashboard); asked
    once per process and cluster, as a cluster without one makes each call wait for a timeout."""
    from ray.util.state import list_placement_groups

    try:
        list_placement_groups(limit=1, timeout=10, raise_on_missing_output=False)
        return True
    except Exception:  # no dashboard, or Ray without its `default` extra
        return False


def available() -> bool:
    """Whether this process is joined to a cluster that answers the state API."""
    import ray

    return ray.is_initialized() and _state_api(ray.get_runtime_context().gcs_address)


def remove_group(group_id: str) -> None:
    """Remove a placement group by its id (hex), if it is not already removed."""
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    with contextlib.suppress(Exception):  # removed meanwhile (by its controller, or its job's end)
        remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group_id))))


def _job() -> str:
    import ray

    return ray.get_runtime_context().get_job_id()


def _compute(resources: dict[str, float] | None) -> dict[str, float]:
    """The CPUs and GPUs of a resource request (memory and custom resources aside)."""
    return {k: v for k, v in (resources or {}).items() if k in ("CPU", "GPU") and v}


def _bundles(group: Any) -> dict[str, float]:
    total: dict[str, float] = {}
    for bundle in group.bundles or []:
        for k, v in _compute(bundle.get("unit_resources")).items():
            total[k] = total.get(k, 0) + v
    return total


def _fmt(resources: dict[str, float]) -> str:
    return " + ".join(f"{v:g} {k}" for k, v in resources.items()) or "nothing"


def our_groups() -> set[str]:
    """Ids of this job's placement groups that are not removed."""
    from ray.util.state import list_placement_groups

    groups = list_placement_groups(
        filters=[("creator_job_id", "=", _job())], limit=10_000, raise_on_missing_output=False
    )
    return {g.placement_group_id for g in groups if g.state != "REMOVED"}


def release(before: set[str], timeout_s: float = 60.0) -> list[str]:
    """Remove this job's placement groups made since `before` (an `our_groups()`) that are still
    reserved, and wait until none is; returns the ids of those it had to remove."""
    leaked = sorted(our_groups() - before)
    for group in leaked:
        remove_group(group)
    deadline = time.monotonic() + timeout_s
    while leaked and our_groups() & set(leaked) and time.monotonic() < deadline:
        time.sleep(0.2)
    return leaked


@contextlib.contextmanager
def released() -> Iterator[None]:
    """Around Ray Train's `fit()` (or a sweep of them): on the way out, whatever ended the block,
    this job's placement groups made inside it are removed (so a process runs one such block at a
    time: another thread's training would lose its group), and the SIGINT handler that `fit()`
    installs is put back as it was (it holds the run's controller, which then stays alive, and it
    would answer a later Ctrl-C by aborting the finished run instead of stopping the process)."""
    before = None
    with contextlib.suppress(Exception):  # giving back is best effort: never the reason a run fails
        before = our_groups() if available() else None
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, handler)
        if before is not None:
            with contextlib.suppress(Exception):
                release(before)


def ended_jobs() -> set[str]:
    """Ids of the cluster's jobs that have ended (a placement group of one is a leak)."""
    from ray.util.state import list_jobs

    return {
        j.job_id
        for j in list_jobs(raise_on_missing_output=False)
        if j.job_id and j.status in ("SUCCEEDED", "FAILED", "STOPPED")
    }


def holders() -> str:
    """What holds the cluster's CPUs and GPUs now: placement groups (with the actors in them),
    actors and tasks outside them, each with its job; one line each."""
    import ray
    from ray.util.state import list_actors, list_placement_groups, list_tasks

    total, free = ray.cluster_resources(), ray.available_resources()
    lines = [
        f"{free.get('CPU', 0):g} of {total.get('CPU', 0):g} CPUs free"
        + (f", {free.get('GPU', 0):g} of {total['GPU']:g} GPUs" if total.get("GPU") else "")
    ]
    actors = list_actors(filters=[("state", "!=", "DEAD")], detail=True, limit=10_000, raise_on_missing_output=False)
    in_group: dict[str, list[str]] = {}
    for a in actors:
        if a.placement_group_id:
            in_group.setdefault(a.placement_group_id, []).append(f"{a.class_name} ({a.state.lower()}, pid {a.pid})")
    ended = ended_jobs()
    groups = list_placement_groups(
        filters=[("state", "=", "CREATED")], detail=True, limit=10_000, raise_on_missing_output=False
    )
    for g in groups:
        held = _bundles(g)
        if held:
            inside = (
                ", ".join(in_group.get(g.placement_group_id, []))
                or "no live actor: a leak unless its job is starting one"
            )
            if g.creator_job_id in ended:
                inside += (
                    "; its job has ended (a leak in Ray): remove it, "
                    f"`ray.util.remove_placement_group` of id {g.placement_group_id}"
                )
            name = f" {g.name!r}" if g.name else ""
            lines.append(
                f"placement group {g.placement_group_id[:12]}{name} of job {g.creator_job_id}: {_fmt(held)}; "
                f"in it: {inside}"
            )
    for a in actors:
        held = _compute(a.required_resources)
        if held and not a.placement_group_id and a.state == "ALIVE":
            lines.append(f"actor {a.class_name} (pid {a.pid}) of job {a.job_id}: {_fmt(held)}")
    tasks = list_tasks(filters=[("state", "=", "RUNNING")], detail=True, limit=10_000, raise_on_missing_output=False)
    for t in tasks:
        held = _compute(t.required_resources)
        if held and not t.placement_group_id and t.type == "NORMAL_TASK":
            lines.append(f"task {t.name} of job {t.job_id}: {_fmt(held)}")
    return "\n  ".join(lines)


def waiting() -> dict[str, str]:
    """This job's tasks, actors and placement groups waiting for CPUs or GPUs: {id: a phrase}."""
    from ray.util.state import list_actors, list_placement_groups, list_tasks

    kinds = (  # how to list them, the filter naming this job, the state API's word for waiting, (id, phrase, resources)
        (
            list_tasks,
            "job_id",
            "PENDING_NODE_ASSIGNMENT",
            lambda t: (t.task_id, f"task {t.name}", _compute(t.required_resources)),
        ),
        (
            list_actors,
            "job_id",
            "PENDING_CREATION",
            lambda a: (a.actor_id, f"actor {a.class_name}", _compute(a.required_resources)),
        ),
        (
            list_placement_groups,
            "creator_job_id",
            "PENDING",
            lambda g: (g.placement_group_id, f"placement group {g.placement_group_id[:12]}", _bundles(g)),
        ),
    )
    job, out = _job(), {}
    for lister, by_job, state, describe in kinds:
        for item in lister(
            filters=[(by_job, "=", job), ("state", "=", state)], detail=True, limit=1000, raise_on_missing_output=False
        ):
            key, what, held = describe(item)
            if held:
                out[key] = f"{what} ({_fmt(held)})"
    return out


HOW_TO_FREE = (
    "A placement group with no live actor is held until the process of its job ends: end that process "
    "(`ray job stop JOB_ID` for a submitted job), or remove it (`ray.util.remove_placement_group`)."
)


class Watchdog(threading.Thread):
    """Checks every `every_s` whether this job's work waits for CPUs or GPUs; once a task, actor
    or placement group has waited `after_s`, `say`s what waits and what holds the cluster (then
    again every `repeat_s` while something still waits that long). Ends when the process leaves
    Ray; never runs where the state API does not answer."""

    def __init__(
        self,
        after_s: float = 60.0,
        every_s: float = 10.0,
        repeat_s: float = 300.0,
        say: Callable[[str], None] | None = None,
    ):
        super().__init__(name=WATCHDOG, daemon=True)
        self.after_s, self.every_s, self.repeat_s = after_s, every_s, repeat_s
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.stopped = threading.Event()

    def run(self) -> None:
        first_seen: dict[str, float] = {}
        said = None
        while not self.stopped.wait(self.every_s) and available():
            try:
                pending, now = waiting(), time.monotonic()
                first_seen = {k: first_seen.get(k, now) for k in pending}
                stalled = [pending[k] for k, t in first_seen.items() if now - t >= self.after_s]
                if stalled and (said is None or now - said >= self.repeat_s):
                    said = now
                    waited = now - min(first_seen.values())
                    self.say(
                        f"mgc: this job's work has waited {waited:.0f} s for the cluster's resources: "
                        f"{'; '.join(stalled[:6])}{' ...' if len(stalled) > 6 else ''}"
                        f"\n  {holders()}\n  {HOW_TO_FREE} Still waiting."
                    )
            except Exception:  # the state API busy or gone: the next round tries again
                continue


def watch() -> None:
    """Start this process's watchdog unless one runs."""
    if not any(t.name == WATCHDOG and t.is_alive() for t in threading.enumerate()):
        Watchdog().start()
