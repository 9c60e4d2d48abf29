"""Joining Ray, quietly: every stage connects through `connect`, after its own checks.

Ray's INFO logs (start-up, dataset execution plans, progress tables) stay in the session's log
folder, and mgc shows its own progress bars instead. `MGC_LOG=debug` (the CLI's `--verbose`) shows
Ray's logs again, and streams the workers' output to the driver.
"""

from __future__ import annotations

import logging
import os
import sys

from mgc import resources

LOG_ENV = "MGC_LOG"
ADDRESS_ENV = "RAY_ADDRESS"
# Read by Ray Train's controller from the driver's environment as fit() starts it.
PREEMPTION_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def verbose() -> bool:
    """Whether Ray's own logs are shown (MGC_LOG=debug or info)."""
    return os.environ.get(LOG_ENV, "").lower() in ("debug", "info", "verbose")


class _DropBelow(logging.Filter):
    """Drops records of one logger below a level (a warning our own settings cause)."""

    def __init__(self, name: str, level: int):
        super().__init__()
        self.logger, self.level = name, level

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == self.logger and record.levelno < self.level)


# Ray Data warns that a dataset "will hang" whenever it starts while no CPU is free this instant:
# when one training starts as the last one's worker is still giving its CPU back, it never hangs
# (training keeps a CPU for Ray Data's reads: mgc.train.check_resources).
NO_FREE_CPU = "Warning: The Ray cluster currently does not have any available CPUs"


class _DropNoFreeCpu(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(NO_FREE_CPU)


def _quiet_ray_data(loud: bool) -> None:
    """Ray Data logs to the session's ray-data.log and to the console at INFO: keep the file, show
    the console only warnings. Its progress bars are off (each stage shows its own), so its
    warning that they are off is dropped."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    if loud:
        return
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
            if not any(isinstance(f, _DropBelow) for f in handler.filters):
                handler.addFilter(_DropBelow("ray.data._internal.progress", logging.ERROR))
                handler.addFilter(_DropNoFreeCpu())


def idle_workers_kept(cpus: int) -> int:
    """The raylet's limit on worker processes beyond which it stops idle ones (Ray's default: the
    node's CPUs). A training run's controller and helper actors (about five) count against it, so
    at the default the idle workers Ray Data's reads run in are stopped during every run and each
    read after it starts a fresh process (about a second on a laptop; bench/workers.py)."""
    return cpus + 4


def connect() -> dict[str, float]:
    """Join the cluster at RAY_ADDRESS (without it, the one the last `ray start` on this machine
    recorded, or else a local Ray of its own) unless joined already, quietly unless verbose();
    returns the cluster's resources."""
    import ray

    loud = verbose()
    if not ray.is_initialized():
        address = os.environ.get(ADDRESS_ENV) or None
        watcher_set = False
        if address is None:
            # A local Ray of ours: its raylet warns whenever more than 4 x CPUs worker processes
            # live, which a sweep's trials, trainers and Ray Data's tasks reach on a laptop. Raising
            # the start-up limit (the raylet's only knob for it) silences that at its cause.
            os.environ.setdefault("RAY_worker_maximum_startup_concurrency", "16")
            os.environ.setdefault("RAY_num_workers_soft_limit", str(idle_workers_kept(os.cpu_count() or 1)))
            # One machine's node cannot be preempted while a run on it lives on: Ray Train's
            # preemption watcher (an actor a run, polling the nodes) guards nothing there.
            watcher_set = PREEMPTION_WATCHER not in os.environ
            os.environ.setdefault(PREEMPTION_WATCHER, "0")
        # Harmless notices at start-up: the token it generated, where the dashboard is.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.INFO if loud else logging.ERROR
        )
        ray.init(address=address, log_to_driver=loud, logging_level=logging.INFO if loud else logging.WARNING)
        if address is None and not ray._private.worker._global_node.head:
            if watcher_set:  # not ours after all: its nodes may be preempted
                del os.environ[PREEMPTION_WATCHER]
            # Ray joins the cluster the last `ray start` on this machine recorded: say so, as a
            # user who meant a Ray of mgc's own would otherwise not know.
            note(
                f"joined the Ray cluster already running on this machine at {ray.get_runtime_context().gcs_address} "
                "(the last `ray start`); RAY_ADDRESS=local gives mgc a Ray of its own"
            )
    if not loud:
        # Tune's current console output prints its experiment heading even at verbose=0; its
        # previous one is silent there (mgc shows a bar of trials instead).
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    _quiet_ray_data(loud)
    resources.watch()
    return ray.cluster_resources()


def logs_dir() -> str | None:
    """The log folder of the Ray session this process joined (None if it joined none)."""
    if "ray" not in sys.modules:
        return None
    import ray

    if not ray.is_initialized():
        return None
    try:
        return ray._private.worker.global_worker.node.get_logs_dir_path()
    except AttributeError:  # a client connection: the logs are on the head node
        return None


def note(message: str) -> None:
    """One line for the user, on stderr (stdout carries the commands' results)."""
    print(f"mgc: {message}", file=sys.stderr, flush=True)
