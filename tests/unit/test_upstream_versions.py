"""Version pairs: the pinned versions against what the other pinned upstreams support (facts and
their sources in income_bundle_dev.upstream_checks)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from income_bundle_dev.upstream_checks import (
    KNATIVE_MINIMUM_KUBERNETES,
    node_kubernetes_version,
    version_problems,
)
from tests.support.paths import ROOT

ROLES = ROOT / "ansible" / "roles"


def test_pinned_versions_support_each_other():
    assert version_problems(ROLES) == []


def test_node_is_new_enough_for_knative():
    assert node_kubernetes_version(ROLES) >= KNATIVE_MINIMUM_KUBERNETES


def _roles_with(tmp_path: Path, role: str, **overrides) -> Path:
    roles = tmp_path / "roles"
    shutil.copytree(ROLES, roles)
    defaults = roles / role / "defaults" / "main.yaml"
    values = yaml.safe_load(defaults.read_text())
    defaults.write_text(yaml.safe_dump({**values, **overrides}))
    return roles


def test_a_node_older_than_knative_allows_is_named(tmp_path):
    old = "kindest/node:v1.32.5@sha256:" + "e" * 64
    (problem,) = version_problems(
        _roles_with(tmp_path, "kind_cluster", kind_cluster_node_image=old)
    )
    assert "Kubernetes 1.32.5" in problem and "Knative 1.21 needs >= 1.33.0" in problem


def test_a_node_newer_than_seldon_supports_is_named(tmp_path):
    new = "kindest/node:v1.34.0@sha256:" + "e" * 64
    (problem,) = version_problems(
        _roles_with(tmp_path, "kind_cluster", kind_cluster_node_image=new)
    )
    assert "Seldon Core 2.10.2 supports 1.27 to 1.33" in problem


def test_knative_and_cert_manager_off_kserves_matrix_are_named(tmp_path):
    roles = _roles_with(
        tmp_path,
        "kserve_stack",
        kserve_stack_knative_serving_version="v1.20.0",
        kserve_stack_cert_manager_chart_version="v1.14.5",
    )
    problems = "\n".join(version_problems(roles))
    assert "KServe v0.20.0 is tested with 1.21.1" in problems
    assert (
        "kserve_stack_knative_eventing_version is v1.21.0, not the Knative Serving line" in problems
    )
    assert "KServe needs cert-manager >= 1.15.0" in problems
