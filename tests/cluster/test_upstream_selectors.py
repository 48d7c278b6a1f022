"""Every selector the bundle writes matches what the selected workload really carries, by the
upstream facts in income_bundle_dev.upstream_checks (operator label constants, Knative's port name,
KServe's logger attributes, Strimzi's bootstrap Service). kserve/'s selectors, read from its files
alone, are checked in tests/unit/test_upstream_selectors.py."""

from __future__ import annotations

import re
import shutil

from income_bundle_dev.upstream_checks import seldon_selector_problems
from tests.support.manifests import edit_documents as _edit
from tests.support.paths import ROOT

ROLES = ROOT / "ansible" / "roles"


def test_kserve_readme_states_every_attribute_the_logger_sends():
    from income_bundle_dev.upstream_checks import KSERVE_LOGGER_ATTRIBUTES

    rows = dict(
        re.findall(
            r"^\| `ce-([a-z]+)` \| (.+) \|$", (ROOT / "docs" / "kserve.md").read_text(), re.M
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
