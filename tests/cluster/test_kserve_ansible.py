"""The KServe path's Ansible: stages, rendered settings, pins, and agreement with kserve/.

Syntax, ansible-lint, argument specs and the string check cover these roles through
tests/cluster/test_ansible.py, which walks every role and playbook."""

from __future__ import annotations

import re
import shutil
import time

import pytest
import yaml

from income_bundle.kserve.manifests import APPLY_ORDER, MOUNT_PATH, NAMESPACE, load_documents
from tests.cluster.test_ansible import (
    ANSIBLE,
    BIN,
    KUBERNETES_VERSION,
    ROOT,
    documents,
    image_pins,
    run,
)

ROLES = ANSIBLE / "roles"


def defaults(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yaml").read_text())


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


def test_knative_is_configured_for_kourier_the_domain_and_pvc_volumes(rendered):
    import kubernetes_validate

    configs = {d["metadata"]["name"]: d for d in documents(rendered / "knative-config.yaml")}
    for config in configs.values():
        kubernetes_validate.validate(config, KUBERNETES_VERSION, strict=True)
        assert config["metadata"]["namespace"] == "knative-serving"
    assert (
        configs["config-network"]["data"]["ingress-class"]
        == "kourier.ingress.networking.knative.dev"
    )
    assert configs["config-domain"]["data"] == {defaults("kserve_stack")["kserve_stack_domain"]: ""}
    features = configs["config-features"]["data"]
    assert features["kubernetes.podspec-persistent-volume-claim"] == "enabled"


def test_kserve_runs_in_knative_mode_without_istio(rendered):
    (values,) = documents(rendered / "kserve-values.yaml")
    controller = values["kserve"]["controller"]
    assert controller["deploymentMode"] == "Knative"
    assert controller["gateway"]["disableIstioVirtualHost"] is True
    assert controller["gateway"]["domain"] == defaults("kserve_stack")["kserve_stack_domain"]


def test_mlserver_image_pins_are_the_artifacts_and_the_seldon_paths(rendered):
    dockerfile = (rendered / "kserve-mlserver.Dockerfile").read_text()
    image_pins(dockerfile)
    stack, seldon = defaults("kserve_stack"), defaults("seldon_core")
    # The Seldon path's image plus the CloudEvents SDK of the detectors' route (kserve/runtime.py).
    cloudevents = [
        pin for pin in stack["kserve_stack_mlserver_pins"] if pin.startswith("cloudevents==")
    ]
    assert cloudevents == [f"cloudevents=={image_pins(dockerfile)['cloudevents']}"]
    assert [pin for pin in stack["kserve_stack_mlserver_pins"] if pin not in cloudevents] == seldon[
        "seldon_core_mlserver_pins"
    ]
    assert stack["kserve_stack_mlserver_base_image"] == seldon["seldon_core_mlserver_base_image"]
    assert "USER 1000" in dockerfile  # the manifests' runAsUser


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


@pytest.mark.skipif(
    all(shutil.which(tool) for tool in ("kind", "helm")), reason="kind and helm are installed here"
)
def test_kserve_all_fails_fast_in_preflight_saying_what_is_missing():
    started = time.perf_counter()
    result = run([str(BIN / "ansible-playbook"), "playbooks/kserve-all.yaml"], timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert time.perf_counter() - started < 60
    assert "Preflight failed, nothing was changed" in output
    assert "kind is not installed or not on PATH" in output
    assert re.search(r"changed=0 ", output)
