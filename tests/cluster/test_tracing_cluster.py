"""Tracing on the cluster paths (make TRACING=jaeger|signoz, the tracing role), against the pinned
sources: SigNoz's values are keys of its chart 0.131.0 (and its subcharts'), the chart renders with
them (helm template) and its objects validate; Jaeger's objects hang together; every endpoint the
roles hand Seldon and Knative is the backend's collector Service and port; and with tracing on,
the backends' objects, Knative's tracing ConfigMaps and Seldon's tracing config are accepted by a
real kube-apiserver (the simulated cluster) and a second apply changes nothing. With off nothing
of it is rendered. Seldon's own components are checked in tests/cluster/test_seldon_path.py.

Applying the rendered objects here stands in for a playbook run with tracing on, which the 15 min
of tests/cluster/test_sim_cluster_playbooks.py has no room for."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from income_bundle.monitoring.dashboard import DEFAULT_TRACE_URL, TRACE_URL_VARIABLE
from income_bundle_dev import simcluster
from income_bundle_dev.upstream_checks import (
    chart_dir,
    helm_template,
    object_problems,
    unknown_values,
    upstream_crds,
)
from tests.cluster.test_upstream_charts import (  # noqa: F401
    NODE_VERSION,
    SCHEMA_VERSION,
    helm,
    upstream,
)
from tests.support.paths import ROOT
from tests.support.tracing import (
    BACKENDS,
    COLLECTOR_SERVICE,
    OTLP_GRPC_PORT,
    OTLP_HTTP_PORT,
    installs,
    render_template,
    role_default,
)

NAMESPACE = "tracing"  # the tracing role's default tracing_namespace
FIELD_MANAGER = "income-bundle"


def _signoz(rendered, backend: str = "signoz"):
    (install,) = installs(rendered, backend, ("signoz",))
    return install


@pytest.fixture(scope="module")
def signoz_chart(rendered, upstream, tmp_path_factory):  # noqa: F811
    if upstream is None:
        pytest.skip("no ../shared/upstream beside the checkout: the pinned SigNoz chart is there")
    return chart_dir(_signoz(rendered), upstream, tmp_path_factory.mktemp("signoz"))


@pytest.fixture(scope="module")
def signoz_objects(rendered, signoz_chart, helm) -> list[dict]:  # noqa: F811
    return helm_template(helm, signoz_chart, _signoz(rendered), NODE_VERSION)


def _of_kind(docs: list[dict], kind: str, name: str | None = None) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return found


def _pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def _memory(container: dict) -> tuple[str | None, str | None]:
    resources = container.get("resources") or {}
    return (resources.get("requests") or {}).get("memory"), (resources.get("limits") or {}).get(
        "memory"
    )


# --- SigNoz: values, render, objects -----------------------------------------------------------


def test_signoz_values_are_keys_of_the_pinned_chart_and_its_subcharts(rendered, signoz_chart):
    install = _signoz(rendered)
    assert (install.chart, install.version, install.namespace) == ("signoz", "0.131.0", NAMESPACE)
    assert unknown_values(signoz_chart, install.values, "signoz") == []
    # The check can fail: a misspelt key, and one of the clickhouse subchart's, are named.
    wrong = {"clickhouse": {"persistance": {"size": "5Gi"}}, "otelCollector": {"resources": {}}}
    (problem,) = unknown_values(signoz_chart, wrong, "signoz")
    assert problem.startswith("signoz > clickhouse: persistance is not a key")
    assert problem.endswith("nearest existing key: persistence")


def test_signoz_renders_with_the_roles_sizes_and_every_object_validates(
    signoz_objects,
    upstream,  # noqa: F811
):
    defaults = {
        name: role_default("tracing", name, "signoz")
        for name in (
            "tracing_signoz_clickhouse_storage_size",
            "tracing_signoz_clickhouse_memory_request",
            "tracing_signoz_clickhouse_memory_limit",
            "tracing_signoz_collector_memory_request",
            "tracing_signoz_collector_memory_limit",
            "tracing_signoz_memory_request",
            "tracing_signoz_memory_limit",
            "tracing_signoz_storage_size",
        )
    }
    # ClickHouse is made by its operator from the ClickHouseInstallation: its pod template and
    # volume claim template carry the sizes.
    installation = _of_kind(signoz_objects, "ClickHouseInstallation")
    (pod,) = installation["spec"]["templates"]["podTemplates"]
    (clickhouse,) = [c for c in pod["spec"]["containers"] if c["name"] == "clickhouse"]
    assert _memory(clickhouse) == (
        defaults["tracing_signoz_clickhouse_memory_request"],
        defaults["tracing_signoz_clickhouse_memory_limit"],
    )
    (claim,) = installation["spec"]["templates"]["volumeClaimTemplates"]
    assert (
        claim["spec"]["resources"]["requests"]["storage"]
        == defaults["tracing_signoz_clickhouse_storage_size"]
    )
    collector = _of_kind(signoz_objects, "Deployment", "signoz-otel-collector")
    (container,) = _pod_spec(collector)["containers"]
    assert _memory(container) == (
        defaults["tracing_signoz_collector_memory_request"],
        defaults["tracing_signoz_collector_memory_limit"],
    )
    signoz = _of_kind(signoz_objects, "StatefulSet", "signoz")
    (container,) = _pod_spec(signoz)["containers"]
    assert _memory(container) == (
        defaults["tracing_signoz_memory_request"],
        defaults["tracing_signoz_memory_limit"],
    )
    (claim,) = signoz["spec"]["volumeClaimTemplates"]
    assert (
        claim["spec"]["resources"]["requests"]["storage"] == defaults["tracing_signoz_storage_size"]
    )
    # Off by default in the chart, and left off: no Postgres, no Redpanda, no second gateway.
    kinds_names = {(d["kind"], d["metadata"]["name"]) for d in signoz_objects}
    assert not any(
        "postgres" in n or "redpanda" in n or "otel-gateway" in n for _, n in kinds_names
    )
    # Every object against its CRD (the chart's ClickHouse CRDs) or Kubernetes' own schema.
    if upstream is None:
        pytest.skip("no ../shared/upstream: the pinned CRDs are there")
    crds = upstream_crds(upstream, signoz_objects)
    docs = [d for d in signoz_objects if d["kind"] != "CustomResourceDefinition"]
    assert object_problems(docs, crds, SCHEMA_VERSION, "signoz 0.131.0") == []


# --- The endpoints the roles hand Seldon and Knative are the backend's collector ----------------


def _service_port(docs: list[dict], service: str, port: int) -> None:
    """The Service exists in the tracing namespace, has the port, and the port reaches a container
    port of a workload its selector selects."""
    found = _of_kind([d for d in docs if d["kind"] == "Service"], "Service", service)
    assert found["metadata"].get("namespace", NAMESPACE) == NAMESPACE
    (entry,) = [p for p in found["spec"]["ports"] if p["port"] == port]
    target = entry.get("targetPort", port)
    selector = found["spec"]["selector"]
    reached = []
    for workload in docs:
        if workload["kind"] not in ("Deployment", "StatefulSet"):
            continue
        labels = workload["spec"]["template"]["metadata"].get("labels", {})
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        for container in _pod_spec(workload)["containers"]:
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            if target in ports or target in ports.values():
                reached.append(workload["metadata"]["name"])
    assert reached, f"Service {service} port {port} reaches no container port {target!r}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_seldon_and_knative_are_pointed_at_the_backends_collector(backend, signoz_objects):
    service = COLLECTOR_SERVICE[backend]
    assert role_default("seldon_core", "seldon_core_tracing_endpoint", backend) == (
        f"{service}.{NAMESPACE}:{OTLP_GRPC_PORT}"
    )
    assert role_default("kserve_stack", "kserve_stack_tracing_endpoint", backend) == (
        f"http://{service}.{NAMESPACE}:{OTLP_HTTP_PORT}/v1/traces"
    )
    docs = (
        render_template("tracing", "jaeger.yaml.j2", backend)
        if backend == "jaeger"
        else signoz_objects
    )
    for port in (OTLP_GRPC_PORT, OTLP_HTTP_PORT):
        _service_port(docs, service, port)


def test_off_points_nothing_anywhere_and_an_unknown_backend_is_refused():
    assert role_default("seldon_core", "seldon_core_tracing_endpoint", "off") == ""
    assert role_default("kserve_stack", "kserve_stack_tracing_endpoint", "off") == ""
    # The Makefile refuses what the tracing role's argument spec would (choices).
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.deps-stamp", "-o", "artifacts",
         "cluster", "TRACING=zipkin"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "TRACING=zipkin: the cluster targets take off, jaeger or signoz" in result.stderr


@pytest.mark.parametrize(
    ("target", "tracing", "expected"),
    [
        ("cluster", None, "off"),
        ("cluster", "jaeger", "jaeger"),
        ("kserve", "signoz", "signoz"),
        ("deploy", "off", "off"),
    ],
)
def test_make_hands_tracing_to_every_cluster_playbook(target, tracing, expected):
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.deps-stamp", "-o", "artifacts",
         target, *([f"TRACING={tracing}"] if tracing else [])],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "TRACING"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "ansible-playbook" in line]
    assert f"-e tracing_backend={expected} " in line


@pytest.mark.parametrize(
    ("tracing", "traced"), [(None, False), ("off", False), ("1", True), ("jaeger", True)]
)
def test_make_demo_traces_unless_tracing_is_unset_or_off(tracing, traced):
    # One variable for both: `make demo TRACING=off` must not start Jaeger.
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.deps-stamp", "demo",
         *([f"TRACING={tracing}"] if tracing else [])],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "TRACING"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if " demo" in line]
    assert ("--tracing" in line) is traced, line


@pytest.mark.parametrize(
    ("backend", "ui"),
    [("off", DEFAULT_TRACE_URL), ("jaeger", "http://127.0.0.1:16686"),
     ("signoz", "http://127.0.0.1:8080")],
)  # fmt: skip
def test_the_clusters_dashboard_links_to_the_chosen_backend(tmp_path, backend, ui):
    # Rendered by Ansible's template module (the dashboard is read with a file lookup), with the
    # ecosystem role's defaults and tracing_backend as `make TRACING=` passes it.
    import sys

    rendered = tmp_path / "grafana-dashboard.yaml"
    role = ROOT / "ansible" / "roles" / "ecosystem"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ansible")), "localhost", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}",
         "-e", f"@{role / 'defaults' / 'main.yaml'}", "-e", f"tracing_backend={backend}",
         "-e", f"ecosystem_grafana_dashboard_file={ROOT / 'monitoring/grafana/income-dashboard.json'}",
         "-m", "ansible.builtin.template",
         "-a", f"src={role / 'templates' / 'grafana-dashboard.yaml.j2'} dest={rendered}"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    dashboard = json.loads(yaml.safe_load(rendered.read_text())["data"]["income-dashboard.json"])
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == TRACE_URL_VARIABLE]
    assert variable["query"] == variable["current"]["value"] == ui
    # Only the variable changed: every trace link still goes through it.
    generated = json.loads((ROOT / "monitoring/grafana/income-dashboard.json").read_text())
    assert json.dumps(dashboard).replace(ui, DEFAULT_TRACE_URL) == json.dumps(generated)


# --- Jaeger ------------------------------------------------------------------------------------


def test_jaeger_listens_where_its_service_and_probes_point(upstream):  # noqa: F811
    docs = render_template("tracing", "jaeger.yaml.j2", "jaeger")
    config = yaml.safe_load(_of_kind(docs, "ConfigMap", "jaeger-config")["data"]["config.yaml"])
    deployment = _of_kind(docs, "Deployment", "jaeger")
    (container,) = _pod_spec(deployment)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    receivers = config["receivers"]["otlp"]["protocols"]
    assert receivers["grpc"]["endpoint"] == f"0.0.0.0:{ports['otlp-grpc']}"
    assert receivers["http"]["endpoint"] == f"0.0.0.0:{ports['otlp-http']}"
    assert (
        config["extensions"]["jaeger_query"]["http"]["endpoint"] == f"0.0.0.0:{ports['query-http']}"
    )
    health = config["extensions"]["healthcheckv2"]["http"]["endpoint"]
    assert health == f"0.0.0.0:{ports['health']}"
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    # Its own pipeline: OTLP in, the memory store out, and the query reads that store.
    (store,) = config["extensions"]["jaeger_storage"]["backends"]
    assert config["extensions"]["jaeger_query"]["storage"]["traces"] == store
    assert config["exporters"]["jaeger_storage_exporter"]["trace_storage"] == store
    max_traces = config["extensions"]["jaeger_storage"]["backends"][store]["memory"]["max_traces"]
    assert max_traces == role_default("tracing", "tracing_jaeger_max_traces", "jaeger")
    # Non-root, nothing to escalate, a read-only root with /tmp (the image's VOLUME) writable.
    assert _pod_spec(deployment)["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
    assert _memory(container) == ("128Mi", "512Mi")
    # Every component the config names is one Jaeger v1.75.0 builds in (its components.go), when
    # the Go module cache has that source (the local path's Jaeger build fetches it).
    source = _jaeger_source()
    if source is None:
        pytest.skip("Jaeger v1.75.0's source is not in the Go module cache")
    components = (source / "cmd" / "jaeger" / "internal" / "components.go").read_text()
    for package in ("otlpreceiver", "batchprocessor", "healthcheckv2extension", "jaegerquery",
                    "jaegerstorage", "storageexporter"):  # fmt: skip
        assert f"/{package}" in components, package
    assert set(config["service"]["extensions"]) == {
        "jaeger_storage",
        "jaeger_query",
        "healthcheckv2",
    }


def _jaeger_source() -> Path | None:
    try:
        cache = subprocess.run(
            ["go", "env", "GOMODCACHE"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    source = Path(cache) / "github.com" / "jaegertracing" / "jaeger@v1.75.0"
    return source if source.is_dir() else None


# --- Knative -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_knative_serving_and_eventing_send_traces_to_the_collector(backend):
    docs = render_template("kserve_stack", "knative-config.yaml.j2", backend)
    endpoint = role_default("kserve_stack", "kserve_stack_tracing_endpoint", backend)
    observability = [d for d in docs if d["metadata"]["name"] == "config-observability"]
    assert {d["metadata"]["namespace"] for d in observability} == {
        "knative-serving",
        "knative-eventing",
    }
    for config in observability:
        assert config["data"] == {
            "tracing-protocol": "http/protobuf", "tracing-endpoint": endpoint,
            "tracing-sampling-rate": "1",
        }  # fmt: skip
    # Only keys Knative 1.21 documents in its released config-observability (the _example).
    release = ROOT / "tests" / "data" / "knative-release"
    for config in observability:
        file = (
            "serving-core.yaml"
            if config["metadata"]["namespace"] == "knative-serving"
            else "eventing-core.yaml"
        )
        (released,) = [
            d
            for d in yaml.safe_load_all((release / file).read_text())
            if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "config-observability"
        ]
        example = yaml.safe_load(released["data"]["_example"])
        assert set(config["data"]) <= set(example), file


def test_with_tracing_off_knative_keeps_its_released_configmaps():
    docs = render_template("kserve_stack", "knative-config.yaml.j2", "off")
    assert [d["metadata"]["name"] for d in docs] == [
        "config-network",
        "config-domain",
        "config-features",
    ]


# --- In a real API server ----------------------------------------------------------------------

pytestmark_apply = pytest.mark.skipif(
    simcluster.unavailable_reason() is not None, reason=str(simcluster.unavailable_reason())
)


def _without_nulls(value):
    """What `helm install` keeps: null fields are pruned on create; server-side apply refuses them."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _namespaced(docs: list[dict], namespace: str) -> list[dict]:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                      "StorageClass"}  # fmt: skip
    out = []
    for doc in copy.deepcopy(docs):
        if doc["kind"] not in cluster_scoped:
            doc["metadata"].setdefault("namespace", namespace)
        out.append(doc)
    return out


@pytestmark_apply
def test_tracing_objects_are_accepted_and_a_second_apply_changes_nothing(
    sim_cluster,
    rendered,
    signoz_objects,
    upstream,  # noqa: F811
    helm,  # noqa: F811
    tmp_path,
):
    from tests.support.tracing import installs as chart_installs_for

    if upstream is None or not (upstream / "crds").is_dir():
        pytest.skip("the pinned upstream CRDs are not beside the checkout")
    sim_cluster.install_crds(sorted((upstream / "crds").glob("*.yaml")))
    signoz_crds = [d for d in signoz_objects if d["kind"] == "CustomResourceDefinition"]
    assert not sim_cluster.server_side_apply(signoz_crds, field_manager=FIELD_MANAGER)
    sim_cluster.wait_for_established([d["metadata"]["name"] for d in signoz_crds])

    hooks = {"test", "test-success", "test-failure"}
    sources = {
        "tracing-namespace.yaml": render_template("tracing", "tracing-namespace.yaml.j2", "jaeger"),
        "jaeger.yaml": render_template("tracing", "jaeger.yaml.j2", "jaeger"),
        "signoz chart": _namespaced(
            [
                _without_nulls(d)
                for d in signoz_objects
                if d["kind"] != "CustomResourceDefinition"
                and not hooks
                & set((d["metadata"].get("annotations") or {}).get("helm.sh/hook", "").split(","))
            ],
            NAMESPACE,
        ),
        "knative-config.yaml": render_template("kserve_stack", "knative-config.yaml.j2", "jaeger"),
    }
    # Seldon's tracing config with tracing on: the SeldonConfig, ServerConfigs, SeldonRuntime
    # and the income Server (the charts' other objects are applied by test_sim_cluster_apply.py).
    seldon_kinds = {"SeldonConfig", "ServerConfig", "SeldonRuntime"}
    for install in chart_installs_for(
        rendered, "jaeger", ("seldon-core-v2-setup", "seldon-core-v2-runtime")
    ):
        docs = helm_template(helm, chart_dir(install, upstream, tmp_path), install, NODE_VERSION)
        sources[f"{install.chart} chart"] = _namespaced(
            [_without_nulls(d) for d in docs if d["kind"] in seldon_kinds], install.namespace
        )
    sources["server.yaml"] = render_template("seldon_core", "server.yaml.j2", "jaeger")
    # The InferenceService as the kserve_income role leaves it with tracing on: its logger lists
    # Traceparent among the headers sent as the events' metadata (a field of the v0.20.0 CRD).
    (inference,) = yaml.safe_load_all((ROOT / "kserve" / "inferenceservice.yaml").read_text())
    inference["spec"]["predictor"]["logger"]["metadataHeaders"] = ["Traceparent"]
    sources["kserve/inferenceservice.yaml, patched"] = [inference]
    namespaces = {"knative-serving", "knative-eventing", "seldon-mesh", "income-kserve"}
    assert not sim_cluster.server_side_apply(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in namespaces],
        field_manager=FIELD_MANAGER,
    )
    for source, docs in sources.items():
        refusal = sim_cluster.server_side_apply(docs, field_manager=FIELD_MANAGER)
        assert not refusal, f"{source}: {refusal}"
    for source, docs in sources.items():
        diff = sim_cluster.kubectl(
            "diff", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-",
            input=yaml.safe_dump_all(docs), check=False,
        )  # fmt: skip
        assert diff.returncode == 0, f"{source}: a second apply would change\n{diff.stdout}"
    stored = json.loads(
        sim_cluster.kubectl(
            "get", "configmap", "config-observability", "-n", "knative-eventing", "-o", "json"
        ).stdout
    )
    assert stored["data"]["tracing-endpoint"] == "http://jaeger.tracing:4318/v1/traces"


# --- The preflight counts the backend's memory -------------------------------------------------


def test_jaeger_still_fits_docker_desktops_8_gib_with_the_laptop_profile(tmp_path):
    from tests.cluster.test_preflight_docker import run_preflight

    result, output = run_preflight(tmp_path, 8, 8, "-e", "tracing_backend=jaeger")
    assert result.returncode == 0, output[-3000:]


@pytest.mark.parametrize(
    ("memory_gib", "profile", "says"),
    [
        (8, "laptop", "no seldon_core_profile fits with TRACING=signoz (4 GiB of it)"),
        (16, "full", "seldon_core_profile full with TRACING=signoz (4 GiB of it) needs 17.5 GiB"),
    ],
)
def test_signoz_is_refused_where_it_does_not_fit_saying_what_to_use(
    tmp_path, memory_gib, profile, says
):
    from tests.cluster.test_preflight_docker import run_preflight

    result, output = run_preflight(
        tmp_path,
        memory_gib,
        8,
        "-e",
        "tracing_backend=signoz",
        "-e",
        f"seldon_core_profile={profile}",
    )
    assert result.returncode != 0
    assert "Preflight failed, nothing was changed" in output
    assert says in output, output[-3000:]
    assert "TRACING=jaeger, the lighter backend" in output


def test_signoz_fits_the_laptop_profile_in_a_12_gib_vm(tmp_path):
    from tests.cluster.test_preflight_docker import run_preflight

    result, output = run_preflight(tmp_path, 12, 8, "-e", "tracing_backend=signoz")
    assert result.returncode == 0, output[-3000:]
