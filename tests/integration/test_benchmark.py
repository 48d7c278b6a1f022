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
