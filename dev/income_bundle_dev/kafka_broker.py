"""A real Apache Kafka broker on loopback, for tests and the local demo: KRaft mode, one node.

The broker is Apache Kafka at the version Strimzi runs in the cluster (the ecosystem role's
`ecosystem_kafka_version`), fetched from Maven Central with the machine's Maven into a cache
outside the repository, and run with the machine's Java. One node is both controller and broker,
as in Strimzi's single-node KafkaNodePool; its data lives in a temporary directory removed on stop.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

from income_bundle.errors import BundleError
from income_bundle.process import ServerProcess

__all__ = ["KAFKA_VERSION", "KafkaBroker", "KafkaBrokerError", "kafka_libs", "missing_tools"]

# The Kafka Strimzi 0.45.0 runs for us (ansible/roles/ecosystem/defaults/main.yaml).
KAFKA_VERSION = "3.9.0"
SCALA_VERSION = "2.13"
# Kafka's scripts log through reload4j; this binding is the one its distribution ships.
SLF4J_VERSION = "1.7.36"
CACHE_ENV = "INCOME_BUNDLE_CACHE"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>income-bundle</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>
      <version>{slf4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J = """log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


class KafkaBrokerError(BundleError):
    """The broker could not be fetched or started; the message says what to do."""


def missing_tools() -> str | None:
    """None when Java and Maven are on PATH, else a message naming what to install."""
    missing = [tool for tool in ("java", "mvn") if not shutil.which(tool)]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} not found: the Kafka broker runs on Java 17 and is fetched "
        "from Maven Central with Maven (Debian: apt-get install openjdk-17-jre-headless maven)"
    )


def _cache_root() -> Path:
    base = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "income-bundle"
    return Path(base)


def kafka_libs(version: str = KAFKA_VERSION, timeout_s: float = 900) -> Path:
    """The folder of the broker's jars, fetched once per version into the cache."""
    libs = _cache_root() / f"kafka-{SCALA_VERSION}-{version}" / "libs"
    complete = libs / ".complete"
    if complete.exists():
        return libs
    if problem := missing_tools():
        raise KafkaBrokerError(problem)
    libs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kafka-pom-") as work:
        pom = Path(work) / "pom.xml"
        pom.write_text(_POM.format(scala=SCALA_VERSION, kafka=version, slf4j=SLF4J_VERSION))
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={libs}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    if result.returncode != 0:
        raise KafkaBrokerError(
            f"could not fetch Apache Kafka {version} from Maven Central with mvn:\n"
            f"{(result.stdout + result.stderr)[-2000:]}"
        )
    complete.touch()
    return libs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class KafkaBroker:
    """One KRaft node on 127.0.0.1 (broker and controller); `bootstrap` is its address.
    `stop()` removes everything it wrote."""

    def __init__(
        self,
        port: int = 0,
        *,
        version: str = KAFKA_VERSION,
        partitions: int = 1,
        heap: str = "512m",
        ready_timeout_s: float = 120,
        cluster_id: str | None = None,
    ) -> None:
        self.version = version
        self.port = port or _free_port()
        self.controller_port = _free_port()
        self.partitions = partitions
        self.heap = heap
        self.ready_timeout_s = ready_timeout_s
        self.cluster_id = cluster_id  # None: a new random one at each start
        self.workdir: Path | None = None
        self._process: ServerProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, libs: Path, *args: str) -> list[str]:
        assert self.workdir is not None
        return [
            "java",
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",
            f"-Dlog4j.configuration=file:{self.workdir / 'log4j.properties'}",
            "-cp",
            f"{libs}/*",
            *args,
        ]

    def start(self) -> KafkaBroker:
        libs = kafka_libs(self.version)
        self.workdir = Path(tempfile.mkdtemp(prefix="income-kafka-"))
        properties = self.workdir / "server.properties"
        properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.workdir / 'data'}",
                    # One node: internal topics cannot have more replicas than that.
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    f"num.partitions={self.partitions}",
                    # Seldon's dataflow engine creates its topics; locally the first write does.
                    "auto.create.topics.enable=true",
                    "",
                ]
            )
        )
        (self.workdir / "log4j.properties").write_text(_LOG4J)
        # Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding.
        cluster_id = self.cluster_id or base64.urlsafe_b64encode(
            uuid.uuid4().bytes
        ).decode().rstrip("=")
        formatted = subprocess.run(
            self._java(
                # One argument: an id may start with "-", which argparse4j would read as a flag.
                libs,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                "-c",
                str(properties),
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if formatted.returncode != 0:
            self.stop()
            raise KafkaBrokerError(
                f"formatting the Kafka storage failed:\n{formatted.stdout}{formatted.stderr}"
            )
        self._process = ServerProcess(
            f"Kafka {self.version} broker",
            self._java(libs, "kafka.Kafka", str(properties)),
            self.workdir / "broker.log",
        )
        try:
            self._process.wait_until(
                lambda: _accepts(self.port), self.ready_timeout_s, KafkaBrokerError
            )
        except KafkaBrokerError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
