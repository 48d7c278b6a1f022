"""Stand-ins for the controllers that cannot run in the simulated cluster (no container runs).

Each stand-in watches one custom kind and writes, through the status subresource, exactly the
conditions the real controller writes at the version we pin, when the real controller would
report success. Nothing else: a condition the real controller never sets in our configuration
is never set here either, so a role waiting for it fails here as it would on a cluster.

Sources (all at the pinned tags; `../shared/upstream/README.md` lists the commits):
- Seldon Core v2.10.2 (SeldonIO/seldon-core 8ca3c3c7): operator/apis/mlops/v1alpha1/
  model_conditions.go, pipeline_types.go, server_types.go, seldonruntime_types.go (condition
  sets built with knative.dev/pkg `apis.NewLivingConditionSet`, whose happy condition is
  `Ready`, True only when every dependent is True) and
  operator/controllers/reconcilers/seldon/runtime_reconciler.go (a component whose override says
  `disable: true` gets no reconciler, so its condition is never set).
- Strimzi 0.45.0, Knative Serving 1.21.1, Knative Eventing 1.21.0, KServe v0.20.0: the `Ready`
  condition the pinned CRDs print (`additionalPrinterColumns` in ../shared/upstream/crds).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "STAND_INS",
    "StandIn",
    "StandInControllers",
    "StandInError",
    "seldon_runtime_conditions",
]

READY = "Ready"

# seldonruntime_types.go ConditionNameMap: component name -> its condition (seldonconfig_types.go names).
SELDON_RUNTIME_COMPONENTS = {
    "seldon-scheduler": "SchedulerReady",
    "seldon-envoy": "EnvoyReady",
    "seldon-dataflow-engine": "DataflowEngineReady",
    "seldon-modelgateway": "ModelGatewayReady",
    "seldon-pipelinegateway": "PipelineGatewayReady",
    "hodometer": "HodometerReady",
}


def _all_true(*dependents: str) -> Callable[[dict], dict[str, str]]:
    """A living condition set whose dependents all succeed: each True, and Ready True."""

    def conditions(_: dict) -> dict[str, str]:
        return {**dict.fromkeys(dependents, "True"), READY: "True"}

    return conditions


def _validated_replicas(spec: dict) -> int:
    """operator/internal/utils.go GetValidatedScalingSpec: replicas if set (>= 0), else a
    positive minReplicas, else 1."""
    replicas, minimum = spec.get("replicas"), spec.get("minReplicas")
    if replicas is not None and replicas >= 0:
        return replicas
    if minimum is not None and minimum > 0:
        return minimum
    return 1


def seldon_server_fields(server: dict) -> dict:
    """server_controller.go: status.replicas from the validated scaling spec and status.selector
    from the StatefulSet reconciler's GetLabelSelector (`seldon-server-name=<name>`); the Server
    CRD requires both and loadedModels (no omitempty in server_types.go), so a status without
    them is refused. loadedModels is the operator's own value before the scheduler reports a load:
    no model runs here."""
    return {
        "loadedModels": 0,
        "replicas": _validated_replicas(server.get("spec") or {}),
        "selector": f"seldon-server-name={server['metadata']['name']}",
    }


def seldon_runtime_conditions(runtime: dict) -> dict[str, str]:
    """What operator v2.10.2 reports for a SeldonRuntime whose workloads all come up: every
    component not disabled by an override is True; Ready is True only if all six are (a disabled
    component's condition is never set, so Ready stays Unknown)."""
    disabled = {
        override.get("name")
        for override in runtime.get("spec", {}).get("overrides") or []
        if override.get("disable")
    }
    conditions = {
        condition: "True"
        for component, condition in SELDON_RUNTIME_COMPONENTS.items()
        if component not in disabled
    }
    conditions[READY] = "True" if len(conditions) == len(SELDON_RUNTIME_COMPONENTS) else "Unknown"
    return conditions


@dataclass(frozen=True)
class StandIn:
    """One controller's status writer for one kind."""

    controller: str
    group: str
    version: str
    plural: str
    kind: str
    conditions: Callable[[dict], dict[str, str]]
    source: str
    # Status fields the real controller writes beside the conditions (ones the CRD requires).
    fields: Callable[[dict], dict] = lambda _: {}


STAND_INS = (
    StandIn(
        "Strimzi cluster operator 0.45.0",
        "kafka.strimzi.io",
        "v1beta2",
        "kafkas",
        "Kafka",
        _all_true(),
        "strimzi 0.45.0 040-Crd-kafka.yaml printer column Ready",
    ),
    StandIn(
        "Seldon operator 2.10.2",
        "mlops.seldon.io",
        "v1alpha1",
        "seldonruntimes",
        "SeldonRuntime",
        seldon_runtime_conditions,
        "seldon-core v2.10.2 seldonruntime_types.go, runtime_reconciler.go",
    ),
    StandIn(
        "Seldon operator 2.10.2",
        "mlops.seldon.io",
        "v1alpha1",
        "servers",
        "Server",
        _all_true("StatefulSetOrDeploymentReady"),
        "seldon-core v2.10.2 server_types.go serverConditionSet, server_controller.go",
        seldon_server_fields,
    ),
    StandIn(
        "Seldon operator 2.10.2",
        "mlops.seldon.io",
        "v1alpha1",
        "models",
        "Model",
        _all_true("ModelReady"),
        "seldon-core v2.10.2 model_conditions.go modelConditionSet",
    ),
    StandIn(
        "Seldon operator 2.10.2",
        "mlops.seldon.io",
        "v1alpha1",
        "pipelines",
        "Pipeline",
        _all_true("PipelineReady", "PipelineGwReady", "ModelsReady"),
        "seldon-core v2.10.2 pipeline_types.go pipelineConditionSet",
    ),
    StandIn(
        "Knative Serving 1.21.1",
        "serving.knative.dev",
        "v1",
        "services",
        "Service",
        _all_true(),
        "knative serving v1.21.1 config/core/300-resources/service.yaml printer column Ready",
    ),
    StandIn(
        "Knative Eventing 1.21.0",
        "eventing.knative.dev",
        "v1",
        "brokers",
        "Broker",
        _all_true(),
        "knative eventing v1.21.0 config/core/resources/broker.yaml printer column Ready",
    ),
    StandIn(
        "Knative Eventing 1.21.0",
        "eventing.knative.dev",
        "v1",
        "triggers",
        "Trigger",
        _all_true(),
        "knative eventing v1.21.0 config/core/resources/trigger.yaml printer column Ready",
    ),
    StandIn(
        "KServe controller v0.20.0",
        "serving.kserve.io",
        "v1beta1",
        "inferenceservices",
        "InferenceService",
        _all_true(),
        "kserve v0.20.0 serving.kserve.io_inferenceservices.yaml printer column Ready",
    ),
)


def _current(obj: dict) -> dict[str, str]:
    return {
        condition["type"]: condition["status"]
        for condition in (obj.get("status") or {}).get("conditions") or []
    }


# API answers a real controller retries: gone, conflict, throttled, server busy or failing.
_RETRIED = {404, 409, 429, 500, 503, 504}


class StandInError(RuntimeError):
    """The API server refused a stand-in for a reason a controller would not retry."""


class StandInControllers:
    """Runs every stand-in against a cluster in a background thread until stopped.

    Polls (the stand-ins are small; a watch per kind would be more code for nothing here) and
    patches an object's status only when its conditions or observed generation differ, so a
    second run of a playbook sees nothing change that it did not change itself.
    """

    def __init__(self, kubeconfig: Path, stand_ins=STAND_INS, interval_s: float = 0.5) -> None:
        from kubernetes import client, config

        self._api = client.CustomObjectsApi(config.new_client_from_config(str(kubeconfig)))
        self._exceptions = client.exceptions
        self.stand_ins = stand_ins
        self.interval_s = interval_s
        self.patched: list[tuple[str, str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stand-in-controllers", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> StandInControllers:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def reconcile_once(self) -> None:
        for stand_in in self.stand_ins:
            try:
                listed = self._api.list_cluster_custom_object(
                    stand_in.group, stand_in.version, stand_in.plural
                )
            except self._exceptions.ApiException as error:
                # 404: the CRD is not installed (yet); the others pass, as a controller retries.
                if error.status in _RETRIED:
                    continue
                raise StandInError(
                    f"listing {stand_in.plural}.{stand_in.group}/{stand_in.version} refused "
                    f"({error.status} {error.reason}): {error.body}"
                ) from error
            for obj in listed["items"]:
                self._reconcile(stand_in, obj)

    def _reconcile(self, stand_in: StandIn, obj: dict) -> None:
        metadata = obj["metadata"]
        if metadata.get("deletionTimestamp"):
            return
        wanted = stand_in.conditions(obj)
        fields = stand_in.fields(obj)
        status = obj.get("status") or {}
        if (
            _current(obj) == wanted
            and status.get("observedGeneration") == metadata["generation"]
            and all(status.get(key) == value for key, value in fields.items())
        ):
            return
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "status": {
                **fields,
                "observedGeneration": metadata["generation"],
                "conditions": [
                    {"type": kind, "status": value, "lastTransitionTime": now}
                    for kind, value in sorted(wanted.items())
                ],
            }
        }
        try:
            self._api.patch_namespaced_custom_object_status(
                stand_in.group,
                stand_in.version,
                metadata["namespace"],
                stand_in.plural,
                metadata["name"],
                body,
            )
        except self._exceptions.ApiException as error:
            # Deleted or changed since listed, or the API server busy: next round, as a
            # controller's work queue requeues.
            if error.status in _RETRIED:
                return
            raise StandInError(
                f"{stand_in.kind} {metadata['namespace']}/{metadata['name']}: status patch "
                f"refused ({error.status} {error.reason}): {error.body}"
            ) from error
        self.patched.append((stand_in.kind, metadata["namespace"], metadata["name"]))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.reconcile_once()
                self._stop.wait(self.interval_s)
        except BaseException as error:  # surfaced by the caller through .error
            self.error = error
