"""kserve/: the InferenceService strictly against KServe v0.20.0's CRD, core kinds against
Kubernetes 1.33, and the Knative objects (no CRD schema here) structurally, with the pod specs
inside them validated as Kubernetes pods. Plus one name everywhere: the model folders the
manifests point at are named as the objects that serve them (that the detectors' trained files are
there: tests/cluster/test_kserve_manifests.py)."""

from __future__ import annotations

import copy
import json

import pytest

from income_bundle.crds import CrdSchemas, find_crd_dir
from income_bundle.kserve.manifests import (
    APPLY_ORDER,
    DETECTORS,
    MOUNT_PATH,
    NAMESPACE,
    OPTIONAL,
    load_documents,
)
from tests.support.ansible_files import KUBERNETES_VERSION
from tests.support.manifests import every, one
from tests.support.paths import ROOT

KSERVE_CRD = "kserve-v0.20.0-inferenceservices-crd.yaml"
CORE_KINDS = {("v1", "Namespace"), ("v1", "PersistentVolume"), ("v1", "PersistentVolumeClaim"),
              ("v1", "Service"), ("apps/v1", "Deployment")}  # fmt: skip
BROKER_INGRESS = "http://broker-ingress.knative-eventing.svc.cluster.local"


@pytest.fixture(scope="module")
def docs() -> dict[str, list[dict]]:
    return load_documents(ROOT)


@pytest.fixture(scope="module")
def kserve_crds() -> CrdSchemas:
    directory = find_crd_dir(ROOT)
    if directory is None or not (directory / KSERVE_CRD).is_file():
        pytest.skip(f"no {KSERVE_CRD}: set CRD_DIR or put shared/crds beside the checkout")
    return CrdSchemas.load([directory / KSERVE_CRD])


def test_every_file_is_applied_and_every_object_has_a_home(docs):
    files = sorted(p.name for p in (ROOT / "kserve").glob("*.yaml"))
    assert sorted(APPLY_ORDER + OPTIONAL) == files
    keys = [(d["kind"], d["metadata"]["name"]) for d in every(docs)]
    assert len(keys) == len(set(keys))
    for doc in every(docs):
        if doc["kind"] not in {"Namespace", "PersistentVolume"}:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "income-bundle"


def test_inference_service_validates_strictly_against_kserve_crd(docs, kserve_crds):
    assert kserve_crds.errors(one(docs, "InferenceService", "income")) == []


def test_inference_service_typo_and_wrong_type_are_caught(docs, kserve_crds):
    isvc = copy.deepcopy(one(docs, "InferenceService", "income"))
    model = isvc["spec"]["predictor"]["model"]
    model["storageURI"] = model.pop("storageUri")
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    errors = kserve_crds.errors(isvc)
    assert any("storageURI" in e for e in errors)
    assert any("minReplicas" in e for e in errors)


def test_core_objects_validate_against_kubernetes(docs):
    import kubernetes_validate

    core = [d for d in every(docs) if (d["apiVersion"], d["kind"]) in CORE_KINDS]
    assert {(d["apiVersion"], d["kind"]) for d in core} == CORE_KINDS
    for doc in core:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def _as_pod(name: str, spec: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_knative_and_runtime_pods_are_valid_kubernetes_pods(docs):
    import kubernetes_validate

    for name in DETECTORS:
        spec = one(docs, "Service", name)["spec"]["template"]["spec"]
        kubernetes_validate.validate(_as_pod(name, spec), KUBERNETES_VERSION, strict=True)
    runtime = one(docs, "ServingRuntime", "income-mlserver")["spec"]
    pod = _as_pod("runtime", {"containers": runtime["containers"]})
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    # The validation has teeth: a misspelt container field fails it.
    broken = copy.deepcopy(pod)
    broken["spec"]["containers"][0]["env_from"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_detector_services_hold_their_batch_in_one_process_on_one_replica(docs):
    for name in DETECTORS:
        service = one(docs, "Service", name)
        assert service["apiVersion"] == "serving.knative.dev/v1"
        assert service["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
        template = service["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["autoscaling.knative.dev/min-scale"] == "1"
        if name == "income-drift":
            assert annotations["autoscaling.knative.dev/max-scale"] == "1"
        (container,) = template["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["MLSERVER_PARALLEL_WORKERS"] == "0"
        assert env["TF_USE_LEGACY_KERAS"] == "1" and env["OMP_NUM_THREADS"] == "1"
        assert len(container["ports"]) == 1 and container["ports"][0]["containerPort"] == int(
            env["MLSERVER_HTTP_PORT"]
        )
        probe = container["readinessProbe"]["httpGet"]
        assert probe["path"] == f"/v2/models/{name}/ready"
        assert probe["port"] == container["ports"][0]["containerPort"]
        # Knative Serving allows PVCs (with the feature flag the kserve_stack role sets), not hostPath.
        (volume,) = template["spec"]["volumes"]
        assert set(volume) == {"name", "persistentVolumeClaim"}
        assert (
            volume["persistentVolumeClaim"]["claimName"]
            == one(docs, "PersistentVolumeClaim")["metadata"]["name"]
        )
        assert container["volumeMounts"][0]["mountPath"] == MOUNT_PATH


def test_inference_service_serves_the_income_artifact_from_the_mounted_checkout(docs):
    isvc = one(docs, "InferenceService", "income")
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["protocolVersion"] == "v2" and model["modelFormat"]["name"] == "sklearn"
    assert model["resources"]["requests"] and model["resources"]["limits"]["memory"]
    claim, _, path = model["storageUri"].removeprefix("pvc://").partition("/")
    pvc = one(docs, "PersistentVolumeClaim", claim)
    pv = one(docs, "PersistentVolume", pvc["spec"]["volumeName"])
    assert pv["spec"]["hostPath"]["path"] == MOUNT_PATH
    assert pv["spec"]["claimRef"] == {"namespace": NAMESPACE, "name": claim}
    assert pv["spec"]["accessModes"] == pvc["spec"]["accessModes"] == ["ReadOnlyMany"]
    settings = json.loads((ROOT / path / "model-settings.json").read_text())
    assert settings["name"] == isvc["metadata"]["name"]  # the V2 path is /v2/models/income/infer
    runtime = one(docs, "ServingRuntime", model["runtime"])["spec"]
    assert "v2" in runtime["protocolVersions"]
    assert {"name": "sklearn", "version": model["modelFormat"]["version"]}.items() <= (
        runtime["supportedModelFormats"][0].items()
    )
    (container,) = runtime["containers"]
    assert container["name"] == "kserve-container"
    assert container["command"] == ["mlserver", "start", "/mnt/models"]


def test_logger_posts_every_request_and_response_to_the_broker(docs):
    logger = one(docs, "InferenceService", "income")["spec"]["predictor"]["logger"]
    broker = one(docs, "Broker")
    assert logger["mode"] == "all"
    assert logger["url"] == f"{BROKER_INGRESS}/{NAMESPACE}/{broker['metadata']['name']}"
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == (
        "MTChannelBasedBroker"
    )
    assert broker["spec"]["config"]["name"] == "config-br-default-channel"  # the in-memory channel


def test_triggers_route_requests_to_detectors_and_results_to_the_display(docs):
    broker = one(docs, "Broker")["metadata"]["name"]
    triggers = {t["metadata"]["name"]: t["spec"] for t in every(docs) if t["kind"] == "Trigger"}
    assert all(t["broker"] == broker for t in triggers.values())
    for name in DETECTORS:
        spec = triggers[name]
        assert spec["filter"]["attributes"] == {
            "type": "org.kubeflow.serving.inference.request",
            "inferenceservicename": one(docs, "InferenceService")["metadata"]["name"],
        }
        ref = spec["subscriber"]["ref"]
        assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
            "serving.knative.dev/v1",
            "Service",
            name,
        )
        assert spec["subscriber"]["uri"] == f"/cloudevents/{name}"  # the runtime's route
    results = {
        t["filter"]["attributes"]["type"]: t["subscriber"]["ref"]
        for n, t in triggers.items()
        if n not in DETECTORS
    }
    assert set(results) == {"io.income-bundle.drift", "io.income-bundle.outlier"}
    display = one(docs, "Service", "event-display")
    for ref in results.values():
        assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("v1", "Service", "event-display")
    deployment = one(docs, "Deployment", "event-display")
    assert display["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "@sha256:" in container["image"]  # pinned by digest
    assert display["spec"]["ports"][0]["targetPort"] == container["ports"][0]["containerPort"]


def test_images_are_the_locally_built_mlserver(docs):
    images = {one(docs, "ServingRuntime")["spec"]["containers"][0]["image"]}
    for name in DETECTORS:
        images.add(one(docs, "Service", name)["spec"]["template"]["spec"]["containers"][0]["image"])
    (image,) = images
    # dev.local/ is on Knative's list of registries whose tags it does not resolve.
    assert image.startswith("dev.local/")


def test_pod_monitor_scrapes_both_detectors_metrics_port():
    import yaml

    (monitor,) = list(yaml.safe_load_all((ROOT / "kserve" / "podmonitor.yaml").read_text()))
    assert monitor["kind"] == "PodMonitor" and monitor["metadata"]["namespace"] == NAMESPACE
    (selector,) = monitor["spec"]["selector"]["matchExpressions"]
    assert selector["key"] == "serving.knative.dev/service"
    assert sorted(selector["values"]) == sorted(DETECTORS)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (relabel,) = endpoint["relabelings"]
    assert relabel["targetLabel"] == "__address__" and relabel["replacement"] == "$1:8082"
    # 8082 is MLServer's default metrics port: no detector moves it.
    for doc in yaml.safe_load_all((ROOT / "kserve" / "detectors.yaml").read_text()):
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        assert "MLSERVER_METRICS_PORT" not in {e["name"] for e in container.get("env", [])}
