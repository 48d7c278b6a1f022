"""A real trace backend on loopback: Jaeger v2, built from its Go module, spans in memory.

`github.com/jaegertracing/jaeger` v1.75.0's `cmd/jaeger` is the v2 binary (an OpenTelemetry
Collector distribution). It is built once from `dev/jaeger/go.mod` (its `tool` line) into
`~/.cache/income-bundle/jaeger-v1.75.0/bin` (or $INCOME_BUNDLE_JAEGER_CACHE) and reused; one
compile job unless $INCOME_BUNDLE_GO_JOBS says more, as the simulated cluster's builds.

`Jaeger()` runs it with a minimal configuration written from the module's default
(`cmd/jaeger/config.yaml`): the OTLP receivers (gRPC and HTTP), the `batch` processor, the
`memory` trace store, and the query service (UI and the `/api/traces/<id>` API) on free loopback
ports; no Jaeger/Zipkin receivers, remote sampling, pprof or telemetry ports. The process runs
under `income_bundle.process`, so it dies with the process that started it.

`python -m income_bundle_dev.jaeger` (`make tracing`): build if needed, run, print where to send
spans and where to look, until Ctrl-C.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from income_bundle.errors import BundleError
from income_bundle.paths import project_root
from income_bundle.process import ServerProcess, http_ok
from income_bundle.settings_cli import CommandSettings, parse_settings
from income_bundle_dev.caches import cache_dir

__all__ = [
    "JAEGER_VERSION",
    "Jaeger",
    "JaegerError",
    "binary_path",
    "build_jaeger",
    "unavailable_reason",
]

# The approved release (v1.76.0 is served by the proxy but not approved here).
JAEGER_VERSION = "v1.75.0"
PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"
GO_MODULE_DIR = Path("dev") / "jaeger"
CACHE_ENV = "INCOME_BUNDLE_JAEGER_CACHE"
GO_JOBS_ENV = "INCOME_BUNDLE_GO_JOBS"
HOST = "127.0.0.1"


class JaegerError(BundleError):
    """Jaeger could not be built, started or queried."""


def _cache_root() -> Path:
    return cache_dir(f"jaeger-{JAEGER_VERSION}", CACHE_ENV)


def binary_path() -> Path:
    return _cache_root() / "bin" / "jaeger"


def unavailable_reason() -> str | None:
    """Why Jaeger cannot run here, or None when it can (built, or Go is there to build it)."""
    if binary_path().is_file() or shutil.which("go"):
        return None
    return (
        f"Jaeger {JAEGER_VERSION} is built from its Go module into {binary_path()}, "
        "and Go (>= 1.24, https://go.dev/dl/) is not on PATH"
    )


def build_jaeger(log: Callable[[str], None] = print) -> Path:
    """Build the binary unless it is there; return its path."""
    target = binary_path()
    if target.is_file():
        return target
    if reason := unavailable_reason():
        raise JaegerError(reason)
    target.parent.mkdir(parents=True, exist_ok=True)
    jobs = os.environ.get(GO_JOBS_ENV, "1")
    # One build at a time per cache, across processes (make tracing and pytest may race).
    with (target.parent.parent / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        partial = target.with_name(".jaeger.partial")
        env = {**os.environ, "GOFLAGS": f"-p={jobs} -trimpath -mod=readonly", "GOMAXPROCS": jobs}
        command = ["go", "build", "-ldflags", "-s -w", "-o", str(partial), PACKAGE]
        started = time.monotonic()
        log(f"building jaeger {JAEGER_VERSION} ({PACKAGE}) into {target.parent} ...")
        result = subprocess.run(
            command,
            cwd=project_root() / GO_MODULE_DIR,
            env=env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise JaegerError(f"building jaeger failed:\n{result.stderr[-4000:]}")
        partial.replace(target)
        log(f"built jaeger in {time.monotonic() - started:.0f} s")
    return target


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def config(
    otlp_grpc: int, otlp_http: int, query_http: int, query_grpc: int, health: int
) -> dict[str, Any]:
    """Jaeger v2's configuration (an OpenTelemetry Collector's): the default config.yaml of
    v1.75.0 cut down to OTLP in, memory storage and the query service, every port on loopback."""
    store = "memstore"
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            # No internal metrics endpoint (the default listens on :8888 of every interface).
            "telemetry": {
                "resource": {"service.name": "jaeger"},
                "metrics": {"level": "none"},
                "logs": {"level": "info"},
            },
        },
        "extensions": {
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"{HOST}:{health}"}},
            "jaeger_query": {
                "storage": {"traces": store},
                "http": {"endpoint": f"{HOST}:{query_http}"},
                "grpc": {"endpoint": f"{HOST}:{query_grpc}"},
            },
            "jaeger_storage": {"backends": {store: {"memory": {"max_traces": 100000}}}},
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"{HOST}:{otlp_grpc}"},
                    "http": {"endpoint": f"{HOST}:{otlp_http}"},
                }
            }
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": store}},
    }


@dataclass
class Jaeger:
    """Jaeger v2 on loopback, in memory; a context manager."""

    ready_timeout_s: float = 60.0
    otlp_grpc_port: int = 0
    otlp_http_port: int = 0
    query_port: int = 0
    _process: ServerProcess | None = field(default=None, init=False, repr=False)
    _workdir: tempfile.TemporaryDirectory | None = field(default=None, init=False, repr=False)
    _health_port: int = field(default=0, init=False, repr=False)

    @property
    def otlp_grpc_endpoint(self) -> str:
        """Where OTLP/gRPC exporters send spans (`--otlp-endpoint`)."""
        return f"http://{HOST}:{self.otlp_grpc_port}"

    @property
    def otlp_http_endpoint(self) -> str:
        return f"http://{HOST}:{self.otlp_http_port}"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.query_port}"

    def trace_url(self, trace_id: str) -> str:
        """The UI page of one trace."""
        return f"{self.ui_url}/trace/{trace_id}"

    @property
    def log_path(self) -> Path | None:
        return self._process.log_path if self._process else None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> Jaeger:
        binary = build_jaeger()
        self._workdir = tempfile.TemporaryDirectory(prefix="income-jaeger-")
        work = Path(self._workdir.name)
        self.otlp_grpc_port = self.otlp_grpc_port or _free_port()
        self.otlp_http_port = self.otlp_http_port or _free_port()
        self.query_port = self.query_port or _free_port()
        self._health_port = _free_port()
        config_path = work / "jaeger.yaml"
        config_path.write_text(
            yaml.safe_dump(
                config(
                    self.otlp_grpc_port,
                    self.otlp_http_port,
                    self.query_port,
                    _free_port(),
                    self._health_port,
                )
            )
        )
        self._process = ServerProcess(
            "jaeger", [str(binary), "--config", str(config_path)], work / "jaeger.log", cwd=work
        )
        try:
            self._process.wait_until(self._ready, self.ready_timeout_s, JaegerError)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        # The query API answers once storage is up; the health check once the receivers are.
        return http_ok(f"http://{HOST}:{self._health_port}/status") and http_ok(
            f"{self.ui_url}/api/services"
        )

    def trace(self, trace_id: str) -> list[dict[str, Any]] | None:
        """The spans of one trace from the query API (`GET /api/traces/<id>`), None while
        Jaeger does not have it. Each span as the API gives it, with `serviceName` added."""
        try:
            with urllib.request.urlopen(f"{self.ui_url}/api/traces/{trace_id}", timeout=5) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise JaegerError(f"jaeger query for trace {trace_id}: HTTP {e.code}") from e
        data = body.get("data") or []
        if not data:
            return None
        spans = []
        for item in data:
            processes = item.get("processes", {})
            for span in item.get("spans", []):
                service = processes.get(span.get("processID"), {}).get("serviceName", "")
                spans.append({**span, "serviceName": service})
        return spans

    def wait_for_trace(
        self, trace_id: str, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 30
    ) -> list[dict[str, Any]]:
        """Poll the query API until the trace's spans satisfy `done`; JaegerError on timeout
        naming what it last saw."""
        deadline = time.monotonic() + timeout_s
        spans: list[dict[str, Any]] | None = None
        while time.monotonic() < deadline:
            spans = self.trace(trace_id)
            if spans and done(spans):
                return spans
            time.sleep(0.2)
        names = sorted(f"{s['serviceName']}: {s['operationName']}" for s in spans or [])
        raise JaegerError(f"trace {trace_id} incomplete after {timeout_s:g} s; spans: {names}")

    def rss_bytes(self) -> int:
        """The resident memory of the Jaeger process (the guard's child), from /proc."""
        if self._process is None or self._process.pid is None:
            return 0
        children = Path(f"/proc/{self._process.pid}/task/{self._process.pid}/children")
        total = 0
        for pid in children.read_text().split():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def stop(self) -> None:
        if self._process:
            self._process.stop(10)
            self._process = None
        if self._workdir:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> Jaeger:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class JaegerSettings(CommandSettings):
    """Options of `python -m income_bundle_dev.jaeger` (`make tracing`)."""

    # The prefix of the binary's cache variable (INCOME_BUNDLE_JAEGER_CACHE) too.
    model_config = SettingsConfigDict(env_prefix="INCOME_BUNDLE_JAEGER_")

    build_only: bool = Field(False, description="build the binary and exit")
    otlp_grpc_port: int = Field(4317, ge=0, le=65535, description="OTLP/gRPC receiver port")
    otlp_http_port: int = Field(4318, ge=0, le=65535, description="OTLP/HTTP receiver port")
    query_port: int = Field(16686, ge=0, le=65535, description="the UI and query API port")


def main(argv: list[str] | None = None) -> int:
    """`make tracing`: build if needed, start, print where to send spans and look, until Ctrl-C."""
    settings = parse_settings(
        JaegerSettings, argv, prog="python -m income_bundle_dev.jaeger", description=__doc__
    )
    if settings.build_only:
        print(build_jaeger())
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    jaeger = Jaeger(
        otlp_grpc_port=settings.otlp_grpc_port,
        otlp_http_port=settings.otlp_http_port,
        query_port=settings.query_port,
    )
    with jaeger:
        print(
            f"Jaeger {JAEGER_VERSION} up (spans in memory)\n"
            f"  UI:        {jaeger.ui_url}\n"
            f"  OTLP gRPC: {jaeger.otlp_grpc_endpoint}   (income-bundle serve --otlp-endpoint ...)\n"
            f"  OTLP HTTP: {jaeger.otlp_http_endpoint}\n"
            "Ctrl-C stops it.",
            flush=True,
        )
        try:
            while not stop.wait(1):
                if jaeger._process is not None and jaeger._process.exited():
                    print(f"jaeger exited; log:\n{jaeger._process.log_tail()}", file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
