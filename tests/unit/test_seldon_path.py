"""The Seldon cluster path against the Seldon Core v2.10.2 sources, read without running anything:
what the roles hand the charts, what they wait for, and the samples they load.

Upstream facts are constants with their source (SeldonIO/seldon-core at tag v2.10.2) beside them;
where the pinned charts are at hand (``../shared/upstream`` beside the checkout) the tests also
read the facts from them. How the roles reach the scheduler, run with ansible-playbook and
stand-ins, is tests/cluster/test_seldon_path.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ansible_files import ANSIBLE, ROLES, role_defaults
from tests.support.paths import ROOT, UPSTREAM


def upstream_chart(name: str) -> Path:
    chart = UPSTREAM / "charts" / name
    if not chart.is_dir():
        pytest.skip(
            f"{chart} is missing: the pinned charts sit in ../shared/upstream beside the checkout"
        )
    return chart


def iter_tasks(tasks: list[dict]) -> Iterator[dict]:
    for task in tasks:
        yield task
        for key in ("block", "rescue", "always"):
            yield from iter_tasks(task.get(key, []))


def role_tasks(role: str, file: str = "main.yaml") -> list[dict]:
    return list(iter_tasks(yaml.safe_load((ROLES / role / "tasks" / file).read_text())))


def render(value: Any, variables: dict[str, Any]) -> Any:
    """A role's Jinja, rendered by Ansible's own templar with the role's defaults."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    def trust(item: Any) -> Any:
        if isinstance(item, str):
            return trust_as_template(item)
        if isinstance(item, dict):
            return {key: trust(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [trust(inner) for inner in item]
        return item

    variables = {"playbook_dir": str(ANSIBLE / "playbooks"), **trust(variables)}
    return Templar(loader=DataLoader(), variables=variables).template(trust(value))


def chart_values(release: str, **overrides: Any) -> dict[str, Any]:
    """The values the seldon_core role hands the Helm release `release`, rendered."""
    (task,) = [
        t["kubernetes.core.helm"]
        for t in role_tasks("seldon_core")
        if t.get("kubernetes.core.helm", {}).get("name") == release
    ]
    return render(task.get("values", {}), {**role_defaults("seldon_core"), **overrides})


def merged(base: dict, top: dict) -> dict:
    """Helm's merge of user values over a chart's values.yaml."""
    out = dict(base)
    for key, value in top.items():
        out[key] = (
            merged(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def has_path(values: dict, path: str) -> bool:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


# --- The SeldonRuntime's Ready (defect: waited for a condition that could never be True) ------

# operator/apis/mlops/v1alpha1/seldonruntime_types.go: seldonRuntimeConditionSet is a living
# condition set of these six, so Ready is True only once each of them is.
RUNTIME_READY_NEEDS = {
    "SchedulerReady", "DataflowEngineReady", "ModelGatewayReady", "PipelineGatewayReady",
    "EnvoyReady", "HodometerReady",
}  # fmt: skip
# Same file, ConditionNameMap; seldonconfig_types.go names the components.
CONDITION_OF_COMPONENT = {
    "seldon-scheduler": "SchedulerReady",
    "seldon-envoy": "EnvoyReady",
    "seldon-dataflow-engine": "DataflowEngineReady",
    "seldon-modelgateway": "ModelGatewayReady",
    "seldon-pipelinegateway": "PipelineGatewayReady",
    "hodometer": "HodometerReady",
}
# k8s/helm-charts/seldon-core-v2-runtime/templates/seldon-runtime.yaml: values key -> the
# override (component) it sets. controllers/reconcilers/seldon/runtime_reconciler.go creates no
# reconciler for a disabled component, so its condition is never set; a component scaled to 0
# replicas is ready (deployment_reconciler.go GetConditions: ReadyReplicas >= Replicas).
RUNTIME_CHART_COMPONENTS = {
    "hodometer": "hodometer",
    "scheduler": "seldon-scheduler",
    "envoy": "seldon-envoy",
    "dataflow": "seldon-dataflow-engine",
    "modelgateway": "seldon-modelgateway",
    "pipelinegateway": "seldon-pipelinegateway",
}


def runtime_conditions_waited_for() -> set[str]:
    waits = [
        t["kubernetes.core.k8s_info"]
        for t in role_tasks("seldon_core")
        if t.get("kubernetes.core.k8s_info", {}).get("kind") == "SeldonRuntime"
    ]
    assert waits, "the seldon_core role no longer waits for the SeldonRuntime"
    waited = set()
    for wait in waits:
        assert wait["wait_condition"]["status"] == "True"
        condition = wait["wait_condition"]["type"]
        waited |= RUNTIME_READY_NEEDS if condition == "Ready" else {condition}
    return waited


def test_every_runtime_condition_waited_for_can_become_true():
    waited = runtime_conditions_waited_for()
    assert waited <= RUNTIME_READY_NEEDS
    values = merged(
        {key: {"disable": False, "replicas": 1} for key in RUNTIME_CHART_COMPONENTS},
        chart_values("seldon-core-v2-runtime"),
    )
    never_set = {
        CONDITION_OF_COMPONENT[component]
        for key, component in RUNTIME_CHART_COMPONENTS.items()
        if values[key]["disable"]
    }
    assert not never_set & waited, (
        f"the role disables the components behind {sorted(never_set & waited)} and then waits "
        "for them: a disabled component never sets its condition, so the wait can only time out"
    )


def test_hodometer_sends_nothing():
    assert chart_values("seldon-core-v2-runtime")["hodometer"]["replicas"] == 0


def test_runtime_chart_components_are_the_pinned_charts():
    template = (
        upstream_chart("seldon-core-v2-runtime-2.10.2") / "templates" / "seldon-runtime.yaml"
    ).read_text()
    # Each override is `- name: <component>` then `disable: {{ .Values.<key>.disable }}`.
    found = dict(
        (key, name)
        for name, key in re.findall(
            r"- name: (\S+)\n\s+disable: \{\{ \.Values\.(\w+)\.disable \}\}", template
        )
    )
    assert found == RUNTIME_CHART_COMPONENTS
    assert set(RUNTIME_CHART_COMPONENTS.values()) == set(CONDITION_OF_COMPONENT)


# --- Tracing (defect: `opentelemetry.enable` is no key of the chart, tracing stayed on) --------


def test_tracing_is_off_in_the_seldon_config_the_runtime_and_mlserver():
    setup = chart_values("seldon-core-v2-setup")
    runtime = chart_values("seldon-core-v2-runtime")
    # Setup chart: opentelemetry.disable -> SeldonConfig tracingConfig.disable; endpoint ->
    # MLSERVER_TRACING_SERVER of every server (templates/_components-*.tpl), which MLServer 1.7.1
    # uses whenever it is truthy (mlserver/rest/app.py, grpc/server.py: `if settings.tracing_server`).
    assert setup["opentelemetry"]["disable"] is True
    assert setup["opentelemetry"]["endpoint"] == ""
    # The runtime's own tracingConfig.disable reaches the seldon-tracing ConfigMap; addDefaults
    # does not take `disable` from the SeldonConfig (operator seldonconfig_types.go).
    assert runtime["config"]["tracingConfig"]["disable"] is True


def test_tracing_values_are_keys_of_the_pinned_charts():
    setup = yaml.safe_load(
        (upstream_chart("seldon-core-v2-setup-2.10.2") / "values.yaml").read_text()
    )
    runtime = yaml.safe_load(
        (upstream_chart("seldon-core-v2-runtime-2.10.2") / "values.yaml").read_text()
    )
    for key in chart_values("seldon-core-v2-setup")["opentelemetry"]:
        assert has_path(setup, f"opentelemetry.{key}"), (
            f"seldon-core-v2-setup has no opentelemetry.{key}"
        )
    assert has_path(runtime, "config.tracingConfig.disable")


# --- The stock servers (defect: replicas 0 under minReplicas 1, refused by the operator) -------


def validated_scaling(spec: dict) -> list[str]:
    """Problems operator v2.10.2 finds in a Server's replicas (internal/utils.go
    GetValidatedScalingSpec, called by controllers/mlops/server_controller.go, which then stops
    reconciling the Server with a terminal error)."""
    replicas, minimum, maximum = (spec.get(k) for k in ("replicas", "minReplicas", "maxReplicas"))
    if replicas is None and minimum is None and maximum is None:
        return []
    problems = []
    effective = 1
    if replicas is not None and replicas >= 0:
        effective = replicas
    elif minimum is not None and minimum > 0:
        effective = minimum
    low = minimum if minimum is not None and minimum > 0 else 0
    if low and effective < low:
        problems.append(f"replicas {effective} must be >= min replicas {low}")
    if maximum is not None and maximum > 0:
        if low > maximum:
            problems.append(f"min replicas {low} must be <= max replicas {maximum}")
        if effective > maximum:
            problems.append(f"replicas {effective} must be <= max replicas {maximum}")
    return problems


def test_scaling_rule_refuses_what_the_operator_refuses():
    assert validated_scaling({"replicas": 0, "minReplicas": 1, "maxReplicas": 1})
    assert validated_scaling({"replicas": 2, "minReplicas": 1, "maxReplicas": 1})
    assert not validated_scaling({"replicas": 0, "minReplicas": 0, "maxReplicas": 1})
    assert not validated_scaling({"replicas": 1, "minReplicas": 1, "maxReplicas": 1})


@pytest.mark.parametrize("triton", [False, True], ids=["triton-off", "triton-on"])
def test_stock_servers_are_servers_the_operator_accepts(triton):
    chart = yaml.safe_load(
        (upstream_chart("seldon-core-v2-servers-2.10.2") / "values.yaml").read_text()
    )
    values = merged(
        chart, chart_values("seldon-core-v2-servers", seldon_core_triton_enabled=triton)
    )
    # templates/_servers-*.tpl: each Server takes replicas, minReplicas, maxReplicas from its key.
    for server in ("mlserver", "triton"):
        spec = {key: values[server][key] for key in ("replicas", "minReplicas", "maxReplicas")}
        assert validated_scaling(spec) == [], (server, spec)
    assert values["mlserver"]["replicas"] == 0
    assert values["triton"]["replicas"] == (1 if triton else 0)


# --- Seldon's simple test on the cluster: iris on MLServer, tfsimple1 on Triton ----------------

TRITON_SAMPLES = ROLES / "income_pipeline" / "files"


def test_tfsimple1_is_seldons_sample_and_a_valid_model():
    from income_bundle.crds import CrdSchemas, find_crd_dir

    manifest = yaml.safe_load((TRITON_SAMPLES / "tfsimple1.yaml").read_text())
    assert manifest["metadata"]["name"] == "tfsimple1"
    # samples/models/tfsimple1.yaml at v2.10.2.
    assert manifest["spec"]["storageUri"] == "gs://seldon-models/triton/simple"
    assert manifest["spec"]["requirements"] == ["tensorflow"]
    crd_dir = find_crd_dir(ROOT)
    if crd_dir is None:
        pytest.skip("no CRD schemas: set CRD_DIR or put shared/crds beside the checkout")
    assert CrdSchemas.from_dir(crd_dir).errors(manifest) == []
    # docs-gb/kubernetes/resources/pipeline.md: two INT32 tensors INPUT0, INPUT1 of shape [1, 16].
    request = json.loads((TRITON_SAMPLES / "tfsimple1-request.json").read_text())
    assert [(t["name"], t["datatype"], t["shape"], len(t["data"])) for t in request["inputs"]] == [
        ("INPUT0", "INT32", [1, 16], 16),
        ("INPUT1", "INT32", [1, 16], 16),
    ]


def test_sample_models_need_what_their_server_offers():
    values = yaml.safe_load(
        (upstream_chart("seldon-core-v2-setup-2.10.2") / "values.yaml").read_text()
    )
    # SELDON_SERVER_CAPABILITIES of each ServerConfig (templates/_components-statefulsets.tpl).
    offers = {
        server: set(values["serverConfig"][server]["serverCapabilities"].split(","))
        for server in ("mlserver", "triton")
    }
    iris = yaml.safe_load((ROOT / "seldon-examples" / "models" / "iris.yaml").read_text())
    tfsimple1 = yaml.safe_load((TRITON_SAMPLES / "tfsimple1.yaml").read_text())
    assert set(iris["spec"]["requirements"]) <= offers["mlserver"]  # the income Server's config
    assert set(tfsimple1["spec"]["requirements"]) <= offers["triton"]
    assert not set(tfsimple1["spec"]["requirements"]) <= offers["mlserver"]


def test_every_triton_sample_the_role_offers_is_shipped():
    spec = yaml.safe_load((ROLES / "income_pipeline" / "meta" / "argument_specs.yaml").read_text())
    choices = spec["argument_specs"]["main"]["options"]["income_pipeline_triton_models"]["choices"]
    assert choices and all((TRITON_SAMPLES / f"{name}.yaml").is_file() for name in choices)
