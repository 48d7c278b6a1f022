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
  condition the pinned CRDs print (`additionalPrinterColumns` in ../shared/upstream/crds), with
  the dependents of the living condition sets of Knative's Service
  (pkg/apis/serving/v1/service_lifecycle.go) and KServe's InferenceService
  (pkg/apis/serving/v1beta1/inference_service_status.go).

The simulated cluster also gets kind's default StorageClass (KIND_STORAGE_CLASS) with its
provisioner, rancher/local-path-provisioner, stood in for (volumes for claims, deleted with them).

Beside conditions, what the roles read of a controller's work:
- the addresses the real controllers write into status (Knative Service and Broker, InferenceService:
  `status.url`, `status.address`), computed from the same ConfigMaps the controllers read
  (`knative-serving/config-domain`, `config-network`; KServe's `inferenceservice-config`), for the
  settings our roles use; any other setting (a custom domain template, a path template, transport
  encryption) is refused rather than guessed;
- the objects a real controller creates that a role reads (Seldon's seldon-mesh and
  seldon-scheduler Services), created once, owned by their object as the controller owns them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

__all__ = [
    "KIND_STORAGE_CLASS",
    "STAND_INS",
    "ClusterReader",
    "RequeueError",
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


def seldon_server_fields(server: dict, _: ClusterReader | None = None) -> dict:
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


class RequeueError(Exception):
    """What the real controller needs to reconcile this object is not there yet: it retries."""


class ClusterReader:
    """The reads the stand-ins make besides their own kind: ConfigMaps (None when absent)."""

    def __init__(self, core_api) -> None:
        self._core = core_api

    def config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._core.read_namespaced_config_map(name, namespace).data or {}
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def config_map_anywhere(self, name: str) -> dict[str, str] | None:
        """The data of the one ConfigMap called `name` in any namespace (a chart's release
        namespace is the user's choice), None when there is none."""
        listed = self._core.list_config_map_for_all_namespaces(
            field_selector=f"metadata.name={name}"
        )
        return (listed.items[0].data or {}) if listed.items else None


# knative/serving knative-v1.21.1 pkg/reconciler/route/config/domain.go DefaultDomain (with
# network.GetClusterDomainName() = cluster.local) and configmap.ExampleKey, skipped when read.
KNATIVE_CLUSTER_LOCAL_DOMAIN = "svc.cluster.local"
_EXAMPLE_KEY = "_example"
# knative.dev/networking (vendored in serving knative-v1.21.1) pkg/config/config.go:
# DefaultDomainTemplate; the default of default-external-scheme is "http".
KNATIVE_DEFAULT_DOMAIN_TEMPLATE = "{{.Name}}.{{.Namespace}}.{{.Domain}}"
KNATIVE_VISIBILITY_LABEL = "networking.knative.dev/visibility"


def knative_domain(config_domain: dict[str, str] | None, labels: dict[str, str]) -> str:
    """knative/serving knative-v1.21.1 pkg/reconciler/route/config/domain.go
    NewDomainFromConfigMap and LookupDomainForLabels: cluster-local routes live under
    svc.cluster.local; otherwise the most specific domain whose selector matches the labels (ties:
    the smallest name), with svc.cluster.local as the default when no domain has an empty selector."""
    if labels.get(KNATIVE_VISIBILITY_LABEL) == "cluster-local":
        return KNATIVE_CLUSTER_LOCAL_DOMAIN
    domains = {}
    for domain, value in (config_domain or {}).items():
        if domain == _EXAMPLE_KEY:
            continue
        domains[domain] = (yaml.safe_load(value) or {}).get("selector") or {}
    if not any(not selector for selector in domains.values()):
        domains[KNATIVE_CLUSTER_LOCAL_DOMAIN] = {}
    chosen, specificity = "", -1
    for domain, selector in sorted(domains.items()):
        matches = all(labels.get(key) == value for key, value in selector.items())
        if matches and len(selector) > specificity:
            chosen, specificity = domain, len(selector)
    return chosen


def knative_route_url(
    name: str, namespace: str, labels: dict[str, str], reader: ClusterReader
) -> tuple[str, str]:
    """(status.url, status.address.url) of the Knative Route `name` (a Knative Service's route
    has its name and labels): knative-v1.21.1 pkg/reconciler/route/route.go
    updateRouteStatusURL (domains.DomainNameFromTemplate; http when cluster-local, else
    default-external-scheme) and the Address it sets (http://<name>.<namespace>.svc.cluster.local)."""
    config_domain = reader.config_map("knative-serving", "config-domain")
    config_network = reader.config_map("knative-serving", "config-network")
    if config_domain is None or config_network is None:
        raise RequeueError("Knative Serving's config-domain and config-network ConfigMaps")
    cluster_local = labels.get(KNATIVE_VISIBILITY_LABEL) == "cluster-local"
    template = config_network.get("domain-template", KNATIVE_DEFAULT_DOMAIN_TEMPLATE)
    if not cluster_local and template != KNATIVE_DEFAULT_DOMAIN_TEMPLATE:
        raise StandInError(f"config-network domain-template {template!r} is not modelled here")
    host = f"{name}.{namespace}.{knative_domain(config_domain, labels)}"
    scheme = "http" if cluster_local else config_network.get("default-external-scheme", "http")
    return f"{scheme}://{host}", f"http://{name}.{namespace}.{KNATIVE_CLUSTER_LOCAL_DOMAIN}"


def knative_service_fields(service: dict, reader: ClusterReader) -> dict:
    """service_lifecycle.go PropagateRouteStatus: a Service's url and address are its route's."""
    metadata = service["metadata"]
    url, address = knative_route_url(
        metadata["name"], metadata["namespace"], metadata.get("labels") or {}, reader
    )
    return {"url": url, "address": {"url": address}}


def knative_broker_fields(broker: dict, _: ClusterReader | None = None) -> dict:
    """knative/eventing knative-v1.21.0 pkg/reconciler/broker/broker.go httpAddress (transport
    encryption disabled, the default): the MT broker's ingress, path /<namespace>/<name>."""
    metadata = broker["metadata"]
    return {
        "address": {
            "name": "http",
            "url": "http://broker-ingress.knative-eventing.svc.cluster.local"
            f"/{metadata['namespace']}/{metadata['name']}",
        }
    }


def inference_service_fields(isvc: dict, reader: ClusterReader) -> dict:
    """kserve v0.20.0, Knative (serverless) mode: the predictor is the Knative Service
    <name>-predictor (pkg/constants PredictorServiceName; its labels include the
    InferenceService's, components/predictor.go buildObjectMeta), and
    reconcilers/ingress/ingress_reconciler.go Reconcile sets status.url from the predictor's URL
    with the ingress config's urlScheme (getHostBasedServiceUrl; host unchanged when
    disableIstioVirtualHost) and status.address to http://<host prefix>.<namespace>.svc.cluster.local
    (getHostPrefix: the predictor's name when disableIstioVirtualHost)."""
    config = reader.config_map_anywhere("inferenceservice-config")
    if config is None:
        raise RequeueError("KServe's inferenceservice-config ConfigMap")
    ingress = json.loads(config.get("ingress", "{}"))
    if ingress.get("pathTemplate") or not ingress.get("disableIstioVirtualHost"):
        raise StandInError(
            "only host-based URLs with disableIstioVirtualHost (the kserve_stack role's "
            f"settings) are modelled, not ingress config {ingress}"
        )
    metadata, spec = isvc["metadata"], isvc.get("spec") or {}
    if spec.get("transformer") or (spec.get("predictor") or {}).get("name"):
        raise StandInError("only a default-named predictor without transformer is modelled")
    predictor = f"{metadata['name']}-predictor"
    url, _ = knative_route_url(
        predictor, metadata["namespace"], metadata.get("labels") or {}, reader
    )
    scheme = ingress.get("urlScheme") or "http"
    return {
        "url": f"{scheme}://{url.split('://', 1)[1]}",
        "address": {
            "url": f"http://{predictor}.{metadata['namespace']}.{KNATIVE_CLUSTER_LOCAL_DOMAIN}"
        },
    }


# operator/controllers/reconcilers/seldon/service_reconciler.go (v2.10.2): getSeldonMeshService,
# getSchedulerService and their ports; the Service type is the component override's serviceType
# when the runtime lists the component, else the runtime's serviceConfig.serviceType, else
# LoadBalancer (getServiceType).
_SELDON_SCHEDULER_PORTS = (
    ("xds", 9002),
    ("scheduler", 9004),
    ("scheduler-mtls", 9044),
    ("agent", 9005),
    ("agent-mtls", 9055),
    ("dataflow", 9008),
)


def seldon_runtime_services(runtime: dict) -> list[dict]:
    """The Services the Seldon operator creates for a SeldonRuntime (the roles read seldon-mesh)."""
    spec = runtime.get("spec") or {}
    service_config = (spec.get("config") or {}).get("serviceConfig") or {}
    prefix = service_config.get("grpcServicePrefix") or ""
    overrides = {override.get("name"): override for override in spec.get("overrides") or []}

    def service(name: str, component: str, ports: list[dict]) -> dict:
        if component in overrides:
            service_type = overrides[component].get("serviceType") or None
        else:
            service_type = service_config.get("serviceType") or "LoadBalancer"
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": runtime["metadata"]["namespace"],
                "labels": {"app.kubernetes.io/name": component},
            },
            "spec": {
                "selector": {"app.kubernetes.io/name": component},
                **({"type": service_type} if service_type else {}),
                "ports": ports,
            },
        }

    def port(name: str, number: int, target: str) -> dict:
        return {"name": name, "port": number, "targetPort": target, "protocol": "TCP"}

    return [
        service(
            "seldon-scheduler",
            "seldon-scheduler",
            [port(f"{prefix}{name}", number, name) for name, number in _SELDON_SCHEDULER_PORTS],
        ),
        service(
            "seldon-mesh",
            "seldon-envoy",
            [port(f"{prefix}data", 80, "http"), port("stats", 9003, "envoy-stats")],
        ),
    ]


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
    # Status fields the real controller writes beside the conditions (ones the CRD requires,
    # ones the roles read), from the object and what the controller reads of the cluster.
    fields: Callable[[dict, ClusterReader], dict] = lambda *_: {}
    # Objects the real controller creates for this one that the roles read: created once,
    # owned by it (controller reference, so garbage collection removes them with it).
    children: Callable[[dict], list[dict]] = lambda _: []


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
        "seldon-core v2.10.2 seldonruntime_types.go, runtime_reconciler.go, service_reconciler.go",
        children=seldon_runtime_services,
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
        _all_true("ConfigurationsReady", "RoutesReady"),
        "knative serving v1.21.1 pkg/apis/serving/v1/service_lifecycle.go, reconciler/route",
        knative_service_fields,
    ),
    StandIn(
        "Knative Eventing 1.21.0",
        "eventing.knative.dev",
        "v1",
        "brokers",
        "Broker",
        _all_true(),
        "knative eventing v1.21.0 config/core/resources/broker.yaml printer column Ready, "
        "pkg/reconciler/broker/broker.go httpAddress",
        knative_broker_fields,
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
        _all_true("PredictorReady", "IngressReady"),
        "kserve v0.20.0 inference_service_status.go conditionSet, ingress_reconciler.go",
        inference_service_fields,
    ),
)


def _current(obj: dict) -> dict[str, str]:
    return {
        condition["type"]: condition["status"]
        for condition in (obj.get("status") or {}).get("conditions") or []
    }


# kind v0.29.0 pkg/build/nodeimage/const_storage.go: the default StorageClass every kind node
# image installs, served by rancher/local-path-provisioner (v0.0.30 in kind v0.29.0,
# images/local-path-provisioner/Makefile). The simulated cluster gets the same class.
LOCAL_PATH_PROVISIONER = "rancher.io/local-path"
KIND_STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {
        "name": "standard",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    },
    "provisioner": LOCAL_PATH_PROVISIONER,
    "volumeBindingMode": "WaitForFirstConsumer",
    "reclaimPolicy": "Delete",
}
# kind's local-path-config: every node's volumes under this folder.
_LOCAL_PATH_BASE = "/var/local-path-provisioner"


def local_path_volume(pvc: dict, storage_class: dict, node: str) -> dict:
    """The PersistentVolume local-path-provisioner v0.0.30 creates for a claim scheduled to
    `node`: provisioner.go provisionFor (hostPath <base>/<pv>_<namespace>_<claim>,
    DirectoryOrCreate, node affinity on kubernetes.io/hostname, the class's reclaim policy) as
    sigs.k8s.io/sig-storage-lib-external-provisioner v10 completes it (name pvc-<claim uid>,
    claimRef, storageClassName, pv.kubernetes.io/provisioned-by)."""
    metadata, spec = pvc["metadata"], pvc["spec"]
    name = f"pvc-{metadata['uid']}"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "annotations": {
                "local.path.provisioner/selected-node": node,
                "pv.kubernetes.io/provisioned-by": LOCAL_PATH_PROVISIONER,
            },
        },
        "spec": {
            "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy", "Delete"),
            "accessModes": spec["accessModes"],
            "volumeMode": "Filesystem",
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "hostPath": {
                "path": f"{_LOCAL_PATH_BASE}/{name}_{metadata['namespace']}_{metadata['name']}",
                "type": "DirectoryOrCreate",
            },
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            },
            "storageClassName": storage_class["metadata"]["name"],
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": metadata["namespace"],
                "name": metadata["name"],
                "uid": metadata["uid"],
                "resourceVersion": metadata["resourceVersion"],
            },
        },
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

        api_client = config.new_client_from_config(str(kubeconfig))
        self._api = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._storage = client.StorageV1Api(api_client)
        self._serialize = api_client.sanitize_for_serialization
        self._reader = ClusterReader(self._core)
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
        self._provision_local_paths()

    def _provision_local_paths(self) -> None:
        """kind's local-path-provisioner, stood in for: a volume for each claim of its classes
        once the scheduler has picked the claim's node (the class waits for the first consumer),
        and the volume deleted once its claim is gone (reclaim policy Delete). The helper pod
        that makes or removes the folder on the node is not modelled: no node has folders here."""
        classes = {
            item["metadata"]["name"]: item
            for item in self._serialize(self._storage.list_storage_class())["items"]
            if item["provisioner"] == LOCAL_PATH_PROVISIONER
        }
        if not classes:
            return
        claims = self._serialize(self._core.list_persistent_volume_claim_for_all_namespaces())
        for claim in claims["items"]:
            annotations = claim["metadata"].get("annotations") or {}
            node = annotations.get("volume.kubernetes.io/selected-node")
            storage_class = classes.get(claim["spec"].get("storageClassName"))
            if (
                node is None
                or storage_class is None
                or claim["spec"].get("volumeName")
                or claim["metadata"].get("deletionTimestamp")
                or annotations.get("volume.kubernetes.io/storage-provisioner")
                != LOCAL_PATH_PROVISIONER
            ):
                continue
            try:
                self._core.create_persistent_volume(local_path_volume(claim, storage_class, node))
            except self._exceptions.ApiException as error:
                if error.status != 409 and error.status not in _RETRIED:
                    raise StandInError(
                        f"local-path volume for {claim['metadata']['namespace']}/"
                        f"{claim['metadata']['name']} refused ({error.status}): {error.body}"
                    ) from error
        for volume in self._serialize(self._core.list_persistent_volume())["items"]:
            provisioner = (volume["metadata"].get("annotations") or {}).get(
                "pv.kubernetes.io/provisioned-by"
            )
            if (
                provisioner == LOCAL_PATH_PROVISIONER
                and (volume.get("status") or {}).get("phase") == "Released"
                and volume["spec"].get("persistentVolumeReclaimPolicy") == "Delete"
            ):
                try:
                    self._core.delete_persistent_volume(volume["metadata"]["name"])
                except self._exceptions.ApiException as error:
                    if error.status not in _RETRIED:
                        raise

    def _reconcile(self, stand_in: StandIn, obj: dict) -> None:
        metadata = obj["metadata"]
        if metadata.get("deletionTimestamp"):
            return
        try:
            fields = stand_in.fields(obj, self._reader)
        except RequeueError:  # the controller requeues until what it reads exists
            return
        self._create_children(stand_in, obj)
        wanted = stand_in.conditions(obj)
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

    def _create_children(self, stand_in: StandIn, obj: dict) -> None:
        """Create the objects the controller creates for `obj` where missing (only Services
        so far), owned by `obj`; existing ones are left as they are, changed or not."""
        metadata = obj["metadata"]
        owner = {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": metadata["name"],
            "uid": metadata["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        for child in stand_in.children(obj):
            if child["kind"] != "Service":
                raise StandInError(f"creating a {child['kind']} is not modelled")
            child["metadata"]["ownerReferences"] = [owner]
            try:
                self._core.create_namespaced_service(child["metadata"]["namespace"], child)
            except self._exceptions.ApiException as error:
                if error.status == 409 or error.status in _RETRIED:  # exists, or next round
                    continue
                raise StandInError(
                    f"{stand_in.kind} {metadata['namespace']}/{metadata['name']}: creating "
                    f"Service {child['metadata']['name']} refused ({error.status}): {error.body}"
                ) from error

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.reconcile_once()
                self._stop.wait(self.interval_s)
        except BaseException as error:  # surfaced by the caller through .error
            self.error = error
