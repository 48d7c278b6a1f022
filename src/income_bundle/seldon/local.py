"""Seldon Core v2 on one machine: validate a bundle, serve its models on MLServer, run the gateway.

`serve()` is what `income-bundle serve` runs in the foreground; `LocalSeldon` starts that command
as a separate process (as a user would) and waits until every model and pipeline is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from income_bundle import tracing
from income_bundle.errors import BundleError

if TYPE_CHECKING:
    from income_bundle.monitoring.service import Monitor
    from income_bundle.monitoring.sources.local import GatewaySource
from income_bundle.paths import project_root
from income_bundle.process import ServerProcess, http_ok, run_temp_dir
from income_bundle.seldon.bundle import Bundle, load_bundle
from income_bundle.seldon.protocol import MAX_REQUEST_VALUES
from income_bundle.server import MLServer, free_port
from income_bundle.settings_cli import CommandSettings

__all__ = [
    "InvalidBundleError",
    "LocalSeldon",
    "ServeSettings",
    "load_valid_bundle",
    "serve",
    "stage_model_folder",
    "stage_models",
]

DEFAULT_HTTP_PORT = 9000
DEFAULT_GRPC_PORT = 9001
DEFAULT_MLSERVER_METRICS_PORT = 9002  # what `make monitor`'s Prometheus scrapes
DEFAULT_MONITOR_PORT = 9010  # the monitor's API: feedback, labelling, traffic, metrics
STORE_FILE = "monitor.sqlite"


class InvalidBundleError(BundleError):
    """The manifests have problems; the message lists every one."""


def default_bundle_dir() -> Path:
    return project_root() / "seldon-examples"


def default_state_dir() -> Path:
    return project_root() / "build" / "state"


class ServeSettings(CommandSettings):
    """Settings of `income-bundle serve`: its command-line flags (`--http-port`, ...), else
    `INCOME_SERVE_<FIELD>` environment variables, else these defaults."""

    model_config = SettingsConfigDict(env_prefix="INCOME_SERVE_", validate_assignment=True)

    bundle_dir: Path = Field(
        default_factory=default_bundle_dir,
        description="the Seldon manifests (Models and Pipelines) to serve",
    )
    local_root: Path = Field(
        default_factory=project_root,
        description="what the storageUri prefix /mnt/income-bundle maps to",
    )
    host: str = Field("127.0.0.1", description="the gateway's address (REST, gRPC)")
    http_port: int = Field(DEFAULT_HTTP_PORT, ge=0, le=65535, description="REST port")
    grpc_port: int = Field(DEFAULT_GRPC_PORT, ge=0, le=65535, description="gRPC port")
    step_timeout_s: float = Field(30.0, gt=0, description="seconds a model may take")
    async_queue_size: int = Field(
        1000, ge=1, description="requests held for asynchronous steps per pipeline before dropping"
    )
    max_request_rows: int | None = Field(
        None,
        ge=1,
        description="rows an inference request may carry (per input tensor); more is refused "
        "with 413 / RESOURCE_EXHAUSTED before the data is decoded (default: sized per model and "
        f"pipeline from its declared inputs, at most {MAX_REQUEST_VALUES:,} values and what fits "
        "in 64 MiB)",
    )
    # Two workers let income and income-preprocess -> income-outlier run side by side
    # (pipeline p50 1.5x -> 1.2x the client-orchestrated critical path, measured).
    parallel_workers: int = Field(2, ge=0, description="MLServer inference workers")
    mlserver_metrics_port: int = Field(
        DEFAULT_MLSERVER_METRICS_PORT,
        ge=0,
        le=65535,
        description="MLServer's Prometheus metrics port",
    )
    monitor_port: int = Field(
        DEFAULT_MONITOR_PORT,
        ge=0,
        le=65535,
        description="the monitor's port (feedback, labelling dataset, traffic window, metrics)",
    )
    monitor_host: str = Field(
        "127.0.0.1",
        description="the monitor's address, apart from the gateway's: its CloudEvents ingress "
        "takes no credentials, so keep it on loopback",
    )
    state_dir: Path | None = Field(
        default_factory=default_state_dir,
        description="where the monitor keeps its record store (None: run without the monitor)",
    )
    state: bool = Field(True, description="run the monitor (--no-state: no monitor, no store)")
    kafka_bootstrap: str | None = Field(
        None,
        description="also write every pipeline step's data to this Kafka (host:port) on Seldon's "
        "topics, in Seldon's format",
    )
    kafka_namespace: str = Field(
        "seldon-mesh", description="the namespace in those topic names (seldon.<namespace>...)"
    )
    otlp_endpoint: str | None = Field(
        None,
        description="trace the gateway, MLServer and the monitor, exporting OTLP/gRPC spans to "
        "this collector (e.g. http://127.0.0.1:4317; else $OTEL_EXPORTER_OTLP_ENDPOINT; unset: "
        "no tracing)",
    )
    trace_sampling_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="share of new traces kept (a sampled traceparent wins)"
    )

    @field_validator("state_dir")
    @classmethod
    def _writable_directory(cls, path: Path | None) -> Path | None:
        """Checked before anything starts: MLServer takes a minute to load the models."""
        if path is None:
            return path
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is not a directory")
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise ValueError(f"{existing} is a file, so {path} cannot be created")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"{existing} is not writable by this user")
        return path

    @model_validator(mode="after")
    def _stateless(self) -> ServeSettings:
        if not self.state and self.state_dir is not None:
            self.state_dir = None
        return self


def load_valid_bundle(config: ServeSettings) -> Bundle:
    """The bundle, or InvalidBundleError listing every validation problem at once."""
    from income_bundle.crds import CrdSchemas, find_crd_dir
    from income_bundle.seldon.validation import format_problems, validate_bundle

    bundle = load_bundle(config.bundle_dir, config.local_root)
    crd_dir = find_crd_dir(project_root())
    crds = CrdSchemas.from_dir(crd_dir) if crd_dir else None
    problems = validate_bundle(bundle, crds)
    if problems:
        raise InvalidBundleError(f"{config.bundle_dir} is not valid; {format_problems(problems)}")
    return bundle


def stage_models(bundle: Bundle, local_root: Path, directory: Path) -> dict[str, Path]:
    """One folder per Model, named as its manifest (Seldon's agent renames models likewise).

    Each holds symlinks to the artifact's files and a model-settings.json carrying the Model name.
    """
    staged = {}
    for name, model in sorted(bundle.models.items()):
        source = model.local_folder(local_root)
        if source is None:
            raise InvalidBundleError(f"model {name}: storageUri {model.storage_uri} is not local")
        staged[name] = stage_model_folder(source, directory / name, name)
    return staged


def stage_model_folder(source: Path, target: Path, name: str, settings: dict | None = None) -> Path:
    """`target`: symlinks to the artifact files of `source` and its model-settings.json with
    this name (and `settings` merged in)."""
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name != "model-settings.json" and entry.name != "__pycache__":
            (target / entry.name).symlink_to(entry.resolve())
    merged = {**json.loads((source / "model-settings.json").read_text()), **(settings or {})}
    merged["name"] = name
    (target / "model-settings.json").write_text(json.dumps(merged, indent=2))
    return target


def build_monitor(config: ServeSettings, bundle: Bundle) -> tuple[Monitor, GatewaySource]:
    """The monitor over the state dir's store, and the source the gateway hands traffic to.

    It watches every pipeline with a classifier step (a model whose settings name its classes
    and whose metadata records the held-out label mix), as the cluster's monitor watches its
    pipeline's topics; step names are model names in the income pipelines.
    """
    from income_bundle.monitoring.records import PipelineTaps
    from income_bundle.monitoring.service import Monitor, classifier_info
    from income_bundle.monitoring.sources.local import GatewaySource
    from income_bundle.monitoring.store import SqliteStore

    watched, taps = {}, []
    for name, pipeline in sorted(bundle.pipelines.items()):
        for step in pipeline.steps:
            model = bundle.models.get(step.name)
            folder = model.local_folder(config.local_root) if model else None
            try:
                info = classifier_info(folder) if folder else None
            except ValueError:  # not a binary classifier with a recorded label mix
                continue
            if info is not None:
                watched[name] = info
                taps.append(PipelineTaps(pipeline=name, classifier_model=step.name))
                break
    assert config.state_dir is not None
    store = SqliteStore(config.state_dir / STORE_FILE)
    monitor = Monitor(store, watched)
    source = GatewaySource(store, taps, registry=monitor.registry, messages=monitor.messages)
    monitor.settle = source.flush
    return monitor, source


async def _run_gateway(
    config: ServeSettings,
    bundle: Bundle,
    mlserver: MLServer,
    listening: socket.socket,
    monitor_listening: socket.socket | None,
    stop: asyncio.Event,
) -> None:
    from income_bundle.runtime.contract import ModelContract
    from income_bundle.seldon.forwarding import MLServerForwarder
    from income_bundle.seldon.gateway import Gateway
    from income_bundle.seldon.grpc_front import build_grpc_server
    from income_bundle.seldon.rest import RestServer

    contracts = {
        name: ModelContract.from_folder(name, model.local_folder(config.local_root))
        for name, model in bundle.models.items()
    }
    forwarder = MLServerForwarder(mlserver.http_url, timeout_s=config.step_timeout_s)
    gateway = Gateway(
        bundle,
        forwarder,
        contracts,
        step_timeout_s=config.step_timeout_s,
        async_queue_size=config.async_queue_size,
        max_request_rows=config.max_request_rows,
    )
    publisher = None
    if config.kafka_bootstrap:
        from income_bundle.seldon.kafka_publisher import SeldonTopicPublisher

        publisher = SeldonTopicPublisher(
            config.kafka_bootstrap,
            config.kafka_namespace,
            registry=gateway.metrics.registry,
            pipelines=bundle.pipelines,
        )
        await publisher.start()
        gateway.observe(publisher)
    monitor = source = monitor_api = None
    if monitor_listening is not None:
        from income_bundle.monitoring.service import TOKEN_FILE, feedback_token

        monitor, source = build_monitor(config, bundle)
        gateway.observe(source)
        token_path = config.state_dir / TOKEN_FILE
        monitor_api = _start_monitor_api(monitor, feedback_token(token_path), monitor_listening)
    await gateway.start()
    rest = RestServer(gateway, listening)
    await rest.start()
    grpc_server = build_grpc_server(gateway, f"{config.host}:{config.grpc_port}")
    await grpc_server.start()
    http_port = listening.getsockname()[1]
    print(
        f"gateway ready: REST http://{config.host}:{http_port}, gRPC {config.host}:{config.grpc_port}; "
        f"serving {', '.join(gateway.targets())}",
        flush=True,
    )
    if monitor_listening is not None:
        print(
            f"monitor ready: http://{config.monitor_host}:{monitor_listening.getsockname()[1]} "
            f"(store {config.state_dir / STORE_FILE}; feedback needs the bearer token in "
            f"{token_path})",
            flush=True,
        )
    try:
        await stop.wait()
    finally:
        await grpc_server.stop(grace=2)
        await rest.stop()
        await gateway.close()
        if publisher is not None:
            await publisher.close()
        if source is not None:
            # What the gateway handed over is written before the store closes.
            await asyncio.to_thread(source.close)
        if monitor_api is not None:
            server, task = monitor_api
            server.should_exit = True
            await task
            monitor.store.close()


def _start_monitor_api(
    monitor: Monitor, token: str, listening: socket.socket, read_timeout_s: float | None = None
) -> tuple[Any, asyncio.Task]:
    """The monitor's HTTP API (income_bundle.monitoring.service) in this process: the uvicorn
    server and the task serving it. A body must arrive within `read_timeout_s` (default: the
    monitor's), and a request may stall a second longer before the connection is cut."""
    import uvicorn

    from income_bundle.http_server import stall_bounded_protocol
    from income_bundle.monitoring.service import BODY_READ_TIMEOUT_S, build_app

    read_timeout_s = BODY_READ_TIMEOUT_S if read_timeout_s is None else read_timeout_s
    config = uvicorn.Config(
        build_app(monitor, token, read_timeout_s=read_timeout_s),
        log_level="warning",
        lifespan="off",
        # A request that stalls is cut off (the app's own 408 covers a body, a second earlier).
        http=stall_bounded_protocol(read_timeout_s + 1.0),
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    return server, asyncio.get_running_loop().create_task(server.serve(sockets=[listening]))


def serve(config: ServeSettings) -> None:
    """Validate, start MLServer and the gateway, and run until SIGINT or SIGTERM."""
    from income_bundle.seldon.rest import bind_socket, check_port_free

    try:
        bundle = load_valid_bundle(config)
    except InvalidBundleError as e:
        raise InvalidBundleError(f"nothing was started: {e}") from e
    if config.otlp_endpoint is None and os.environ.get(tracing.ENDPOINT_ENV):
        config.otlp_endpoint = os.environ[tracing.ENDPOINT_ENV]
    # Ports first: MLServer takes a minute to load the models, a taken port a moment to find.
    listening = bind_socket(config.host, config.http_port, "--http-port")
    monitor_listening = None
    try:
        check_port_free(config.host, config.grpc_port, "--grpc-port")
        check_port_free(config.host, config.mlserver_metrics_port, "--mlserver-metrics-port")
        if config.state_dir is not None:
            monitor_listening = bind_socket(
                config.monitor_host, config.monitor_port, "--monitor-port"
            )
        # SIGTERM while MLServer starts must still stop it (the default handler would not).
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            _serve_with_mlserver(config, bundle, listening, monitor_listening)
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        listening.close()
        if monitor_listening is not None:
            monitor_listening.close()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _serve_with_mlserver(
    config: ServeSettings,
    bundle: Bundle,
    listening: socket.socket,
    monitor_listening: socket.socket | None,
) -> None:
    with run_temp_dir("income-seldon-") as tmp:
        staged = stage_models(bundle, config.local_root, Path(tmp))
        print(f"starting MLServer with {', '.join(staged)}", flush=True)
        mlserver = MLServer(
            models=staged,
            parallel_workers=config.parallel_workers,
            metrics_port=config.mlserver_metrics_port,
            tracing_server=config.otlp_endpoint,
        )
        with mlserver:
            print(
                f"MLServer ready at {mlserver.http_url} (pid {mlserver.pid}), "
                f"metrics at {mlserver.metrics_url}",
                flush=True,
            )

            async def main() -> None:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await _run_gateway(config, bundle, mlserver, listening, monitor_listening, stop)

            import uvloop  # MLServer's event loop too; uvicorn and the upstream client use it

            uvloop.install()
            if tracing.configure(config.otlp_endpoint, ratio=config.trace_sampling_ratio):
                tracing.install_log_filter()
                print(f"tracing to {config.otlp_endpoint}", flush=True)
            try:
                asyncio.run(main())
            finally:
                tracing.shutdown()  # what is buffered is exported before the process ends


@dataclass
class LocalSeldon:
    """`income-bundle serve` in its own process, on free ports; a context manager."""

    config: ServeSettings = field(default_factory=ServeSettings)
    ready_timeout_s: float = 240.0
    log_path: Path | None = None
    _process: ServerProcess | None = field(default=None, init=False, repr=False)

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.config.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{self.config.host}:{self.config.grpc_port}"

    def start(self) -> LocalSeldon:
        if self.config.http_port == DEFAULT_HTTP_PORT:
            self.config.http_port = free_port(self.config.host)
        if self.config.grpc_port == DEFAULT_GRPC_PORT:
            self.config.grpc_port = free_port(self.config.host)
        if self.config.mlserver_metrics_port == DEFAULT_MLSERVER_METRICS_PORT:
            self.config.mlserver_metrics_port = free_port(self.config.host)
        if self.config.monitor_port == DEFAULT_MONITOR_PORT:
            self.config.monitor_port = free_port(self.config.monitor_host)
        self.log_path = self.log_path or Path(
            tempfile.mkstemp(prefix="income-serve-", suffix=".log")[1]
        )
        cli = Path(sys.executable).with_name("income-bundle")
        command = [
            str(cli), "serve",
            "--bundle-dir", str(self.config.bundle_dir),
            "--local-root", str(self.config.local_root),
            "--host", self.config.host,
            "--http-port", str(self.config.http_port),
            "--grpc-port", str(self.config.grpc_port),
            "--step-timeout-s", str(self.config.step_timeout_s),
            "--async-queue-size", str(self.config.async_queue_size),
            "--parallel-workers", str(self.config.parallel_workers),
            "--mlserver-metrics-port", str(self.config.mlserver_metrics_port),
            "--monitor-host", self.config.monitor_host,
            "--monitor-port", str(self.config.monitor_port),
        ]  # fmt: skip
        if self.config.max_request_rows is not None:
            command += ["--max-request-rows", str(self.config.max_request_rows)]
        if self.config.kafka_bootstrap:
            command += ["--kafka-bootstrap", self.config.kafka_bootstrap]
            command += ["--kafka-namespace", self.config.kafka_namespace]
        if self.config.otlp_endpoint:
            command += ["--otlp-endpoint", self.config.otlp_endpoint]
            command += ["--trace-sampling-ratio", str(self.config.trace_sampling_ratio)]
        if self.config.state_dir is None:
            command.append("--no-state")
        else:
            command += ["--state-dir", str(self.config.state_dir)]
        self._process = ServerProcess(
            "income-bundle serve",
            command,
            self.log_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._process.wait_until(
            lambda: http_ok(f"{self.http_url}/v2/health/ready"), self.ready_timeout_s, BundleError
        )
        return self

    @property
    def monitor_url(self) -> str | None:
        """The monitor's API (feedback, labelling, traffic, metrics); None without a state dir."""
        if self.config.state_dir is None:
            return None
        return f"http://{self.config.monitor_host}:{self.config.monitor_port}"

    @property
    def feedback_token(self) -> str | None:
        """The bearer token the monitor's feedback needs (serve writes it to the state dir)."""
        from income_bundle.monitoring.service import TOKEN_FILE

        if self.config.state_dir is None:
            return None
        return (self.config.state_dir / TOKEN_FILE).read_text().strip()

    @property
    def mlserver_metrics_url(self) -> str:
        return f"http://{self.config.host}:{self.config.mlserver_metrics_port}/metrics"

    def mlserver_pid(self) -> int | None:
        """The MLServer process behind this gateway, from the serve log."""
        import re

        match = re.search(r"MLServer ready at \S+ \(pid (\d+)\)", self.log_tail(200))
        return int(match.group(1)) if match else None

    def log_tail(self, lines: int = 60) -> str:
        return self._process.log_tail(lines) if self._process else ""

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._process:
            self._process.stop(timeout_s)

    def kill(self) -> None:
        """SIGKILL the serve process and its MLServer, as a crash would (nothing shuts down)."""
        mlserver = self.mlserver_pid()
        for pid in (self._process.pid if self._process else None, mlserver):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        if self._process:
            with contextlib.suppress(ProcessLookupError):
                self._process.stop(5)  # reaps it

    def __enter__(self) -> LocalSeldon:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
