"""The KServe path's Ansible read as files: its stages, its pins against the rest of the bundle,
and the roles' agreement with kserve/. Rendered settings and the preflight are
tests/cluster/test_kserve_ansible.py."""

from __future__ import annotations

import re

import yaml

from income_bundle.kserve.manifests import APPLY_ORDER, MOUNT_PATH, NAMESPACE, load_documents
from tests.support.ansible_files import ANSIBLE, ROLES
from tests.support.ansible_files import role_defaults as defaults
from tests.support.paths import ROOT


def test_kserve_all_goes_from_nothing_to_a_called_inference_service():
    imported = [
        p["ansible.builtin.import_playbook"]
        for p in yaml.safe_load((ANSIBLE / "playbooks" / "kserve-all.yaml").read_text())
    ]
    assert imported == [
        "preflight.yaml",
        "kind-cluster.yaml",
        "setup-kserve.yaml",
        "deploy-kserve.yaml",
    ]
    tasks = yaml.safe_load((ROLES / "kserve_income" / "tasks" / "main.yaml").read_text())
    # The call sits in a block that kserve_income_check_call switches off (simulated clusters).
    tasks = [inner for t in tasks for inner in [t, *t.get("block", [])]]
    call = next(t for t in tasks if "ansible.builtin.uri" in t)
    assert call["ansible.builtin.uri"]["url"].endswith("/v2/models/income/infer")
    assert call["ansible.builtin.uri"]["status_code"] == 200


def test_pins_agree_with_the_rest_of_the_bundle():
    stack = defaults("kserve_stack")
    assert (
        stack["kserve_stack_cert_manager_chart_version"]
        == (defaults("ecosystem")["ecosystem_cert_manager_chart_version"])
    )
    # The release whose InferenceService CRD the manifests are validated against.
    assert stack["kserve_stack_kserve_version"] == "v0.20.0"
    for key in ("knative_serving", "knative_eventing", "kourier"):
        assert re.fullmatch(r"v1\.21\.\d+", stack[f"kserve_stack_{key}_version"]), key
    release = yaml.safe_load((ROLES / "kserve_stack" / "vars" / "main.yaml").read_text())
    files = [m["file"] for m in release["kserve_stack_release_manifests"]]
    tasks = (ROLES / "kserve_stack" / "tasks" / "main.yaml").read_text()
    assert all(name in tasks for name in files)
    for manifest in release["kserve_stack_release_manifests"]:
        assert "/releases/download/knative-{{ kserve_stack_" in manifest["url"]
        assert manifest["url"].endswith("/" + manifest["file"])


def test_roles_agree_with_the_manifests():
    docs = load_documents(ROOT)
    income = defaults("kserve_income")
    assert income["kserve_income_manifests"] == list(APPLY_ORDER)
    assert income["kserve_income_namespace"] == NAMESPACE
    assert defaults("kind_cluster")["kind_cluster_mount_path"] == MOUNT_PATH
    image = defaults("kserve_stack")["kserve_stack_mlserver_image"]
    (runtime,) = docs["servingruntime.yaml"]
    assert runtime["spec"]["containers"][0]["image"] == image
    for service in docs["detectors.yaml"]:
        assert service["spec"]["template"]["spec"]["containers"][0]["image"] == image
    # Every object the role waits for is one the manifests create.
    tasks = yaml.safe_load((ROLES / "kserve_income" / "tasks" / "main.yaml").read_text())
    waits = next(t for t in tasks if "block" in t)["block"][0]["loop"]
    created = {
        (d["apiVersion"], d["kind"], d["metadata"]["name"]) for ds in docs.values() for d in ds
    }
    assert {(w["api_version"], w["kind"], w["name"]) for w in waits} <= created
    assert {w["kind"] for w in waits} == {"Broker", "Service", "Trigger", "InferenceService"}
