"""Seldon's metric facts (tests/support/seldon_metrics.py) against the local gateway's registry and
Seldon's own PodMonitors; the worlds built from them are checked in
tests/cluster/test_metric_worlds.py."""

from __future__ import annotations

import pytest
import yaml

from income_bundle_dev.upstream_checks import SELDON_SERVER_POD_LABELS, find_upstream_dir
from tests.support.metric_probe import registry_series
from tests.support.paths import ROOT
from tests.support.seldon_metrics import (
    SELDON_AGENT_METRICS_PORT,
    SELDON_AGENT_REQUEST_SERIES,
    SELDON_AGENT_SERIES,
    SELDON_DEFAULT_BUCKETS,
    SELDON_PIPELINE_GATEWAY_METRICS_PORT,
    SELDON_PIPELINE_GATEWAY_POD_LABELS,
    SELDON_PIPELINE_GATEWAY_SERIES,
)


def test_the_gateway_exports_seldons_request_series_as_seldon_names_them():
    from income_bundle.seldon.metrics import SELDON_BUCKETS, GatewayMetrics

    ours = registry_series(GatewayMetrics().registry)
    for name, labels in {**SELDON_AGENT_REQUEST_SERIES, **SELDON_PIPELINE_GATEWAY_SERIES}.items():
        assert ours.get(name) == labels, name
    seldon = set(SELDON_AGENT_SERIES) | set(SELDON_PIPELINE_GATEWAY_SERIES)
    assert {n for n in ours if n.startswith("seldon_") and not n.endswith("_created")} <= seldon
    assert SELDON_BUCKETS == SELDON_DEFAULT_BUCKETS


def test_seldon_facts_agree_with_seldons_own_monitors():
    """Seldon's prometheus/monitors select the agent and the pipeline gateway as the facts say."""
    upstream = find_upstream_dir(ROOT)
    if upstream is None:
        pytest.skip("../shared/upstream (Seldon's monitors) is not beside the checkout")
    monitors = upstream / "seldon-monitors"
    agent = yaml.safe_load((monitors / "agent-podmonitor.yaml").read_text())["spec"]
    assert agent["selector"]["matchLabels"] == SELDON_SERVER_POD_LABELS
    assert [e["port"] for e in agent["podMetricsEndpoints"]] == [SELDON_AGENT_METRICS_PORT]
    gateway = yaml.safe_load((monitors / "pipelinegateway-podmonitor.yaml").read_text())["spec"]
    assert gateway["selector"]["matchLabels"] == SELDON_PIPELINE_GATEWAY_POD_LABELS
    ports = [e["port"] for e in gateway["podMetricsEndpoints"]]
    assert ports == [SELDON_PIPELINE_GATEWAY_METRICS_PORT]
