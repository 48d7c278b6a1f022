"""The cluster paths checked against the upstream sources of the versions they pin.

Facts read from upstream source at the pinned tags live here as constants, each with its source
(repository, tag, path) beside it. The checks compare the roles and manifests with those facts and
with the pinned charts and CRDs (``../shared/upstream`` beside the checkout, or ``helm pull``):

- every value a role hands a chart is a key of that chart's values (``unknown_values``);
- every chart renders with a real ``helm template`` (``helm_template``) and every object the
  bundle applies validates strictly against its CRD or the pinned Kubernetes schema
  (``object_problems``);
- every selector and every waited-for condition is one the upstream workload or controller
  carries or sets (``selector_problems``, ``wait_problems``);
- the pinned versions are ones the other pins support (``version_problems``).

Each check returns problems as sentences (empty when all is well), so one run reports them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "KNATIVE_MINIMUM_KUBERNETES",
    "kubernetes_schema_version",
    "node_kubernetes_version",
    "version_problems",
]

# --- Version facts -------------------------------------------------------------------------------

# knative/pkg version/version.go, defaultMinimumVersion = "v1.33.0", at the knative.dev/pkg
# commit 4a022ed9999a874caca69595f8ba27a8f25cfa76 that knative/serving knative-v1.21.1's go.mod
# requires; every Knative controller and webhook exits at start on an older API server.
KNATIVE_MINIMUM_KUBERNETES = (1, 33, 0)
# kserve/kserve v0.20.0 kserve-deps.env: the versions KServe's own CI installs.
KSERVE_TESTED_KNATIVE_SERVING = (1, 21, 1)  # KNATIVE_SERVING_VERSION=1.21.1
KSERVE_TESTED_CERT_MANAGER = (1, 17, 0)  # CERT_MANAGER_VERSION=v1.17.0
# kserve.github.io/website, admin/serverless ("The minimally required Cert Manager version is
# 1.15.0"): KServe's webhooks get their certificates from cert-manager.
KSERVE_MINIMUM_CERT_MANAGER = (1, 15, 0)
# SeldonIO/seldon-core v2.10.2 docs-gb/installation/README.md, "Seldon Core 2 Dependencies":
# Kubernetes minimum 1.27, maximum 1.33.0 (read as the 1.33 line: patch releases of a minor
# change no API).
SELDON_KUBERNETES_MINORS = ((1, 27), (1, 33))

_NODE_IMAGE = re.compile(r"kindest/node:v(\d+)\.(\d+)\.(\d+)@sha256:[0-9a-f]{64}")


def _version(text: str) -> tuple[int, ...]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a version like v1.2.3")
    return tuple(int(part) for part in match.groups())


def _dotted(version: Iterable[int]) -> str:
    return ".".join(str(part) for part in version)


def _defaults(roles_dir: Path, role: str) -> dict[str, Any]:
    return yaml.safe_load((roles_dir / role / "defaults" / "main.yaml").read_text()) or {}


def node_kubernetes_version(roles_dir: Path) -> tuple[int, int, int]:
    """The Kubernetes version of the kind node image the kind_cluster role pins."""
    image = _defaults(roles_dir, "kind_cluster")["kind_cluster_node_image"]
    match = _NODE_IMAGE.fullmatch(image)
    if not match:
        raise ValueError(f"kind_cluster_node_image {image!r} is not kindest/node:vX.Y.Z@sha256:...")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def kubernetes_schema_version(roles_dir: Path) -> str:
    """The kubernetes-validate schema version for the node's minor release (e.g. '1.33.0')."""
    major, minor, _ = node_kubernetes_version(roles_dir)
    return f"{major}.{minor}.0"


def version_problems(roles_dir: Path) -> list[str]:
    """Pinned versions that a pinned upstream does not support or was not tested with."""
    problems = []
    node = node_kubernetes_version(roles_dir)
    if node < KNATIVE_MINIMUM_KUBERNETES:
        problems.append(
            f"kind_cluster_node_image is Kubernetes {_dotted(node)}; Knative 1.21 needs "
            f">= {_dotted(KNATIVE_MINIMUM_KUBERNETES)} (knative.dev/pkg version.defaultMinimumVersion)"
        )
    low, high = SELDON_KUBERNETES_MINORS
    if not low <= node[:2] <= high:
        problems.append(
            f"kind_cluster_node_image is Kubernetes {_dotted(node)}; Seldon Core 2.10.2 supports "
            f"{_dotted(low)} to {_dotted(high)}"
        )
    stack = _defaults(roles_dir, "kserve_stack")
    serving = _version(stack["kserve_stack_knative_serving_version"])
    if serving != KSERVE_TESTED_KNATIVE_SERVING:
        problems.append(
            f"kserve_stack_knative_serving_version is {_dotted(serving)}; KServe v0.20.0 is tested "
            f"with {_dotted(KSERVE_TESTED_KNATIVE_SERVING)} (kserve-deps.env)"
        )
    for name in ("kserve_stack_knative_eventing_version", "kserve_stack_kourier_version"):
        if _version(stack[name])[:2] != serving[:2]:
            problems.append(f"{name} is {stack[name]}, not the Knative Serving line {serving[:2]}")
    for role, variable in (
        ("kserve_stack", "kserve_stack_cert_manager_chart_version"),
        ("ecosystem", "ecosystem_cert_manager_chart_version"),
    ):
        cert_manager = _version(_defaults(roles_dir, role)[variable])
        if cert_manager < KSERVE_MINIMUM_CERT_MANAGER:
            problems.append(
                f"{variable} is {_dotted(cert_manager)}; KServe needs cert-manager >= "
                f"{_dotted(KSERVE_MINIMUM_CERT_MANAGER)}"
            )
        # Same minor as KServe's CI, or the one before it (the Seldon path's pin, whose chart
        # and CRDs are the ones checked here).
        if not (
            KSERVE_TESTED_CERT_MANAGER[0] == cert_manager[0]
            and 0 <= KSERVE_TESTED_CERT_MANAGER[1] - cert_manager[1] <= 1
        ):
            problems.append(
                f"{variable} is {_dotted(cert_manager)}, more than one minor away from the "
                f"{_dotted(KSERVE_TESTED_CERT_MANAGER)} KServe v0.20.0 is tested with"
            )
    return problems
