"""Every selector the bundle writes matches what the selected workload really carries, by the
upstream facts in income_bundle_dev.upstream_checks (operator label constants, Knative's port name,
KServe's logger attributes, Strimzi's bootstrap Service)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from income_bundle_dev.upstream_checks import kserve_selector_problems, seldon_selector_problems
from tests.support.paths import ROOT

ROLES = ROOT / "ansible" / "roles"


def _kserve_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "kserve"
    shutil.copytree(ROOT / "kserve", copy)
    return copy


def _edit(path: Path, edit) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        edit(doc)
    path.write_text(yaml.safe_dump_all(docs))


def test_kserve_selectors_match_the_selected_workloads():
    assert kserve_selector_problems(ROOT / "kserve") == []


def test_a_pod_monitor_on_the_manifests_port_name_is_caught(tmp_path):
    kserve = _kserve_copy(tmp_path)

    def http1(doc):
        doc["spec"]["podMetricsEndpoints"][0]["port"] = "http1"

    _edit(kserve / "podmonitor.yaml", http1)
    (problem,) = kserve_selector_problems(kserve)
    assert "scrapes port 'http1'; Knative names the user container's port 'user-port'" in problem


def test_pod_monitor_of_a_missing_service_and_a_trigger_on_a_missing_attribute_are_caught(tmp_path):
    kserve = _kserve_copy(tmp_path)

    def other_service(doc):
        doc["spec"]["selector"]["matchExpressions"][0]["values"].append("income-explain")

    def other_attribute(doc):
        if doc["metadata"]["name"] == "income-drift":
            doc["spec"]["filter"]["attributes"]["modelname"] = "income"
        if doc["metadata"]["name"] == "income-outlier-results":
            doc["spec"]["filter"]["attributes"]["type"] = "io.income-bundle.outliers"

    _edit(kserve / "podmonitor.yaml", other_service)
    _edit(kserve / "triggers.yaml", other_attribute)
    problems = "\n".join(kserve_selector_problems(kserve))
    assert "selects Knative Service income-explain, which kserve/ lacks" in problems
    assert (
        "Trigger income-drift filters on 'modelname', which KServe's logger never sets" in problems
    )
    assert "Trigger income-outlier-results filters on type 'io.income-bundle.outliers'" in problems


def test_event_display_service_selects_its_deployment(tmp_path):
    kserve = _kserve_copy(tmp_path)

    def relabel(doc):
        if doc["kind"] == "Service" and doc["apiVersion"] == "v1":
            doc["spec"]["selector"] = {"app": "event-displays"}

    _edit(kserve / "event-display.yaml", relabel)
    assert kserve_selector_problems(kserve) == [
        "Service event-display selects no pod of a Deployment in kserve/"
    ]


def test_kserve_readme_states_every_attribute_the_logger_sends():
    from income_bundle_dev.upstream_checks import KSERVE_LOGGER_ATTRIBUTES

    rows = dict(
        re.findall(
            r"^\| `ce-([a-z]+)` \| (.+) \|$", (ROOT / "kserve" / "README.md").read_text(), re.M
        )
    )
    assert set(KSERVE_LOGGER_ATTRIBUTES) <= set(rows)
    assert "occurrence" in rows["time"] and "sent" not in rows["time"]
    assert "sent" in rows["recordedtime"]


def test_seldon_selectors_match_the_operators_pods_and_strimzis_service(rendered):
    assert seldon_selector_problems(rendered, ROLES) == []


def test_a_pod_monitor_on_a_label_seldon_never_sets_and_a_wrong_kafka_address_are_caught(
    rendered, tmp_path
):
    copy = tmp_path / "rendered"
    shutil.copytree(rendered, copy)

    def old_label(doc):
        if doc["kind"] == "PodMonitor":
            doc["spec"]["selector"] = {"matchLabels": {"app": "seldon-server"}}

    _edit(copy / "income-monitoring.yaml", old_label)
    roles = tmp_path / "roles"
    shutil.copytree(ROLES, roles)
    defaults = roles / "seldon_core" / "defaults" / "main.yaml"
    defaults.write_text(
        defaults.read_text().replace("seldon-kafka-bootstrap.seldon-mesh:9092", "seldon-kafka:9092")
    )
    problems = seldon_selector_problems(copy, roles)
    assert len(problems) == 2
    assert "which the pods of Server mlserver-income do not carry" in problems[0]
    assert "seldon-kafka-bootstrap.seldon-mesh:9092" in problems[1]


def test_a_kafka_broker_advertising_a_port_kind_does_not_map_is_caught(rendered, tmp_path):
    copy = tmp_path / "rendered"
    shutil.copytree(rendered, copy)

    def advertise_elsewhere(doc):
        if doc["kind"] == "Kafka":
            external = doc["spec"]["kafka"]["listeners"][1]["configuration"]
            external["brokers"][0]["advertisedPort"] = 19093
            external["bootstrap"]["nodePort"] = 31092

    _edit(copy / "kafka.yaml", advertise_elsewhere)
    problems = seldon_selector_problems(copy, ROLES)
    assert len(problems) == 2
    assert "bootstrap NodePort 31092 is not published by the kind node" in problems[0]
    assert "advertises port 19093, but kind maps its NodePort 30093 to 9093" in problems[1]
