"""The monitor on the cluster paths (income_monitor role), read as files: its image's pins hold
every requirement of every pin, both deploy playbooks deploy the monitor of their path, and the
role's defaults agree with the rest of the bundle. The rendered objects and the image's
distributions at work are tests/cluster/test_monitor_deploy.py."""

from __future__ import annotations

import re

import yaml

from tests.support.ansible_files import role_defaults as defaults
from tests.support.manifests import documents
from tests.support.paths import ROOT

KSERVE = ROOT / "kserve"


# The extras the monitor's imports need (tritonclient.grpc for Seldon's protobuf messages).
USED_EXTRAS = {"tritonclient": {"grpc"}}


def test_image_pins_hold_every_requirement_of_every_pin():
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    pinned = {
        re.sub(r"[-_.]+", "-", pin.partition("==")[0]).lower()
        for pin in defaults("income_monitor")["income_monitor_pins"]
    }
    missing = []
    for name in sorted(pinned):
        for text in requires(name) or []:
            requirement = Requirement(text)
            extras = {""} | USED_EXTRAS.get(name, set())
            wanted = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in extras
            )
            if wanted and re.sub(r"[-_.]+", "-", requirement.name).lower() not in pinned:
                missing.append(f"{name} needs {requirement}")
    assert missing == []


# --- Wiring -----------------------------------------------------------------------------------------


def _role_entry(playbook: str) -> tuple[dict, dict]:
    (play,) = yaml.safe_load((ROOT / "ansible" / "playbooks" / playbook).read_text())
    roles = {r["role"]: r for r in play["roles"]}
    return roles["preflight"], roles["income_monitor"]


def test_both_deploy_playbooks_deploy_the_monitor_of_their_path():
    preflight, monitor = _role_entry("deploy-income.yaml")
    assert monitor["vars"]["income_monitor_platform"] == "seldon"
    assert monitor["vars"]["income_monitor_seldon_namespace"] == "{{ income_pipeline_namespace }}"
    assert {"docker", "kind", "kubectl"} <= set(preflight["vars"]["preflight_tools"])
    preflight, monitor = _role_entry("deploy-kserve.yaml")
    assert monitor["vars"]["income_monitor_platform"] == "kserve"
    assert monitor["vars"]["income_monitor_kserve_namespace"] == "{{ kserve_income_namespace }}"
    assert monitor["vars"]["income_monitor_pod_monitor"] == "{{ kserve_income_monitoring }}"
    assert {"docker", "kind", "kubectl"} <= set(preflight["vars"]["preflight_tools"])


def test_the_roles_defaults_agree_with_the_rest_of_the_bundle():
    monitor = defaults("income_monitor")
    assert (
        monitor["income_monitor_kind_cluster_name"] == defaults("kind_cluster")["kind_cluster_name"]
    )
    assert (
        monitor["income_monitor_kserve_namespace"]
        == defaults("kserve_income")["kserve_income_namespace"]
    )
    assert (
        monitor["income_monitor_seldon_namespace"]
        == (defaults("income_pipeline")["income_pipeline_namespace"])
    )
    (broker,) = [d for d in documents(KSERVE / "broker.yaml") if d["kind"] == "Broker"]
    assert monitor["income_monitor_kserve_broker"] == broker["metadata"]["name"]
