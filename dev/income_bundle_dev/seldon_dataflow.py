"""Seldon Core v2's dataflow engine (scheduler/data-flow: Kotlin on Kafka Streams), built from the
release's source with Maven and run with the machine's Java 17.

Seldon builds it with its Gradle 8.5 wrapper, which cannot download Gradle where only package
registries are reachable; `dev/seldon-dataflow/pom.xml` (ours) builds the same unchanged sources
from the tree `income_bundle_dev.seldon_core.ensure_source` extracts, runs Seldon's own unit tests
for it (surefire) and shades the jar Seldon's image runs. Where that build differs from Seldon's
Gradle build, and why, is in docs/seldon-local.md ("Dataflow engine"). The jar is built once into
`~/.cache/income-bundle/seldon-core-<version>/dataflow/` and reused; Maven's local repository is
`~/.cache/income-bundle/m2/repository`, so a second cold checkout downloads nothing.

`DataflowEngine` runs the jar as Seldon's `scheduler/Dockerfile.dataflow` does (`java
-XX:+PreserveFramePointer -jar dataflow-1.0-SNAPSHOT-all.jar`, without the OpenTelemetry agent),
configured through the `SELDON_*` variables the operator's SeldonConfig gives its pod. It is
Seldon's code under the Business Source License 1.1: for testing, not for production use.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from income_bundle.errors import BundleError
from income_bundle.paths import project_root
from income_bundle.process import ServerProcess, http_ok
from income_bundle.settings_cli import CommandSettings, parse_settings
from income_bundle_dev.seldon_core import SELDON_VERSION, cache_dir, ensure_source

__all__ = [
    "DataflowEngine",
    "DataflowEngineError",
    "SeldonDataflowSettings",
    "build_jar",
    "engine_command",
    "jar_path",
    "maven_repository",
    "unavailable_reason",
]

POM = Path("dev") / "seldon-dataflow" / "pom.xml"
# The shaded jar's name in Seldon's image (Gradle's shadowJar: <rootProject>-<version>-all.jar).
JAR_NAME = "dataflow-1.0-SNAPSHOT-all.jar"
# scheduler/data-flow/src/main/kotlin/io/seldon/mlops/*: symlinks into apis/mlops/*/kotlin, where
# the protobuf classes the engine compiles against live.
API_SYMLINKS = ("chainer", "inference", "inference_schema")


class DataflowEngineError(BundleError):
    """The dataflow engine could not be built or started; the message says what to do."""


def dataflow_dir() -> Path:
    """`~/.cache/income-bundle/seldon-core-<version>/dataflow`: the jar and Maven's build folder."""
    return cache_dir() / "dataflow"


def jar_path() -> Path:
    """The shaded jar (built or not)."""
    return dataflow_dir() / JAR_NAME


def maven_repository() -> Path:
    """Maven's local repository, outside the checkout so CI can cache it."""
    return cache_dir().parent / "m2" / "repository"


def unavailable_reason() -> str | None:
    """Why the engine cannot run here, or None when it can (built or buildable)."""
    missing = ["java"] if shutil.which("java") is None else []
    if not jar_path().is_file() and shutil.which("mvn") is None:
        missing.append("mvn")
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} not found: Seldon's dataflow engine is built with Maven and runs "
        "on Java 17 (Debian: apt-get install openjdk-17-jdk-headless maven)"
    )


def _check_api_symlinks(source: Path) -> None:
    mlops = (
        source / "scheduler" / "data-flow" / "src" / "main" / "kotlin" / "io" / "seldon" / "mlops"
    )
    broken = [name for name in API_SYMLINKS if not (mlops / name).is_dir()]
    if broken:
        raise DataflowEngineError(
            f"{', '.join(str(mlops / name) for name in broken)} do not resolve: the extracted tree "
            f"lost the symlinks into apis/mlops (delete {source} and build again)"
        )


def build_jar(log: Callable[[str], None] = print, *, force: bool = False) -> Path:
    """Build the shaded jar unless it is there (or `force`), running Seldon's unit tests for the
    engine on the way, and return its path."""
    target = jar_path()
    if target.is_file() and not force:
        return target
    if reason := unavailable_reason():
        raise DataflowEngineError(reason)
    if shutil.which("mvn") is None:
        raise DataflowEngineError("mvn not found: the dataflow engine is built with Maven")
    source = ensure_source(log)
    _check_api_symlinks(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One build at a time per cache, across processes (.ci/run and pytest may race).
    with (target.parent / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file() and not force:
            return target
        build_dir = target.parent / "build"
        shutil.rmtree(build_dir, ignore_errors=True)
        command = [
            "mvn",
            "-B",
            "-f",
            str(project_root() / POM),
            f"-Dmaven.repo.local={maven_repository()}",
            f"-Dseldon.source={source}",
            f"-Dseldon.build.dir={build_dir}",
            "package",
        ]
        started = time.monotonic()
        log(f"building Seldon's dataflow engine {SELDON_VERSION} with Maven into {target} ...")
        result = subprocess.run(command, capture_output=True, text=True)
        output = result.stdout + result.stderr
        (target.parent / "build.log").write_text(output)
        if result.returncode != 0:
            raise DataflowEngineError(
                f"the Maven build of the dataflow engine failed (log {target.parent / 'build.log'}):"
                f"\n{output[-4000:]}"
            )
        if summary := re.findall(
            r"Tests run: \d+, Failures: \d+, Errors: \d+, Skipped: \d+$", output, re.M
        ):
            log(f"Seldon's dataflow unit tests: {summary[-1]}")
        partial = target.parent / f".{JAR_NAME}.partial"
        shutil.copyfile(build_dir / JAR_NAME, partial)
        partial.replace(target)
        shutil.rmtree(build_dir, ignore_errors=True)  # classes and the plain jar: 200 MB
        log(f"built {target.name} in {time.monotonic() - started:.0f} s")
    return target


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies (Linux)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def engine_command(jar: Path, heap: str, tmpdir: Path) -> list[str]:
    """The engine's command as Seldon's `scheduler/Dockerfile.dataflow` runs it (`java
    -XX:+PreserveFramePointer -jar ...`, without the OpenTelemetry agent), with a heap limit and
    Kafka Streams' state under `tmpdir`."""
    return [
        "java",
        f"-Xmx{heap}",
        "-XX:+PreserveFramePointer",
        f"-Djava.io.tmpdir={tmpdir}",
        "-jar",
        str(jar),
    ]


class DataflowEngine:
    """One dataflow engine reading and writing `kafka_bootstrap`, asking the scheduler at
    `scheduler_host:scheduler_port` for pipelines; its health server on `health_port`.

    Seldon's health server binds 0.0.0.0 (HealthServer.kt, not configurable); Kafka Streams'
    state goes under a temporary `java.io.tmpdir`, removed on stop."""

    def __init__(
        self,
        kafka_bootstrap: str,
        *,
        health_port: int = 0,
        scheduler_host: str = "127.0.0.1",
        scheduler_port: int = 9008,
        namespace: str = "seldon-mesh",
        heap: str = "512m",
        ready_timeout_s: float = 120,
    ) -> None:
        self.kafka_bootstrap = kafka_bootstrap
        self.health_port = health_port or _free_port()
        self.scheduler_host = scheduler_host
        self.scheduler_port = scheduler_port
        self.namespace = namespace
        self.heap = heap
        self.ready_timeout_s = ready_timeout_s
        self.workdir: Path | None = None
        self.final_log = ""
        self._process: ServerProcess | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.health_port}{path}"

    def env(self) -> dict[str, str]:
        """The variables the engine reads (Cli.kt: prefix SELDON_, a key's dots as underscores)."""
        return {
            # No default in local.properties (it sets http.server.port, which nothing reads).
            "SELDON_HEALTH_SERVER_PORT": str(self.health_port),
            "SELDON_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "SELDON_UPSTREAM_HOST": self.scheduler_host,
            "SELDON_UPSTREAM_PORT": str(self.scheduler_port),
            "SELDON_POD_NAMESPACE": self.namespace,
        }

    def start(self) -> DataflowEngine:
        jar = build_jar()
        self.workdir = Path(tempfile.mkdtemp(prefix="income-dataflow-"))
        command = engine_command(jar, self.heap, self.workdir)
        self._process = ServerProcess(
            f"Seldon dataflow engine {SELDON_VERSION}",
            command,
            self.workdir / "dataflow.log",
            env={**os.environ, **self.env()},
            preexec_fn=_die_with_parent,
        )
        try:
            self._process.wait_until(
                lambda: http_ok(self.url("/live")), self.ready_timeout_s, DataflowEngineError
            )
        except DataflowEngineError:
            self.stop()
            raise
        return self

    def exited(self) -> bool:
        return self._process is not None and self._process.exited()

    def log_tail(self, lines: int = 40) -> str:
        return self._process.log_tail(lines) if self._process else ""

    def stop(self) -> None:
        """SIGTERM the engine (its shutdown hook cancels the pipelines and stops the health
        server), SIGKILL it if it lingers; its log stays readable as `final_log`."""
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self.workdir is not None:
            log = self.workdir / "dataflow.log"
            self.final_log = log.read_text(errors="replace") if log.is_file() else ""
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> DataflowEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SeldonDataflowSettings(CommandSettings):
    """Options of `python -m income_bundle_dev.seldon_dataflow`."""

    model_config = SettingsConfigDict(env_prefix="INCOME_BUNDLE_SELDON_DATAFLOW_")

    build_only: bool = Field(False, description="build the jar (and run Seldon's tests) and exit")
    rebuild: bool = Field(False, description="build the jar even when the cache has one")
    kafka_bootstrap: str | None = Field(
        None, description="the Kafka to use (default: start the project's test broker)"
    )
    health_port: int = Field(0, ge=0, le=65535, description="the health server's port (0: any)")


def main(argv: list[str] | None = None) -> int:
    """Build the dataflow engine if needed; unless --build-only, run it until Ctrl-C."""
    settings = parse_settings(
        SeldonDataflowSettings,
        argv,
        prog="python -m income_bundle_dev.seldon_dataflow",
        description=__doc__,
    )
    print(build_jar(force=settings.rebuild))
    if settings.build_only:
        return 0
    from income_bundle_dev.kafka_broker import KafkaBroker

    broker = None if settings.kafka_bootstrap else KafkaBroker().start()
    bootstrap = settings.kafka_bootstrap or broker.bootstrap
    try:
        with DataflowEngine(bootstrap, health_port=settings.health_port) as engine:
            print(f"dataflow engine up on Kafka {bootstrap}: {engine.url('/live')}", flush=True)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            while not engine.exited():
                time.sleep(1)
            print(f"the dataflow engine exited:\n{engine.log_tail()}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if broker:
            broker.stop()


if __name__ == "__main__":
    sys.exit(main())
