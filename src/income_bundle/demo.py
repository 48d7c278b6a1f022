"""The three scenarios of Seldon's income notebook, run against real MLServer.

20 held-out reference rows (no drift, no outliers), 20 low-education rows (drift), 20 rows with
injected outliers (outliers flagged); then the explainer's anchor for one row.
"""

from __future__ import annotations

import json
import time

import numpy as np

from income_bundle import scenarios
from income_bundle.client import V2Client
from income_bundle.data import FEATURE_NAMES
from income_bundle.server import MLServer
from income_bundle.training import train

__all__ = ["format_table", "run_demo", "run_scenario"]

ROWS = 20


def run_scenario(client: V2Client, name: str) -> dict:
    """Classify, check for outliers and test for drift on the scenario's first 20 rows."""
    scenario = scenarios.load_scenario(name)
    X, y = scenario.X[:ROWS], scenario.y[:ROWS]
    predictions = client.infer("income", X)["predict"].ravel()
    features = client.infer("income-preprocess", X)["transform"]
    outliers = client.infer("income-outlier", features, input_name="transform", datatype="FP64")
    drift = client.infer("income-drift", X)
    p_values = drift["p_val"].ravel()
    threshold = float(drift["threshold"].ravel()[0])
    return {
        "scenario": name,
        "rows": len(X),
        "predicted_over_50k": int(predictions.sum()),
        "accuracy": float((predictions == y).mean()),
        "outliers_flagged": int(outliers["is_outlier"].sum()),
        "outliers_injected": int(scenario.is_outlier[:ROWS].sum()),
        "is_drift": int(drift["is_drift"].ravel()[0]),
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
    return {
        "anchor": data["data"]["anchor"],
        "precision": data["data"]["precision"],
        "coverage": data["data"]["coverage"],
    }


def run_demo(protocol: str = "rest") -> list[dict]:
    report = train()
    print("[demo] training:", "reused up-to-date artifacts" if report.reused else "trained")
    started = time.perf_counter()
    with MLServer() as server:
        print(
            f"[demo] MLServer ready at {server.http_url} in {time.perf_counter() - started:.1f} s"
        )
        address = server.http_url.removeprefix("http://")
        client = V2Client(address if protocol == "rest" else server.grpc_address, protocol)
        results = [run_scenario(client, name) for name in scenarios.SCENARIOS]
        print()
        print(format_table(results))
        anchor = explain_one(client)
        print()
        print(
            f"explainer, reference row 0: IF {' AND '.join(anchor['anchor'])} "
            f"(precision {anchor['precision']:.2f}, coverage {anchor['coverage']:.2f})"
        )
        client.close()
    print("[demo] MLServer stopped")
    return results
