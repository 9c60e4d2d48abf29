"""The deployment files agree with the project: the cluster launcher config validates against the
installed Ray's schema, manifests and image carry the pinned Ray and Python and the project's real
entry points, and every job command in the docs parses with mgc's own command line."""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from packaging.specifiers import SpecifierSet

from mgc.cli import build_parser

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
RAY_VERSION = next(
    re.search(r"^ray\[.*\]==(\S+)$", d).group(1) for d in PROJECT["dependencies"] if d.startswith("ray[")
)
IMAGE = re.compile(r"^[a-z0-9.\-]+/[a-z0-9\-]+/mgc:(?P<version>[0-9.]+)-(?P<variant>cpu|gpu)$")
IN_IMAGE = "/home/ray/mgc/"
SUBCOMMAND = {"extract_full.py": "extract", "train.py": "train", "tune.py": "tune", "label.py": "label"}
KUBERAY = sorted((REPO / "cluster" / "kuberay").glob("*.yaml"))


def _check_job_command(argv: list[str]) -> str:
    """`python jobs/X.py ARGS`: the script exists and mgc's parser accepts ARGS; returns the stage."""
    assert argv[0] == "python", argv
    script = argv[1].removeprefix(IN_IMAGE)
    assert (REPO / script).is_file(), script
    stage = SUBCOMMAND[Path(script).name]
    build_parser().parse_args([stage, *argv[2:]])  # exits (fails the test) on an unknown option
    return stage


def _image(ref: str, variant: str) -> None:
    m = IMAGE.match(ref)
    assert m and m["version"] == PROJECT["version"] and m["variant"] == variant, ref


def test_cluster_launcher_config_validates_against_rays_schema():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(copy.deepcopy(config)))  # with the AWS provider's defaults filled in

    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    cpu, gpu = types["cpu_workers"], types["gpu_workers"]
    assert cpu["min_workers"] == 0 < cpu["max_workers"] and gpu["min_workers"] == 0 < gpu["max_workers"]  # autoscaling
    assert re.match(r"^(g|p)\d", gpu["node_config"]["InstanceType"]) and not re.match(
        r"^(g|p)\d", cpu["node_config"]["InstanceType"]
    )
    _image(config["docker"]["image"], "cpu")
    _image(gpu["docker"]["worker_image"], "gpu")
    # Token authentication on every node, with the token mounted from the launching machine.
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}


def test_kuberay_manifests_carry_the_pinned_ray_the_image_and_real_entry_points():
    docs = {p.name: yaml.safe_load(p.read_text()) for p in KUBERAY}
    assert docs["raycluster.yaml"]["kind"] == "RayCluster"
    stages = set()
    for name, doc in docs.items():
        assert doc["apiVersion"] == "ray.io/v1"
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        assert spec["rayVersion"] == RAY_VERSION and spec["authOptions"] == {"mode": "token"}, name
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        _image(head["image"], "cpu")
        for group in spec["workerGroupSpecs"]:
            pod = group["template"]["spec"]
            container = pod["containers"][0]
            wants_gpu = "nvidia.com/gpu" in container["resources"]["limits"]
            _image(container["image"], "gpu" if wants_gpu else "cpu")
            if wants_gpu:
                assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"], (
                    name
                )
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        if doc["kind"] == "RayJob":
            assert doc["spec"]["shutdownAfterJobFinishes"] is True, name
            stage = _check_job_command(shlex.split(doc["spec"]["entrypoint"]))
            stages.add(stage)
            gpus = any(
                "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
                for g in spec["workerGroupSpecs"]
            )
            assert gpus == (stage in ("train", "tune")), name
    assert stages == {"extract", "train", "tune", "label"}


def test_dockerfile_agrees_with_pyproject():
    text = (REPO / "docker" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{PYTHON_TAG\}-\$\{VARIANT\}$", text, re.M)
    assert args["RAY_VERSION"] == RAY_VERSION
    python = re.fullmatch(r"py3(\d+)", args["PYTHON_TAG"])
    assert python and f"3.{python[1]}" in SpecifierSet(PROJECT["requires-python"])
    torch_spec = next(d for d in PROJECT["dependencies"] if d.startswith("torch"))[len("torch") :]
    assert args["TORCH_VERSION"] in SpecifierSet(torch_spec)
    assert f"torch=={args['TORCH_VERSION']}" in (REPO / "Makefile").read_text()  # the version tests run with
    assert "WORKDIR " + IN_IMAGE.rstrip("/") in text
    for path in ("mgc", "jobs"):
        assert re.search(rf"^COPY .* {path} \./{path}$", text, re.M), path
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "bench/out", "demo"} <= set(ignored)


def test_every_job_command_in_the_docs_parses():
    """The README's and the deployment docs' `python jobs/...` commands are real."""
    found = 0
    for doc in [REPO / "README.md", REPO / "docker" / "README.md", REPO / "bench" / "README.md"]:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())  # join continued lines
        for m in re.finditer(r"python ((?:/home/ray/mgc/)?jobs/\w+\.py[^\n`|]*)", text):
            _check_job_command(["python", *shlex.split(m[1])])
            found += 1
    assert found >= 4


@pytest.mark.parametrize("path", KUBERAY + [REPO / "cluster" / "aws.yaml"], ids=lambda p: p.name)
def test_deployment_files_name_no_secret(path):
    text = path.read_text()
    assert not re.search(r"(AKIA[0-9A-Z]{16}|aws_secret_access_key|RAY_AUTH_TOKEN\s*[:=]\s*\S{16,})", text, re.I)
