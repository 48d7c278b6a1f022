"""The benchmark's measuring rules, on calls that only sleep (the numbers themselves come from
scripts/benchmark_gateway.py)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from income_bundle_dev.benchmarks import gateway as benchmark

pytestmark = pytest.mark.benchmark


@pytest.fixture
def short_windows(monkeypatch):
    monkeypatch.setattr(benchmark, "WINDOW_S", 0.1)


def sleeper(name: str, seconds: float, order: list[str]):
    async def call(session) -> None:
        order.append(name)
        await asyncio.sleep(seconds)

    return call


def test_calls_take_turns_window_by_window_until_each_is_stable(short_windows):
    order: list[str] = []
    calls = {"fast": sleeper("fast", 0.002, order), "slow": sleeper("slow", 0.01, order)}
    levels = asyncio.run(benchmark.run_levels(calls, concurrency=2))
    assert [level.name for level in levels] == ["fast", "slow"]
    assert all(level.stable and level.errors == 0 for level in levels)
    runs = [name for name, _ in itertools.groupby(order)]
    assert len(runs) >= 2 + 2 * 3  # warm-ups, then at least three windows each, alternating
    fast, slow = (level.summary() for level in levels)
    assert fast["throughput_rps"] > 2 * slow["throughput_rps"]
    assert fast["p50_ms"] < slow["p50_ms"]


def test_an_unsteady_call_is_reported_unstable(short_windows, monkeypatch):
    """Throughput that swings 10x from window to window never gets three agreeing windows."""
    monkeypatch.setattr(benchmark, "MAX_WINDOWS", 5)
    delays = itertools.cycle([0.001, 0.01])
    delay = [0.001]
    measure_window = benchmark._window

    async def window(level, call, session):
        delay[0] = next(delays)
        await measure_window(level, call, session)

    async def call(session) -> None:
        await asyncio.sleep(delay[0])

    monkeypatch.setattr(benchmark, "_window", window)
    [level] = asyncio.run(benchmark.run_levels({"x": call}, concurrency=1))
    assert not level.stable and len(level.throughputs) == 5


def test_failed_calls_are_counted_as_errors(short_windows):
    async def failing(session) -> None:
        await asyncio.sleep(0.001)
        raise RuntimeError("503")

    [level] = asyncio.run(benchmark.run_levels({"x": failing}, concurrency=1))
    assert level.errors > 10 and level.latencies_ms == []
