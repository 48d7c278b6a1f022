"""Every condition a role waits for is one the upstream controller sets (facts and sources in
income_bundle_dev.upstream_checks.CONDITION_FACTS), and Knative is configured only once the webhook
that validates its ConfigMaps serves."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from income_bundle_dev.upstream_checks import knative_config_order_problems, wait_problems, waits
from tests.support.paths import ROOT

ROLES = ROOT / "ansible" / "roles"


def _roles_copy(tmp_path: Path) -> Path:
    roles = tmp_path / "roles"
    shutil.copytree(ROLES, roles)
    return roles


def _edit_tasks(roles: Path, role: str, edit) -> None:
    path = roles / role / "tasks" / "main.yaml"
    tasks = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(edit(tasks), sort_keys=False))


def test_every_waited_condition_is_set_by_its_controller():
    found = {(w.group, w.kind, w.condition) for w in waits(ROLES)}
    assert {("mlops.seldon.io", "SeldonRuntime", "Ready"), ("kafka.strimzi.io", "Kafka", "Ready"),
            ("serving.kserve.io", "InferenceService", "Ready"),
            ("eventing.knative.dev", "Broker", "Ready")} <= found  # fmt: skip
    assert wait_problems(ROLES) == []


def test_a_condition_the_controller_never_sets_is_named(tmp_path):
    roles = _roles_copy(tmp_path)

    def available(tasks):
        for task in tasks:
            for inner in task.get("block", []):
                info = inner.get("kubernetes.core.k8s_info", {})
                if info.get("kind") == "Server":
                    info["wait_condition"]["type"] = "Available"
        return tasks

    _edit_tasks(roles, "seldon_core", available)
    (problem,) = wait_problems(roles)
    assert "waits for Server condition Available, which its controller never sets" in problem
    assert "StatefulSetOrDeploymentReady" in problem and "server_types.go" in problem


def test_a_deployment_asked_for_in_the_core_group_is_named(tmp_path):
    roles = _roles_copy(tmp_path)

    def no_group(tasks):
        for task in tasks:
            for inner in task.get("block", []):
                info = inner.get("kubernetes.core.k8s_info", {})
                if info.get("kind") == "Deployment":
                    info.pop("api_version")
        return tasks

    _edit_tasks(roles, "kserve_stack", no_group)
    problems = wait_problems(roles)
    assert problems and all("asks for Deployment in apiVersion v1" in p for p in problems)


def test_knative_is_configured_after_its_webhook_serves():
    assert knative_config_order_problems(ROLES) == []


def test_configuring_knative_before_its_webhook_serves_is_named(tmp_path):
    roles = _roles_copy(tmp_path)

    def without_webhook_wait(tasks):
        return [t for t in tasks if "webhook" not in t["name"]]

    _edit_tasks(roles, "kserve_stack", without_webhook_wait)
    problems = knative_config_order_problems(roles)
    assert len(problems) == 2
    assert "before waiting for Deployment knative-serving/webhook to be Available" in problems[0]
    assert "ready endpoint of Service knative-serving/webhook" in problems[1]
