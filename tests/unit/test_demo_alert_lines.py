"""How `make demo MONITOR=1` prints Alertmanager's alerts: every alert with its labels and its
own annotations, the annotations its rule's alerts share once, and the rule's `worlds`. The demo
against a real Prometheus and Alertmanager: tests/integration/test_demo_alerts.py."""

from __future__ import annotations

from income_bundle.demo import _held, format_alerts

RUNBOOK = "Look before acting: `income-bundle report --since <when it started>` shows " * 2


def alert(name: str, labels: dict, summary: str, **annotations: str) -> dict:
    """An alert as Alertmanager's API v2 lists it."""
    return {
        "labels": {"alertname": name, "severity": "warning", **labels},
        "annotations": {"summary": summary, "worlds": "local, seldon, kserve", **annotations},
        "startsAt": "2026-12-07T23:15:07.123456789Z",
        "endsAt": "2026-12-07T23:19:07.123Z",
        "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
    }


ALERTS = [
    alert("IncomeOutlierRateHigh", {"model": "income-outlier"}, "27.53% of rows are outliers",
          description="flagged over 10%", runbook="Export the flagged rows"),
    alert("IncomeFeatureDrift", {"model": "income-drift", "feature": "Occupation"},
          "feature Occupation has drifted", description="Occupation is among", runbook=RUNBOOK),
    alert("IncomeFeatureDrift", {"model": "income-drift", "feature": "Education"},
          "feature Education has drifted", description="Education is among", runbook=RUNBOOK),
]  # fmt: skip


def test_each_alert_with_labels_and_annotations_shared_ones_once():
    lines = format_alerts(ALERTS)
    text = "\n".join(lines)
    assert lines[0] == "  IncomeFeatureDrift: 2 alerts, worlds: local, seldon, kserve"
    assert lines[1] == (
        "    {feature=Education model=income-drift severity=warning} since 2026-12-07T23:15:07Z"
    )
    assert lines[2] == "    summary:     feature Education has drifted"
    assert lines[3] == "    description: Education is among"
    assert text.count("runbook:") == 2  # once per rule, not per alert
    assert text.count("summary:") == 3 and text.count("worlds:") == 2
    assert "  IncomeOutlierRateHigh: 1 alert, worlds: local, seldon, kserve" in lines
    assert "    {model=income-outlier severity=warning} since 2026-12-07T23:15:07Z" in lines
    assert all(len(line) <= 100 for line in text.splitlines())  # long annotations wrapped


def test_held_counts_alerts_by_rule_and_state():
    assert _held([]) == "none"
    assert _held(ALERTS) == "IncomeFeatureDrift 2, IncomeOutlierRateHigh 1"
    states = lambda a: a["status"]["state"]  # noqa: E731
    assert _held(ALERTS, states) == "IncomeFeatureDrift 2 active, IncomeOutlierRateHigh 1 active"
