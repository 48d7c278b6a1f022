"""The income-production pipeline through real Seldon Core v2, through the local gateway, and its
critical path done by the client against MLServer directly, in the same run.

Real Seldon here is `income_bundle_dev.seldon_mesh.SeldonMesh`: the Envoy stand-in, Seldon's
pipelinegateway, Kafka, Seldon's dataflow engine, Seldon's modelgateway, Seldon's agent and an
MLServer with one worker, all on this machine. The local gateway runs with one MLServer worker
too. Each call takes turns window by window with the others (`gateway.run_levels`: windows of
2 s until three agree within 10% on throughput), at each concurrency level; reported are p50,
p90, p99, throughput, errors and the ratios of real Seldon to the local gateway and to each
MLServer's critical path (`income` beside `income-preprocess` -> `income-outlier`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from income_bundle.settings_cli import CommandSettings, parse_settings
from income_bundle_dev.benchmarks.gateway import (
    Call,
    _find,
    _mlserver_url,
    _post,
    _request,
    run_levels,
)

__all__ = ["RealSeldonBenchmarkSettings", "format_results", "main", "measure"]

PIPELINE = "income-production"
REAL = f"{PIPELINE}.pipeline (real Seldon)"
LOCAL = f"{PIPELINE}.pipeline (local gateway)"
CRITICAL_REAL = "critical path (direct, real Seldon's MLServer)"
CRITICAL_LOCAL = "critical path (direct, local gateway's MLServer)"


def _critical_path(mlserver_url: str, names: dict[str, str], raw: bytes) -> Call:
    async def call(session: aiohttp.ClientSession) -> None:
        async def chain() -> None:
            url = f"{mlserver_url}/v2/models/{names['income-preprocess']}/infer"
            out = await _post(session, url, raw, {})
            body = orjson.dumps({"inputs": [{**out["outputs"][0], "name": "transform"}]})
            await _post(
                session, f"{mlserver_url}/v2/models/{names['income-outlier']}/infer", body, {}
            )

        await asyncio.gather(
            _post(session, f"{mlserver_url}/v2/models/{names['income']}/infer", raw, {}), chain()
        )

    return call


async def _names(mlserver_url: str) -> dict[str, str]:
    """The models' names on an MLServer: Seldon's agent loads them as <name>_<version>."""
    names = {}
    async with aiohttp.ClientSession() as session:
        for model in ("income", "income-preprocess", "income-outlier"):
            for candidate in (model, f"{model}_1"):
                async with session.get(f"{mlserver_url}/v2/models/{candidate}/ready") as r:
                    if r.status == 200:
                        names[model] = candidate
                        break
            else:
                raise RuntimeError(f"{mlserver_url} serves no {model}")
    return names


async def measure_async(
    mesh_url: str, local_url: str, real_mlserver: str, local_mlserver: str, levels: list[int]
) -> dict:
    from income_bundle.scenarios import load_scenario

    raw = _request(load_scenario("reference").X[:20])
    header = {"seldon-model": f"{PIPELINE}.pipeline"}
    calls: dict[str, Call] = {
        REAL: lambda s: _post(s, f"{mesh_url}/v2/models/{PIPELINE}/infer", raw, header),
        LOCAL: lambda s: _post(s, f"{local_url}/v2/models/{PIPELINE}/infer", raw, header),
        CRITICAL_REAL: _critical_path(real_mlserver, await _names(real_mlserver), raw),
        CRITICAL_LOCAL: _critical_path(local_mlserver, await _names(local_mlserver), raw),
    }
    results = []
    for concurrency in levels:
        for level in await run_levels(calls, concurrency):
            results.append(level.summary())
    ratios = {}
    for c in levels:
        real, local = _find(results, REAL, c), _find(results, LOCAL, c)
        ratios[f"real_over_local_p50_c{c}"] = real["p50_ms"] / local["p50_ms"]
        ratios[f"real_over_critical_path_p50_c{c}"] = (
            real["p50_ms"] / _find(results, CRITICAL_REAL, c)["p50_ms"]
        )
        ratios[f"local_over_critical_path_p50_c{c}"] = (
            local["p50_ms"] / _find(results, CRITICAL_LOCAL, c)["p50_ms"]
        )
        ratios[f"real_over_local_throughput_c{c}"] = (
            real["throughput_rps"] / local["throughput_rps"]
        )
    ratios["errors"] = sum(r["errors"] for r in results)
    return {"levels": results, "ratios": ratios}


def measure(levels: list[int]) -> dict:
    """Start real Seldon (every example loaded) and the local gateway, run the sweep, stop."""
    from income_bundle.seldon.local import LocalSeldon, ServeSettings
    from income_bundle.training import train
    from income_bundle_dev.seldon_mesh import SeldonMesh

    train()
    started = time.monotonic()
    with (
        SeldonMesh() as mesh,
        tempfile.TemporaryDirectory(prefix="income-benchmark-") as state,
        # One MLServer worker, as real Seldon's MLServer here (MLSERVER_PARALLEL_WORKERS=1).
        LocalSeldon(ServeSettings(parallel_workers=1, state_dir=Path(state))) as local,
    ):
        mesh.load_examples()
        startup_s = time.monotonic() - started
        results = asyncio.run(
            measure_async(
                f"http://{mesh.mesh_address}",
                local.http_url,
                mesh.url("mlserver-http"),
                _mlserver_url(local),
                levels,
            )
        )
    results["startup_s"] = startup_s
    return results


def format_results(results: dict) -> str:
    lines = [
        f"{'call':50s} {'c':>3s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'req/s':>7s} err",
    ]
    for r in results["levels"]:
        lines.append(
            f"{r['name']:50s} {r['concurrency']:3d} {r['p50_ms']:8.1f} {r['p90_ms']:8.1f} "
            f"{r['p99_ms']:8.1f} {r['throughput_rps']:7.1f} {r['errors']:3d}"
        )
    lines.append("")
    lines += [f"{name}: {value:.2f}" for name, value in results["ratios"].items()]
    lines.append(f"real Seldon and the local gateway up and loaded in {results['startup_s']:.0f} s")
    return "\n".join(lines)


class RealSeldonBenchmarkSettings(CommandSettings):
    """The pipeline through real Seldon Core v2, the local gateway and direct MLServer calls."""

    model_config = SettingsConfigDict(env_prefix="INCOME_BENCHMARK_SELDON_REAL_")

    levels: list[int] = Field([1, 8], description="concurrency levels (e.g. 1,8)")
    json_file: Path | None = Field(None, description="also write the results as JSON here")


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(
        RealSeldonBenchmarkSettings,
        argv,
        prog="python -m income_bundle_dev.benchmarks.seldon_real",
        description=__doc__,
    )
    results = measure(settings.levels)
    print(format_results(results))
    if settings.json_file:
        settings.json_file.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
