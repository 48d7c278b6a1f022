"""The monitor on the cluster paths (income_monitor role): its objects select and address each
other and what they read (Seldon's Kafka, KServe's broker), its image holds exactly what the
monitor imports at constraints.txt's versions, and the role waits for what it applies.

The rendered templates are also validated strictly (tests/cluster/test_upstream_charts.py) and applied
to a real API server twice (tests/cluster/test_sim_cluster_apply.py); the Trigger waits are checked
against Knative's conditions with every other wait (tests/unit/test_upstream_waits.py). The image's
pins and the playbooks' and roles' wiring, read as files: tests/unit/test_monitor_deploy.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from income_bundle.monitoring.sources.kserve import EVENT_TYPES
from income_bundle_dev.upstream_checks import (
    KNATIVE_SERVICE_SUBSCRIBER_PORT,
    STRIMZI_BOOTSTRAP_SUFFIX,
    monitor_problems,
    role_tasks,
)
from tests.support.ansible_files import role_defaults as defaults
from tests.support.manifests import documents
from tests.support.manifests import edit_documents as edit
from tests.support.paths import ROOT

ROLES = ROOT / "ansible" / "roles"
ROLE = ROLES / "income_monitor"
KSERVE = ROOT / "kserve"
PLATFORMS = ("seldon", "kserve")


def role_vars() -> dict:
    return yaml.safe_load((ROLE / "vars" / "main.yaml").read_text())


def one(docs: list[dict], kind: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def container(rendered: Path, platform: str) -> dict:
    workload = one(documents(rendered / f"income-monitor-{platform}.yaml"), "StatefulSet")
    (found,) = workload["spec"]["template"]["spec"]["containers"]
    return found


def arguments(found: dict) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in found["args"])


@pytest.fixture
def copy(rendered, tmp_path) -> Path:
    """A copy of the rendered templates to break."""
    target = tmp_path / "rendered"
    shutil.copytree(rendered, target)
    return target


# --- Selectors, ports and addresses --------------------------------------------------------------


def test_monitor_objects_select_and_address_what_they_should(rendered):
    assert monitor_problems(rendered, ROLES, KSERVE) == []


def test_pod_monitor_selects_the_statefulsets_pods_on_a_named_port(rendered):
    for platform in PLATFORMS:
        workload = one(documents(rendered / f"income-monitor-{platform}.yaml"), "StatefulSet")
        labels = workload["spec"]["template"]["metadata"]["labels"]
        ports = {p["name"] for p in container(rendered, platform)["ports"]}
        monitor = one(
            documents(rendered / f"income-monitor-podmonitor-{platform}.yaml"), "PodMonitor"
        )
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [
            workload["metadata"]["namespace"]
        ]


def test_a_wrong_selector_or_port_name_is_named(copy):
    def break_pod_monitor(doc):
        doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "monitor"
        doc["spec"]["podMetricsEndpoints"][0]["port"] = "metrics"

    def break_service(doc):
        if doc["kind"] == "Service":
            doc["spec"]["selector"] = {"app": "income-monitor"}

    edit(copy / "income-monitor-podmonitor-seldon.yaml", break_pod_monitor)
    edit(copy / "income-monitor-kserve.yaml", break_service)
    problems = "\n".join(monitor_problems(copy, ROLES, KSERVE))
    assert "seldon monitor PodMonitor income-monitor selects" in problems
    assert "scrapes port 'metrics'; the container's named ports are ['http']" in problems
    assert "kserve monitor Service income-monitor selects {'app': 'income-monitor'}" in problems


def test_service_selects_the_pods_and_targets_the_port_the_monitor_listens_on(rendered):
    for platform in PLATFORMS:
        docs = documents(rendered / f"income-monitor-{platform}.yaml")
        workload, service = one(docs, "StatefulSet"), one(docs, "Service")
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert workload["spec"]["serviceName"] == service["metadata"]["name"]
        found = container(rendered, platform)
        (http,) = found["ports"]
        assert str(http["containerPort"]) == arguments(found)["port"]
        assert {p["targetPort"] for p in service["spec"]["ports"]} == {http["name"]}


# --- Seldon: Kafka --------------------------------------------------------------------------------


def test_kafka_bootstrap_is_the_strimzi_cluster_the_ecosystem_role_creates(rendered):
    kafka = one(documents(rendered / "kafka.yaml"), "Kafka")
    namespace = defaults("ecosystem")["ecosystem_mesh_namespace"]
    host, _, port = arguments(container(rendered, "seldon"))["kafka-bootstrap"].rpartition(":")
    assert host == f"{kafka['metadata']['name']}{STRIMZI_BOOTSTRAP_SUFFIX}.{namespace}"
    (listener,) = [li for li in kafka["spec"]["kafka"]["listeners"] if li["port"] == int(port)]
    assert listener["type"] == "internal" and listener["tls"] is False
    # The Kafka Seldon itself is configured with.
    assert f"{host}:{port}" == defaults("seldon_core")["seldon_core_kafka_bootstrap"]


def test_monitor_reads_the_topics_of_the_models_namespace(rendered):
    found = container(rendered, "seldon")
    models_namespace = defaults("income_pipeline")["income_pipeline_namespace"]
    assert arguments(found)["namespace"] == models_namespace
    workload = one(documents(rendered / "income-monitor-seldon.yaml"), "StatefulSet")
    assert workload["metadata"]["namespace"] == models_namespace
    pipeline = arguments(found)["pipeline"]
    assert pipeline in defaults("income_pipeline")["income_pipeline_pipelines"]
    assert (ROOT / "seldon-examples" / "pipelines" / f"{pipeline}.yaml").is_file()
    assert "kafka-bootstrap" not in arguments(container(rendered, "kserve"))


def test_a_kafka_address_strimzi_does_not_serve_is_named(copy):
    def elsewhere(doc):
        if doc["kind"] == "StatefulSet":
            args = doc["spec"]["template"]["spec"]["containers"][0]["args"]
            args[:] = [
                "--kafka-bootstrap=seldon-kafka:9092" if a.startswith("--kafka-bootstrap=") else a
                for a in args
            ]

    edit(copy / "income-monitor-seldon.yaml", elsewhere)
    (problem,) = monitor_problems(copy, ROLES, KSERVE)
    assert "--kafka-bootstrap=seldon-kafka:9092" in problem
    assert "answers on seldon-kafka-bootstrap.seldon-mesh:9092" in problem


# --- KServe: Triggers ------------------------------------------------------------------------------


def test_triggers_pass_exactly_the_event_types_the_monitor_accepts(rendered):
    triggers = documents(rendered / "income-monitor-triggers.yaml")
    types = [t["spec"]["filter"]["attributes"]["type"] for t in triggers]
    assert sorted(types) == sorted(EVENT_TYPES)
    assert sorted(role_vars()["income_monitor_kserve_event_types"].values()) == sorted(EVENT_TYPES)
    (broker,) = [d for d in documents(KSERVE / "broker.yaml") if d["kind"] == "Broker"]
    (isvc,) = documents(KSERVE / "inferenceservice.yaml")
    for trigger in triggers:
        assert trigger["metadata"]["namespace"] == broker["metadata"]["namespace"]
        assert trigger["spec"]["broker"] == broker["metadata"]["name"]
        assert (
            trigger["spec"]["filter"]["attributes"]["inferenceservicename"]
            == (isvc["metadata"]["name"])
        )
    # The monitor records the InferenceService's events under its name.
    assert arguments(container(rendered, "kserve"))["pipeline"] == isvc["metadata"]["name"]


def test_knative_reaches_the_monitors_cloudevents_route(rendered):
    service = one(documents(rendered / "income-monitor-kserve.yaml"), "Service")
    (called,) = [
        p for p in service["spec"]["ports"] if p["port"] == KNATIVE_SERVICE_SUBSCRIBER_PORT
    ]
    assert called["targetPort"] == container(rendered, "kserve")["ports"][0]["name"]
    for trigger in documents(rendered / "income-monitor-triggers.yaml"):
        subscriber = trigger["spec"]["subscriber"]
        assert subscriber["ref"] == {
            "apiVersion": "v1",
            "kind": "Service",
            "name": service["metadata"]["name"],
        }
        assert subscriber["uri"] == "/cloudevents"


def test_a_missing_or_misspelled_trigger_and_an_unreachable_service_are_named(copy):
    path = copy / "income-monitor-triggers.yaml"
    triggers = [t for t in documents(path) if not t["metadata"]["name"].endswith("-response")]
    triggers[0]["spec"]["filter"]["attributes"]["type"] = "io.income-bundle.drifts"
    path.write_text(yaml.safe_dump_all(triggers))

    def without_port_80(doc):
        if doc["kind"] == "Service":
            doc["spec"]["ports"] = [p for p in doc["spec"]["ports"] if p["port"] != 80]

    edit(copy / "income-monitor-kserve.yaml", without_port_80)
    problems = "\n".join(monitor_problems(copy, ROLES, KSERVE))
    assert "the monitor's Triggers pass types" in problems
    assert "io.income-bundle.drifts" in problems
    assert "Knative calls Service income-monitor on port 80, which it does not have" in problems


# --- The StatefulSet and what it runs --------------------------------------------------------------


def test_probes_scrapes_and_deliveries_are_routes_of_the_monitor(rendered, tmp_path):
    from income_bundle.monitoring.service import ClassifierInfo, Monitor, build_app
    from income_bundle.monitoring.store import SqliteStore

    store = SqliteStore(tmp_path / "monitor.sqlite")
    try:
        info = ClassifierInfo(["<=50K", ">50K"], [0.75, 0.25], [], {})
        app = build_app(Monitor(store, {"income": info}))
    finally:
        store.close()
    routes = {(route.path, method) for route in app.routes for method in route.methods}
    found = container(rendered, "seldon")
    assert (found["readinessProbe"]["httpGet"]["path"], "GET") in routes
    assert (found["livenessProbe"]["httpGet"]["path"], "GET") in routes
    monitor = one(documents(rendered / "income-monitor-podmonitor-seldon.yaml"), "PodMonitor")
    assert (monitor["spec"]["podMetricsEndpoints"][0]["path"], "GET") in routes
    trigger = documents(rendered / "income-monitor-triggers.yaml")[0]
    assert (trigger["spec"]["subscriber"]["uri"], "POST") in routes


def test_the_monitor_takes_every_argument_the_statefulset_gives(rendered, capsys):
    from income_bundle.monitoring.service import main

    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    usage = capsys.readouterr().out
    for platform in PLATFORMS:
        for name in arguments(container(rendered, platform)):
            assert f"--{name} " in usage, name


def test_one_non_root_replica_keeps_its_store_on_its_own_claim(rendered):
    dockerfile = (rendered / "income-monitor.Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    for platform in PLATFORMS:
        workload = one(documents(rendered / f"income-monitor-{platform}.yaml"), "StatefulSet")
        spec = workload["spec"]
        assert spec["replicas"] == 1  # SQLite has one writer
        assert spec["persistentVolumeClaimRetentionPolicy"] == {
            "whenDeleted": "Retain",
            "whenScaled": "Retain",
        }
        (claim,) = spec["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"]
        assert "storageClassName" not in claim["spec"]  # the cluster's default class
        pod = spec["template"]["spec"]
        found = container(rendered, platform)
        mounts = {m["name"]: m["mountPath"] for m in found["volumeMounts"]}
        store = Path(arguments(found)["store"])
        assert mounts[claim["metadata"]["name"]] == str(store.parent)
        assert (
            str(pod["securityContext"]["runAsUser"]),
            str(pod["securityContext"]["runAsGroup"]),
        ) == user
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert found["securityContext"]["readOnlyRootFilesystem"] is True
        assert found["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert found["resources"]["requests"]["cpu"] and found["resources"]["limits"]["memory"]
        assert pod["automountServiceAccountToken"] is False
        assert (
            found["image"] == "income-monitor:rendered"
            and found["imagePullPolicy"] == "IfNotPresent"
        )


def _templar(platform: str, **extra):
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    def trusted(value):
        if isinstance(value, str):
            return trust_as_template(value)
        if isinstance(value, dict):
            return {k: trusted(v) for k, v in value.items()}
        if isinstance(value, list):
            return [trusted(v) for v in value]
        return value

    variables = {"playbook_dir": str(ROOT / "ansible" / "playbooks")}
    variables |= defaults("income_monitor") | role_vars() | {"income_monitor_platform": platform}
    variables |= extra
    templar = Templar(loader=DataLoader(), variables=trusted(variables))
    return lambda value: templar.template(trusted(value))


def test_the_role_waits_for_the_objects_it_applies(rendered):
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.waiter import (
        RESOURCE_PREDICATES,
    )

    tasks = role_tasks(ROLES, "income_monitor")
    (statefulset_wait,) = [
        t["kubernetes.core.k8s_info"]
        for t in tasks
        if t.get("kubernetes.core.k8s_info", {}).get("kind") == "StatefulSet"
    ]
    # No wait_condition (StatefulSets have none): kubernetes.core's StatefulSet readiness.
    assert statefulset_wait["wait"] is True and "wait_condition" not in statefulset_wait
    assert "StatefulSet" in RESOURCE_PREDICATES
    (trigger_task,) = [
        t for t in tasks if t.get("kubernetes.core.k8s_info", {}).get("kind") == "Trigger"
    ]
    assert trigger_task["kubernetes.core.k8s_info"]["wait_condition"]["type"] == "Ready"
    for platform in PLATFORMS:
        render = _templar(platform)
        workload = one(documents(rendered / f"income-monitor-{platform}.yaml"), "StatefulSet")
        assert (render(statefulset_wait["name"]), render(statefulset_wait["namespace"])) == (
            workload["metadata"]["name"],
            workload["metadata"]["namespace"],
        )
    wait = trigger_task["kubernetes.core.k8s_info"]
    waited = [
        _templar("kserve", item=item)(wait["name"])
        for item in _templar("kserve")(trigger_task["loop"])
    ]
    assert sorted(waited) == sorted(
        t["metadata"]["name"] for t in documents(rendered / "income-monitor-triggers.yaml")
    )
    failures = [t for t in tasks if "ansible.builtin.fail" in t]
    assert any("{{ income_monitor_name }}" in f["ansible.builtin.fail"]["msg"] for f in failures)


# --- The image -------------------------------------------------------------------------------------


def constraints() -> dict[str, str]:
    return {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in re.findall(
            r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M
        )
    }


def test_image_pins_are_constraints_versions_on_a_base_pinned_by_digest(rendered):
    dockerfile = (rendered / "income-monitor.Dockerfile").read_text()
    pins = dict(re.findall(r"\s([a-z0-9][a-z0-9.-]*)==(\S+)", dockerfile))
    locked = constraints()
    assert pins and {name: locked.get(name) for name in pins} == pins
    assert sorted(f"{n}=={v}" for n, v in pins.items()) == sorted(
        defaults("income_monitor")["income_monitor_pins"]
    )
    (base,) = re.findall(r"^FROM (\S+)$", dockerfile, re.M)
    assert re.fullmatch(r"docker\.io/library/python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base)
    assert "--no-deps" in dockerfile and "pip check" in dockerfile
    assert 'ENTRYPOINT ["python", "-m", "income_bundle.monitoring.service"]' in dockerfile
    (exposed,) = re.findall(r"^EXPOSE (\d+)$", dockerfile, re.M)
    assert exposed == arguments(container(rendered, "seldon"))["port"]


def test_the_monitor_runs_with_only_the_images_distributions(tmp_path):
    # The classifier folder's contract (service.classifier_info): settings with class names,
    # metadata with the held-out positive rate and the input features.
    (tmp_path / "classifier").mkdir()
    shutil.copy(ROOT / "models" / "income" / "model-settings.json", tmp_path / "classifier")
    (tmp_path / "classifier" / "metadata.json").write_text(
        json.dumps(
            {
                "metrics": {"heldout_positive_rate": 0.24},
                "input_features": {"names": [f"f{i}" for i in range(12)], "category_map": {}},
            }
        )
    )
    pins = defaults("income_monitor")["income_monitor_pins"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "support" / "monitor_image_env.py"), json.dumps(pins), str(tmp_path)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert "client_error" not in report, report
    assert report["answers"] == {
        "ready": 200,
        **dict.fromkeys(EVENT_TYPES, 202),
        "labelling csv": 200,
        "labelling jsonl": 200,
        "labelling parquet": 200,
        "metrics": 200,
    }
    assert report["traffic_ids"] == ["r-1"]
    assert report["kafka_without_broker"] == "aiokafka.errors.KafkaConnectionError"
    # Neither MLServer nor TensorFlow nor scikit-learn is on the monitor's import path.
    assert not {"mlserver", "tensorflow", "sklearn", "alibi_detect"} & set(report["refused"])
