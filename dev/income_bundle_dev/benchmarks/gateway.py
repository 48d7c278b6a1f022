"""Pipeline and gateway performance, measured against direct MLServer calls in the same run.

For each concurrency level, requests of 20 rows are sent in windows; a level is accepted when
three consecutive windows agree within 10% on throughput (perf_analyzer's stability rule).
Baselines, all on the same MLServer:
- each model called directly;
- the pipeline's critical path done by the client itself: `income` beside
  `income-preprocess` -> `income-outlier`, the least any pipeline gateway could take.
Reported: p50/p90/p99, throughput, errors, and the ratios the targets are stated in.

The latency ratios are also measured paired: the calls being compared are alternated request by
request at concurrency 1, each started on a quiet machine (the pipeline's asynchronous drift step
finished first), so that slow drift of the machine over a sweep, and the warm caches a tight loop
of one model enjoys, do not land on one side of the ratio only.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import orjson
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from income_bundle.settings_cli import CommandSettings, parse_settings

__all__ = [
    "GatewayBenchmarkSettings",
    "Level",
    "main",
    "measure",
    "measure_adaptive_batching",
    "monitor_keeps_up",
    "run_levels",
]

WINDOW_S = 2.0
MAX_WINDOWS = 10
STABLE_WITHIN = 0.10


@dataclass
class Level:
    name: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    throughputs: list[float] = field(default_factory=list)
    errors: int = 0
    stable: bool = False

    def summary(self) -> dict:
        ms = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        return {
            "name": self.name,
            "concurrency": self.concurrency,
            "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)),
            "throughput_rps": statistics.mean(self.throughputs[-3:]) if self.throughputs else 0.0,
            "requests": len(self.latencies_ms),
            "errors": self.errors,
            "stable": self.stable,
        }


Call = Callable[[aiohttp.ClientSession], Awaitable[None]]


def _request(rows: np.ndarray, name: str = "predict", datatype: str = "FP32") -> bytes:
    return orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": list(rows.shape),
                    "data": rows.ravel().tolist(),
                }
            ]
        }
    )


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict) -> dict:
    async with session.post(
        url, data=body, headers={"Content-Type": "application/json", **headers}
    ) as r:
        payload = await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {payload[:200]!r}")
        return orjson.loads(payload)


async def run_levels(calls: dict[str, Call], concurrency: int) -> list[Level]:
    """Windows of WINDOW_S seconds at a fixed concurrency, the calls taking turns window by
    window (so that all of them see the same stretch of the machine's time) until each has
    three consecutive windows that agree within 10% on throughput."""
    levels = {name: Level(name, concurrency) for name in calls}
    sessions = {
        name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2))
        for name in calls
    }
    try:
        for name, call in calls.items():
            for _ in range(3):  # warm-up
                try:
                    await call(sessions[name])
                except Exception:
                    levels[name].errors += 1
        for _ in range(MAX_WINDOWS):
            pending = [name for name in calls if not levels[name].stable]
            if not pending:
                break
            for name in pending:
                await _window(levels[name], calls[name], sessions[name])
    finally:
        for session in sessions.values():
            await session.close()
    return list(levels.values())


async def _window(level: Level, call: Call, session: aiohttp.ClientSession) -> None:
    window: list[float] = []
    deadline = time.perf_counter() + WINDOW_S

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                await call(session)
            except Exception:
                level.errors += 1
                continue
            window.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(level.concurrency)))
    level.latencies_ms.extend(window)
    level.throughputs.append(len(window) / (time.perf_counter() - started))
    last = level.throughputs[-3:]
    if len(last) == 3 and (max(last) - min(last)) <= STABLE_WITHIN * statistics.mean(last):
        level.stable = True


def _calls(
    mlserver_url: str, gateway_url: str, X: np.ndarray, features: np.ndarray
) -> dict[str, Call]:
    raw = _request(X)
    transformed = _request(features, "transform", "FP64")

    def direct(model: str, body: bytes) -> Call:
        return lambda s: _post(s, f"{mlserver_url}/v2/models/{model}/infer", body, {})

    async def critical_path(session: aiohttp.ClientSession) -> None:
        async def chain() -> None:
            out = await _post(session, f"{mlserver_url}/v2/models/income-preprocess/infer", raw, {})
            tensor = out["outputs"][0]
            body = orjson.dumps({"inputs": [{**tensor, "name": "transform"}]})
            await _post(session, f"{mlserver_url}/v2/models/income-outlier/infer", body, {})

        await asyncio.gather(
            _post(session, f"{mlserver_url}/v2/models/income/infer", raw, {}), chain()
        )

    def via_gateway(target: str) -> Call:
        return lambda s: _post(s, f"{gateway_url}/v2/models/m/infer", raw, {"seldon-model": target})

    return {
        "income (direct)": direct("income", raw),
        "income-preprocess (direct)": direct("income-preprocess", raw),
        "income-outlier (direct)": direct("income-outlier", transformed),
        "critical path (client-orchestrated, direct)": critical_path,
        "income (via gateway)": via_gateway("income"),
        "income-production.pipeline (via gateway)": via_gateway("income-production.pipeline"),
    }


async def measure_async(mlserver_url: str, gateway_url: str, levels: list[int]) -> dict:
    from income_bundle.scenarios import load_scenario

    X = load_scenario("reference").X[:20]
    async with aiohttp.ClientSession() as session:
        out = await _post(
            session, f"{mlserver_url}/v2/models/income-preprocess/infer", _request(X), {}
        )
    features = np.asarray(out["outputs"][0]["data"]).reshape(out["outputs"][0]["shape"])
    calls = _calls(mlserver_url, gateway_url, X, features)
    results = []
    for concurrency in levels:
        for level in await run_levels(calls, concurrency):
            results.append(level.summary())
            print(json.dumps(results[-1]), flush=True)
    hop = await paired_hop_overhead(mlserver_url, gateway_url, X)
    pipeline = await paired_pipeline(mlserver_url, gateway_url, X, features)
    ratios = _ratios(results)
    ratios["gateway_overhead_per_hop_p50_ms_paired"] = hop["overhead_p50_ms"]
    ratios["pipeline_p50_over_max_income_or_preprocess_plus_outlier_paired"] = pipeline["ratio"]
    direct = {r["name"]: r for r in results if r["concurrency"] == min(levels)}
    formula = max(
        direct["income (direct)"]["p50_ms"],
        direct["income-preprocess (direct)"]["p50_ms"]
        + direct["income-outlier (direct)"]["p50_ms"],
    )
    ratios["pipeline_p50_over_max_income_or_preprocess_plus_outlier_c1"] = (
        direct["income-production.pipeline (via gateway)"]["p50_ms"] / formula
    )
    return {"levels": results, "ratios": ratios, "paired_hop": hop, "paired_pipeline": pipeline}


async def paired_pipeline(
    mlserver_url: str, gateway_url: str, X: np.ndarray, features: np.ndarray, rounds: int = 400
) -> dict:
    """The pipeline against the issue's formula, max(income, income-preprocess +
    income-outlier), from direct calls alternated with pipeline calls, round by round."""
    raw = _request(X)
    calls = {
        "income": (f"{mlserver_url}/v2/models/income/infer", raw, {}),
        "income-preprocess": (f"{mlserver_url}/v2/models/income-preprocess/infer", raw, {}),
        "income-outlier": (
            f"{mlserver_url}/v2/models/income-outlier/infer",
            _request(features, "transform", "FP64"),
            {},
        ),
        "pipeline": (
            f"{gateway_url}/v2/models/m/infer",
            raw,
            {"seldon-model": "income-production.pipeline"},
        ),
    }
    idle = f"{gateway_url}/inspect/income-production.income-drift.outputs?wait=10"
    times: dict[str, list[float]] = {name: [] for name in calls}
    async with aiohttp.ClientSession() as session:
        for round_ in range(rounds + 20):  # the first 20 rounds warm up
            for name, (url, body, headers) in calls.items():
                started = time.perf_counter()
                await _post(session, url, body, headers)
                if round_ >= 20:
                    times[name].append((time.perf_counter() - started) * 1000)
            async with session.get(idle) as response:  # the drift batch ran before the next round
                await response.read()
    p50 = {name: float(np.median(values)) for name, values in times.items()}
    formula = max(p50["income"], p50["income-preprocess"] + p50["income-outlier"])
    return {
        "rounds": rounds,
        "p50_ms": p50,
        "formula_ms": formula,
        "ratio": p50["pipeline"] / formula,
    }


async def paired_hop_overhead(
    mlserver_url: str, gateway_url: str, X: np.ndarray, pairs: int = 1000
) -> dict:
    """The gateway's cost per hop: `income` direct and via the gateway, alternated, at
    concurrency 1, so that both see the same machine state; median of the paired differences."""
    raw = _request(X)
    differences, direct_ms, gateway_ms = [], [], []
    async with aiohttp.ClientSession() as session:
        direct = f"{mlserver_url}/v2/models/income/infer"
        routed = f"{gateway_url}/v2/models/m/infer"
        for _ in range(20):
            await _post(session, direct, raw, {})
            await _post(session, routed, raw, {"seldon-model": "income"})
        for _ in range(pairs):
            started = time.perf_counter()
            await _post(session, direct, raw, {})
            middle = time.perf_counter()
            await _post(session, routed, raw, {"seldon-model": "income"})
            ended = time.perf_counter()
            direct_ms.append((middle - started) * 1000)
            gateway_ms.append((ended - middle) * 1000)
            differences.append(gateway_ms[-1] - direct_ms[-1])
    return {
        "pairs": pairs,
        "direct_p50_ms": float(np.median(direct_ms)),
        "gateway_p50_ms": float(np.median(gateway_ms)),
        "overhead_p50_ms": float(np.median(differences)),
    }


# MLServer's adaptive batching: up to 8 requests (160 rows) merged, waiting at most 2 ms for them.
ADAPTIVE_BATCHING = {"max_batch_size": 8, "max_batch_time": 0.002}
BATCHED = " (adaptive batching)"


def measure_adaptive_batching(levels: list[int], parallel_workers: int = 2) -> dict:
    """The models whose outputs are row-aligned, with and without MLServer's adaptive batching,
    side by side on one MLServer (the same artifacts under two names), the calls taking turns.
    The outlier detector is left out: its outputs are [1, n], which MLServer's batching splits
    wrongly (tests/integration/test_adaptive_batching.py)."""
    from income_bundle.paths import artifact_dir
    from income_bundle.scenarios import load_scenario
    from income_bundle.seldon.local import stage_model_folder
    from income_bundle.server import MLServer

    X = load_scenario("reference").X[:20]
    names = ["income", "income-preprocess"]
    with tempfile.TemporaryDirectory(prefix="income-batching-") as tmp:
        models = {}
        for name in names:
            source = artifact_dir(name)
            models[name] = stage_model_folder(source, Path(tmp) / name, name)
            models[f"{name}-batched"] = stage_model_folder(
                source, Path(tmp) / f"{name}-batched", f"{name}-batched", ADAPTIVE_BATCHING
            )
        with MLServer(models=models, parallel_workers=parallel_workers) as server:
            return asyncio.run(_adaptive_batching_levels(server.http_url, X, names, levels))


async def _adaptive_batching_levels(
    url: str, X: np.ndarray, names: list[str], levels: list[int]
) -> dict:
    bodies = {"income": _request(X), "income-preprocess": _request(X)}
    calls: dict[str, Call] = {}
    for name in names:
        for label, model in ((name, name), (name + BATCHED, f"{name}-batched")):
            endpoint = f"{url}/v2/models/{model}/infer"
            calls[label] = lambda s, e=endpoint, b=bodies[name]: _post(s, e, b, {})
    results = []
    for concurrency in levels:
        for level in await run_levels(calls, concurrency):
            results.append(level.summary())
            print(json.dumps(results[-1]), flush=True)
    ratios = {}
    for name in names:
        for concurrency in levels:
            plain, batched = (
                _find(results, name, concurrency),
                _find(results, name + BATCHED, concurrency),
            )
            ratios[f"{name} c{concurrency} p50 batched/plain"] = batched["p50_ms"] / plain["p50_ms"]
            ratios[f"{name} c{concurrency} throughput batched/plain"] = (
                batched["throughput_rps"] / plain["throughput_rps"]
            )
    return {"settings": ADAPTIVE_BATCHING, "levels": results, "ratios": ratios}


async def _monitor_sample(session: aiohttp.ClientSession, monitor_url: str) -> tuple[float, float]:
    """(hand-overs written, hand-overs pending) from the monitor's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    async with session.get(f"{monitor_url}/metrics") as r:
        text = await r.text()
    written = pending = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "income_monitor_messages_total":
                written += sample.value
            elif sample.name == "income_monitor_pending_writes":
                pending = sample.value
    return written, pending


async def monitor_keeps_up(
    gateway_url: str, monitor_url: str, concurrency: int, seconds: float = 10.0
) -> dict:
    """The pipeline at a saturating concurrency for `seconds`, the monitor's queue sampled every
    100 ms: requests answered per second, hand-overs the monitor wrote per second, its largest
    backlog (the lag: answered but not yet in the store), and how long it took to empty after."""
    from income_bundle.scenarios import load_scenario

    body = _request(load_scenario("reference").X[:20])
    headers = {"seldon-model": "income-production.pipeline"}
    answered = 0
    backlog: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        written_before, _ = await _monitor_sample(session, monitor_url)
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal answered
            while time.perf_counter() < deadline:
                await _post(session, f"{gateway_url}/v2/models/m/infer", body, headers)
                answered += 1

        async def sampler() -> None:
            while time.perf_counter() < deadline:
                backlog.append((await _monitor_sample(session, monitor_url))[1])
                await asyncio.sleep(0.1)

        await asyncio.gather(sampler(), *(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        written_during, pending = await _monitor_sample(session, monitor_url)
        drained = time.perf_counter()
        while pending > 0:
            await asyncio.sleep(0.01)
            _, pending = await _monitor_sample(session, monitor_url)
        drain_s = time.perf_counter() - drained
    return {
        "concurrency": concurrency,
        "pipeline_requests_per_s": answered / elapsed,
        "monitor_hand_overs_written_per_s": (written_during - written_before) / elapsed,
        "monitor_backlog_max": max(backlog, default=0.0),
        "monitor_backlog_p50": float(np.percentile(backlog, 50)) if backlog else 0.0,
        "monitor_drain_s": drain_s,
    }


def _find(results: list[dict], name: str, concurrency: int) -> dict:
    return next(r for r in results if r["name"] == name and r["concurrency"] == concurrency)


def _ratios(results: list[dict]) -> dict:
    pipeline = "income-production.pipeline (via gateway)"
    critical = "critical path (client-orchestrated, direct)"
    top = max(r["concurrency"] for r in results)
    at8 = 8 if any(r["concurrency"] == 8 for r in results) else top
    c1 = min(r["concurrency"] for r in results)
    return {
        "pipeline_p50_over_critical_path_p50_c1": _find(results, pipeline, c1)["p50_ms"]
        / _find(results, critical, c1)["p50_ms"],
        "gateway_overhead_per_hop_p50_ms_c1": _find(results, "income (via gateway)", c1)["p50_ms"]
        - _find(results, "income (direct)", c1)["p50_ms"],
        f"pipeline_throughput_over_critical_path_c{at8}": _find(results, pipeline, at8)[
            "throughput_rps"
        ]
        / _find(results, critical, at8)["throughput_rps"],
        "errors": sum(r["errors"] for r in results),
    }


def measure(levels: list[int], parallel_workers: int = 2, adaptive_batching: bool = True) -> dict:
    """Start the local Seldon stack, run the sweep against it and its MLServer, stop it."""
    from income_bundle.seldon.local import LocalSeldon, ServeSettings
    from income_bundle.training import train

    train()
    # As `income-bundle serve` runs by default (the monitor on), without touching build/state.
    with (
        tempfile.TemporaryDirectory(prefix="income-benchmark-") as state,
        LocalSeldon(
            ServeSettings(parallel_workers=parallel_workers, state_dir=Path(state))
        ) as seldon,
    ):
        mlserver_url = _mlserver_url(seldon)
        results = asyncio.run(measure_async(mlserver_url, seldon.http_url, levels))
        results["monitor"] = asyncio.run(
            monitor_keeps_up(seldon.http_url, seldon.monitor_url, max(levels))
        )
    results["parallel_workers"] = parallel_workers
    if adaptive_batching:
        results["adaptive_batching"] = measure_adaptive_batching(
            sorted({min(levels), 8 if 8 in levels else max(levels)}), parallel_workers
        )
    return results


def paired_against_mlserver(seldon, pairs: int = 500, rounds: int = 200) -> dict:
    """The paired hop overhead and pipeline ratio of a running local Seldon against its own
    MLServer (what benchmarks/tracing.py compares with tracing off and on)."""
    from income_bundle.scenarios import load_scenario

    X = load_scenario("reference").X[:20]
    mlserver_url = _mlserver_url(seldon)

    async def run() -> dict:
        async with aiohttp.ClientSession() as session:
            preprocess = f"{mlserver_url}/v2/models/income-preprocess/infer"
            out = await _post(session, preprocess, _request(X), {})
        features = np.asarray(out["outputs"][0]["data"]).reshape(out["outputs"][0]["shape"])
        hop = await paired_hop_overhead(mlserver_url, seldon.http_url, X, pairs)
        pipeline = await paired_pipeline(mlserver_url, seldon.http_url, X, features, rounds)
        return {"paired_hop": hop, "paired_pipeline": pipeline}

    return asyncio.run(run())


def _mlserver_url(seldon) -> str:
    import re

    match = re.search(r"MLServer ready at (\S+)", seldon.log_tail(200))
    if not match:
        raise RuntimeError("could not find MLServer's address in the serve log")
    return match.group(1)


def format_results(results: dict) -> str:
    lines = _level_lines(results["levels"])
    lines.append("")
    paired = results.get("paired_pipeline")
    if paired:
        p50 = ", ".join(f"{name} {ms:.2f}" for name, ms in paired["p50_ms"].items())
        lines.append(f"paired p50 ms over {paired['rounds']} rounds: {p50}")
    for key, value in results["ratios"].items():
        lines.append(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    monitor = results.get("monitor")
    if monitor:
        lines += [
            "",
            f"monitor at the pipeline's saturation (concurrency {monitor['concurrency']}): "
            f"{monitor['pipeline_requests_per_s']:.1f} requests/s answered, "
            f"{monitor['monitor_hand_overs_written_per_s']:.1f} hand-overs/s written, backlog "
            f"p50 {monitor['monitor_backlog_p50']:.0f} max {monitor['monitor_backlog_max']:.0f}, "
            f"drained {monitor['monitor_drain_s']:.2f} s after the load",
        ]
    batching = results.get("adaptive_batching")
    if batching:
        lines += [
            "",
            f"MLServer adaptive batching {batching['settings']}, same MLServer, taking turns:",
        ]
        lines += _level_lines(batching["levels"])
        lines += [f"{key}: {value:.3f}" for key, value in batching["ratios"].items()]
    return "\n".join(lines)


def _level_lines(levels: list[dict]) -> list[str]:
    lines = [
        f"{'name':46s} {'conc':>4s} {'p50':>7s} {'p90':>7s} {'p99':>7s} {'rps':>7s} {'err':>4s} stable"
    ]
    for r in levels:
        lines.append(
            f"{r['name']:46s} {r['concurrency']:4d} {r['p50_ms']:7.2f} {r['p90_ms']:7.2f} "
            f"{r['p99_ms']:7.2f} {r['throughput_rps']:7.1f} {r['errors']:4d} {r['stable']}"
        )
    return lines


class GatewayBenchmarkSettings(CommandSettings):
    """Pipeline and gateway latency/throughput vs direct MLServer calls."""

    model_config = SettingsConfigDict(env_prefix="INCOME_BENCHMARK_GATEWAY_")

    levels: list[int] = Field([1, 2, 4, 8, 16], description="concurrency levels (e.g. 1,2,4)")
    parallel_workers: int = Field(2, ge=0, description="MLServer inference workers")
    adaptive_batching: bool = Field(
        True, description="compare with MLServer's adaptive batching (--no-adaptive-batching: skip)"
    )
    json_file: Path | None = Field(None, description="also write the results as JSON here")
    tracing: bool = Field(
        True,
        description="also measure tracing off and on, to Jaeger (--no-tracing: skip; "
        "benchmarks/tracing.py)",
    )


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(GatewayBenchmarkSettings, argv, prog="scripts/benchmark_gateway.py")
    results = measure(
        settings.levels,
        settings.parallel_workers,
        adaptive_batching=settings.adaptive_batching,
    )
    if settings.tracing:
        from income_bundle_dev.benchmarks import tracing

        results["tracing"] = tracing.measure_tracing(paired_against_mlserver)
    print(format_results(results))
    if "tracing" in results:
        print("\n" + tracing.format_tracing(results["tracing"]))
    if settings.json_file:
        settings.json_file.write_text(json.dumps(results, indent=2) + "\n")
    return 0
