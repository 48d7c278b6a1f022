"""Run the monitor with only the distributions its image installs: run as a script by
tests/cluster/test_monitor_deploy.py, with the image's pins as JSON in argv[1] and a work folder holding
a classifier folder in argv[2]; prints a JSON report on stdout.

Importing a top-level module of any other installed distribution raises ModuleNotFoundError, as
it would in the image (optional imports, such as pyarrow's of pandas, then take their fallback).
The report says what each route answered and which distributions were imported.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

# What python:3.11-slim brings besides the standard library (its ensurepip), and the package.
BASE_IMAGE_DISTRIBUTIONS = {"pip", "setuptools", "wheel"}
PACKAGE = "income_bundle"


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class ImageOnlyFinder:
    """Refuses top-level modules whose distributions the image does not install."""

    def __init__(self, allowed: set[str]) -> None:
        self.owners = {
            module: {normalized(d) for d in dists}
            for module, dists in importlib.metadata.packages_distributions().items()
        }
        self.allowed = allowed
        self.refused: set[str] = set()

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top == PACKAGE or top not in self.owners:
            return None
        if self.owners[top] & self.allowed:
            return None
        self.refused.add(top)
        raise ModuleNotFoundError(f"No module named {name!r} (not in the monitor's image)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def events(pipeline: str) -> list[tuple[str, dict, dict]]:
    """One CloudEvent of each type the monitor accepts, for one request of one row."""
    from income_bundle.monitoring.sources.kserve import (
        DRIFT_EVENT_TYPE,
        OUTLIER_EVENT_TYPE,
        REQUEST_EVENT_TYPE,
        RESPONSE_EVENT_TYPE,
    )

    row = [39.0, 7.0, 1.0, 4.0, 1.0, 1.0, 4.0, 1.0, 2174.0, 0.0, 40.0, 9.0]
    data = {
        REQUEST_EVENT_TYPE: {
            "inputs": [{"name": "predict", "shape": [1, 12], "datatype": "FP32", "data": row}]
        },
        RESPONSE_EVENT_TYPE: {
            "outputs": [{"name": "predict", "shape": [1, 1], "datatype": "INT64", "data": [0]}]
        },
        DRIFT_EVENT_TYPE: {"requestid": "r-1", "is_drift": 1, "p_val": [0.01]},
        OUTLIER_EVENT_TYPE: {
            "requestid": "r-1",
            "is_outlier": [1],
            "instance_score": [3.5],
        },
    }
    return [
        (
            kind,
            {
                "content-type": "application/json",
                "ce-specversion": "1.0",
                "ce-id": "r-1" if "kubeflow" in kind else f"{kind}-1",
                "ce-type": kind,
                "ce-source": "monitor-image-env",
                "ce-time": "2026-01-01T00:00:00Z",
                "ce-inferenceservicename": pipeline,
            },
            body,
        )
        for kind, body in data.items()
    ]


def main() -> None:
    pins, work = json.loads(sys.argv[1]), Path(sys.argv[2])
    allowed = {normalized(pin.partition("==")[0]) for pin in pins} | BASE_IMAGE_DISTRIBUTIONS
    finder = ImageOnlyFinder(allowed)
    sys.meta_path.insert(0, finder)

    from income_bundle.monitoring.service import main as monitor

    port, pipeline, report = free_port(), "income", {"answers": {}}
    base = f"http://127.0.0.1:{port}"

    def client() -> None:
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    report["answers"]["ready"] = call(f"{base}/ready")[0]
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            for kind, headers, body in events(pipeline):
                status, text = call(f"{base}/cloudevents", json.dumps(body).encode(), headers)
                report["answers"][kind] = status if status == 202 else f"{status} {text[:200]}"
            traffic = call(f"{base}/v2/pipelines/{pipeline}/traffic")[1].decode().splitlines()
            report["traffic_ids"] = [json.loads(line)["request_id"] for line in traffic]
            for fmt in ("csv", "jsonl", "parquet"):
                url = f"{base}/v2/pipelines/{pipeline}/labelling?format={fmt}"
                report["answers"][f"labelling {fmt}"] = call(url)[0]
            report["answers"]["metrics"] = call(f"{base}/metrics")[0]
        except Exception as error:  # reported, then the monitor is stopped all the same
            report["client_error"] = repr(error)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=client, daemon=True).start()
    monitor(
        [
            f"--store={work / 'monitor.sqlite'}",
            f"--port={port}",
            f"--pipeline={pipeline}",
            f"--classifier={work / 'classifier'}",
        ]
    )

    # The Seldon source's client library loads and fails only for want of a broker.
    from income_bundle.monitoring.sources.kafka import KafkaSource
    from income_bundle.monitoring.store import SqliteStore

    async def consume() -> str:
        store = SqliteStore(work / "kafka.sqlite")
        try:
            await KafkaSource(f"127.0.0.1:{free_port()}", store).run(asyncio.Event())
        except Exception as error:
            return f"{type(error).__module__}.{type(error).__name__}"
        finally:
            store.close()
        return "no error"

    report["kafka_without_broker"] = asyncio.run(consume())
    owners = finder.owners
    report["imported"] = sorted(
        {d for m in list(sys.modules) for d in owners.get(m.partition(".")[0], ())} & allowed
    )
    report["refused"] = sorted(finder.refused)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
