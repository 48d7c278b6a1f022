"""The Grafana dashboard (the `dashboard` fixture: tests/conftest.py), in process: the committed
JSON is the generated one, it imports anywhere, every panel is complete, and its queries read every
exported metric, counters only through rate(). promtool parses the queries in
tests/integration/test_dashboard.py."""

from __future__ import annotations

import json
import re

import pytest

from income_bundle.monitoring.dashboard import (
    DASHBOARD_FILE,
    DASHBOARD_UID,
    dashboard_json,
    dashboard_queries,
    main,
)
from tests.support.paths import ROOT

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# The metrics the monitoring issue exports, each of which the dashboard must show.
EXPORTED_METRICS = [
    "seldon_pipeline_infer_total",
    "seldon_pipeline_infer_api_seconds_bucket",
    "seldon_model_infer_total",
    "seldon_model_infer_seconds_total",
    "seldon_model_infer_api_seconds_bucket",
    "income_gateway_model_ready",
    "income_gateway_async_dropped_total",
    "income_drift_runs_total",
    "income_drift_rows_total",
    "income_drift_detected_runs_total",
    "income_drift_is_drift",
    "income_drift_threshold",
    "income_drift_feature_p_value",
    "income_drift_feature_distance",
    "income_outlier_rows_total",
    "income_outlier_outliers_total",
    "income_outlier_score_bucket",
    "income_predictions_total",
    "income_feedback_rows_total",
    "income_feedback_correct_total",
    "income_feedback_labels_total",
    "income_feedback_accuracy",
    "income_target_drift_p_value",
    "income_labelling_rows_total",
]


@pytest.fixture(scope="module")
def panels(dashboard) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_committed_dashboard_is_the_generated_one():
    committed = (ROOT / DASHBOARD_FILE).read_text()
    assert committed == dashboard_json(), (
        f"{DASHBOARD_FILE} is out of date: run 'python -m income_bundle.monitoring.dashboard --write'"
    )
    assert main(["--check"]) == 0


def test_dashboard_imports_anywhere(dashboard):
    assert dashboard["uid"] == DASHBOARD_UID == "income-monitoring"
    assert dashboard["id"] is None
    variable, trace_url = dashboard["templating"]["list"]
    assert trace_url["name"] == "trace_url" and trace_url["type"] == "textbox"
    assert variable["name"] == "datasource"
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    # No datasource is named anywhere but through the variable.
    named = re.findall(r'"uid": "([^"]*)"', dashboard_json(dashboard))
    assert set(named) == {"income-monitoring", "${datasource}"}


def test_every_panel_has_a_datasource_a_title_and_a_query(panels):
    assert len(panels) >= 15
    for panel in panels:
        assert panel["title"] and panel["description"], panel["id"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip(), panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]


def test_panels_have_unique_ids_and_titles_and_do_not_overlap(dashboard, panels):
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    titles = [panel["title"] for panel in panels]
    assert len(set(titles)) == len(titles)
    cells = set()
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        assert box["x"] >= 0 and box["x"] + box["w"] <= 24, panel["title"]
        covered = {
            (box["x"] + dx, box["y"] + dy) for dx in range(box["w"]) for dy in range(box["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered


def test_dashboard_shows_every_exported_metric(dashboard):
    exprs = "\n".join(expr for _, expr in dashboard_queries(dashboard))
    missing = [m for m in EXPORTED_METRICS if not re.search(rf"\b{m}\b", exprs)]
    assert not missing


def test_the_issue_panels_are_there(panels):
    titles = {panel["title"] for panel in panels}
    for kind in ("model", "pipeline"):
        assert {f"Request rate per {kind}", f"Error rate per {kind}"} <= titles
    # Seldon's model histogram is per server; per model there is the mean.
    assert {
        "Latency p50 and p99 per pipeline",
        "Latency p50 and p99 per server",
        "Mean latency per model",
    } <= titles
    assert {
        "Drift detected (is_drift)",
        "Feature p-values (dashed: threshold)",
        "Outlier rate",
        "Predicted class mix",
        "Accuracy from feedback",
        "Target drift p-value",
        "Labelling rows by reason",
    } <= titles
    (p_values,) = [p for p in panels if p["title"].startswith("Feature p-values")]
    legends = [target["legendFormat"] for target in p_values["targets"]]
    assert legends == ["{{feature}}", "threshold"]
    (threshold_style,) = p_values["fieldConfig"]["overrides"]
    assert threshold_style["matcher"]["options"] == "threshold"


def test_counters_and_histograms_are_only_read_through_rate(dashboard):
    for title, expr in dashboard_queries(dashboard):
        for match in re.finditer(r"\b\w+_(total|bucket)\b", expr):
            assert expr[: match.start()].endswith("rate("), f"{title}: {match.group()} without rate"


def test_dashboard_queries_are_plain_promql(dashboard):
    queries = dashboard_queries(dashboard, interval="5m")
    assert len(queries) == sum(len(p["targets"]) for p in dashboard["panels"] if p["type"] != "row")
    assert all("$" not in expr for _, expr in queries)
    assert any("[5m]" in expr for _, expr in queries)


def test_dashboard_queries_refuse_a_variable_prometheus_cannot_fill(dashboard):
    broken = json.loads(dashboard_json(dashboard))
    broken["panels"][1]["targets"][0]["expr"] = 'up{job="$job"}'
    with pytest.raises(ValueError, match=r"\$job"):
        dashboard_queries(broken)


def test_latency_panels_show_exemplars_and_link_to_the_trace_backend(dashboard, panels):
    """The gateway's latency histograms carry trace ids as exemplars: the latency panels ask
    for them and link to the trace backend, whose URL is one variable the dashboard's own link
    uses too; the datasource's exemplar link opens a trace there."""
    from income_bundle.monitoring.dashboard import exemplar_trace_link

    latency = [p for p in panels if "_api_seconds_bucket" in json.dumps(p["targets"])]
    assert {p["title"] for p in latency} == {
        "Latency p50 and p99 per pipeline",
        "Latency p50 and p99 per server",
    }
    for panel in latency:
        assert all(target["exemplar"] for target in panel["targets"])
        assert [link["url"].split("/")[0] for link in panel["links"]] == ["${trace_url}"]
    (link,) = dashboard["links"]
    assert link["url"] == "${trace_url}"
    (destination,) = exemplar_trace_link("http://jaeger:16686/")["exemplarTraceIdDestinations"]
    assert destination == {"name": "trace_id", "url": "http://jaeger:16686/trace/${__value.raw}"}
