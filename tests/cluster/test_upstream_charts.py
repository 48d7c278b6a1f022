"""The charts the roles install and every object the bundle applies, against the pinned upstream
sources: ../shared/upstream beside the checkout (CI always has it), else `helm pull` of the pinned
chart when online. Rendering needs helm: .ci/run builds it; elsewhere those tests skip, saying how
to get it."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from income_bundle_dev.upstream_checks import (
    HELM_VERSION,
    ChartUnavailableError,
    chart_dir,
    chart_installs,
    find_helm,
    find_upstream_dir,
    helm_cache_dir,
    helm_template,
    kubernetes_schema_version,
    node_kubernetes_version,
    object_problems,
    unknown_values,
    upstream_crds,
)
from tests.support.paths import ROOT

ROLES = ROOT / "ansible" / "roles"
NODE_VERSION = ".".join(str(part) for part in node_kubernetes_version(ROLES))
SCHEMA_VERSION = kubernetes_schema_version(ROLES)
# Rendered role templates that are Kubernetes objects (the others are kind's config, chart values
# checked above, and Dockerfiles).
ROLE_OBJECT_TEMPLATES = (
    "namespaces.yaml",
    "kafka.yaml",
    "server.yaml",
    "income-monitoring.yaml",
    "seldon-monitors.yaml",
    "grafana-dashboard.yaml",
    "knative-config.yaml",
    "income-monitor-seldon.yaml",
    "income-monitor-kserve.yaml",
    "income-monitor-podmonitor-seldon.yaml",
    "income-monitor-podmonitor-kserve.yaml",
    "income-monitor-triggers.yaml",
    "tracing-namespace.yaml",
    "jaeger.yaml",
)


@pytest.fixture(scope="module")
def upstream() -> Path | None:
    return find_upstream_dir(ROOT)


@pytest.fixture(scope="module")
def installs(rendered):
    return chart_installs(ROLES, rendered)


@pytest.fixture(scope="module")
def charts(installs, upstream, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("charts")
    try:
        return {install: chart_dir(install, upstream, work) for install in installs}
    except ChartUnavailableError as error:
        pytest.skip(f"pinned chart unavailable: {error}")


@pytest.fixture(scope="module")
def helm() -> Path:
    found = find_helm()
    if found is None:
        pytest.skip(
            f"helm not found on PATH or in {helm_cache_dir()}/bin: .ci/run builds it "
            f"(GOBIN={helm_cache_dir()}/bin go install helm.sh/helm/v3/cmd/helm@{HELM_VERSION}), "
            f"or install helm >= 3.16"
        )
    return found


@pytest.fixture(scope="module")
def crd_source(upstream) -> Path:
    if upstream is None:
        pytest.skip(
            "no ../shared/upstream beside the checkout (nor $UPSTREAM_DIR): the pinned CRDs of "
            "Knative, KServe, Seldon, Strimzi and prometheus-operator are there"
        )
    return upstream


@pytest.fixture(scope="module")
def rendered_charts(installs, charts, helm) -> dict:
    return {
        install: helm_template(helm, charts[install], install, NODE_VERSION) for install in installs
    }


def test_the_roles_install_the_pinned_charts(installs):
    assert {(i.chart, i.version) for i in installs} == {
        ("cert-manager", "v1.16.2"),
        ("strimzi-kafka-operator", "0.45.0"),
        ("kube-prometheus-stack", "67.8.0"),
        ("seldon-core-v2-crds", "2.10.2"),
        ("seldon-core-v2-setup", "2.10.2"),
        ("seldon-core-v2-runtime", "2.10.2"),
        ("seldon-core-v2-servers", "2.10.2"),
        ("kserve-crd", "v0.20.0"),
        ("kserve-resources", "v0.20.0"),
        ("signoz", "0.131.0"),  # the tracing role, TRACING=signoz
    }


def test_every_value_the_roles_hand_a_chart_is_a_key_of_it(installs, charts):
    problems = []
    for install in installs:
        label = f"{install.chart} {install.version} ({install.role}: {install.task})"
        problems += unknown_values(charts[install], install.values, label)
    assert problems == []


def _install(installs, chart):
    return next(i for i in installs if i.chart == chart)


def test_an_unknown_key_names_the_chart_the_path_and_the_nearest_key(installs, charts):
    setup = charts[_install(installs, "seldon-core-v2-setup")]
    assert unknown_values(setup, {"opentelemetry": {"enable": False}}, "setup") == [
        "setup: opentelemetry.enable is not a key of the chart's values; "
        "nearest existing key: opentelemetry.disable"
    ]
    # In a subchart, against the subchart's own values.
    stack = charts[_install(installs, "kube-prometheus-stack")]
    (problem,) = unknown_values(stack, {"grafana": {"sidecar": {"dashbords": {}}}}, "stack")
    assert problem.startswith("stack > grafana: sidecar.dashbords is not a key")
    assert problem.endswith("nearest existing key: sidecar.dashboards")


def test_free_maps_take_any_key_and_a_scalar_is_not_a_map(installs, charts):
    stack = charts[_install(installs, "kube-prometheus-stack")]
    # An empty map in values.yaml is handed to the object whole: its keys are the object's.
    free = {"prometheus": {"prometheusSpec": {"podMetadata": {"labels": {"team": "income"}}}}}
    assert unknown_values(stack, free, "stack") == []
    (problem,) = unknown_values(
        stack, {"prometheus": {"prometheusSpec": {"retentionn": "2d"}}}, "stack"
    )
    assert "prometheus.prometheusSpec.retentionn" in problem
    assert "nearest existing key: prometheus.prometheusSpec.retention" in problem


def test_every_chart_renders_with_the_roles_values(rendered_charts):
    for install, docs in rendered_charts.items():
        assert docs, f"{install.chart} rendered nothing"
    kserve = next(docs for i, docs in rendered_charts.items() if i.chart == "kserve-resources")
    (config,) = [d for d in kserve if d["metadata"]["name"] == "inferenceservice-config"]
    assert '"defaultDeploymentMode": "Knative"' in config["data"]["deploy"]


def _chart_crds(rendered_charts, upstream):
    """CRDs of ../shared/upstream and of the rendered charts. Without ../shared, objects of
    kinds whose CRD no pinned chart renders (Knative's, cert-manager's) are left out, and said."""
    every = [doc for docs in rendered_charts.values() for doc in docs]
    if upstream is not None:
        return upstream_crds(upstream, every), every
    from income_bundle.crds import CrdSchemas

    crds = CrdSchemas.from_documents(every)
    builtin = re.compile(r"^(v1|[a-z0-9.]*k8s\.io/\w+|(apps|batch|policy|autoscaling)/\w+)$")
    checked = [
        d
        for d in every
        if builtin.match(d["apiVersion"]) or (d["apiVersion"], d["kind"]) in crds.schemas
    ]
    print(f"without ../shared/upstream: {len(every) - len(checked)} objects have no CRD at hand")
    return crds, checked


def test_every_rendered_object_validates_against_its_crd_or_kubernetes(rendered_charts, upstream):
    crds, checked = _chart_crds(rendered_charts, upstream)
    problems = []
    for install, docs in rendered_charts.items():
        origin = f"{install.chart} {install.version}"
        problems += object_problems([d for d in docs if d in checked], crds, SCHEMA_VERSION, origin)
    assert problems == []


def test_a_wrong_field_in_a_rendered_object_is_caught(rendered_charts, upstream):
    crds, checked = _chart_crds(rendered_charts, upstream)
    deployment = copy.deepcopy(next(d for d in checked if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    (problem,) = object_problems([deployment], crds, SCHEMA_VERSION, "chart")
    assert "imagePullPolicyy" in problem


def _static_objects(rendered) -> dict[str, list[dict]]:
    files = [
        *sorted((ROOT / "seldon-examples").rglob("*.yaml")),
        *sorted((ROOT / "kserve").glob("*.yaml")),
        *(rendered / name for name in ROLE_OBJECT_TEMPLATES),
    ]
    return {
        str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name): [
            d for d in yaml.safe_load_all(path.read_text()) if d
        ]
        for path in files
    }


def test_every_manifest_and_role_template_validates_strictly(rendered, crd_source):
    crds = upstream_crds(crd_source)
    objects = _static_objects(rendered)
    kinds = {d["kind"] for docs in objects.values() for d in docs}
    assert {"Model", "Pipeline", "Server", "Kafka", "KafkaNodePool", "PodMonitor",
            "PrometheusRule", "InferenceService", "ServingRuntime", "Service", "Broker",
            "Trigger", "ConfigMap", "Namespace"} <= kinds  # fmt: skip
    problems = []
    for origin, docs in objects.items():
        problems += object_problems(docs, crds, SCHEMA_VERSION, origin)
    assert problems == []


def test_typos_in_knative_and_strimzi_objects_are_caught(rendered, crd_source):
    crds = upstream_crds(crd_source)
    objects = _static_objects(rendered)
    trigger = copy.deepcopy(objects["kserve/triggers.yaml"][0])
    trigger["spec"]["subscriber"]["reff"] = trigger["spec"]["subscriber"].pop("ref")
    service = copy.deepcopy(objects["kserve/detectors.yaml"][0])
    service["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    kafka = copy.deepcopy(next(d for d in objects["kafka.yaml"] if d["kind"] == "Kafka"))
    kafka["spec"]["kafka"]["listeners"][0]["tls"] = "no"
    problems = "\n".join(object_problems([trigger, service, kafka], crds, SCHEMA_VERSION, "x"))
    assert "spec.subscriber: Additional properties are not allowed ('reff'" in problems
    assert "containers.0: Additional properties are not allowed ('imagePullPolicyy'" in problems
    assert "spec.kafka.listeners.0.tls: 'no' is not of type 'boolean'" in problems


def test_helm_refuses_a_node_older_than_a_charts_kube_version(installs, charts, helm):
    # cert-manager v1.16.2's Chart.yaml says kubeVersion ">= 1.22.0-0": helm enforces it at the
    # version the other tests render for (the kind node's), so passing them means it holds.
    cert_manager = _install(installs, "cert-manager")
    with pytest.raises(RuntimeError, match=r"incompatible with Kubernetes v1\.21\.0"):
        helm_template(helm, charts[cert_manager], cert_manager, "1.21.0")


def test_seldon_facts_agree_with_the_pinned_chart_and_monitors(rendered_charts, crd_source):
    from income_bundle_dev.upstream_checks import (
        SELDON_SERVER_METRICS_PORT,
        SELDON_SERVER_POD_LABELS,
    )

    setup = next(docs for i, docs in rendered_charts.items() if i.chart == "seldon-core-v2-setup")
    (mlserver,) = [
        d for d in setup if d["kind"] == "ServerConfig" and d["metadata"]["name"] == "mlserver"
    ]
    ports = {
        port["name"]
        for container in mlserver["spec"]["podSpec"]["containers"]
        for port in container.get("ports", [])
    }
    assert SELDON_SERVER_METRICS_PORT in ports
    (monitor,) = yaml.safe_load_all(
        (crd_source / "seldon-monitors" / "server-podmonitor.yaml").read_text()
    )
    assert monitor["spec"]["selector"]["matchLabels"] == SELDON_SERVER_POD_LABELS
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == [
        SELDON_SERVER_METRICS_PORT
    ]
