"""The KServe path's Ansible, rendered and run: Knative's and KServe's settings, the image's pins,
and the preflight. The stages, pins and agreement with kserve/ read as files are
tests/unit/test_kserve_ansible.py.

Syntax, ansible-lint, argument specs and the string check cover these roles through
tests/cluster/test_ansible.py, which walks every role and playbook."""

from __future__ import annotations

import re
import shutil
import time

import pytest

from tests.support.ansible_files import BIN, KUBERNETES_VERSION, image_pins, run
from tests.support.ansible_files import role_defaults as defaults
from tests.support.manifests import documents


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
    # The Seldon path's image plus the CloudEvents SDK of the detectors' route (kserve/runtime.py)
    # and its one dependency.
    cloudevents = [
        pin for pin in stack["kserve_stack_mlserver_pins"] if pin.startswith("cloudevents==")
    ]
    added = cloudevents + [
        pin for pin in stack["kserve_stack_mlserver_pins"] if pin.startswith("deprecation==")
    ]
    assert cloudevents == [f"cloudevents=={image_pins(dockerfile)['cloudevents']}"]
    assert [pin for pin in stack["kserve_stack_mlserver_pins"] if pin not in added] == seldon[
        "seldon_core_mlserver_pins"
    ]
    assert stack["kserve_stack_mlserver_base_image"] == seldon["seldon_core_mlserver_base_image"]
    assert "USER 1000" in dockerfile  # the manifests' runAsUser


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
