"""Every selector kserve/ writes matches what the selected workload really carries, by the
upstream facts in income_bundle_dev.upstream_checks (Knative's port name, KServe's logger
attributes); the Seldon path's, rendered by Ansible: tests/cluster/test_upstream_selectors.py."""

from __future__ import annotations

import shutil
from pathlib import Path

from income_bundle_dev.upstream_checks import kserve_selector_problems
from tests.support.manifests import edit_documents as _edit
from tests.support.paths import ROOT


def _kserve_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "kserve"
    shutil.copytree(ROOT / "kserve", copy)
    return copy


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
