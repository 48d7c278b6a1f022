"""Tracing on the cluster paths, read in process (no helm, no cluster): one variable,
tracing_backend (make TRACING=), turns it on or off everywhere; off renders nothing of it and
hands Seldon the values it had before tracing could be turned on. Rendered charts, the backends'
objects and a real API server's verdict are in tests/cluster/test_tracing_cluster.py."""

from __future__ import annotations

import pytest
import yaml

from tests.support.ansible_files import ANSIBLE, ROLES, role_defaults
from tests.support.tracing import COLLECTOR_SERVICE, render_template, role_default


def _tasks(role: str) -> list[dict]:
    def flat(tasks):
        for task in tasks or []:
            yield task
            for key in ("block", "rescue", "always"):
                yield from flat(task.get(key))

    return list(flat(yaml.safe_load((ROLES / role / "tasks" / "main.yaml").read_text())))


def _seldon_values(release: str, backend: str) -> dict:
    from income_bundle_dev.upstream_checks import render_with_defaults

    (task,) = [
        t["kubernetes.core.helm"]
        for t in _tasks("seldon_core")
        if t.get("kubernetes.core.helm", {}).get("name") == release
    ]
    return render_with_defaults(task["values"], ROLES, {"tracing_backend": backend})


def test_the_one_variable_is_a_string_choice_defaulting_to_off():
    # A bare `off` in YAML is the boolean false: the default must be the string.
    assert role_defaults("tracing")["tracing_backend"] == "off"
    spec = yaml.safe_load((ROLES / "tracing" / "meta" / "argument_specs.yaml").read_text())
    option = spec["argument_specs"]["main"]["options"]["tracing_backend"]
    assert option["choices"] == ["off", "jaeger", "signoz"]


@pytest.mark.parametrize("playbook", ["setup-ecosystem.yaml", "setup-kserve.yaml"])
def test_the_setup_playbooks_run_the_tracing_role_only_when_it_is_on(playbook):
    (play,) = yaml.safe_load((ANSIBLE / "playbooks" / playbook).read_text())
    (role,) = [r for r in play["roles"] if r["role"] == "tracing"]
    assert role["when"] == "tracing_backend | default('off') != 'off'"
    names = [r["role"] for r in play["roles"]]
    # Before what sends to it: Knative is configured by kserve_stack after the backend exists.
    if "kserve_stack" in names:
        assert names.index("tracing") < names.index("kserve_stack")


def test_every_object_task_of_the_tracing_role_is_guarded_by_the_backend():
    top = yaml.safe_load((ROLES / "tracing" / "tasks" / "main.yaml").read_text())
    for task in top:  # a block's `when` guards the tasks in it
        inner = [task, *task.get("block", []), *task.get("rescue", [])]
        if any(k.startswith("kubernetes.core.") for t in inner for k in t):
            assert "tracing_backend" in task.get("when", ""), task["name"]


def test_off_hands_seldon_the_values_of_before():
    assert _seldon_values("seldon-core-v2-setup", "off")["opentelemetry"] == {
        "disable": True,
        "endpoint": "",
    }
    assert _seldon_values("seldon-core-v2-runtime", "off")["config"] == {
        "tracingConfig": {"disable": True}
    }


@pytest.mark.parametrize("backend", ["jaeger", "signoz"])
def test_on_hands_seldon_the_collector_and_lets_the_runtime_inherit_it(backend):
    endpoint = f"{COLLECTOR_SERVICE[backend]}.tracing:4317"
    assert _seldon_values("seldon-core-v2-setup", backend)["opentelemetry"] == {
        "disable": False,
        "endpoint": endpoint,
    }
    # Empty endpoint, protocol and ratio: the operator fills them from the SeldonConfig.
    assert _seldon_values("seldon-core-v2-runtime", backend)["config"] == {
        "tracingConfig": {"disable": False}
    }
    (server,) = render_template("seldon_core", "server.yaml.j2", backend)
    (mlserver,) = [c for c in server["spec"]["podSpec"]["containers"] if c["name"] == "mlserver"]
    assert {"name": "MLSERVER_TRACING_SERVER", "value": endpoint} in mlserver["env"]


def test_off_renders_no_tracing_setting_anywhere():
    (server,) = render_template("seldon_core", "server.yaml.j2", "off")
    for container in server["spec"]["podSpec"]["containers"]:
        assert "MLSERVER_TRACING_SERVER" not in {e["name"] for e in container.get("env") or []}
    knative = render_template("kserve_stack", "knative-config.yaml.j2", "off")
    assert "config-observability" not in {d["metadata"]["name"] for d in knative}


def test_a_users_own_collector_is_taken_without_a_backend():
    # seldon_core_tracing_endpoint set directly: Seldon traces to it, and no backend is installed.
    from income_bundle_dev.upstream_checks import render_with_defaults

    (task,) = [
        t["kubernetes.core.helm"]
        for t in _tasks("seldon_core")
        if t.get("kubernetes.core.helm", {}).get("name") == "seldon-core-v2-setup"
    ]
    values = render_with_defaults(
        task["values"], ROLES, {"seldon_core_tracing_endpoint": "otel.observability:4317"}
    )
    assert values["opentelemetry"] == {"disable": False, "endpoint": "otel.observability:4317"}
    assert role_default("kserve_stack", "kserve_stack_tracing_endpoint", "off") == ""


def test_jaeger_objects_live_in_the_tracing_namespace_and_name_the_pinned_image():
    namespace = role_defaults("tracing")["tracing_namespace"]
    (created,) = render_template("tracing", "tracing-namespace.yaml.j2", "jaeger")
    assert (created["kind"], created["metadata"]["name"]) == ("Namespace", namespace)
    docs = render_template("tracing", "jaeger.yaml.j2", "jaeger")
    assert {d["metadata"]["namespace"] for d in docs} == {namespace}
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # Jaeger v2.12.0 is the release of the Go module v1.75.0 (tagged together, CHANGELOG.md).
    assert container["image"] == "docker.io/jaegertracing/jaeger:2.12.0"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize(
    ("backend", "logged"), [("off", False), ("jaeger", True), ("signoz", True)]
)
def test_the_inference_service_logs_the_traceparent_only_with_tracing_on(backend, logged):
    assert role_default("kserve_income", "kserve_income_log_traceparent", backend) is logged
    (task,) = [t for t in _tasks("kserve_income") if "traceparent" in t["name"]]
    assert task["when"] == "kserve_income_log_traceparent | bool"
    patch = task["kubernetes.core.k8s"]
    # KServe v0.20.0's agent matches r.Header's canonical names (pkg/logger/handler.go).
    assert patch["definition"]["spec"]["predictor"]["logger"]["metadataHeaders"] == ["Traceparent"]
    assert (patch["kind"], patch["name"]) == ("InferenceService", "income")
