"""The three scenarios of Seldon's income notebook, through the `income-production` pipeline.

The local Seldon gateway serves the bundle on real MLServer. First Seldon's simple test, the
iris model on one held-out row per class; then 20 held-out reference rows (no
drift, no outliers), 20 low-education rows (drift), 20 rows with injected outliers (outliers
flagged); `is_drift` is read the way `seldon pipeline inspect` reads it. Then the explainer's
anchor for one row, what the monitor put in the labelling dataset, and the drift report of the
low-education window (build/demo/).

With `monitor=True`, Prometheus and Alertmanager watch it all with the rules as deployed
(monitoring/prometheus/income-rules.yaml, `for:` untouched): the demo prints what Prometheus saw,
sends 20 more low-education rows, waits (bounded) until Alertmanager holds IncomeFeatureDrift and
IncomeOutlierRateHigh firing and prints them, then sends reference rows and shows what that
traffic changed: the drift alert resolves, the outlier alert keeps firing (its 5-minute window
still holds the outliers), and no other data alert appears.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from income_bundle import artifacts, quiet, scenarios
from income_bundle.client import V2Client, inspect
from income_bundle.data import FEATURE_NAMES
from income_bundle.errors import BundleError
from income_bundle.paths import artifact_dir, project_root, scenario_dir
from income_bundle.seldon.local import LocalSeldon, ServeSettings
from income_bundle.training import IRIS_REQUEST, train

__all__ = [
    "ALERTS",
    "PIPELINE",
    "DemoError",
    "format_table",
    "run_demo",
    "run_real_seldon_demo",
    "run_scenario",
]

ROWS = 20
PIPELINE = "income-production"
DRIFT_REFERENCE = f"{PIPELINE}.income-drift.outputs"
# The alerts the monitoring part waits for: what drifted or outlying traffic must raise.
ALERTS = ("IncomeFeatureDrift", "IncomeOutlierRateHigh")
# Rule groups about the data: reference traffic must add nothing there. (The service group's
# latency and error rules are about the machine, not the data, and are only printed.)
DATA_RULE_GROUPS = ("income-data-quality", "income-ground-truth")
# Time for Prometheus to see the traffic and Alertmanager to be told, beyond the rules' `for:`.
ALERT_MARGIN_S = 60.0
REPORT_DIR = Path("build") / "demo"


class DemoError(BundleError):
    """The demo did not see what it shows (an alert that did not fire, one that should not)."""


def run_scenario(
    client: V2Client,
    http_address: str,
    name: str,
    start: int = 0,
    read_drift: Callable[[], dict] | None = None,
) -> dict:
    """Send 20 of the scenario's rows (from row `start`) through the pipeline; read the drift
    verdict after it (from the local gateway's /inspect, or `read_drift`: real Seldon's topics)."""
    scenario = scenarios.load_scenario(name)
    X, y = scenario.X[start : start + ROWS], scenario.y[start : start + ROWS]
    outputs = client.infer("income-production", X)
    predictions = outputs["predict"].ravel()
    inspected = read_drift() if read_drift else inspect(http_address, DRIFT_REFERENCE, wait_s=10)
    drift = {t["name"]: t for t in inspected["tensors"]}
    p_values = np.asarray(drift["p_val"]["data"]) if "p_val" in drift else np.ones(12)
    threshold = drift["threshold"]["data"][0] if "threshold" in drift else 0.0
    return {
        "scenario": name,
        "rows": len(X),
        "predicted_over_50k": int(predictions.sum()),
        "accuracy": float((predictions == y).mean()),
        "outliers_flagged": int(outputs["is_outlier"].sum()),
        "outliers_injected": int(scenario.is_outlier[start : start + ROWS].sum()),
        "is_drift": int(drift["is_drift"]["data"][0]) if "is_drift" in drift else -1,
        "drifting_features": [FEATURE_NAMES[i] for i in np.flatnonzero(p_values < threshold)],
    }


def format_table(results: list[dict]) -> str:
    header = (
        f"{'scenario':15s} {'rows':>4s} {'>50K':>5s} {'accuracy':>8s} "
        f"{'outliers':>9s} {'injected':>8s} {'is_drift':>8s}  drifting features"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r['scenario']:15s} {r['rows']:4d} {r['predicted_over_50k']:5d} {r['accuracy']:8.2f} "
            f"{r['outliers_flagged']:9d} {r['outliers_injected']:8d} {r['is_drift']:8d}  "
            f"{', '.join(r['drifting_features']) or '-'}"
        )
    return "\n".join(lines)


def _start_monitoring(stack, seldon):
    from income_bundle.rigs import import_rig

    rig = import_rig("monitoring_stack", "demo --monitor")
    AlertReceiver, MonitoringStack = rig.AlertReceiver, rig.MonitoringStack
    MonitoringStackError = rig.MonitoringStackError

    problem = rig.missing_binaries()
    if problem:
        raise MonitoringStackError(f"demo --monitor: {problem}")
    # Alerts are read from Alertmanager's API and printed in order; the webhook only counts.
    receiver = stack.enter_context(AlertReceiver(echo=False))
    watching = MonitoringStack.on_free_ports(seldon, receiver.url, scrape_interval="2s")
    stack.enter_context(watching)
    print(f"[demo] Prometheus {watching.prometheus_url}, Alertmanager {watching.alertmanager_url}")
    return watching, receiver


def explain_one(client: V2Client) -> dict:
    row = scenarios.load_scenario("reference").X[:1]
    explanation = client.infer("income-explainer", row)["explanation"].ravel()[0]
    data = json.loads(explanation.decode() if isinstance(explanation, bytes) else explanation)
    return {k: data["data"][k] for k in ("anchor", "precision", "coverage")}


def labelling_summary(monitor_url: str) -> str:
    """What the monitor put in the labelling dataset, read back through its API."""
    import urllib.request
    from collections import Counter

    from income_bundle.monitoring.service import wait_until_written

    wait_until_written(monitor_url)
    url = f"{monitor_url}/v2/pipelines/{PIPELINE}/labelling?format=jsonl"
    with urllib.request.urlopen(url, timeout=30) as response:
        rows = [json.loads(line) for line in response.read().splitlines()]
    reasons = Counter(row["reason"] for row in rows)
    detail = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items()))
    return f"{len(rows)} rows ({detail or 'none'}) from the monitor at {monitor_url}"


PROMETHEUS_VIEW = {
    "drift tests run": "sum(income_drift_runs_total)",
    "drift tests that drifted": "sum(income_drift_detected_runs_total)",
    "rows scored for outliers": "sum(income_outlier_rows_total)",
    "rows flagged as outliers": "sum(income_outlier_outliers_total)",
    "pipeline requests": "sum(seldon_pipeline_infer_total)",
}


def prometheus_summary(stack) -> list[str]:
    lines = []
    for label, expr in PROMETHEUS_VIEW.items():
        result = stack.query(expr)
        value = float(result[0]["value"][1]) if result else 0.0
        lines.append(f"  {label:26s} {value:g}")
    return lines


def write_window_report(monitor_url: str, since: float, until: float, name: str) -> tuple:
    """The drift report of the pipeline's traffic in [since, until), as the monitor kept it:
    (report path relative to the checkout, DriftResult)."""
    from income_bundle.monitoring.report import write_report

    query = urllib.parse.urlencode({"since": repr(since), "until": repr(until)})
    url = f"{monitor_url}/v2/pipelines/{PIPELINE}/traffic?{query}"
    with urllib.request.urlopen(url, timeout=30) as response:
        traffic = response.read()
    folder = project_root() / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}-traffic.jsonl").write_bytes(traffic)
    output = folder / f"{name}-drift-report.html"
    result = write_report(folder / f"{name}-traffic.jsonl", output, pipeline=PIPELINE)
    return output.relative_to(project_root()), result


def _labels(alert: dict[str, Any], skip: tuple[str, ...] = ("alertname",)) -> str:
    labels = alert["labels"]
    return " ".join(f"{k}={labels[k]}" for k in sorted(labels) if k not in skip)


def _held(alerts: list[dict[str, Any]], state: Callable[[dict], str] | None = None) -> str:
    """'IncomeFeatureDrift 2 pending, IncomeOutlierRateHigh 1 pending' (or 'none')."""
    counts: dict[tuple[str, str], int] = {}
    for alert in alerts:
        key = (alert["labels"]["alertname"], state(alert) if state else "")
        counts[key] = counts.get(key, 0) + 1
    return (
        ", ".join(f"{name} {n}{' ' + s if s else ''}" for (name, s), n in sorted(counts.items()))
        or "none"
    )


def _wrapped(key: str, text: str) -> str:
    return textwrap.fill(
        " ".join(text.split()),
        width=100,
        initial_indent=f"    {key + ':':13s}",
        subsequent_indent=" " * 17,
    )


ANNOTATION_ORDER = ("summary", "description", "runbook")


def _annotation_order(key: str) -> tuple[int, str]:
    return (ANNOTATION_ORDER.index(key) if key in ANNOTATION_ORDER else len(ANNOTATION_ORDER), key)


def format_alerts(alerts: list[dict[str, Any]]) -> list[str]:
    """Alertmanager's alerts by rule: each alert's labels and its own annotations, then the
    annotations all of the rule's alerts share (description, runbook, worlds...)."""
    lines = []
    for name in sorted({a["labels"]["alertname"] for a in alerts}):
        mine = sorted((a for a in alerts if a["labels"]["alertname"] == name), key=_labels)
        keys = sorted({k for a in mine for k in a["annotations"]}, key=_annotation_order)
        shared = [k for k in keys if len({a["annotations"].get(k) for a in mine}) == 1]
        worlds = mine[0]["annotations"].get("worlds", "?") if "worlds" in shared else "varies"
        count = f"{len(mine)} alert{'s' if len(mine) > 1 else ''}"
        lines.append(f"  {name}: {count}, worlds: {worlds}")
        for alert in mine:
            lines.append(f"    {{{_labels(alert)}}} since {alert['startsAt'][:19]}Z")
            lines += [
                _wrapped(k, alert["annotations"][k])
                for k in keys
                if k not in shared and k in alert["annotations"]
            ]
        lines += [_wrapped(k, mine[0]["annotations"][k]) for k in shared if k != "worlds"]
    return lines


def _rules(watching) -> dict[str, dict[str, Any]]:
    return {rule["name"]: rule for group in watching.rule_groups() for rule in group["rules"]}


def wait_for_alerts(watching, names: tuple[str, ...], timeout_s: float) -> list[dict]:
    """Poll until Alertmanager (API v2) holds every alert of `names` active, printing a progress
    line whenever what Prometheus or Alertmanager holds changes; DemoError at the deadline."""
    started = time.monotonic()
    last = None
    while True:
        held = [a for a in watching.alertmanager_alerts() if a["labels"]["alertname"] in names]
        evaluating = [
            {**alert, "labels": {**alert["labels"], "alertname": rule["name"]}}
            for rule in _rules(watching).values()
            if rule["name"] in names
            for alert in rule.get("alerts", [])
        ]
        line = (
            f"Prometheus: {_held(evaluating, lambda a: a['state'])}; "
            f"Alertmanager: {_held(held, lambda a: a['status']['state'])}"
        )
        elapsed = time.monotonic() - started
        if line != last:
            print(f"[demo] {elapsed:4.0f} s  {line}", flush=True)
            last = line
        active = {a["labels"]["alertname"] for a in held if a["status"]["state"] == "active"}
        if active >= set(names):
            return [a for a in held if a["status"]["state"] == "active"]
        if elapsed > timeout_s:
            missing = ", ".join(sorted(set(names) - active))
            raise DemoError(
                f"{missing} not firing in Alertmanager within {timeout_s:.0f} s ({line})"
            )
        time.sleep(1.0)


def _identity(alert: dict[str, Any]) -> tuple:
    return tuple(sorted(alert["labels"].items()))


def show_alerts(watching, pipeline: V2Client, http_address: str) -> dict[str, Any]:
    """The monitoring lesson: drift and outliers become alerts in Alertmanager, and reference
    traffic raises nothing new. Returns what it saw (for tests)."""
    rules = _rules(watching)
    missing = [name for name in ALERTS if name not in rules]
    if missing:
        raise DemoError(f"Prometheus has no rule {', '.join(missing)}: check the rules file")
    waits = {name: float(rules[name]["duration"]) for name in ALERTS}
    timeout_s = max(waits.values()) + ALERT_MARGIN_S
    print(f"\nAlerts, with the rules as deployed ({_shown(watching.rules_file)}):")
    # IncomeFeatureDrift reads the latest drift test's p-values; the outliers batch came last
    # and did not drift, so the drift goes on: 20 more low-education rows.
    more = run_scenario(pipeline, http_address, "low-education", start=ROWS)
    print(
        f"[demo] 20 more low-education rows (rows {ROWS}-{2 * ROWS - 1}): is_drift "
        f"{more['is_drift']}, drifting {', '.join(more['drifting_features']) or '-'}"
    )
    print(
        f"[demo] waiting up to {timeout_s:.0f} s for Alertmanager to hold {' and '.join(ALERTS)} "
        f"firing ({', '.join(f'{n} for: {w:g}s' for n, w in waits.items())}):",
        flush=True,
    )
    started = time.monotonic()
    firing = wait_for_alerts(watching, ALERTS, timeout_s)
    print(
        f"\nAlertmanager ({watching.alertmanager_url}/api/v2/alerts) holds them firing after "
        f"{time.monotonic() - started:.0f} s:"
    )
    print("\n".join(format_alerts(firing)))

    before = {_identity(a) for a in firing}
    sent = [run_scenario(pipeline, http_address, "reference", start=s) for s in (ROWS, 2 * ROWS)]
    print(
        f"\n[demo] {sum(r['rows'] for r in sent)} more reference rows (rows {ROWS}-{3 * ROWS - 1}, "
        f"{len(sent)} requests): is_drift {', '.join(str(r['is_drift']) for r in sent)}, "
        f"{sum(r['outliers_flagged'] for r in sent)} outliers flagged"
    )
    watching.wait_for_evaluation_after(time.time())
    after_rules = _rules(watching)
    data_rules = {
        rule["name"]
        for group in watching.rule_groups()
        if group["name"] in DATA_RULE_GROUPS
        for rule in group["rules"]
    }
    held_now = [
        {**alert, "labels": {**alert["labels"], "alertname": name}}
        for name, rule in after_rules.items()
        for alert in rule.get("alerts", [])
    ]
    new = [a for a in held_now if _identity(a) not in before]
    new_data = [a for a in new if a["labels"]["alertname"] in data_rules]
    still = [a for a in held_now if _identity(a) in before]
    resolved = [a for a in firing if _identity(a) not in {_identity(b) for b in held_now}]
    outlier_rate = next(
        (float(a["value"]) for a in still if a["labels"]["alertname"] == "IncomeOutlierRateHigh"),
        None,
    )
    rate = f" ({outlier_rate:.0%} of the last 5 minutes' rows)" if outlier_rate is not None else ""
    print("Prometheus, its rules evaluated on a scrape after that traffic:")
    print(f"  still firing  {_held(still)}{rate}")
    print(f"  resolved      {_held(resolved)} (the latest drift test found no drift)")
    print(f"  new           {_held(new_data)} among the data alerts")
    if len(new) > len(new_data):
        print(f"  (service alerts, about this machine: {_held(new, lambda a: a['state'])})")
    expected_resolved = {_identity(a) for a in firing if a["labels"]["alertname"] != ALERTS[1]}
    wrong = []
    if new_data:
        wrong.append(f"reference traffic raised {_held(new_data)}")
    if {_identity(a) for a in resolved} != expected_resolved:
        wrong.append(f"resolved {_held(resolved)}, expected every {ALERTS[0]} and nothing else")
    if wrong:
        raise DemoError("; ".join(wrong))
    # Prometheus tells Alertmanager at once; the API shows the outcome.
    deadline = time.monotonic() + 30.0
    while True:
        held = watching.alertmanager_alerts()
        if {_identity(a) for a in held} <= {_identity(a) for a in still}:
            break
        if time.monotonic() > deadline:
            raise DemoError(f"Alertmanager still holds {_held(held)} 30 s after they resolved")
        time.sleep(0.5)
    print(f"Alertmanager now holds: {_held(held)}")
    return {"firing": firing, "still": still, "resolved": resolved, "new": new}


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(project_root()))
    except ValueError:
        return str(path)


def classify_iris(client: V2Client) -> list[str]:
    """The iris model's classes for the request `make artifacts` wrote (one row per class)."""
    (tensor,) = json.loads((scenario_dir() / IRIS_REQUEST).read_text())["inputs"]
    rows = np.asarray(tensor["data"], dtype=float).reshape(tensor["shape"])
    classes = (artifacts.read_metadata(artifact_dir("iris")) or {})["classes"]
    return [classes[int(code)] for code in client.infer("iris", rows)["predict"].ravel()]


def run_real_seldon_demo(protocol: str = "rest") -> list[dict]:
    """The iris test and the three scenarios through Seldon Core v2's own data plane on this
    machine (`income_bundle_dev.seldon_mesh`, a development rig), drift read from its topics."""
    from income_bundle.rigs import import_rig

    rig = import_rig("seldon_mesh", "demo --seldon real")
    started = time.perf_counter()
    with rig.SeldonMesh() as mesh:
        mesh.load_examples()
        print(
            f"[demo] real Seldon Core v2 ready in {time.perf_counter() - started:.0f} s (Seldon's "
            f"code, BSL 1.1, not for production): REST {mesh.mesh_address}, gRPC "
            f"{mesh.mesh_grpc_address}, Kafka {mesh.kafka_bootstrap}"
        )
        address = mesh.mesh_address if protocol == "rest" else mesh.mesh_grpc_address
        iris = V2Client(address, protocol, headers={"seldon-model": "iris"})
        print(f"\niris, one held-out row per class: {', '.join(classify_iris(iris))}")
        iris.close()
        pipeline = V2Client(address, protocol, headers={"seldon-model": f"{PIPELINE}.pipeline"})
        read_drift = mesh.drift_reader(DRIFT_REFERENCE)
        results = [
            run_scenario(pipeline, mesh.mesh_address, name, read_drift=read_drift)
            for name in scenarios.SCENARIOS
        ]
        pipeline.close()
        print(
            f"\n{PIPELINE}.pipeline through real Seldon, {ROWS} rows per scenario ({protocol}):\n"
        )
        print(format_table(results))
        print(
            f"\n(is_drift and p-values as `seldon pipeline inspect {DRIFT_REFERENCE}` reads them)"
        )
    print("[demo] real Seldon stopped")
    return results


def flagged_trace(monitor_url: str) -> tuple[str, str] | None:
    """(request id, trace id) of the latest request the outlier detector flagged that was
    traced, from the monitor's labelling dataset; None if there is none."""
    import urllib.request

    url = f"{monitor_url}/v2/pipelines/{PIPELINE}/labelling?format=jsonl&reason=outlier"
    with urllib.request.urlopen(url, timeout=30) as response:
        rows = [json.loads(line) for line in response.read().splitlines()]
    traced = [row for row in rows if row.get("trace_id")]
    if not traced:
        return None
    latest = max(traced, key=lambda row: row["timestamp"])
    return latest["request_id"], latest["trace_id"]


def _start_jaeger(stack):
    """Jaeger v2 on loopback (a development rig, built from its Go module the first time)."""
    from income_bundle.rigs import import_rig

    rig = import_rig("jaeger", "demo --tracing")
    if not rig.binary_path().is_file():
        print("[demo] building Jaeger with Go (once: minutes)")
    jaeger = stack.enter_context(rig.Jaeger())
    print(f"[demo] Jaeger ready: {jaeger.ui_url}")
    return jaeger


def run_demo(
    protocol: str = "rest", monitor: bool = False, seldon: str = "local", tracing: bool = False
) -> list[dict]:
    import contextlib

    quiet.configure()  # before anything imports TensorFlow (LOG_LEVEL=debug: everything)
    report = train()
    print("[demo] training:", "reused up-to-date artifacts" if report.reused else "trained")
    if seldon == "real":
        if monitor:
            raise DemoError(
                "demo --monitor watches the local gateway: run it without --seldon real"
            )
        return run_real_seldon_demo(protocol)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        # A fresh state dir, so the labelling summary is this run's.
        state_dir = project_root() / "build" / "demo-state"
        shutil.rmtree(state_dir, ignore_errors=True)
        jaeger = _start_jaeger(stack) if tracing else None
        config = ServeSettings(state_dir=state_dir)
        if jaeger is not None:
            config.otlp_endpoint = jaeger.otlp_grpc_endpoint
        seldon = stack.enter_context(LocalSeldon(config))
        watching, receiver = _start_monitoring(stack, seldon) if monitor else (None, None)
        print(
            f"[demo] local Seldon ready in {time.perf_counter() - started:.1f} s: "
            f"REST {seldon.http_url}, gRPC {seldon.grpc_address}"
        )
        http_address = seldon.http_url.removeprefix("http://")
        address = http_address if protocol == "rest" else seldon.grpc_address
        iris = V2Client(address, protocol, headers={"seldon-model": "iris"})
        print(f"\niris, one held-out row per class: {', '.join(classify_iris(iris))}")
        iris.close()
        pipeline = V2Client(address, protocol, headers={"seldon-model": f"{PIPELINE}.pipeline"})
        results, windows = [], {}
        for name in scenarios.SCENARIOS:
            since = time.time()
            results.append(run_scenario(pipeline, http_address, name))
            windows[name] = (since, time.time())
            if watching is not None:  # Prometheus samples between scenarios, as with live traffic
                watching.wait_for_scrapes_after(time.time())
        print(f"\n{PIPELINE}.pipeline, {ROWS} rows per scenario ({protocol}):\n")
        print(format_table(results))
        explainer = V2Client(address, protocol, headers={"seldon-model": "income-explainer"})
        anchor = explain_one(explainer)
        print(
            f"\nincome-explainer, reference row 0: IF {' AND '.join(anchor['anchor'])} "
            f"(precision {anchor['precision']:.2f}, coverage {anchor['coverage']:.2f})"
        )
        explainer.close()
        if seldon.monitor_url is not None:
            print(f"\nlabelling dataset: {labelling_summary(seldon.monitor_url)}")
            path, drift = write_window_report(
                seldon.monitor_url, *windows["low-education"], "low-education"
            )
            drifting = f" in {', '.join(drift.drifted)}" if drift.drifted else ""
            print(
                f"drift report of the low-education window ({drift.rows} rows, "
                f"{drift.verdict}{drifting}): {path}"
            )
        if watching is not None:
            watching.wait_for_scrapes_after(time.time())
            print(f"\nPrometheus ({watching.prometheus_url}) saw:")
            print("\n".join(prometheus_summary(watching)))
            show_alerts(watching, pipeline, http_address)
            notified = {_identity(alert): alert for alert in receiver.alerts(status="firing")}
            print(f"Alertmanager's webhook was notified of: {_held(list(notified.values()))}")
        pipeline.close()
        if jaeger is not None and seldon.monitor_url is not None:
            found = flagged_trace(seldon.monitor_url)
            if found is None:
                print("\nJaeger: no traced request was flagged as an outlier")
            else:
                print(
                    f"\nthe trace of flagged request {found[0]}: {jaeger.trace_url(found[1])}\n"
                    f"(every request: {jaeger.ui_url}/search)"
                )
            if sys.stdin.isatty():
                with contextlib.suppress(KeyboardInterrupt, EOFError):
                    input("Jaeger runs until Enter or Ctrl-C ")
    print("[demo] gateway and MLServer stopped")
    return results
