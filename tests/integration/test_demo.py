"""`make demo`'s job, run as the Makefile runs it (with the monitoring stack when it is there)."""

from __future__ import annotations

import pytest

from income_bundle.demo import run_demo
from income_bundle_dev.monitoring_stack import missing_binaries


def test_demo_runs_the_three_scenarios_and_reports_what_monitoring_saw(training_report, capsys):
    monitor = missing_binaries() is None
    results = {r["scenario"]: r for r in run_demo(monitor=monitor)}
    out = capsys.readouterr().out

    assert results["reference"]["is_drift"] == 0 and results["reference"]["outliers_flagged"] == 0
    assert results["low-education"]["is_drift"] == 1
    assert "Education" in results["low-education"]["drifting_features"]
    assert results["outliers"]["outliers_flagged"] >= 15
    assert "iris, one held-out row per class: setosa, versicolor, virginica" in out
    assert "income-explainer, reference row 0: IF " in out
    flagged = sum(r["outliers_flagged"] for r in results.values())
    assert f"labelling dataset: {20 + flagged} rows (drift 20, outlier {flagged})" in out
    if not monitor:
        pytest.skip(f"ran without the monitoring stack: {missing_binaries()}")
    assert "drift tests run            3" in out
    assert f"rows flagged as outliers   {flagged}" in out
    assert "[demo] gateway and MLServer stopped" in out
