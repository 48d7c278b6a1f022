"""Run a real MLServer over the bundle's model folders, on loopback, and stop it cleanly."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from income_bundle import quiet
from income_bundle.errors import BundleError
from income_bundle.paths import ARTIFACT_FOLDERS, artifact_dir
from income_bundle.process import ServerProcess, http_ok, run_temp_dir

__all__ = ["MLServer", "MLServerError", "free_port", "stage_repository"]

DEFAULT_HOST = "127.0.0.1"
READY_TIMEOUT_S = 180.0


class MLServerError(BundleError):
    """MLServer did not start, or died."""


# Versions that break MLServer 1.7.1 on start-up, with what to install instead.
REQUIRED_SERIES = {
    # uvloop 0.23 crashes the inference workers in a loop ("There is no current event loop").
    "uvloop": ("0.21", "uvloop==0.21.0"),
    # OutlierVAE loads only with Keras 2 (TF_USE_LEGACY_KERAS=1 and tf-keras).
    "tf-keras": ("2.18", "tf-keras==2.18.0"),
}


def preflight() -> None:
    """Refuse to start MLServer with a dependency known to keep the income models from loading."""
    from income_bundle.runtime.artifact import installed_version

    problems = []
    for distribution, (series, pin) in REQUIRED_SERIES.items():
        version = installed_version(distribution)
        if version is None or not (version == series or version.startswith(series + ".")):
            problems.append(f"{distribution} {version or 'is not installed'} (needs {pin})")
    if problems:
        raise MLServerError(
            "MLServer cannot serve the income models with "
            + "; ".join(problems)
            + ": run 'make deps' to install the pinned versions"
        )


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stage_repository(
    directory: Path, models: dict[str, Path] | None = None, root: Path | None = None
) -> Path:
    """A model repository of symlinks, one per model folder (MLServer serves one root)."""
    directory.mkdir(parents=True, exist_ok=True)
    models = models or {name: artifact_dir(name, root) for name in ARTIFACT_FOLDERS}
    for name, folder in models.items():
        if not (folder / "model-settings.json").is_file():
            raise MLServerError(f"model {name}: {folder} has no model-settings.json")
        link = directory / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(folder.resolve(), target_is_directory=True)
    return directory


@dataclass
class MLServer:
    """`mlserver start` over the given model folders; use as a context manager.

    Binds 127.0.0.1 unless told otherwise, on free ports by default.
    """

    models: dict[str, Path] | None = None
    host: str = DEFAULT_HOST
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    parallel_workers: int = 1
    ready_timeout_s: float = READY_TIMEOUT_S
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # MLServer's OTLP/gRPC collector (its `tracing_server` setting); None: MLServer does not trace.
    tracing_server: str | None = None
    _process: ServerProcess | None = field(default=None, init=False, repr=False)
    _workdir: tempfile.TemporaryDirectory | None = field(default=None, init=False, repr=False)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def start(self) -> MLServer:
        preflight()
        self._workdir = run_temp_dir("income-mlserver-")
        repository = stage_repository(Path(self._workdir.name) / "models", self.models)
        self.http_port = self.http_port or free_port(self.host)
        self.grpc_port = self.grpc_port or free_port(self.host)
        self.metrics_port = self.metrics_port or free_port(self.host)
        settings = {
            "host": self.host,
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "parallel_workers": self.parallel_workers,
            "debug": False,
        }
        if self.tracing_server:
            # MLServer 1.7.1 then instruments its REST (FastAPI) and gRPC servers, continuing
            # the gateway's traceparent, and exports with OTLPSpanExporter(endpoint=..., insecure).
            settings["tracing_server"] = self.tracing_server
        (repository / "settings.json").write_text(json.dumps(settings))
        self.log_path = self.log_path or Path(self._workdir.name) / "mlserver.log"
        env = {
            **os.environ,
            "TF_USE_LEGACY_KERAS": "1",
            # TensorFlow's and CUDA's C++ chatter off in the workers (LOG_LEVEL=debug keeps it).
            **quiet.environment(),
            # The classifier (HistGradientBoosting) predicts with busy-waiting OpenMP threads:
            # on 20-row requests they cost more than they save, and with two workers on two
            # cores they starve each other (p90 of 5 s measured at concurrency 8).
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        mlserver = Path(sys.executable).with_name("mlserver")
        self._process = ServerProcess(
            "MLServer",
            [str(mlserver), "start", str(repository)],
            self.log_path,
            env=env,
            cwd=repository,
        )
        try:
            self._process.wait_until(
                lambda: self.ready() and self._models_ready(), self.ready_timeout_s, MLServerError
            )
        except BaseException:  # also Ctrl-C or SIGTERM while waiting: leave nothing running
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def log_tail(self, lines: int = 40) -> str:
        return self._process.log_tail(lines) if self._process else ""

    def ready(self) -> bool:
        return http_ok(f"{self.http_url}/v2/health/ready")

    def _models_ready(self) -> bool:
        return all(
            http_ok(f"{self.http_url}/v2/models/{name}/ready")
            for name in self.models or ARTIFACT_FOLDERS
        )

    def stop(self, timeout_s: float = 20.0) -> None:
        if self._process:
            self._process.stop(timeout_s)
        if self._workdir:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> MLServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
