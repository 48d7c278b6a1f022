"""The Grafana dashboard (the `dashboard` fixture: tests/conftest.py): every query parses as PromQL
(promtool), and the cluster's ConfigMap carries the same dashboard. That the committed JSON is the
generated one and every panel is complete is checked in process by tests/unit/test_dashboard.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from income_bundle.monitoring.dashboard import dashboard_queries
from tests.support.ansible_files import KUBERNETES_VERSION
from tests.support.manifests import documents


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed: install Debian's 'prometheus' package")
    return path


def check_rules(promtool: str, queries: list[tuple[str, str]], tmp_path: Path):
    """`promtool check rules` over the queries as recording rules: it parses every expression."""
    rules = [
        {"record": f"dashboard:query_{index}", "expr": expr, "labels": {"panel": title}}
        for index, (title, expr) in enumerate(queries)
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )


def test_every_query_parses(promtool, dashboard, tmp_path):
    result = check_rules(promtool, dashboard_queries(dashboard), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(dashboard_queries(dashboard))} rules found" in result.stdout


def test_the_parse_check_catches_a_broken_query(promtool, dashboard, tmp_path):
    queries = [*dashboard_queries(dashboard), ("Broken", "sum by (target (rate(x[1m]))")]
    result = check_rules(promtool, queries, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert output.count("could not parse expression") == 1, output
    assert f'"dashboard:query_{len(queries) - 1}": could not parse expression' in output


def test_cluster_configmap_carries_the_dashboard_for_grafanas_sidecar(rendered, dashboard):
    import kubernetes_validate

    (configmap,) = documents(rendered / "grafana-dashboard.yaml")
    kubernetes_validate.validate(configmap, KUBERNETES_VERSION, strict=True)
    (values,) = documents(rendered / "kube-prometheus-stack-values.yaml")
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    assert configmap["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
    assert configmap["metadata"]["namespace"] == "monitoring"
    (content,) = configmap["data"].values()
    assert json.loads(content) == dashboard
