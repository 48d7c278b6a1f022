"""`make demo`'s job, run as the Makefile runs it by default (no monitoring stack; `make demo
MONITOR=1`, Prometheus's and Alertmanager's view of the same traffic, is tests/integration/
test_demo_alerts.py, run once there because its alerts take a minute to fire)."""

from __future__ import annotations

from income_bundle.demo import run_demo


def test_demo_runs_the_three_scenarios_and_reports_what_monitoring_saw(training_report, capsys):
    results = {r["scenario"]: r for r in run_demo()}
    out = capsys.readouterr().out

    assert results["reference"]["is_drift"] == 0 and results["reference"]["outliers_flagged"] == 0
    assert results["low-education"]["is_drift"] == 1
    assert "Education" in results["low-education"]["drifting_features"]
    assert results["outliers"]["outliers_flagged"] >= 15
    assert "iris, one held-out row per class: setosa, versicolor, virginica" in out
    assert "income-explainer, reference row 0: IF " in out
    flagged = sum(r["outliers_flagged"] for r in results.values())
    assert f"labelling dataset: {20 + flagged} rows (drift 20, outlier {flagged})" in out
    assert "Prometheus" not in out  # no stack was asked for
    assert out.rstrip().endswith("[demo] gateway and MLServer stopped")
