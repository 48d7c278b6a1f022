"""The cluster path, checked by every static means: syntax, lint, rendered objects against the
Kubernetes and Seldon schemas, argument specs, the preflight, and one name everywhere."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from income_bundle.crds import CrdSchemas, find_crd_dir
from income_bundle.seldon.bundle import IN_CLUSTER_ROOT
from tests.support.ansible_files import (
    ANSIBLE,
    BIN,
    KUBERNETES_VERSION,
    PLAYBOOKS,
    image_pins,
    run,
)
from tests.support.ansible_files import ROLE_NAMES as ROLES
from tests.support.ansible_files import argument_specs as _specs
from tests.support.manifests import documents
from tests.support.paths import ROOT


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=[p.name for p in PLAYBOOKS])
def test_playbook_syntax(playbook):
    result = run([str(BIN / "ansible-playbook"), "--syntax-check", str(playbook)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile():
    config = yaml.safe_load((ANSIBLE / ".ansible-lint").read_text())
    assert (
        config["profile"] == "production"
        and "skip_list" not in config
        and "warn_list" not in config
    )
    result = run([str(BIN / "ansible-lint"), "--nocolor"], timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_core_objects_validate_against_the_pinned_kubernetes(rendered):
    import kubernetes_validate

    for doc in documents(rendered / "namespaces.yaml"):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_wrong_core_object_is_caught(rendered):
    import kubernetes_validate

    (namespace,) = documents(rendered / "namespaces.yaml")[:1]
    namespace["metadata"]["labelz"] = {"x": "y"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(namespace, KUBERNETES_VERSION, strict=True)


def test_server_validates_against_seldon_crds_and_mounts_the_storage_root(rendered):
    crd_dir = find_crd_dir(ROOT)
    if crd_dir is None:
        pytest.skip("no CRD schemas: set CRD_DIR or put shared/crds beside the checkout")
    (server,) = documents(rendered / "server.yaml")
    assert CrdSchemas.from_dir(crd_dir).errors(server) == []
    pod = server["spec"]["podSpec"]
    assert pod["volumes"][0]["hostPath"]["path"] == IN_CLUSTER_ROOT
    containers = {c["name"]: c for c in pod["containers"]}
    assert containers["rclone"]["volumeMounts"][0]["mountPath"] == IN_CLUSTER_ROOT
    mlserver = containers["mlserver"]
    assert {"name": "TF_USE_LEGACY_KERAS", "value": "1"} in mlserver["env"]
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in mlserver["env"]
    assert mlserver["resources"]["requests"] and mlserver["resources"]["limits"]["memory"]
    assert mlserver["securityContext"]["runAsNonRoot"] is True
    # The container spec itself is a valid Kubernetes container.
    import kubernetes_validate

    pod_doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
               "spec": {"volumes": pod["volumes"], "containers": [{**c, "image": c.get("image", "x")} for c in pod["containers"]]}}  # fmt: skip
    kubernetes_validate.validate(pod_doc, KUBERNETES_VERSION, strict=True)


def test_kind_config_mounts_the_checkout_where_storage_uris_point(rendered):
    (config,) = documents(rendered / "kind-config.yaml")
    (node,) = config["nodes"]
    assert re.fullmatch(r"kindest/node:v1\.33\.\d+@sha256:[0-9a-f]{64}", node["image"])
    (mount,) = node["extraMounts"]
    assert mount == {"hostPath": str(ROOT), "containerPath": IN_CLUSTER_ROOT, "readOnly": True}
    assert all(p["listenAddress"] == "127.0.0.1" for p in node["extraPortMappings"])
    for model in (ROOT / "seldon-examples" / "models").glob("*.yaml"):
        uri = yaml.safe_load(model.read_text())["spec"]["storageUri"]
        folder = Path(mount["hostPath"]) / uri.removeprefix(IN_CLUSTER_ROOT + "/")
        assert (folder / "model-settings.json").is_file(), uri


def test_kafka_is_a_single_kraft_node_with_the_listener_kind_publishes(rendered):
    pool, kafka = documents(rendered / "kafka.yaml")
    assert pool["kind"] == "KafkaNodePool" and pool["spec"]["replicas"] == 1
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    (external,) = [
        listener
        for listener in kafka["spec"]["kafka"]["listeners"]
        if listener["type"] == "nodeport"
    ]
    kind = documents(rendered / "kind-config.yaml")[0]["nodes"][0]["extraPortMappings"]
    assert external["configuration"]["bootstrap"]["nodePort"] in {p["containerPort"] for p in kind}


def test_monitoring_values_pick_up_rules_and_dashboards_everywhere(rendered):
    (values,) = documents(rendered / "kube-prometheus-stack-values.yaml")
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["ruleSelectorNilUsesHelmValues"] is False
    assert spec["podMonitorSelectorNilUsesHelmValues"] is False
    assert values["grafana"]["sidecar"]["dashboards"]["label"] == "grafana_dashboard"


def test_mlserver_image_pins_are_the_artifacts_versions(rendered):
    pins = image_pins((rendered / "mlserver.Dockerfile").read_text())
    assert {"scikit-learn", "alibi-detect", "tensorflow", "tf-keras", "numpy"} <= set(pins)


WRONG_VALUE = {
    "str": {"not": "a string"},
    "int": "many",
    "bool": "maybe",
    "list": {"not": "a list"},  # a scalar would become a one-item list
    "dict": ["not", "a", "dict"],
    "path": {"not": "a path"},
}


def test_argument_specs_reject_a_wrong_type_for_every_variable(tmp_path):
    cases = [{"role": role, "variable": "", "value": None} for role in ROLES]  # defaults pass
    for role, options in _specs().items():
        for variable, option in options.items():
            cases.append({"role": role, "variable": variable, "value": WRONG_VALUE[option["type"]]})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    result = run(
        [str(BIN / "ansible-playbook"), str(ROOT / "tests" / "ansible" / "argument_specs.yaml"),
         "-e", f"cases={tmp_path / 'cases.json'}", "-e", f"results={tmp_path / 'results.json'}"],
        timeout=900,  # one play over every variable of every role: over 300 s on a busy 2-core machine
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    # Ansible's specs convert anything to str/path; the roles' first task catches those.
    string_failures = json.loads((tmp_path / "results.json.strings").read_text())
    assert len(results) == len(cases)
    for index, (case, (failed, message)) in enumerate(zip(cases, results, strict=True)):
        if not case["variable"]:
            assert not failed and str(index) not in string_failures, (case, message)
            continue
        if str(index) in string_failures:
            failed, message = True, string_failures[str(index)]
        assert failed and case["variable"] in message, (case, message)


def test_docs_variables_page_matches_the_argument_specs():
    from income_bundle_dev.ansible_docs import PAGE, variables_page

    assert (ROOT / PAGE).read_text() == variables_page(ANSIBLE / "roles"), (
        f"run 'make docs' to regenerate {PAGE}"
    )


@pytest.mark.skipif(
    all(shutil.which(tool) for tool in ("kind", "helm")), reason="kind and helm are installed here"
)
def test_seldon_all_fails_fast_in_preflight_saying_what_is_missing():
    started = time.perf_counter()
    result = run([str(BIN / "ansible-playbook"), "playbooks/seldon-all.yaml"], timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert time.perf_counter() - started < 60
    assert "Preflight failed, nothing was changed" in output
    assert "kind is not installed or not on PATH: install kind >= v0.29.0" in output
    assert "helm is not installed or not on PATH" in output
    assert re.search(r"changed=0 ", output)
    if shutil.which("docker"):
        assert "docker" in output.split("Preflight failed")[1] or "daemon" not in output
