"""The repo's Prometheus alert rules and their promtool unit tests (monitoring/prometheus)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.paths import ROOT

RULES_DIR = ROOT / "monitoring" / "prometheus"
RULES = RULES_DIR / "income-rules.yaml"
RULE_TESTS = RULES_DIR / "income-rules.test.yaml"
ALERTS = {
    "IncomeFeatureDrift", "IncomeOutlierRateHigh", "IncomeTargetDrift", "IncomeAccuracyDrop",
    "IncomeHighLatencyP99", "IncomeErrorRateHigh", "IncomeModelDown", "IncomeMLServerDown",
}  # fmt: skip


def alert_rules(path: Path = RULES) -> dict[str, dict]:
    """Alert name -> its rule, over every group of a rules file."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}
