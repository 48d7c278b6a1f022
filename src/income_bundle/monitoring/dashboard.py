"""The income Grafana dashboard, as code.

`build_dashboard()` returns the dashboard as Grafana's JSON model; the committed file
`monitoring/grafana/income-dashboard.json` is its output (`python -m
income_bundle.monitoring.dashboard --write` regenerates it, a test keeps the two equal), and the
ecosystem role provisions it in the cluster as a ConfigMap Grafana's sidecar picks up.

Plain dicts rather than a builder library: grafana-foundation-sdk's PyPI release carries the
Grafana 10.1 schema (alpha, timestamp-epoch versions) while kube-prometheus-stack 67.8.0 ships
Grafana 11, and the dashboard needs only a small, stable part of the JSON model (time series and
stat panels, Prometheus targets, one datasource variable), which the tests check instead.

The datasource is the template variable `${datasource}` (any Prometheus), so the file imports
into any Grafana. Queries never filter on `job` or `instance`: the same panels read the local
stack (jobs income-gateway, income-mlserver, income-monitor) and the cluster's scrape targets
alike. Request panels read Seldon's own series (the pipeline gateway's and the agent's, which the
local gateway exports under the same names).

Every panel's description ends with the worlds whose components export its series ("Worlds:
local, seldon."), as the alert rules' `worlds` annotation does; `panel_worlds` reads it back and
tests/cluster/test_metric_worlds.py checks it against what each world's components export.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from income_bundle.paths import project_root
from income_bundle.settings_cli import CommandSettings, parse_settings

__all__ = [
    "DASHBOARD_FILE",
    "DASHBOARD_UID",
    "DashboardSettings",
    "build_dashboard",
    "dashboard_json",
    "dashboard_queries",
    "main",
    "panel_worlds",
]

DASHBOARD_UID = "income-monitoring"
DASHBOARD_TITLE = "Income model monitoring"
DASHBOARD_FILE = Path("monitoring") / "grafana" / "income-dashboard.json"
SCHEMA_VERSION = 39  # Grafana 10.4/11.0; newer Grafanas migrate it on load
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
FULL_WIDTH = 24
PANEL_HEIGHT = 8
STAT_HEIGHT = 5

# The trace backend's UI (a dashboard variable: Jaeger here, SigNoz on a cluster) and the service
# the gateway's spans are under (income_bundle.tracing).
TRACE_URL_VARIABLE = "trace_url"
DEFAULT_TRACE_URL = "http://127.0.0.1:16686"
TRACED_SERVICE = "income-bundle-gateway"
# Grafana's built-in interval variables, and what they stand for when a query leaves Grafana.
GRAFANA_INTERVALS = ("$__rate_interval", "$__interval", "$__range")

# Where a panel's series are exported (monitoring/prometheus/income-rules.yaml says what each is).
WORLDS = ("local", "seldon", "kserve")
ALL_WORLDS = WORLDS
LOCAL_AND_SELDON = ("local", "seldon")
LOCAL = ("local",)
_WORLDS_NOTE = re.compile(r" Worlds: ([a-z]+(?:, [a-z]+)*)\.$")
# Any answer but a success: HTTP statuses for REST, gRPC code names for gRPC (Seldon's `code`).
NOT_OK = 'code!~"2..|OK"'


def _target(expr: str, legend: str, ref_id: str) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": True,
        "refId": ref_id,
    }


def _targets(queries: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    return [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


def _with_exemplars(panel: dict[str, Any]) -> dict[str, Any]:
    """A latency panel that shows the histogram's exemplars (the gateway's trace ids) and links
    to the trace backend. A point's own trace opens through the Prometheus datasource's
    exemplar link (`exemplar_trace_link`), which Grafana keeps per datasource, not per dashboard."""
    for target in panel["targets"]:
        target["exemplar"] = True
    panel["links"] = [
        {
            "title": "Traces (trace backend)",
            "url": f"${{{TRACE_URL_VARIABLE}}}/search?service={TRACED_SERVICE}",
            "targetBlank": True,
        }
    ]
    return panel


def exemplar_trace_link(trace_url: str = DEFAULT_TRACE_URL) -> dict[str, Any]:
    """The Prometheus datasource's `jsonData` that turns an exemplar's `trace_id` into a link to
    its trace in the backend at `trace_url` (Jaeger's UI locally; SigNoz on a cluster)."""
    return {
        "exemplarTraceIdDestinations": [
            {"name": "trace_id", "url": f"{trace_url.rstrip('/')}/trace/${{__value.raw}}"}
        ]
    }


def _described(description: str, worlds: Sequence[str]) -> str:
    unknown = set(worlds) - set(WORLDS)
    if not worlds or unknown:
        raise ValueError(f"worlds must be some of {WORLDS}, got {worlds}")
    return f"{description} Worlds: {', '.join(w for w in WORLDS if w in worlds)}."


def panel_worlds(panel: dict[str, Any]) -> tuple[str, ...]:
    """The worlds a panel's description names (its last sentence, "Worlds: local, seldon.")."""
    found = _WORLDS_NOTE.search(panel.get("description", ""))
    if found is None:
        raise ValueError(f"panel {panel.get('title')!r}: its description names no worlds")
    return tuple(found.group(1).split(", "))


def _timeseries(
    title: str,
    description: str,
    queries: Sequence[tuple[str, str]],
    *,
    worlds: Sequence[str],
    unit: str,
    minimum: float | None = 0,
    maximum: float | None = None,
    stacking: str = "none",
    log_scale: bool = False,
    step: bool = False,
    bars: bool = False,
    overrides: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {
            "drawStyle": "bars" if bars else "line",
            "lineInterpolation": "stepAfter" if step else "linear",
            "lineWidth": 1,
            "fillOpacity": 80 if bars else (30 if stacking != "none" else 10),
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": stacking, "group": "A"},
            "scaleDistribution": {"type": "log", "log": 10} if log_scale else {"type": "linear"},
        },
    }
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    return {
        "type": "timeseries",
        "title": title,
        "description": _described(description, worlds),
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": _targets(queries),
    }


def _stat(
    title: str,
    description: str,
    queries: Sequence[tuple[str, str]],
    *,
    worlds: Sequence[str],
    unit: str,
    mappings: Sequence[dict[str, Any]] = (),
    red_from: float | None = None,
    red_below: float | None = None,
) -> dict[str, Any]:
    if red_below is not None:
        steps = [{"color": "red", "value": None}, {"color": "green", "value": red_below}]
    elif red_from is not None:
        steps = [{"color": "green", "value": None}, {"color": "red", "value": red_from}]
    else:
        steps = [{"color": "blue", "value": None}]
    return {
        "type": "stat",
        "title": title,
        "description": _described(description, worlds),
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "mappings": list(mappings),
                "thresholds": {"mode": "absolute", "steps": steps},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
        "targets": _targets(queries),
    }


def _value_text(value: int, text: str, color: str, index: int) -> dict[str, Any]:
    return {
        "type": "value",
        "options": {str(value): {"text": text, "color": color, "index": index}},
    }


def _dashed_red(name: str) -> dict[str, Any]:
    """An override drawing the series named `name` as a red dashed line (a threshold)."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.lineWidth", "value": 2},
        ],
    }


def _rate(metric: str, selector: str = "") -> str:
    return f"rate({metric}{{{selector}}}[{RATE}])" if selector else f"rate({metric}[{RATE}])"


def _request_rate(kind: str) -> str:
    """Requests per second per pipeline or model, from Seldon's per-resource counters."""
    return f"sum by ({kind}) ({_rate(f'seldon_{kind}_infer_total')})"


def _zero_when_absent(expr: str, all_series: str) -> str:
    """`expr`, or 0 for every series of `all_series` it lacks (no errors yet is 0%, not no data)."""
    return f"(\n  {expr}\n  or\n  {all_series} * 0\n)"


def _error_ratio(kind: str) -> str:
    errors = _rate(f"seldon_{kind}_infer_total", NOT_OK)
    requests = _request_rate(kind)
    return f"{_zero_when_absent(f'sum by ({kind}) ({errors})', requests)}\n/\n{requests}"


def _latency(metric: str, by: str, quantile: float) -> str:
    buckets = _rate(f"{metric}_bucket")
    return f"histogram_quantile({quantile}, sum by ({by}, le) ({buckets}))"


def _service_panels() -> list[dict[str, Any]]:
    """Seldon's request series: the pipeline gateway's per pipeline, the agent's per model (which
    count pipeline steps' calls too) and, for latency quantiles, per server (Seldon's model
    histogram has no model label)."""
    pipeline_latency = "seldon_pipeline_infer_api_seconds"
    model_latency = "seldon_model_infer_api_seconds"
    mean_latency = (
        f"sum by (model) ({_rate('seldon_model_infer_seconds_total')})\n/\n"
        f"sum by (model) ({_rate('seldon_model_infer_total')})"
    )
    return [
        _timeseries(
            "Request rate per pipeline",
            "Pipeline requests per second, every status code (Seldon's pipeline gateway series).",
            [(_request_rate("pipeline"), "{{pipeline}}")],
            worlds=LOCAL_AND_SELDON,
            unit="reqps",
        ),
        _with_exemplars(
            _timeseries(
                "Latency p50 and p99 per pipeline",
                "Pipeline request duration, from the pipeline gateway's latency histogram; its "
                "exemplars name traced requests.",
                [
                    (_latency(pipeline_latency, "pipeline", 0.5), "{{pipeline}} p50"),
                    (_latency(pipeline_latency, "pipeline", 0.99), "{{pipeline}} p99"),
                ],
                worlds=LOCAL_AND_SELDON,
                unit="s",
            )
        ),
        _timeseries(
            "Error rate per pipeline",
            "Share of pipeline requests answered with an error: a non-2xx HTTP status or a "
            "gRPC code other than OK.",
            [(_error_ratio("pipeline"), "{{pipeline}}")],
            worlds=LOCAL_AND_SELDON,
            unit="percentunit",
            maximum=1,
        ),
        _timeseries(
            "Request rate per model",
            "Calls per second that reached each model, direct requests and pipeline steps alike "
            "(Seldon's agent series).",
            [(_request_rate("model"), "{{model}}")],
            worlds=LOCAL_AND_SELDON,
            unit="reqps",
        ),
        _timeseries(
            "Mean latency per model",
            "Mean duration of the calls to each model over the rate interval (the agent's "
            "latency sum over its count; its histogram is per server, below).",
            [(mean_latency, "{{model}}")],
            worlds=LOCAL_AND_SELDON,
            unit="s",
        ),
        _with_exemplars(
            _timeseries(
                "Latency p50 and p99 per server",
                "Duration of every call to the models of each MLServer Server, from the agent's "
                "latency histogram (the explainer's second-long anchor searches included); its "
                "exemplars name traced requests.",
                [
                    (_latency(model_latency, "server", 0.5), "{{server}} p50"),
                    (_latency(model_latency, "server", 0.99), "{{server}} p99"),
                ],
                worlds=LOCAL_AND_SELDON,
                unit="s",
            )
        ),
        _timeseries(
            "Error rate per model",
            "Share of the calls to each model answered with an error: a non-2xx HTTP status or "
            "a gRPC code other than OK.",
            [(_error_ratio("model"), "{{model}}")],
            worlds=LOCAL_AND_SELDON,
            unit="percentunit",
            maximum=1,
        ),
        _timeseries(
            "Asynchronous steps dropped per pipeline",
            "Requests whose asynchronous steps (the drift detector) the local gateway dropped "
            "because its queue was full.",
            [
                (
                    f"sum by (pipeline) ({_rate('income_gateway_async_dropped_total')})",
                    "{{pipeline}}",
                )
            ],
            worlds=LOCAL,
            unit="reqps",
        ),
    ]


def _sections() -> list[tuple[str, list[dict[str, Any]]]]:
    """The dashboard's rows, top to bottom, each with its panels in reading order."""
    overview = [
        _stat(
            "Drift verdict (last run)",
            "is_drift of the drift detector's last batch: DRIFT when any feature's p-value fell "
            "below the threshold.",
            [("max(income_drift_is_drift)", "")],
            worlds=ALL_WORLDS,
            unit="none",
            mappings=[
                _value_text(0, "no drift", "green", 0),
                _value_text(1, "DRIFT", "red", 1),
            ],
            red_from=1,
        ),
        _stat(
            "Outlier rate (now)",
            "Share of rows the outlier detector flagged, over the rate interval.",
            [
                (
                    f"sum({_rate('income_outlier_outliers_total')})\n/\n"
                    f"sum({_rate('income_outlier_rows_total')})",
                    "",
                )
            ],
            worlds=ALL_WORLDS,
            unit="percentunit",
            red_from=0.1,
        ),
        _stat(
            "Accuracy from feedback (rolling)",
            "Rolling accuracy of the predictions whose ground-truth labels arrived, per pipeline.",
            [("max by (pipeline) (income_feedback_accuracy)", "{{pipeline}}")],
            worlds=ALL_WORLDS,
            unit="percentunit",
            red_below=0.75,
        ),
        _stat(
            "Models ready",
            "Whether MLServer reports each model ready, as the local gateway polls it.",
            [("max by (model) (income_gateway_model_ready)", "{{model}}")],
            worlds=LOCAL,
            unit="none",
            mappings=[_value_text(0, "down", "red", 0), _value_text(1, "ready", "green", 1)],
            red_below=1,
        ),
    ]
    service = _service_panels()
    drift = [
        _timeseries(
            "Drift detected (is_drift)",
            "1 when the detector's last batch drifted; and the share of runs that drifted over "
            "the rate interval.",
            [
                ("max(income_drift_is_drift)", "last run"),
                (
                    f"sum({_rate('income_drift_detected_runs_total')})\n/\n"
                    f"sum({_rate('income_drift_runs_total')})",
                    "share of runs drifted",
                ),
            ],
            worlds=ALL_WORLDS,
            unit="none",
            maximum=1,
            step=True,
        ),
        _timeseries(
            "Feature p-values (dashed: threshold)",
            "p-value of each feature's test in the last batch (K-S for numerical, chi-squared "
            "for categorical features); a feature below the dashed threshold drifted.",
            [
                ("min by (feature) (income_drift_feature_p_value)", "{{feature}}"),
                ("max(income_drift_threshold)", "threshold"),
            ],
            worlds=ALL_WORLDS,
            unit="none",
            minimum=None,
            maximum=1,
            log_scale=True,
            step=True,
            overrides=[_dashed_red("threshold")],
        ),
        _timeseries(
            "Feature test statistics",
            "Each feature's test statistic in the last batch (K-S distance or chi-squared).",
            [("max by (feature) (income_drift_feature_distance)", "{{feature}}")],
            worlds=ALL_WORLDS,
            unit="none",
            step=True,
        ),
        _timeseries(
            "Rows tested for drift",
            "Rows per second the drift detector tested, and its runs (batches) per second.",
            [
                (f"sum({_rate('income_drift_rows_total')})", "rows"),
                (f"sum({_rate('income_drift_runs_total')})", "runs"),
            ],
            worlds=ALL_WORLDS,
            unit="ops",
        ),
    ]
    score_buckets = f"sum by (le) ({_rate('income_outlier_score_bucket')})"
    outliers = [
        _timeseries(
            "Outlier rate",
            "Share of rows the outlier detector flagged.",
            [
                (
                    f"sum({_rate('income_outlier_outliers_total')})\n/\n"
                    f"sum({_rate('income_outlier_rows_total')})",
                    "outliers",
                )
            ],
            worlds=ALL_WORLDS,
            unit="percentunit",
            maximum=1,
        ),
        _timeseries(
            "Outlier score p50 and p99",
            "The outlier detector's instance score, from its histogram.",
            [
                (f"histogram_quantile(0.5, {score_buckets})", "p50"),
                (f"histogram_quantile(0.99, {score_buckets})", "p99"),
            ],
            worlds=ALL_WORLDS,
            unit="none",
            minimum=None,
        ),
        _timeseries(
            "Predicted class mix",
            "Share of each predicted class (income <=50K or >50K) among the classifier's "
            "predictions.",
            [(f"sum by (class) ({_rate('income_predictions_total')})", "{{class}}")],
            worlds=LOCAL_AND_SELDON,
            unit="reqps",
            stacking="percent",
        ),
    ]
    feedback = [
        _timeseries(
            "Accuracy from feedback",
            "Rolling accuracy per pipeline (the monitor's window), and the share of labelled "
            "predictions that were correct over the rate interval.",
            [
                ("max by (pipeline) (income_feedback_accuracy)", "{{pipeline}} rolling"),
                (
                    f"sum by (pipeline) ({_rate('income_feedback_correct_total')})\n/\n"
                    f"sum by (pipeline) ({_rate('income_feedback_rows_total')})",
                    "{{pipeline}} over the interval",
                ),
            ],
            worlds=ALL_WORLDS,
            unit="percentunit",
            maximum=1,
        ),
        _timeseries(
            "Label mix from feedback",
            "Share of each ground-truth class among the labels that arrived.",
            [(f"sum by (class) ({_rate('income_feedback_labels_total')})", "{{class}}")],
            worlds=ALL_WORLDS,
            unit="reqps",
            stacking="percent",
        ),
        _timeseries(
            "Target drift p-value",
            "p-value of the test comparing the labels' class distribution with the training "
            "labels; low means the target drifted.",
            [("min by (pipeline) (income_target_drift_p_value)", "{{pipeline}}")],
            worlds=ALL_WORLDS,
            unit="none",
            minimum=None,
            maximum=1,
            log_scale=True,
        ),
        _timeseries(
            "Labelling rows by reason",
            "Rows appended to the labelling dataset per second, by reason (outlier or drift).",
            [(f"sum by (reason) ({_rate('income_labelling_rows_total')})", "{{reason}}")],
            worlds=ALL_WORLDS,
            unit="ops",
            stacking="normal",
            bars=True,
        ),
    ]
    return [
        ("Overview", overview),
        ("Service: requests, latency, errors (Seldon's series)", service),
        ("Drift (income-drift)", drift),
        ("Outliers and predictions", outliers),
        ("Ground truth and labelling", feedback),
    ]


def _layout(sections: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Rows of full-width headers; stats four to a line, other panels two to a line."""
    panels: list[dict[str, Any]] = []
    y = 0
    for title, section in sections:
        panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": FULL_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        per_line = 4 if all(p["type"] == "stat" for p in section) else 2
        width = FULL_WIDTH // per_line
        height = STAT_HEIGHT if per_line == 4 else PANEL_HEIGHT
        for index, panel in enumerate(section):
            column = index % per_line
            if index and column == 0:
                y += height
            panel["gridPos"] = {"h": height, "w": width, "x": column * width, "y": y}
            panels.append(panel)
        y += height
    for panel_id, panel in enumerate(panels, start=1):
        panel["id"] = panel_id
    return panels


def build_dashboard() -> dict[str, Any]:
    """The income dashboard as Grafana's JSON model (datasource chosen by `${datasource}`)."""
    return {
        "id": None,
        "uid": DASHBOARD_UID,
        "title": DASHBOARD_TITLE,
        "description": (
            "Income classifier on Seldon Core v2 / KServe: requests, latency and errors "
            "(Seldon's pipeline gateway and agent series, which the local gateway exports too); "
            "drift, outliers and predictions from MLServer; accuracy and target drift from "
            "ground-truth feedback; rows sent for labelling. Each panel's description ends with "
            "the worlds that export its series: local (income-bundle serve), seldon (the Seldon "
            "cluster path), kserve (the KServe path: detectors and monitor). Generated by "
            "income_bundle.monitoring.dashboard."
        ),
        "tags": ["income", "seldon", "mlserver", "drift"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": [
            {
                "title": "Traces",
                "type": "link",
                "url": f"${{{TRACE_URL_VARIABLE}}}",
                "tooltip": "The trace backend (Jaeger locally, SigNoz on a cluster)",
                "icon": "external link",
                "targetBlank": True,
                "asDropdown": False,
                "includeVars": False,
                "keepTime": False,
                "tags": [],
            }
        ],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                    "skipUrlSync": False,
                },
                {
                    # One place to point the dashboard at the trace backend's UI.
                    "name": TRACE_URL_VARIABLE,
                    "label": "Trace backend URL",
                    "type": "textbox",
                    "query": DEFAULT_TRACE_URL,
                    "current": {"text": DEFAULT_TRACE_URL, "value": DEFAULT_TRACE_URL},
                    "options": [
                        {"selected": True, "text": DEFAULT_TRACE_URL, "value": DEFAULT_TRACE_URL}
                    ],
                    "hide": 0,
                    "skipUrlSync": False,
                },
            ]
        },
        "panels": _layout(_sections()),
    }


def dashboard_json(dashboard: dict[str, Any] | None = None) -> str:
    """The dashboard as the committed file holds it: indented JSON, ASCII, one final newline."""
    return json.dumps(dashboard if dashboard is not None else build_dashboard(), indent=2) + "\n"


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those inside collapsed rows, rows themselves excluded."""
    found = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def dashboard_queries(
    dashboard: dict[str, Any] | None = None, *, interval: str = "1m"
) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, as Prometheus would receive it.

    Grafana's interval variables ($__rate_interval, $__interval, $__range) become `interval`;
    any other `$variable` left in a query is an error, since Prometheus could not parse it.
    """
    dashboard = dashboard if dashboard is not None else build_dashboard()
    queries = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable in GRAFANA_INTERVALS:
                expr = expr.replace(variable, interval)
            if leftover := re.search(r"\$\{?\w+", expr):
                raise ValueError(
                    f"panel {panel.get('title')!r}: query uses {leftover.group()}, which only "
                    f"Grafana can fill in: {target['expr']}"
                )
            queries.append((panel["title"], expr))
    return queries


class DashboardSettings(CommandSettings):
    """Print the Grafana dashboard, or with --write regenerate its committed file, or with
    --check fail when that file is out of date."""

    model_config = SettingsConfigDict(env_prefix="INCOME_DASHBOARD_")

    write: bool = Field(False, description=f"regenerate {DASHBOARD_FILE}")
    check: bool = Field(False, description=f"exit 1 if {DASHBOARD_FILE} is out of date")

    @model_validator(mode="after")
    def _one_action(self) -> DashboardSettings:
        if self.write and self.check:
            raise ValueError("give --write or --check, not both")
        return self


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(
        DashboardSettings, argv, prog="python -m income_bundle.monitoring.dashboard"
    )
    path = project_root() / DASHBOARD_FILE
    text = dashboard_json()
    if settings.write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path} ({len(_panels(build_dashboard()))} panels)")
    elif settings.check:
        if not path.is_file() or path.read_text() != text:
            print(
                f"{path} is out of date: run 'python -m income_bundle.monitoring.dashboard "
                "--write'",
                file=sys.stderr,
            )
            return 1
        print(f"{path} is up to date")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
