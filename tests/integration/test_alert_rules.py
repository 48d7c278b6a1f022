"""The alert rules: promtool checks them and runs their unit tests, and the cluster's
PrometheusRule carries exactly the same rules. That every alert is complete and its unit tests
cover it both ways is read from the files in tests/unit/test_alert_rules.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.alert_rules import ALERTS, RULE_TESTS, RULES, RULES_DIR, alert_rules
from tests.support.manifests import documents
from tests.support.paths import ROOT

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: install Debian's 'prometheus' package (apt-get install prometheus)",
)


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_unit_tests_catch_a_changed_threshold(tmp_path):
    """The unit tests bite: the outlier rule at 50% instead of 10% fails them."""
    changed = RULES.read_text().replace(") > 0.1\n", ") > 0.5\n")
    assert changed != RULES.read_text()
    (tmp_path / RULES.name).write_text(changed)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "IncomeOutlierRateHigh" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def rendered_monitoring(rendered) -> list[dict]:
    return documents(rendered / "income-monitoring.yaml")


def test_cluster_rule_is_the_rules_file(rendered_monitoring):
    _, rule = rendered_monitoring
    assert rule["kind"] == "PrometheusRule"
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    # Alert templates reach the cluster as text, not rendered by Ansible's Jinja.
    summary = alert_rules()["IncomeFeatureDrift"]["annotations"]["summary"]
    groups = rule["spec"]["groups"]
    assert summary in [r.get("annotations", {}).get("summary") for g in groups for r in g["rules"]]


# The labels Seldon's operator gives a Server's pods (SeldonIO/seldon-core v2.10.2
# operator/controllers/reconcilers/server/statefulset_reconciler.go and deployment_reconciler.go:
# templateLabels = {ServerLabelNameKey: <Server name>, KubernetesNameLabelKey: ServerLabelValue},
# with operator/pkg/constants/constants.go naming them as below).
SERVER_POD_LABELS = {"app.kubernetes.io/name": "seldon-server", "seldon-server-name": "{server}"}
# The metrics port of the mlserver container in the ServerConfig (k8s/helm-charts/
# seldon-core-v2-setup/templates/_components-statefulsets.tpl: `name: server-metrics`).
SERVER_METRICS_PORT = "server-metrics"
SELDON_MONITORS = ROOT.parent / "shared" / "upstream" / "seldon-monitors"


def test_pod_monitor_scrapes_mlserver_on_seldon_server_pods(rendered_monitoring):
    pod_monitor, _ = rendered_monitoring
    assert pod_monitor["kind"] == "PodMonitor"
    server = yaml.safe_load(
        (ROOT / "ansible" / "roles" / "seldon_core" / "defaults" / "main.yaml").read_text()
    )["seldon_core_server_name"]
    pod_labels = {key: value.format(server=server) for key, value in SERVER_POD_LABELS.items()}
    selector = pod_monitor["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= pod_labels.items(), (
        f"the PodMonitor selects {selector}; the income Server's pods carry {pod_labels}"
    )
    assert selector["seldon-server-name"] == server  # only the income Server, not every server
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == SERVER_METRICS_PORT and endpoint["path"] == "/metrics"
    # The job label Prometheus gives these targets is what IncomeMLServerDown matches.
    job = f"{pod_monitor['metadata']['namespace']}/{pod_monitor['metadata']['name']}"
    assert job == "seldon-mesh/income-mlserver"


def test_pod_monitor_selects_what_seldons_own_server_monitor_selects(rendered_monitoring):
    reference = SELDON_MONITORS / "server-podmonitor.yaml"
    if not reference.is_file():
        pytest.skip(
            f"{reference} is missing: Seldon's monitors sit in ../shared/upstream beside the checkout"
        )
    seldon = yaml.safe_load(reference.read_text())
    pod_monitor, _ = rendered_monitoring
    ours = pod_monitor["spec"]["selector"]["matchLabels"]
    assert seldon["spec"]["selector"]["matchLabels"].items() <= ours.items()
    assert seldon["spec"]["selector"]["matchLabels"].items() <= SERVER_POD_LABELS.items()
    ports = {e["port"] for e in seldon["spec"]["podMetricsEndpoints"]}
    assert ports == {SERVER_METRICS_PORT}


@needs_promtool
def test_cluster_rule_spec_passes_promtool(rendered_monitoring, tmp_path):
    _, rule = rendered_monitoring
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    result = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
