"""`make demo MONITOR=1` as a user runs it: with the rules as deployed, Alertmanager holds the
drift and outlier alerts firing within the demo's deadline, each printed with its labels and
annotations; reference traffic then resolves the drift alert (the latest test is clean), leaves
the outlier alert firing (its 5-minute window still holds the outliers) and raises nothing new.
Skips, naming the Debian packages, without Prometheus and Alertmanager."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from income_bundle.paths import project_root
from income_bundle_dev.monitoring_stack import missing_binaries
from tests.support.framework_noise import noise_lines, run, user_environment

CLI = str(Path(sys.executable).with_name("income-bundle"))
RULES = project_root() / "monitoring" / "prometheus" / "income-rules.yaml"

pytestmark = pytest.mark.skipif(missing_binaries() is not None, reason=str(missing_binaries()))


@pytest.fixture(scope="module")
def out(training_report) -> str:
    return run([CLI, "demo", "--monitor"], user_environment(), 900)


def section(out: str, start: str, end: str) -> str:
    return out[out.index(start) : out.index(end, out.index(start))]


def test_prometheus_counts_what_the_scenarios_did(out):
    # The three scenarios' drift tests, and every row the outlier detector flagged: the same count
    # the labelling dataset holds as outlier rows.
    labelling = re.search(r"^labelling dataset: \d+ rows \(drift 20, outlier (\d+)\)", out, re.M)
    assert labelling, out
    assert "drift tests run            3" in out
    assert f"rows flagged as outliers   {labelling[1]}" in out


def test_rules_are_waited_for_as_deployed(out):
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    waits = {name: rules[name]["for"] for name in ("IncomeFeatureDrift", "IncomeOutlierRateHigh")}
    assert f"({', '.join(f'{name} for: {wait}' for name, wait in waits.items())})" in out, out
    waited = re.search(r"holds them firing after (\d+) s:", out)
    deadline = re.search(r"waiting up to (\d+) s for Alertmanager", out)
    assert waited and deadline, out
    # Not before the rules' `for:` ran out (the traffic came just before), nor after the deadline.
    longest = max(int(wait.removesuffix("s")) for wait in waits.values())
    assert longest <= int(waited[1]) <= int(deadline[1]), out


def test_both_alerts_fire_with_labels_and_annotations(out):
    alerts = section(out, "/api/v2/alerts) holds them firing", "more reference rows")
    assert "  IncomeFeatureDrift: 2 alerts, worlds: local, seldon, kserve" in alerts, alerts
    assert "  IncomeOutlierRateHigh: 1 alert, worlds: local, seldon, kserve" in alerts
    for feature in ("Education", "Occupation"):  # what rows 20-39 of low-education drift in
        assert f"{{feature={feature} model=income-drift severity=warning}} since " in alerts
        assert f"summary:     income-drift: feature {feature} has drifted (p-value " in alerts
    assert "{model=income-outlier severity=warning} since " in alerts
    assert re.search(r"summary: +income-outlier: [\d.]+% of rows are outliers", alerts)
    assert alerts.count("description:") == 3 and alerts.count("runbook:") == 2


def test_progress_lines_show_pending_then_firing(out):
    progress = re.findall(r"^\[demo\] +(\d+) s  Prometheus: (.*); Alertmanager: (.*)$", out, re.M)
    assert progress and "pending" in progress[0][1], out
    assert progress[-1][2] == "IncomeFeatureDrift 2 active, IncomeOutlierRateHigh 1 active"
    assert [int(seconds) for seconds, _, _ in progress] == sorted(int(s) for s, _, _ in progress)


def test_reference_traffic_resolves_drift_and_raises_nothing(out):
    after = section(out, "more reference rows", "[demo] gateway and MLServer stopped")
    assert re.search(r"more reference rows \(rows 20-59, 2 requests\): is_drift 0, 0,", after)
    assert re.search(r"still firing  IncomeOutlierRateHigh 1 \(\d+% of the last 5 minutes", after)
    assert "resolved      IncomeFeatureDrift 2 (the latest drift test found no drift)" in after
    assert "new           none among the data alerts" in after
    assert "Alertmanager now holds: IncomeOutlierRateHigh 1" in after


def test_monitored_demo_is_quiet_and_names_its_report(out):
    assert noise_lines(out) == []
    report = re.search(r"drift report of the low-education window .*: (\S+\.html)$", out, re.M)
    assert report and (project_root() / report[1]).is_file()
