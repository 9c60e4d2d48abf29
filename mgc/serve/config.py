"""`mgc serve`'s options, declared once (mgc.options): the CLI's flags, the Serve config file that
--write-config writes and the deployment's own settings all come from ServeConfig."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any

from mgc.errors import MgcError
from mgc.options import option, validate

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServeConfig:
    """One served model and its catalogue."""

    model: str = option(
        help="model artifact directory (run_dir/model, or a sweep's best/model), or musicnn: the pretrained "
        "tagger, no training needed"
    )
    catalogue: str = option(
        "",
        help="catalogue of similar tracks: an `mgc embed` output folder (or its catalogue.parquet), or a labelling "
        "output folder; its embeddings must be the --model's (none: no /similar, /audio or map)",
    )
    host: str = option(LOOPBACK, help="address to listen on; any but the loopback needs --token or --no-auth")
    port: int = option(8000, low=1, high=65535, help="the HTTP port to listen on")
    token: str = option("", help="bearer token every route but /health requires (none: no authentication)")
    no_auth: bool = option(False, help="listen on a non-loopback --host without a token, knowingly")
    replicas: int = option(1, low=1, help="replicas of the model (the most, when --min-replicas is below it)")
    min_replicas: int | None = option(
        None, low=0, help="autoscale between this and --replicas on the requests each replica holds (none: fixed)"
    )
    upscale_delay_s: float = option(
        30.0, low=0, help="with --min-replicas: how long the load must last before another replica starts, s"
    )
    downscale_delay_s: float = option(
        600.0, low=0, help="with --min-replicas: how long the load must stay low before a replica stops, s"
    )
    replica_cpus: float = option(1.0, low=0, help="CPUs reserved per replica")
    use_gpu: bool = option(False, help="run each replica's model on a GPU")
    gpu_fraction: float = option(1.0, above=0, high=1, help="with --use-gpu: the share of a GPU each replica reserves")
    max_batch_size: int = option(8, low=1, help="uploads whose forward passes one replica runs together")
    batch_wait_s: float = option(0.01, low=0, help="how long a replica waits to fill a batch, s")
    max_upload_mb: float = option(50.0, above=0, help="larger uploads are refused (413)")
    # As in `mgc label`: bounds the memory one long upload takes.
    max_seconds: float | None = option(
        600.0, above=0, help="analyse at most this much of each upload from its start, s (none: all of it)"
    )
    top_k: int = option(5, low=1, help="genres answered per upload, with probabilities")
    uncertain_below: float = option(
        0.5, low=0, high=1, help="an upload whose top probability is below this is flagged uncertain"
    )
    name: str = option("mgc", help="the Serve application's name")
    write_config: str = option(
        "", help="write a Serve config file (YAML) for `serve deploy` to this path, and exit without serving"
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.min_replicas is not None and self.min_replicas > self.replicas:
            raise MgcError(f"--min-replicas {self.min_replicas} is above --replicas {self.replicas}")
        if not self.token and not self.no_auth and not _loopback(self.host):
            raise MgcError(
                f"--host {self.host} listens beyond this machine: give --token (a bearer token every route but "
                "/health requires) or --no-auth"
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values (a Serve config file's application args)."""
        return asdict(self)


def _loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
