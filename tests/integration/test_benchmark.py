"""The local monitor keeps up with the gateway at saturation, measured by the benchmark's code (its
measuring rules: tests/unit/test_benchmark.py; the numbers: scripts/benchmark_gateway.py)."""

from __future__ import annotations

import asyncio

import pytest

from income_bundle_dev.benchmarks import gateway as benchmark

pytestmark = pytest.mark.benchmark


@pytest.mark.slow
def test_the_monitor_keeps_up_with_the_pipeline_at_saturation(seldon):
    """The local monitor writes the hand-overs about as fast as the gateway answers, and its
    backlog empties right after the load."""
    result = asyncio.run(
        benchmark.monitor_keeps_up(seldon.http_url, seldon.monitor_url, 8, seconds=3.0)
    )
    assert result["pipeline_requests_per_s"] > 0
    # Hand-overs include the drift runs (one per 20 rows), so at least one per request.
    assert result["monitor_hand_overs_written_per_s"] >= 0.9 * result["pipeline_requests_per_s"]
    assert result["monitor_drain_s"] < 1.0


def test_tracing_off_costs_the_gateway_next_to_nothing():
    """With tracing off, the gateway's tracing hooks (decorators and checks, measured against
    the same code without them) add microseconds to a pipeline request, against the 1 ms a hop
    may cost: no provider, no spans, one check each."""
    from income_bundle import tracing
    from income_bundle_dev.benchmarks.tracing import hook_cost_ns

    assert not tracing.enabled()
    cost = hook_cost_ns(loops=5_000)
    assert cost["per_pipeline_request_ns"] < 20_000, cost
