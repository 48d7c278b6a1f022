"""The three scenarios of Seldon's income notebook, through the `income-production` pipeline.

The local Seldon gateway serves the bundle on real MLServer. 20 held-out reference rows (no
drift, no outliers), 20 low-education rows (drift), 20 rows with injected outliers (outliers
flagged); `is_drift` is read the way `seldon pipeline inspect` reads it. Then the explainer's
anchor for one row.
"""

from __future__ import annotations

import json
import time

import numpy as np

from income_bundle import scenarios
from income_bundle.client import V2Client, inspect
from income_bundle.data import FEATURE_NAMES
from income_bundle.seldon.local import LocalSeldon
from income_bundle.training import train

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


def explain_one(client: V2Client) -> dict:
    row = scenarios.load_scenario("reference").X[:1]
    explanation = client.infer("income-explainer", row)["explanation"].ravel()[0]
    data = json.loads(explanation.decode() if isinstance(explanation, bytes) else explanation)
    return {k: data["data"][k] for k in ("anchor", "precision", "coverage")}


def run_demo(protocol: str = "rest") -> list[dict]:
    report = train()
    print("[demo] training:", "reused up-to-date artifacts" if report.reused else "trained")
    started = time.perf_counter()
    with LocalSeldon() as seldon:
        print(
            f"[demo] local Seldon ready in {time.perf_counter() - started:.1f} s: "
            f"REST {seldon.http_url}, gRPC {seldon.grpc_address}"
        )
        http_address = seldon.http_url.removeprefix("http://")
        address = http_address if protocol == "rest" else seldon.grpc_address
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
    print("[demo] gateway and MLServer stopped")
    return results
