"""`mgc serve` on Ray Serve: the deployment (`UploadLabeller`: one model and catalogue per replica,
concurrent uploads' forward passes shared by @serve.batch), the application built from a
ServeConfig (`application`, also `serve deploy`'s import path through `build`), starting it on
the cluster (`start`) and the Serve config file (`write_config`)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

from ray import serve

from mgc import artifact, session, storage
from mgc.errors import MgcError
from mgc.serve import api
from mgc.serve.config import ServeConfig
from mgc.serve.service import Catalogue, Service

IMPORT_PATH = "mgc.serve.app:build"


@serve.deployment(name="UploadLabeller")
@serve.ingress()
class UploadLabeller:
    """One replica: the model and the catalogue loaded once, the routes of mgc.serve.api."""

    def __init__(self, config: dict[str, Any]):
        self.cfg = ServeConfig(**config)
        self.service = Service(self.cfg)
        self.label_batch.set_max_batch_size(self.cfg.max_batch_size)
        self.label_batch.set_batch_wait_timeout_s(self.cfg.batch_wait_s)
        self.uploads = self.batches = 0  # /health's counts: uploads per forward pass shows the batching
        try:
            self.replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - outside Serve (a test building the class by hand)
            self.replica_id = str(os.getpid())

    def __serve_build_asgi_app__(self):
        return api.build(self)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def label_batch(self, uploads: list[tuple[bytes, str]]) -> list[dict[str, Any]]:
        """Uploads that arrived together, labelled with one forward pass; in a thread, so that the
        replica answers /health and the other routes meanwhile."""
        self.uploads, self.batches = self.uploads + len(uploads), self.batches + 1
        return await asyncio.to_thread(self.service.label, uploads)


def application(cfg: ServeConfig):
    """The Serve application of `cfg`: replicas fixed or autoscaled, CPUs and a GPU share each."""
    actor: dict[str, Any] = {"num_cpus": cfg.replica_cpus}
    if cfg.use_gpu:
        actor["num_gpus"] = cfg.gpu_fraction
    scale: dict[str, Any] = (
        {"num_replicas": cfg.replicas}
        if cfg.min_replicas is None
        else {
            "autoscaling_config": {
                "min_replicas": cfg.min_replicas,
                "max_replicas": cfg.replicas,
                # A replica is busy with a full batch; more waiting than that asks for another.
                "target_ongoing_requests": cfg.max_batch_size,
                "upscale_delay_s": cfg.upscale_delay_s,
                "downscale_delay_s": cfg.downscale_delay_s,
            }
        }
    )
    # Room for a batch being computed and the next one filling, and the light routes beside.
    return UploadLabeller.options(
        ray_actor_options=actor, max_ongoing_requests=4 * cfg.max_batch_size + 8, **scale
    ).bind({**cfg.to_dict(), "write_config": ""})


def build(args: dict[str, Any]):
    """`serve deploy`'s application builder (IMPORT_PATH): the config file's args are ServeConfig's."""
    return application(ServeConfig(**args))


def check(cfg: ServeConfig) -> None:
    """The model and the catalogue load here, before Ray: a bad path is one clear error, not a
    replica failing to start over and over."""
    model, _ = artifact.load(cfg.model)
    if cfg.catalogue:
        Catalogue.load(cfg.catalogue, model.head.embedding_size)
    if cfg.use_gpu:
        import torch

        if not torch.cuda.is_available():
            session.note("serve: --use-gpu, but this machine has no CUDA device; the replicas need one that has")


def located(cfg: ServeConfig) -> ServeConfig:
    """cfg with its local paths made absolute: replicas, and `serve deploy`, resolve paths in
    another working directory than the command's."""
    model = cfg.model if cfg.model == artifact.BUILTIN else storage.absolute(cfg.model)
    return dataclasses.replace(cfg, model=model, catalogue=cfg.catalogue and storage.absolute(cfg.catalogue))


def start(cfg: ServeConfig) -> str:
    """Deploy `cfg` on the cluster (RAY_ADDRESS, or a local Ray), listening on cfg.host:cfg.port,
    and return its URL once every replica is up. A Serve already running on the cluster keeps its
    own HTTP address (Serve applies it once): one elsewhere is refused rather than served on."""
    cfg = located(cfg)
    check(cfg)
    session.connect()
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    http = serve.context._get_global_client().http_config
    if (http.host, http.port) != (cfg.host, cfg.port):
        raise MgcError(
            f"Serve already runs on this cluster at {http.host}:{http.port}, not --host {cfg.host} --port "
            f"{cfg.port}: serve there with those options, or stop it first (serve shutdown)"
        )
    if cfg.name in serve.status().applications:  # serve.run would replace it without a word
        raise MgcError(f"an application named {cfg.name} already runs on this cluster: give another --name")
    try:
        serve.run(application(cfg), name=cfg.name, route_prefix="/")
    except BaseException:  # a replica that cannot start, or Ctrl-C meanwhile: nothing of it stays
        stop(cfg)
        raise
    return f"http://{cfg.host}:{cfg.port}/"


def stop(cfg: ServeConfig) -> None:
    """Remove `cfg`'s application (its replicas' CPUs back to the cluster), and Serve itself when
    no other application is left, so that its HTTP address is free for the next `mgc serve`."""
    serve.delete(cfg.name)
    if not serve.status().applications:
        serve.shutdown()


def write_config(cfg: ServeConfig, path: str) -> None:
    """A Serve config file for `serve deploy PATH` that runs this same application (its token, if
    any, is in it: the file is readable by its owner only)."""
    import yaml

    cfg = located(cfg)
    check(cfg)
    args = {k: v for k, v in cfg.to_dict().items() if k != "write_config"}
    config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": cfg.host, "port": cfg.port},
        "applications": [{"name": cfg.name, "route_prefix": "/", "import_path": IMPORT_PATH, "args": args}],
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file that was there keeps its mode through os.open
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
