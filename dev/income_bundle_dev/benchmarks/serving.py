"""Serving measurements on real MLServer: cold start and per-model latency, REST and gRPC.

The baseline, in the same run, is MLServer's stock sklearn runtime serving the same classifier
file; the ratio says what the income runtimes' verification and input checks cost per request.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from income_bundle.client import V2Client
from income_bundle.paths import ARTIFACT_FOLDERS, artifact_dir
from income_bundle.scenarios import load_scenario
from income_bundle.server import MLServer
from income_bundle.settings_cli import CommandSettings, parse_settings

__all__ = ["ServingBenchmarkSettings", "main", "measure"]

STOCK_NAME = "income-stock-runtime"


def _stock_classifier(directory: Path) -> Path:
    folder = directory / STOCK_NAME
    folder.mkdir()
    shutil.copyfile(artifact_dir("income") / "model.joblib", folder / "model.joblib")
    settings = {
        "name": STOCK_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return folder


def _latencies(client: V2Client, model: str, X: np.ndarray, requests: int, **kwargs) -> np.ndarray:
    for _ in range(5):  # warm-up
        client.infer(model, X, **kwargs)
    timings = []
    for _ in range(requests):
        start = time.perf_counter()
        client.infer(model, X, **kwargs)
        timings.append(time.perf_counter() - start)
    return np.asarray(timings) * 1000


def measure(requests: int = 200, rows: int = 20) -> dict:
    X = load_scenario("reference").X[:rows]
    with tempfile.TemporaryDirectory() as tmp:
        models = {name: artifact_dir(name) for name in ARTIFACT_FOLDERS}
        models[STOCK_NAME] = _stock_classifier(Path(tmp))
        started = time.perf_counter()
        with MLServer(models=models) as server:
            cold_start_s = time.perf_counter() - started
            clients = {
                "rest": V2Client(server.http_url.removeprefix("http://"), "rest"),
                "grpc": V2Client(server.grpc_address, "grpc"),
            }
            features = clients["grpc"].infer("income-preprocess", X)["transform"]
            calls = {
                "income": (X, {}),
                STOCK_NAME: (X, {}),
                "income-preprocess": (X, {}),
                "income-outlier": (features, {"input_name": "transform", "datatype": "FP64"}),
                "income-drift": (X, {}),
                "income-explainer": (X[:1], {}),
            }
            results: dict = {"cold_start_s": cold_start_s, "rows": rows, "latency_ms": {}}
            for protocol, client in clients.items():
                for model, (data, kwargs) in calls.items():
                    n = 10 if model == "income-explainer" else requests
                    ms = _latencies(client, model, data, n, **kwargs)
                    results["latency_ms"][f"{model} {protocol}"] = {
                        "p50": float(np.percentile(ms, 50)),
                        "p99": float(np.percentile(ms, 99)),
                        "requests": n,
                    }
                client.close()
    for protocol in ("rest", "grpc"):
        ours = results["latency_ms"][f"income {protocol}"]["p50"]
        stock = results["latency_ms"][f"{STOCK_NAME} {protocol}"]["p50"]
        results[f"income_vs_stock_runtime_p50_ratio_{protocol}"] = ours / stock
    return results


def format_results(results: dict) -> str:
    lines = [
        f"MLServer cold start to ready (5 income models + stock baseline): {results['cold_start_s']:.1f} s"
    ]
    lines.append(f"{'model':34s} {'p50 ms':>8s} {'p99 ms':>8s} {'n':>5s}")
    for key, value in results["latency_ms"].items():
        lines.append(f"{key:34s} {value['p50']:8.2f} {value['p99']:8.2f} {value['requests']:5d}")
    for protocol in ("rest", "grpc"):
        ratio = results[f"income_vs_stock_runtime_p50_ratio_{protocol}"]
        lines.append(f"income runtime / stock sklearn runtime, p50, {protocol}: {ratio:.2f}")
    return "\n".join(lines)


class ServingBenchmarkSettings(CommandSettings):
    """Cold start and per-model latency of the income models on real MLServer, REST and gRPC."""

    model_config = SettingsConfigDict(env_prefix="INCOME_BENCHMARK_SERVING_")

    requests: int = Field(200, ge=1, description="requests per model and protocol")
    json_file: Path | None = Field(None, description="also write the results as JSON here")


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(ServingBenchmarkSettings, argv, prog="scripts/measure_serving.py")
    results = measure(requests=settings.requests)
    print(format_results(results))
    if settings.json_file:
        settings.json_file.write_text(json.dumps(results, indent=2) + "\n")
    return 0
