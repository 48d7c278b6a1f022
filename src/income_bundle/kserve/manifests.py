"""The `kserve/` manifests as objects, and how their detectors start on one machine.

The local end-to-end test starts each detector from its Knative Service: the folder MLServer is
started on, the environment and the worker count come from the manifest, with the checkout
standing in for the mount path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from income_bundle.paths import project_root

__all__ = [
    "APPLY_ORDER",
    "DETECTORS",
    "MOUNT_PATH",
    "NAMESPACE",
    "LocalDetector",
    "kserve_dir",
    "load_documents",
    "local_detector",
]

NAMESPACE = "income-kserve"
MOUNT_PATH = "/mnt/income-bundle"  # kind's mount of the checkout (kind_cluster_mount_path)
DETECTORS = ("income-drift", "income-outlier")
# Files in the order they can be applied (each only refers to what comes before it).
APPLY_ORDER = (
    "namespace.yaml",
    "storage.yaml",
    "servingruntime.yaml",
    "broker.yaml",
    "event-display.yaml",
    "detectors.yaml",
    "triggers.yaml",
    "inferenceservice.yaml",
)
# Applied only where the Prometheus operator is installed (kserve_income_monitoring).
OPTIONAL = ("podmonitor.yaml",)
# Settings MLServer takes from the wrapper here (free loopback ports) instead of the manifest.
_LOCAL_OVERRIDES = ("MLSERVER_HTTP_PORT", "MLSERVER_GRPC_PORT", "MLSERVER_METRICS_PORT")


def kserve_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / "kserve"


def load_documents(root: Path | None = None) -> dict[str, list[dict]]:
    """Every manifest of kserve/, by file name, in APPLY_ORDER."""
    directory = kserve_dir(root)
    return {
        name: [d for d in yaml.safe_load_all((directory / name).read_text()) if d]
        for name in APPLY_ORDER
    }


@dataclass(frozen=True)
class LocalDetector:
    name: str
    folder: Path
    env: dict[str, str]
    parallel_workers: int


def _local(path: str, root: Path) -> Path:
    if path != MOUNT_PATH and not path.startswith(MOUNT_PATH + "/"):
        raise ValueError(f"{path} is not under the checkout's mount path {MOUNT_PATH}")
    return root / path.removeprefix(MOUNT_PATH).lstrip("/")


def local_detector(name: str, root: Path | None = None) -> LocalDetector:
    """How the Knative Service `name` starts MLServer, mapped onto this checkout."""
    root = root or project_root()
    (service,) = [
        d
        for d in load_documents(root)["detectors.yaml"]
        if d["kind"] == "Service" and d["metadata"]["name"] == name
    ]
    (container,) = service["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    if command[:2] != ["mlserver", "start"] or len(command) != 3:
        raise ValueError(f"{name}: expected 'mlserver start <folder>', got {command}")
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    if "PYTHONPATH" in env:
        env["PYTHONPATH"] = ":".join(str(_local(p, root)) for p in env["PYTHONPATH"].split(":"))
    workers = int(env.pop("MLSERVER_PARALLEL_WORKERS", "1"))
    for variable in _LOCAL_OVERRIDES:
        env.pop(variable, None)
    return LocalDetector(name, _local(command[2], root), env, workers)
