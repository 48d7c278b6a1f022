"""The cluster paths checked against the upstream sources of the versions they pin.

Facts read from upstream source at the pinned tags live here as constants, each with its source
(repository, tag, path) beside it. The checks compare the roles and manifests with those facts and
with the pinned charts and CRDs (``../shared/upstream`` beside the checkout, or ``helm pull``):

- every value a role hands a chart is a key of that chart's values (``unknown_values``);
- every chart renders with a real ``helm template`` (``helm_template``) and every object the
  bundle applies validates strictly against its CRD or the pinned Kubernetes schema
  (``object_problems``);
- every selector and every waited-for condition is one the upstream workload or controller
  carries or sets (``selector_problems``, ``wait_problems``);
- the pinned versions are ones the other pins support (``version_problems``).

Each check returns problems as sentences (empty when all is well), so one run reports them all.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from income_bundle.crds import CrdSchemas

__all__ = [
    "HELM_VERSION",
    "KNATIVE_MINIMUM_KUBERNETES",
    "UPSTREAM_DIR_ENV",
    "ChartInstall",
    "ChartUnavailableError",
    "chart_dir",
    "chart_installs",
    "find_helm",
    "find_upstream_dir",
    "helm_template",
    "kserve_selector_problems",
    "kubernetes_schema_version",
    "monitor_problems",
    "node_kubernetes_version",
    "object_problems",
    "seldon_selector_problems",
    "unknown_values",
    "upstream_crds",
    "version_problems",
]

UPSTREAM_DIR_ENV = "UPSTREAM_DIR"
# The helm .ci/run builds (go install helm.sh/helm/v3/cmd/helm@HELM_VERSION): it satisfies every
# pinned chart's kubeVersion and renders for a given --kube-version.
HELM_VERSION = "v3.19.5"

# --- Version facts -------------------------------------------------------------------------------

# knative/pkg version/version.go, defaultMinimumVersion = "v1.33.0", at the knative.dev/pkg
# commit 4a022ed9999a874caca69595f8ba27a8f25cfa76 that knative/serving knative-v1.21.1's go.mod
# requires; every Knative controller and webhook exits at start on an older API server.
KNATIVE_MINIMUM_KUBERNETES = (1, 33, 0)
# kserve/kserve v0.20.0 kserve-deps.env: the versions KServe's own CI installs.
KSERVE_TESTED_KNATIVE_SERVING = (1, 21, 1)  # KNATIVE_SERVING_VERSION=1.21.1
KSERVE_TESTED_CERT_MANAGER = (1, 17, 0)  # CERT_MANAGER_VERSION=v1.17.0
# kserve.github.io/website, admin/serverless ("The minimally required Cert Manager version is
# 1.15.0"): KServe's webhooks get their certificates from cert-manager.
KSERVE_MINIMUM_CERT_MANAGER = (1, 15, 0)
# SeldonIO/seldon-core v2.10.2 docs-gb/installation/README.md, "Seldon Core 2 Dependencies":
# Kubernetes minimum 1.27, maximum 1.33.0 (read as the 1.33 line: patch releases of a minor
# change no API).
SELDON_KUBERNETES_MINORS = ((1, 27), (1, 33))

_NODE_IMAGE = re.compile(r"kindest/node:v(\d+)\.(\d+)\.(\d+)@sha256:[0-9a-f]{64}")


def _version(text: str) -> tuple[int, ...]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a version like v1.2.3")
    return tuple(int(part) for part in match.groups())


def _dotted(version: Iterable[int]) -> str:
    return ".".join(str(part) for part in version)


def _defaults(roles_dir: Path, role: str) -> dict[str, Any]:
    return yaml.safe_load((roles_dir / role / "defaults" / "main.yaml").read_text()) or {}


def node_kubernetes_version(roles_dir: Path) -> tuple[int, int, int]:
    """The Kubernetes version of the kind node image the kind_cluster role pins."""
    image = _defaults(roles_dir, "kind_cluster")["kind_cluster_node_image"]
    match = _NODE_IMAGE.fullmatch(image)
    if not match:
        raise ValueError(f"kind_cluster_node_image {image!r} is not kindest/node:vX.Y.Z@sha256:...")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def kubernetes_schema_version(roles_dir: Path) -> str:
    """The kubernetes-validate schema version for the node's minor release (e.g. '1.33.0')."""
    major, minor, _ = node_kubernetes_version(roles_dir)
    return f"{major}.{minor}.0"


def version_problems(roles_dir: Path) -> list[str]:
    """Pinned versions that a pinned upstream does not support or was not tested with."""
    problems = []
    node = node_kubernetes_version(roles_dir)
    if node < KNATIVE_MINIMUM_KUBERNETES:
        problems.append(
            f"kind_cluster_node_image is Kubernetes {_dotted(node)}; Knative 1.21 needs "
            f">= {_dotted(KNATIVE_MINIMUM_KUBERNETES)} (knative.dev/pkg version.defaultMinimumVersion)"
        )
    low, high = SELDON_KUBERNETES_MINORS
    if not low <= node[:2] <= high:
        problems.append(
            f"kind_cluster_node_image is Kubernetes {_dotted(node)}; Seldon Core 2.10.2 supports "
            f"{_dotted(low)} to {_dotted(high)}"
        )
    stack = _defaults(roles_dir, "kserve_stack")
    serving = _version(stack["kserve_stack_knative_serving_version"])
    if serving != KSERVE_TESTED_KNATIVE_SERVING:
        problems.append(
            f"kserve_stack_knative_serving_version is {_dotted(serving)}; KServe v0.20.0 is tested "
            f"with {_dotted(KSERVE_TESTED_KNATIVE_SERVING)} (kserve-deps.env)"
        )
    for name in ("kserve_stack_knative_eventing_version", "kserve_stack_kourier_version"):
        if _version(stack[name])[:2] != serving[:2]:
            problems.append(f"{name} is {stack[name]}, not the Knative Serving line {serving[:2]}")
    for role, variable in (
        ("kserve_stack", "kserve_stack_cert_manager_chart_version"),
        ("ecosystem", "ecosystem_cert_manager_chart_version"),
    ):
        cert_manager = _version(_defaults(roles_dir, role)[variable])
        if cert_manager < KSERVE_MINIMUM_CERT_MANAGER:
            problems.append(
                f"{variable} is {_dotted(cert_manager)}; KServe needs cert-manager >= "
                f"{_dotted(KSERVE_MINIMUM_CERT_MANAGER)}"
            )
        # Same minor as KServe's CI, or the one before it (the Seldon path's pin, whose chart
        # and CRDs are the ones checked here).
        if not (
            KSERVE_TESTED_CERT_MANAGER[0] == cert_manager[0]
            and 0 <= KSERVE_TESTED_CERT_MANAGER[1] - cert_manager[1] <= 1
        ):
            problems.append(
                f"{variable} is {_dotted(cert_manager)}, more than one minor away from the "
                f"{_dotted(KSERVE_TESTED_CERT_MANAGER)} KServe v0.20.0 is tested with"
            )
    return problems


# --- Selector facts ------------------------------------------------------------------------------

# SeldonIO/seldon-core v2.10.2 operator/pkg/constants/constants.go: KubernetesNameLabelKey,
# ServerLabelValue, ServerLabelNameKey; the Server reconciler puts both on every server pod
# (Seldon's own prometheus/monitors/server-podmonitor.yaml selects the first).
SELDON_SERVER_POD_LABELS = {"app.kubernetes.io/name": "seldon-server"}
SELDON_SERVER_NAME_LABEL = "seldon-server-name"  # value: the Server's name
# SeldonIO/seldon-core v2.10.2 k8s/helm-charts/seldon-core-v2-setup/templates/
# _components-statefulsets.tpl: the mlserver ServerConfig names MLServer's metrics port so.
SELDON_SERVER_METRICS_PORT = "server-metrics"
# knative/serving knative-v1.21.1 pkg/apis/serving/register.go (ServiceLabelKey) and
# pkg/reconciler/service/resources/configuration.go -> configuration/resources/revision.go ->
# revision/resources/meta.go makeLabels: a Knative Service's pods carry this label = its name.
KNATIVE_SERVICE_LABEL = "serving.knative.dev/service"
# knative/serving knative-v1.21.1 pkg/apis/serving/v1/revision_helpers.go UserPortName, used by
# pkg/reconciler/revision/resources/deploy.go buildContainerPorts: whatever the manifest calls
# its port, the user container's only port is named "user-port" on the pod.
KNATIVE_USER_PORT_NAME = "user-port"
# kserve/kserve v0.20.0 pkg/logger/worker.go: CEInferenceRequest/CEInferenceResponse event types
# and the extension attributes every logged event carries (SetExtension calls in sendCloudEvent).
KSERVE_LOGGER_EVENT_TYPES = (
    "org.kubeflow.serving.inference.request",
    "org.kubeflow.serving.inference.response",
)
KSERVE_LOGGER_ATTRIBUTES = (
    "type",
    "source",
    "id",
    "inferenceservicename",
    "namespace",
    "component",
    "endpoint",
    "metadata",
    "annotations",  # only when the logger is configured with metadata annotations
    "time",  # SetTime(OccurrenceTime): when the request arrived or the answer was read
    "recordedtime",  # SetExtension(RecordedTimeAttr, time.Now()): when the event was sent
)
# strimzi/strimzi-kafka-operator 0.45.0 api/.../model/kafka/KafkaResources.java
# bootstrapServiceName: the bootstrap Service of Kafka <name> is <name>-kafka-bootstrap, serving
# every listener's port.
STRIMZI_BOOTSTRAP_SUFFIX = "-kafka-bootstrap"


class _SafeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's safe loader where PyYAML has it (charts render megabytes of YAML), reading a
    plain `=` as the string it is in YAML 1.2 (PyYAML resolves it to a 'value' tag it cannot
    construct; the prometheus-operator CRDs' enums hold one)."""


_SafeLoader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_yaml_str)
_SAFE_LOADER = _SafeLoader


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_SAFE_LOADER) if doc]


def _labels_match(selector: dict, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and In/NotIn/Exists/DoesNotExist)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _selected_values(selector: dict, key: str) -> set[str]:
    """The values of `key` a selector can match (matchLabels or an In expression)."""
    found = {selector.get("matchLabels", {}).get(key)} - {None}
    for expression in selector.get("matchExpressions", []):
        if expression["key"] == key and expression["operator"] == "In":
            found |= set(expression.get("values", []))
    return found


def _detector_event_types() -> tuple[str, str]:
    """DRIFT_EVENT_TYPE and OUTLIER_EVENT_TYPE of income_bundle.runtime.cloudevents, read from its
    source: importing it loads MLServer and TensorFlow, seconds that `validate` need not spend."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("income_bundle.runtime.cloudevents")
    tree = ast.parse(Path(spec.origin).read_text())
    constants = {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }
    return constants["DRIFT_EVENT_TYPE"], constants["OUTLIER_EVENT_TYPE"]


def kserve_selector_problems(kserve_dir: Path) -> list[str]:
    """kserve/: the PodMonitor, the Triggers and the event display's Service against what the
    selected workloads carry."""
    problems = []
    docs = [doc for path in sorted(kserve_dir.glob("*.yaml")) for doc in _documents(path)]
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    knative_services = {
        name
        for name, doc in by_kind.get("Service", {}).items()
        if doc["apiVersion"].startswith("serving.knative.dev/")
    }
    for name, monitor in by_kind.get("PodMonitor", {}).items():
        selector = monitor["spec"]["selector"]
        services = _selected_values(selector, KNATIVE_SERVICE_LABEL)
        if not services:
            problems.append(
                f"PodMonitor {name} selects no {KNATIVE_SERVICE_LABEL} label: Knative's pods are "
                f"told apart by it"
            )
        for service in sorted(services - knative_services):
            problems.append(
                f"PodMonitor {name} selects Knative Service {service}, which kserve/ lacks"
            )
        for service in sorted(services & knative_services):
            if not _labels_match(selector, {KNATIVE_SERVICE_LABEL: service}):
                problems.append(f"PodMonitor {name}: pods of {service} do not match its selector")
        for endpoint in monitor["spec"].get("podMetricsEndpoints", []):
            if endpoint.get("port") != KNATIVE_USER_PORT_NAME:
                problems.append(
                    f"PodMonitor {name} scrapes port {endpoint.get('port')!r}; Knative names the "
                    f"user container's port {KNATIVE_USER_PORT_NAME!r} on the pod"
                )
    inference_services = set(by_kind.get("InferenceService", {}))
    emitted = set(_detector_event_types())
    for name, trigger in by_kind.get("Trigger", {}).items():
        attributes = trigger["spec"].get("filter", {}).get("attributes", {})
        event_type = attributes.get("type")
        if event_type in KSERVE_LOGGER_EVENT_TYPES:
            for key in sorted(set(attributes) - set(KSERVE_LOGGER_ATTRIBUTES)):
                problems.append(
                    f"Trigger {name} filters on {key!r}, which KServe's logger never sets "
                    f"(it sets {', '.join(KSERVE_LOGGER_ATTRIBUTES)})"
                )
            service = attributes.get("inferenceservicename")
            if service is not None and service not in inference_services:
                problems.append(
                    f"Trigger {name} waits for InferenceService {service}, not in kserve/"
                )
        elif event_type not in emitted:
            problems.append(
                f"Trigger {name} filters on type {event_type!r}: neither KServe's logger "
                f"({', '.join(KSERVE_LOGGER_EVENT_TYPES)}) nor the detectors "
                f"({', '.join(sorted(emitted))}) send it"
            )
        ref = trigger["spec"]["subscriber"].get("ref", {})
        if ref.get("kind") == "Service" and ref.get("name") not in by_kind.get("Service", {}):
            problems.append(f"Trigger {name} delivers to Service {ref.get('name')}, not in kserve/")
    deployments = by_kind.get("Deployment", {})
    for name, service in by_kind.get("Service", {}).items():
        if name in knative_services:
            continue
        selector = {"matchLabels": service["spec"].get("selector", {})}
        if not any(
            _labels_match(selector, d["spec"]["template"]["metadata"].get("labels", {}))
            for d in deployments.values()
        ):
            problems.append(f"Service {name} selects no pod of a Deployment in kserve/")
    return problems


def seldon_selector_problems(rendered_dir: Path, roles_dir: Path) -> list[str]:
    """The Seldon path: MLServer's PodMonitor against the operator's server pod labels and the
    ServerConfig's port, and Seldon's Kafka address against the Strimzi cluster the roles create."""
    problems = []
    server_name = _defaults(roles_dir, "seldon_core")["seldon_core_server_name"]
    pod_labels = {**SELDON_SERVER_POD_LABELS, SELDON_SERVER_NAME_LABEL: server_name}
    for doc in _documents(rendered_dir / "income-monitoring.yaml"):
        if doc["kind"] != "PodMonitor":
            continue
        name = doc["metadata"]["name"]
        if not _labels_match(doc["spec"]["selector"], pod_labels):
            problems.append(
                f"PodMonitor {name} selects {doc['spec']['selector']}, which the pods of Server "
                f"{server_name} do not carry (Seldon's operator labels them {pod_labels})"
            )
        for endpoint in doc["spec"].get("podMetricsEndpoints", []):
            if endpoint.get("port") != SELDON_SERVER_METRICS_PORT:
                problems.append(
                    f"PodMonitor {name} scrapes port {endpoint.get('port')!r}; MLServer's metrics "
                    f"port is {SELDON_SERVER_METRICS_PORT!r} on Seldon's server pods"
                )
    kafka = _strimzi_kafka(rendered_dir)
    expected = _strimzi_bootstraps(rendered_dir, roles_dir)
    # The external listener the seldon CLI reads from the host: its NodePorts must be ones kind
    # publishes, and the broker must advertise the host port kind maps to its NodePort (Strimzi
    # hands clients the advertised address after bootstrap).
    (node,) = _documents(rendered_dir / "kind-config.yaml")[0]["nodes"]
    published = {m["containerPort"]: m["hostPort"] for m in node.get("extraPortMappings", [])}
    for listener in kafka["spec"]["kafka"]["listeners"]:
        if listener["type"] != "nodeport":
            continue
        configuration = listener.get("configuration", {})
        bootstrap_port = configuration.get("bootstrap", {}).get("nodePort")
        if bootstrap_port not in published:
            problems.append(
                f"Kafka listener {listener['name']}: bootstrap NodePort {bootstrap_port} is not "
                f"published by the kind node ({sorted(published)})"
            )
        for broker in configuration.get("brokers", []):
            if published.get(broker.get("nodePort")) != broker.get("advertisedPort"):
                problems.append(
                    f"Kafka listener {listener['name']}: broker {broker.get('broker')} advertises "
                    f"port {broker.get('advertisedPort')}, but kind maps its NodePort "
                    f"{broker.get('nodePort')} to {published.get(broker.get('nodePort'))}"
                )
    bootstrap = _defaults(roles_dir, "seldon_core")["seldon_core_kafka_bootstrap"]
    if bootstrap not in expected:
        problems.append(
            f"seldon_core_kafka_bootstrap is {bootstrap}; the Kafka cluster the ecosystem role "
            f"creates answers on {', '.join(sorted(expected)) or 'no plain internal listener'}"
        )
    return problems


def _strimzi_kafka(rendered_dir: Path) -> dict:
    """The Kafka object of the ecosystem role (rendered kafka.yaml)."""
    (kafka,) = [doc for doc in _documents(rendered_dir / "kafka.yaml") if doc["kind"] == "Kafka"]
    return kafka


def _strimzi_bootstraps(rendered_dir: Path, roles_dir: Path) -> set[str]:
    """The in-cluster addresses the ecosystem role's Kafka answers on without TLS: its bootstrap
    Service, <name>-kafka-bootstrap.<namespace>, on each plain internal listener's port."""
    kafka = _strimzi_kafka(rendered_dir)
    namespace = _defaults(roles_dir, "ecosystem")["ecosystem_mesh_namespace"]
    return {
        f"{kafka['metadata']['name']}{STRIMZI_BOOTSTRAP_SUFFIX}.{namespace}:{listener['port']}"
        for listener in kafka["spec"]["kafka"]["listeners"]
        if listener["type"] == "internal" and not listener.get("tls")
    }


# --- The monitor (income_monitor role) -----------------------------------------------------------

# The income_monitor role's templates as tests/ansible/render.yaml renders them, once per path.
MONITOR_PLATFORMS = ("seldon", "kserve")
# knative.dev/pkg resolver URIFromObjectReference (the eventing knative-v1.21.0 go.mod's pkg): a
# Trigger's subscriber ref to a v1 Service is called at http://<name>.<namespace>.svc.cluster.local/,
# that is port 80, with the subscriber's relative uri resolved against it.
KNATIVE_SERVICE_SUBSCRIBER_PORT = 80


def _arguments(container: dict) -> dict[str, str]:
    """--name=value arguments of a container, by name."""
    return dict(
        arg.removeprefix("--").split("=", 1) for arg in container.get("args", []) if "=" in arg
    )


def monitor_problems(rendered_dir: Path, roles_dir: Path, kserve_dir: Path) -> list[str]:
    """The monitor's objects (income_monitor role) against each other and what they address:
    its Service and PodMonitor select the StatefulSet's pods and name its port; on Seldon it reads
    the topics of the Models' namespace from the Kafka the ecosystem role creates; on KServe its
    Triggers pass exactly the CloudEvents types the monitor accepts (sources.kserve.EVENT_TYPES),
    from kserve/'s broker and InferenceService, to a Service port Knative calls."""
    from income_bundle.monitoring.sources.kserve import EVENT_TYPES

    problems = []
    kserve_docs = [doc for path in sorted(kserve_dir.glob("*.yaml")) for doc in _documents(path)]
    brokers = {d["metadata"]["name"] for d in kserve_docs if d["kind"] == "Broker"}
    inference_services = {
        d["metadata"]["name"] for d in kserve_docs if d["kind"] == "InferenceService"
    }
    for platform in MONITOR_PLATFORMS:
        docs = _documents(rendered_dir / f"income-monitor-{platform}.yaml")
        (workload,) = [d for d in docs if d["kind"] == "StatefulSet"]
        services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
        name, namespace = workload["metadata"]["name"], workload["metadata"]["namespace"]
        where = f"{platform} monitor StatefulSet {namespace}/{name}"
        pod = workload["spec"]["template"]
        labels = pod["metadata"].get("labels", {})
        (container,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
        arguments = _arguments(container)
        if workload["spec"].get("replicas") != 1:
            problems.append(
                f"{where}: {workload['spec'].get('replicas')} replicas; SQLite has one writer"
            )
        if not _labels_match(workload["spec"]["selector"], labels):
            problems.append(f"{where}: its selector does not match its pod template's labels")
        if workload["spec"].get("serviceName") not in services:
            problems.append(
                f"{where}: serviceName {workload['spec'].get('serviceName')!r} is not its Service"
            )
        if str(ports.get("http")) != arguments.get("port"):
            problems.append(
                f"{where}: container port http is {ports.get('http')}, the monitor listens on "
                f"--port={arguments.get('port')}"
            )
        for probe in ("readinessProbe", "livenessProbe"):
            port = container.get(probe, {}).get("httpGet", {}).get("port")
            if port not in ports and port not in ports.values():
                problems.append(
                    f"{where}: {probe} calls port {port!r}, not a port of the container"
                )
        for service in services.values():
            selector = {"matchLabels": service["spec"].get("selector", {})}
            if not _labels_match(selector, labels):
                problems.append(
                    f"{platform} monitor Service {service['metadata']['name']} selects "
                    f"{service['spec'].get('selector')}, which the pods of {name} do not carry ({labels})"
                )
            for port in service["spec"].get("ports", []):
                target = port.get("targetPort", port["port"])
                if target not in ports and target not in ports.values():
                    problems.append(
                        f"{platform} monitor Service {service['metadata']['name']}: port {port['port']} "
                        f"targets {target!r}, not a port of the container ({ports})"
                    )
        for monitor in _documents(rendered_dir / f"income-monitor-podmonitor-{platform}.yaml"):
            where_monitor = f"{platform} monitor PodMonitor {monitor['metadata']['name']}"
            if not _labels_match(monitor["spec"]["selector"], labels):
                problems.append(
                    f"{where_monitor} selects {monitor['spec']['selector']}, which the pods of "
                    f"{name} do not carry ({labels})"
                )
            if namespace not in monitor["spec"].get("namespaceSelector", {}).get("matchNames", []):
                problems.append(f"{where_monitor} does not look in namespace {namespace}")
            for endpoint in monitor["spec"].get("podMetricsEndpoints", []):
                if endpoint.get("port") not in ports:
                    problems.append(
                        f"{where_monitor} scrapes port {endpoint.get('port')!r}; the container's "
                        f"named ports are {sorted(ports)}"
                    )
        if platform == "seldon":
            bootstraps = _strimzi_bootstraps(rendered_dir, roles_dir)
            if arguments.get("kafka-bootstrap") not in bootstraps:
                problems.append(
                    f"{where}: --kafka-bootstrap={arguments.get('kafka-bootstrap')}; the Kafka "
                    f"cluster the ecosystem role creates answers on {', '.join(sorted(bootstraps))}"
                )
            models_namespace = _defaults(roles_dir, "income_pipeline")["income_pipeline_namespace"]
            if arguments.get("namespace") != models_namespace or namespace != models_namespace:
                problems.append(
                    f"{where}: runs in {namespace} and reads the topics of namespace "
                    f"{arguments.get('namespace')}; the income Models run in {models_namespace}"
                )
            continue
        if "kafka-bootstrap" in arguments:
            problems.append(f"{where}: reads Kafka on the KServe path, which has none")
        triggers = _documents(rendered_dir / "income-monitor-triggers.yaml")
        types = [t["spec"].get("filter", {}).get("attributes", {}).get("type") for t in triggers]
        if sorted(types) != sorted(EVENT_TYPES):
            problems.append(
                f"the monitor's Triggers pass types {sorted(types)}; the monitor accepts "
                f"{sorted(EVENT_TYPES)} (sources.kserve.EVENT_TYPES), each once"
            )
        for trigger in triggers:
            spec, where_trigger = trigger["spec"], f"Trigger {trigger['metadata']['name']}"
            attributes = spec.get("filter", {}).get("attributes", {})
            if spec.get("broker") not in brokers:
                problems.append(
                    f"{where_trigger} subscribes on broker {spec.get('broker')!r}, not in kserve/"
                )
            if attributes.get("inferenceservicename") not in inference_services:
                problems.append(
                    f"{where_trigger} passes InferenceService {attributes.get('inferenceservicename')!r}, "
                    f"not in kserve/"
                )
            elif attributes["inferenceservicename"] != arguments.get("pipeline"):
                problems.append(
                    f"{where_trigger} passes InferenceService {attributes['inferenceservicename']}'s "
                    f"events; the monitor records --pipeline={arguments.get('pipeline')}"
                )
            if trigger["metadata"].get("namespace") != namespace:
                problems.append(f"{where_trigger} is not in the monitor's namespace {namespace}")
            ref = spec.get("subscriber", {}).get("ref", {})
            service = (
                services.get(ref.get("name"))
                if (ref.get("apiVersion"), ref.get("kind")) == ("v1", "Service")
                else None
            )
            if service is None:
                problems.append(f"{where_trigger} delivers to {ref}, not the monitor's Service")
                continue
            called = [
                p
                for p in service["spec"].get("ports", [])
                if p["port"] == KNATIVE_SERVICE_SUBSCRIBER_PORT
            ]
            if not called:
                problems.append(
                    f"{where_trigger}: Knative calls Service {ref['name']} on port "
                    f"{KNATIVE_SERVICE_SUBSCRIBER_PORT}, which it does not have"
                )
            if spec["subscriber"].get("uri") != "/cloudevents":
                problems.append(
                    f"{where_trigger} delivers to path {spec['subscriber'].get('uri')!r}; the "
                    f"monitor's CloudEvents route is /cloudevents"
                )
    return problems


# --- Where the pinned upstream sources and helm are ----------------------------------------------


def find_upstream_dir(project_root: Path) -> Path | None:
    """$UPSTREAM_DIR, else ../shared/upstream beside the checkout; None when neither exists."""
    for candidate in (
        os.environ.get(UPSTREAM_DIR_ENV),
        project_root.parent / "shared" / "upstream",
    ):
        if candidate and (Path(candidate) / "charts").is_dir():
            return Path(candidate)
    return None


def helm_cache_dir() -> Path:
    """Where .ci/run installs helm (outside the checkout, so a second run reuses it)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "income-bundle" / f"helm-{HELM_VERSION}"


def find_helm() -> Path | None:
    """helm on PATH, else the one .ci/run built into helm_cache_dir()/bin."""
    on_path = shutil.which("helm")
    if on_path:
        return Path(on_path)
    cached = helm_cache_dir() / "bin" / "helm"
    return cached if cached.is_file() and os.access(cached, os.X_OK) else None


class ChartUnavailableError(RuntimeError):
    """The pinned chart is neither in ../shared/upstream nor obtainable with helm pull."""


# --- What the roles hand the charts --------------------------------------------------------------


def _iter_tasks(tasks: list[dict]) -> Iterator[dict]:
    for task in tasks or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from _iter_tasks(task.get(key, []))


def role_tasks(roles_dir: Path, role: str) -> list[dict]:
    """A role's tasks/main.yaml, blocks flattened, in order."""
    return list(_iter_tasks(yaml.safe_load((roles_dir / role / "tasks" / "main.yaml").read_text())))


def _trusted(item: Any) -> Any:
    from ansible.template import trust_as_template

    if isinstance(item, str):
        return trust_as_template(item)
    if isinstance(item, dict):
        return {key: _trusted(inner) for key, inner in item.items()}
    if isinstance(item, list):
        return [_trusted(inner) for inner in item]
    return item


def _role_variables(roles_dir: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    variables: dict[str, Any] = {"playbook_dir": str(roles_dir.parent / "playbooks")}
    for role in sorted(p.name for p in roles_dir.iterdir() if (p / "defaults").is_dir()):
        variables.update(_defaults(roles_dir, role))
    variables.update(overrides or {})
    return variables


def render_with_defaults(
    value: Any, roles_dir: Path, overrides: dict[str, Any] | None = None
) -> Any:
    """A role's Jinja, rendered by Ansible's own templar with every role's defaults (and
    `overrides`, as `-e` would give them)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    variables = _trusted(_role_variables(roles_dir, overrides))
    templar = Templar(loader=DataLoader(), variables=variables)
    return templar.template(_trusted(value))


_TEMPLATE_LOOKUP = re.compile(r"lookup\('ansible\.builtin\.template',\s*'([^']+)\.j2'\)")


@dataclass(frozen=True, eq=False)  # eq=False: hashable by identity, values being a dict
class ChartInstall:
    """One kubernetes.core.helm task of a role, with its values rendered from the defaults."""

    role: str
    task: str
    release: str
    chart: str
    version: str
    namespace: str
    values: dict
    repo_url: str  # helm repository URL or oci:// prefix, for `helm pull` without ../shared


def chart_installs(
    roles_dir: Path, rendered_dir: Path, overrides: dict[str, Any] | None = None
) -> list[ChartInstall]:
    """Every chart the roles install. Values that come from a role template are read from
    `rendered_dir` (the templates rendered by Ansible with the defaults); `overrides` are
    variables given as `-e` would give them."""
    installs = []
    for role in sorted(p.name for p in roles_dir.iterdir() if (p / "tasks").is_dir()):
        tasks = role_tasks(roles_dir, role)
        repositories = {
            t["kubernetes.core.helm_repository"]["name"]: t["kubernetes.core.helm_repository"]
            for t in tasks
            if "kubernetes.core.helm_repository" in t
        }
        for task in tasks:
            helm = task.get("kubernetes.core.helm")
            if not helm:
                continue
            values = helm.get("values") or {}
            if isinstance(values, str):
                match = _TEMPLATE_LOOKUP.search(values)
                if not match:
                    raise ValueError(f"{role}: {task['name']}: values {values!r} not understood")
                values = yaml.safe_load((rendered_dir / match.group(1)).read_text()) or {}
            else:
                values = render_with_defaults(values, roles_dir, overrides)
            chart_ref = render_with_defaults(helm["chart_ref"], roles_dir, overrides)
            prefix, _, chart = chart_ref.rpartition("/")
            if prefix.startswith("oci://"):
                repo_url = prefix
            else:
                repo_url = render_with_defaults(
                    repositories[prefix]["repo_url"], roles_dir, overrides
                )
            installs.append(
                ChartInstall(
                    role=role,
                    task=task["name"],
                    release=helm["name"],
                    chart=chart,
                    version=str(render_with_defaults(helm["chart_version"], roles_dir, overrides)),
                    namespace=render_with_defaults(helm["release_namespace"], roles_dir, overrides),
                    values=json.loads(json.dumps(values)),  # plain types, as helm receives them
                    repo_url=repo_url,
                )
            )
    return installs


def chart_dir(install: ChartInstall, upstream_dir: Path | None, work_dir: Path) -> Path:
    """A renderable copy of the pinned chart: ../shared/upstream's (cert-manager's Chart.yaml
    written from its template, as its release does), else `helm pull` into work_dir."""
    name = f"{install.chart}-{install.version}"
    if upstream_dir is not None and (upstream_dir / "charts" / name).is_dir():
        source = upstream_dir / "charts" / name
        if (source / "Chart.yaml").is_file():
            return source
        # cert-manager's tag holds Chart.template.yaml; its release writes version/appVersion
        # (make/manifests.mk). Images default to appVersion, so it must be the real version.
        template = source / "Chart.template.yaml"
        if not template.is_file():
            raise ChartUnavailableError(f"{source} has neither Chart.yaml nor Chart.template.yaml")
        copy = work_dir / name
        if not copy.is_dir():
            shutil.copytree(source, copy)
            chart = yaml.safe_load(template.read_text())
            chart.update(version=install.version, appVersion=install.version)
            chart.get("annotations", {}).pop("artifacthub.io/prerelease", None)
            (copy / "Chart.yaml").write_text(yaml.safe_dump(chart, sort_keys=False))
        return copy
    pulled = work_dir / "pulled" / name
    if (pulled / install.chart / "Chart.yaml").is_file():
        return pulled / install.chart
    helm = find_helm()
    if helm is None:
        raise ChartUnavailableError(f"no ../shared/upstream/charts/{name} and no helm to pull it")
    if install.repo_url.startswith("oci://"):
        args = [f"{install.repo_url}/{install.chart}"]
    else:
        args = [install.chart, "--repo", install.repo_url]
    result = subprocess.run(
        [
            str(helm),
            "pull",
            *args,
            "--version",
            install.version,
            "--untar",
            "--untardir",
            str(pulled),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise ChartUnavailableError(
            f"no ../shared/upstream/charts/{name}, and helm pull failed (offline?): "
            f"{result.stderr.strip()[-300:]}"
        )
    return pulled / install.chart


# --- Values against the chart's values.yaml ------------------------------------------------------


def _chart_values(directory: Path) -> dict:
    path = directory / "values.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _subcharts(directory: Path) -> dict[str, Path]:
    """Dependency name (or alias) -> its unpacked folder under charts/."""
    chart = yaml.safe_load((directory / "Chart.yaml").read_text())
    found = {}
    for dependency in chart.get("dependencies") or []:
        folder = directory / "charts" / dependency["name"]
        if folder.is_dir():
            found[dependency.get("alias") or dependency["name"]] = folder
    return found


def _templates_text(directory: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace")
        for p in sorted((directory / "templates").rglob("*"))
        if p.is_file()
    )


def _paths(values: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(values, dict):
        for key, inner in values.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from _paths(inner, path)


def unknown_values(directory: Path, values: dict, chart_label: str) -> list[str]:
    """Every key of `values` that the chart at `directory` does not have.

    A key is known when the chart's values.yaml has it, or when the chart's templates read it
    (`.Values.<path>`: keys upstream leaves commented out in values.yaml). Below a key whose
    default is an empty map or null, any key is accepted: such maps are handed to the objects
    whole (podLabels, nodeSelector, resources, ...), and what lands there is validated as part of
    the rendered object. So is any key below a map a template hands whole (`toYaml
    .Values.<path>`) even when its default is not empty (SigNoz's `resources` with `requests` set
    and `limits` commented out). A subchart's key is checked against the subchart's own values.
    """
    problems: list[str] = []
    _check_values(directory, values, _chart_values(directory), [], chart_label, problems)
    return problems


def _check_values(
    directory: Path, values: dict, defaults: Any, path: list[str], chart: str, problems: list[str]
) -> None:
    subcharts = _subcharts(directory) if not path else {}
    for key, value in values.items():
        here = [*path, str(key)]
        if key in subcharts:
            sub = subcharts[key]
            sub_defaults = _deep_merge(_chart_values(sub), defaults.get(key) or {})
            if isinstance(value, dict):
                _check_values(sub, value, sub_defaults, [], f"{chart} > {sub.name}", problems)
            continue
        if isinstance(defaults, dict) and key in defaults:
            known = defaults[key]
            whole = re.search(
                r"toYaml \.Values\." + re.escape(".".join(here)) + r"\s", _templates_text(directory)
            )
            if isinstance(value, dict) and isinstance(known, dict) and known and not whole:
                _check_values(directory, value, known, here, chart, problems)
            continue
        dotted = ".".join(here)
        if re.search(r"\.Values\." + re.escape(dotted) + r"\b", _templates_text(directory)):
            continue
        candidates = list(_paths(_chart_values(directory)))
        nearest = difflib.get_close_matches(dotted, candidates, n=1, cutoff=0.6)
        hint = f"; nearest existing key: {nearest[0]}" if nearest else ""
        problems.append(f"{chart}: {dotted} is not a key of the chart's values{hint}")


def _deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _deep_merge(base.get(key), value)
        return merged
    return override if override is not None else base


# --- Rendering and validating objects ------------------------------------------------------------


def helm_template(
    helm: Path, directory: Path, install: ChartInstall, kube_version: str
) -> list[dict]:
    """The objects `helm template` renders for this install (CRDs included), or RuntimeError
    with helm's message (a kubeVersion the chart refuses, a values.schema.json violation...)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as values_file:
        json.dump(install.values, values_file)
        values_file.flush()
        result = subprocess.run(
            [str(helm), "template", install.release, str(directory),
             "--namespace", install.namespace, "--kube-version", kube_version,
             "--include-crds", "--values", values_file.name],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(
            f"helm template {install.chart} {install.version} failed: {result.stderr.strip()}"
        )
    return [doc for doc in yaml.load_all(result.stdout, Loader=_SAFE_LOADER) if doc]


@cache
def _upstream_crd_schemas(upstream_dir: Path) -> CrdSchemas:
    return CrdSchemas.load(sorted((upstream_dir / "crds").glob("*.yaml")))


def upstream_crds(upstream_dir: Path, extra: Iterable[dict] = ()) -> CrdSchemas:
    """Strict schemas of ../shared/upstream/crds plus any CRD objects in `extra` (the pinned
    files win where both have a kind)."""
    rendered = CrdSchemas.from_documents(extra).schemas
    return CrdSchemas({**rendered, **_upstream_crd_schemas(upstream_dir).schemas})


def _describe(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')} {meta.get('namespace', '') + '/' if meta.get('namespace') else ''}{meta.get('name')}"


def object_problems(
    docs: Iterable[dict], crds: CrdSchemas, kube_version: str, origin: str
) -> list[str]:
    """Each object strictly against its CRD, or else against Kubernetes' own schema."""
    import kubernetes_validate

    problems = []
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in crds.schemas:
            problems += [f"{origin}: {_describe(doc)}: {error}" for error in crds.errors(doc)]
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path) or "<root>"
            problems.append(f"{origin}: {_describe(doc)}: {path}: {error.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError):
            problems.append(
                f"{origin}: {_describe(doc)}: no CRD or Kubernetes {kube_version} schema for "
                f"apiVersion {key[0]} kind {key[1]}"
            )
    return problems


# --- Waited-for conditions -----------------------------------------------------------------------

# (API group, kind) -> the condition types its controller sets, with the source. Knative-style
# "living" condition sets also set "Ready", True once every listed condition is True.
CONDITION_FACTS: dict[tuple[str, str], tuple[frozenset[str], str]] = {
    ("", "Node"): (frozenset({"Ready"}), "kubernetes v1.33 kubelet node status (NodeReady)"),
    ("apps", "Deployment"): (
        frozenset({"Available", "Progressing"}),
        "kubernetes v1.33 pkg/controller/deployment (DeploymentAvailable)",
    ),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): (
        frozenset({"Established", "NamesAccepted"}),
        "kubernetes v1.33 apiextensions-apiserver establishing controller",
    ),
    ("kafka.strimzi.io", "Kafka"): (
        frozenset({"Ready", "NotReady", "Warning"}),
        "strimzi-kafka-operator 0.45.0 operator-common/.../model/StatusUtils.java",
    ),
    ("mlops.seldon.io", "Model"): (
        frozenset({"ModelReady", "Ready"}),
        "seldon-core v2.10.2 operator/apis/mlops/v1alpha1/model_conditions.go",
    ),
    ("mlops.seldon.io", "Pipeline"): (
        frozenset({"PipelineReady", "PipelineGwReady", "ModelsReady", "Ready"}),
        "seldon-core v2.10.2 operator/apis/mlops/v1alpha1/pipeline_types.go",
    ),
    ("mlops.seldon.io", "Server"): (
        frozenset({"StatefulSetOrDeploymentReady", "Ready"}),
        "seldon-core v2.10.2 operator/apis/mlops/v1alpha1/server_types.go serverConditionSet",
    ),
    ("mlops.seldon.io", "SeldonRuntime"): (
        frozenset(
            {
                "SchedulerReady",
                "DataflowEngineReady",
                "ModelGatewayReady",
                "PipelineGatewayReady",
                "EnvoyReady",
                "HodometerReady",
                "Ready",
            }
        ),
        "seldon-core v2.10.2 operator/apis/mlops/v1alpha1/seldonruntime_types.go",
    ),
    ("serving.knative.dev", "Service"): (
        frozenset({"ConfigurationsReady", "RoutesReady", "Ready"}),
        "knative/serving knative-v1.21.1 pkg/apis/serving/v1/service_lifecycle.go",
    ),
    ("eventing.knative.dev", "Broker"): (
        frozenset({"Ready"}),
        "knative/eventing knative-v1.21.0 pkg/apis/eventing/v1/broker_lifecycle.go",
    ),
    ("eventing.knative.dev", "Trigger"): (
        frozenset(
            {
                "BrokerReady",
                "SubscriptionReady",
                "DependencyReady",
                "SubscriberResolved",
                "DeadLetterSinkResolved",
                "OIDCIdentityCreated",
                "Ready",
            }
        ),
        "knative/eventing knative-v1.21.0 pkg/apis/eventing/v1/trigger_lifecycle.go",
    ),
    ("serving.kserve.io", "InferenceService"): (
        frozenset({"PredictorReady", "IngressReady", "Ready"}),
        "kserve v0.20.0 pkg/apis/serving/v1beta1/inference_service_status.go conditionSet",
    ),
}


# Kinds of the core API group ("" / apiVersion v1) that the roles wait on.
_CORE_KINDS = {("Node", ""), ("Pod", ""), ("Namespace", ""), ("PersistentVolumeClaim", "")}


@dataclass(frozen=True)
class Wait:
    """One k8s_info task that waits for a condition."""

    role: str
    task: str
    group: str
    kind: str
    condition: str
    status: str


def waits(roles_dir: Path) -> list[Wait]:
    """Every condition the roles wait for (k8s_info with wait_condition; loops expanded)."""
    found = []
    for role in sorted(p.name for p in roles_dir.iterdir() if (p / "tasks").is_dir()):
        for task in role_tasks(roles_dir, role):
            info = task.get("kubernetes.core.k8s_info")
            if not info or "wait_condition" not in info:
                continue
            items = task.get("loop") if isinstance(task.get("loop"), list) else [{}]
            for item in items:
                item = item if isinstance(item, dict) else {}
                api_version = item.get("api_version") or info.get("api_version", "v1")
                if "{{" in str(info.get("api_version", "")):
                    api_version = item.get("api_version", "v1")
                kind = item.get("kind") if "{{" in str(info.get("kind")) else info.get("kind")
                group = api_version.rpartition("/")[0] if "/" in api_version else ""
                found.append(
                    Wait(
                        role=role,
                        task=task["name"],
                        group=group,
                        kind=kind,
                        condition=info["wait_condition"]["type"],
                        status=str(info["wait_condition"].get("status", "True")),
                    )
                )
    return found


def wait_problems(roles_dir: Path) -> list[str]:
    """Waits for a condition the upstream controller never sets."""
    problems = []
    for wait in waits(roles_dir):
        fact = CONDITION_FACTS.get((wait.group, wait.kind))
        if fact is None and wait.group == "" and (wait.kind, "") not in _CORE_KINDS:
            problems.append(
                f"{wait.role}: {wait.task!r} asks for {wait.kind} in apiVersion v1 (k8s_info's "
                f"default), which has no such kind: name its group's apiVersion"
            )
        elif fact is None:
            problems.append(
                f"{wait.role}: {wait.task!r} waits on {wait.kind} ({wait.group or 'core'}), for "
                f"which no upstream condition fact is recorded"
            )
        elif wait.condition not in fact[0]:
            problems.append(
                f"{wait.role}: {wait.task!r} waits for {wait.kind} condition {wait.condition}, "
                f"which its controller never sets (it sets {', '.join(sorted(fact[0]))}: {fact[1]})"
            )
    return problems


# knative/serving knative-v1.21.1 config/core/webhooks/configmap-validation.yaml: the ValidatingWebhook
# config.webhook.serving.knative.dev has failurePolicy Fail and selects knative-serving ConfigMaps
# labelled app.kubernetes.io/component in (autoscaler, controller, logging, networking, ...), which
# config-domain, config-features (controller) and config-network (networking) are; it is served by
# Service "webhook" in front of Deployment "webhook" (config/core/deployments/webhook.yaml).
KNATIVE_CONFIG_WEBHOOK = {
    "namespace": "knative-serving",
    "deployment": "webhook",
    "service": "webhook",
}


def knative_config_order_problems(roles_dir: Path) -> list[str]:
    """The kserve_stack role patches Knative's ConfigMaps only once the webhook that validates
    them (failurePolicy Fail) is Available and has a ready endpoint."""
    tasks = role_tasks(roles_dir, "kserve_stack")
    (patch_index,) = [
        i
        for i, t in enumerate(tasks)
        if "knative-config.yaml.j2" in str(t.get("kubernetes.core.k8s", {}).get("definition", ""))
    ]
    before = tasks[:patch_index]
    namespace = KNATIVE_CONFIG_WEBHOOK["namespace"]
    deployment_waited = any(
        (info := t.get("kubernetes.core.k8s_info"))
        and info.get("kind") == "Deployment"
        and info.get("name") == KNATIVE_CONFIG_WEBHOOK["deployment"]
        and info.get("namespace") == namespace
        and info.get("wait_condition", {}).get("type") == "Available"
        for t in before
    )
    endpoints_waited = any(
        (info := t.get("kubernetes.core.k8s_info"))
        and info.get("kind") == "EndpointSlice"
        and info.get("namespace") == namespace
        and f"kubernetes.io/service-name={KNATIVE_CONFIG_WEBHOOK['service']}"
        in info.get("label_selectors", [])
        and "until" in t
        for t in before
    )
    problems = []
    if not deployment_waited:
        problems.append(
            "kserve_stack patches Knative's ConfigMaps before waiting for Deployment "
            f"{namespace}/{KNATIVE_CONFIG_WEBHOOK['deployment']} to be Available (its webhook "
            "validates them with failurePolicy Fail)"
        )
    if not endpoints_waited:
        problems.append(
            "kserve_stack patches Knative's ConfigMaps before waiting for a ready endpoint of "
            f"Service {namespace}/{KNATIVE_CONFIG_WEBHOOK['service']} (EndpointSlice "
            f"kubernetes.io/service-name={KNATIVE_CONFIG_WEBHOOK['service']})"
        )
    return problems


def kserve_manifest_problems(kserve_dir: Path, local_root: Path) -> list[str]:
    """What `income-bundle validate --kserve` reports: the kserve/ manifests strictly against
    their CRDs and Kubernetes (when the pinned CRDs are at hand), their selectors against the
    upstream facts, and the checkout folders they serve (under the mount path)."""
    from income_bundle.crds import find_crd_dir
    from income_bundle.kserve.manifests import APPLY_ORDER, MOUNT_PATH, OPTIONAL

    problems = []
    docs: dict[str, list[dict]] = {}
    for name in (*APPLY_ORDER, *OPTIONAL):
        path = kserve_dir / name
        if not path.is_file():
            problems.append(f"{name} is missing from {kserve_dir}")
            continue
        try:
            docs[name] = _documents(path)
        except yaml.YAMLError as error:
            problems.append(f"{name} is not YAML: {error}")
    upstream = find_upstream_dir(local_root)
    if upstream is not None:
        crds = upstream_crds(upstream)
    else:
        crd_dir = find_crd_dir(local_root)
        crds = CrdSchemas.from_dir(crd_dir) if crd_dir else None
    if crds is not None:
        roles_dir = local_root / "ansible" / "roles"
        version = kubernetes_schema_version(roles_dir)
        for name, objects in docs.items():
            known = [
                d
                for d in objects
                if (d.get("apiVersion"), d.get("kind")) in crds.schemas
                or "." not in d["apiVersion"]
            ]
            problems += object_problems(known, crds, version, name)
    problems += kserve_selector_problems(kserve_dir)
    folders = []
    for doc in docs.get("inferenceservice.yaml", []):
        uri = doc.get("spec", {}).get("predictor", {}).get("model", {}).get("storageUri")
        if uri:
            folders.append((doc["metadata"]["name"], uri.removeprefix("pvc://").partition("/")[2]))
        else:
            problems.append(f"InferenceService {doc['metadata']['name']} has no storageUri")
    for doc in docs.get("detectors.yaml", []):
        for container in (
            doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        ):
            command = container.get("command") or [""]
            folders.append((doc["metadata"]["name"], command[-1].removeprefix(MOUNT_PATH + "/")))
    for name, folder in folders:
        if not (local_root / folder / "model-settings.json").is_file():
            problems.append(
                f"{name} serves {folder}, which has no model-settings.json under {local_root}"
            )
    return problems
