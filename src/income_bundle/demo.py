"""The three scenarios of Seldon's income notebook, through the `income-production` pipeline.

The local Seldon gateway serves the bundle on real MLServer. First Seldon's simple test, the
iris model on one held-out row per class; then 20 held-out reference rows (no
drift, no outliers), 20 low-education rows (drift), 20 rows with injected outliers (outliers
flagged); `is_drift` is read the way `seldon pipeline inspect` reads it. Then the explainer's
anchor for one row, and what the monitor put in the labelling dataset. With `monitor=True`,
Prometheus and Alertmanager watch it all and the demo prints what Prometheus saw.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np

from income_bundle import artifacts, scenarios
from income_bundle.client import V2Client, inspect
from income_bundle.data import FEATURE_NAMES
from income_bundle.paths import artifact_dir, project_root, scenario_dir
from income_bundle.seldon.local import LocalSeldon, ServeConfig
from income_bundle.training import IRIS_REQUEST, train

__all__ = ["PIPELINE", "format_table", "run_demo", "run_scenario"]

ROWS = 20
PIPELINE = "income-production"
DRIFT_REFERENCE = f"{PIPELINE}.income-drift.outputs"


def run_scenario(client: V2Client, http_address: str, name: str) -> dict:
    """Send the scenario's first 20 rows through the pipeline; read the drift verdict after it."""
    scenario = scenarios.load_scenario(name)
    X, y = scenario.X[:ROWS], scenario.y[:ROWS]
    outputs = client.infer("income-production", X)
    predictions = outputs["predict"].ravel()
    drift = {t["name"]: t for t in inspect(http_address, DRIFT_REFERENCE, wait_s=10)["tensors"]}
    p_values = np.asarray(drift["p_val"]["data"]) if "p_val" in drift else np.ones(12)
    threshold = drift["threshold"]["data"][0] if "threshold" in drift else 0.0
    return {
        "scenario": name,
        "rows": len(X),
        "predicted_over_50k": int(predictions.sum()),
        "accuracy": float((predictions == y).mean()),
        "outliers_flagged": int(outputs["is_outlier"].sum()),
        "outliers_injected": int(scenario.is_outlier[:ROWS].sum()),
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
    receiver = stack.enter_context(AlertReceiver(echo=True))
    watching = MonitoringStack.on_free_ports(seldon, receiver.url, scrape_interval="2s")
    stack.enter_context(watching)
    print(f"[demo] Prometheus {watching.prometheus_url}, Alertmanager {watching.alertmanager_url}")
    return watching


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
    alerts = stack.prometheus_alerts()
    held = ", ".join(f"{a['labels']['alertname']} ({a['state']})" for a in alerts) or "none"
    lines.append(f"  {'alerts':26s} {held}")
    return lines


def classify_iris(client: V2Client) -> list[str]:
    """The iris model's classes for the request `make artifacts` wrote (one row per class)."""
    (tensor,) = json.loads((scenario_dir() / IRIS_REQUEST).read_text())["inputs"]
    rows = np.asarray(tensor["data"], dtype=float).reshape(tensor["shape"])
    classes = (artifacts.read_metadata(artifact_dir("iris")) or {})["classes"]
    return [classes[int(code)] for code in client.infer("iris", rows)["predict"].ravel()]


def run_demo(protocol: str = "rest", monitor: bool = False) -> list[dict]:
    import contextlib

    report = train()
    print("[demo] training:", "reused up-to-date artifacts" if report.reused else "trained")
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        # A fresh state dir, so the labelling summary is this run's.
        state_dir = project_root() / "build" / "demo-state"
        shutil.rmtree(state_dir, ignore_errors=True)
        seldon = stack.enter_context(LocalSeldon(ServeConfig(state_dir=state_dir)))
        watching = _start_monitoring(stack, seldon) if monitor else None
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
        results = [run_scenario(pipeline, http_address, name) for name in scenarios.SCENARIOS]
        print(f"\n{PIPELINE}.pipeline, {ROWS} rows per scenario ({protocol}):\n")
        print(format_table(results))
        explainer = V2Client(address, protocol, headers={"seldon-model": "income-explainer"})
        anchor = explain_one(explainer)
        print(
            f"\nincome-explainer, reference row 0: IF {' AND '.join(anchor['anchor'])} "
            f"(precision {anchor['precision']:.2f}, coverage {anchor['coverage']:.2f})"
        )
        pipeline.close()
        explainer.close()
        if seldon.monitor_url is not None:
            print(f"\nlabelling dataset: {labelling_summary(seldon.monitor_url)}")
        if watching is not None:
            watching.wait_for_scrapes_after(time.time())
            print(f"\nPrometheus ({watching.prometheus_url}) saw:")
            print("\n".join(prometheus_summary(watching)))
    print("[demo] gateway and MLServer stopped")
    return results
