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

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "KNATIVE_MINIMUM_KUBERNETES",
    "kubernetes_schema_version",
    "node_kubernetes_version",
    "version_problems",
]

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


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


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


def kserve_selector_problems(kserve_dir: Path) -> list[str]:
    """kserve/: the PodMonitor, the Triggers and the event display's Service against what the
    selected workloads carry."""
    from income_bundle.kserve.runtime import DRIFT_EVENT_TYPE, OUTLIER_EVENT_TYPE

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
    emitted = {DRIFT_EVENT_TYPE, OUTLIER_EVENT_TYPE}
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
    ecosystem = _defaults(roles_dir, "ecosystem")
    pool_and_kafka = _documents(rendered_dir / "kafka.yaml")
    (kafka,) = [doc for doc in pool_and_kafka if doc["kind"] == "Kafka"]
    plain_ports = [
        listener["port"]
        for listener in kafka["spec"]["kafka"]["listeners"]
        if listener["type"] == "internal" and not listener.get("tls")
    ]
    expected = {
        f"{kafka['metadata']['name']}{STRIMZI_BOOTSTRAP_SUFFIX}."
        f"{ecosystem['ecosystem_mesh_namespace']}:{port}"
        for port in plain_ports
    }
    bootstrap = _defaults(roles_dir, "seldon_core")["seldon_core_kafka_bootstrap"]
    if bootstrap not in expected:
        problems.append(
            f"seldon_core_kafka_bootstrap is {bootstrap}; the Kafka cluster the ecosystem role "
            f"creates answers on {', '.join(sorted(expected)) or 'no plain internal listener'}"
        )
    return problems
