"""Seldon Core v2's real dataflow engine (scheduler/data-flow), built from the release's source with
Maven (dev/seldon-dataflow/pom.xml, Seldon's own unit tests run in that build) and started with
Java 17 against the project's test Kafka broker, as Seldon's scheduler/Dockerfile.dataflow runs it.

Its health server (HealthServer.kt) answers /live and /ready from the pipeline subscriber's
coroutine scope and /startup from the state of its gRPC channel to the scheduler ("chainer").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from concurrent import futures

import pytest

from income_bundle_dev.seldon_dataflow import DataflowEngine, build_jar, unavailable_reason
from tests.support.paths import ROOT

pytestmark = pytest.mark.skipif(bool(unavailable_reason()), reason=str(unavailable_reason()))


def health(engine: DataflowEngine, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(engine.url(path), timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for(condition, timeout_s: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not hold within {timeout_s:.0f} s")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def jar():
    return build_jar()


@pytest.fixture(scope="module")
def kafka():
    from income_bundle_dev.kafka_broker import KafkaBroker, missing_tools

    if problem := missing_tools():
        pytest.skip(problem)
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture
def scheduler_stand_in():
    """A bare gRPC server where the scheduler would listen: a channel to it is READY, while the
    engine's pipeline subscription gets UNIMPLEMENTED (no Chainer service) and retries."""
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(grace=None)


def test_the_jar_is_seldons_engine_with_its_main_class(jar):
    with zipfile.ZipFile(jar) as archive:
        manifest = archive.read("META-INF/MANIFEST.MF").decode()
        names = set(archive.namelist())
    assert "Main-Class: io.seldon.dataflow.Main" in manifest
    # Seldon's classes, the protobuf classes from apis/mlops (through the symlinks), Kafka Streams.
    assert "io/seldon/dataflow/kafka/Pipeline.class" in names
    assert "io/seldon/mlops/chainer/ChainerGrpc.class" in names
    assert "org/apache/kafka/streams/KafkaStreams.class" in names


def test_the_engine_answers_its_health_probes_and_stops_cleanly(jar, kafka):
    engine = DataflowEngine(kafka.bootstrap, scheduler_port=_closed_port()).start()
    try:
        for path in ("/live", "/ready"):
            status, body = health(engine, path)
            assert (status, body["status"]) == (200, "UP"), (path, body)
            assert body["checks"]["service"]["isHealthy"] is True
        # No scheduler: the startup probe says the channel to it is down, and why.
        status, body = wait_for(
            lambda: (r := health(engine, "/startup"))[0] == 503 and r, what="/startup DOWN"
        )
        assert body["checks"]["grpc-chainer"]["isHealthy"] is False
        pid = engine.pid
        started = time.monotonic()
    finally:
        engine.stop()
    # SIGTERM ran Seldon's shutdown hook, well before ServerProcess would SIGKILL (20 s).
    assert time.monotonic() - started < 15
    assert "received shutdown signal" in engine.final_log
    # Main logs its effective configuration: the bootstrap came from SELDON_KAFKA_BOOTSTRAP_SERVERS.
    assert f"(kafka.bootstrap.servers, {kafka.bootstrap})" in engine.final_log
    assert not pid_alive(pid)
    with pytest.raises(OSError):
        urllib.request.urlopen(engine.url("/live"), timeout=2)


def test_startup_is_up_once_the_scheduler_address_answers_grpc(jar, kafka, scheduler_stand_in):
    with DataflowEngine(kafka.bootstrap, scheduler_port=scheduler_stand_in) as engine:
        _, body = wait_for(
            lambda: (r := health(engine, "/startup"))[0] == 200 and r, what="/startup UP"
        )
        assert body["checks"]["grpc-chainer"]["details"]["state"] == "READY"


STARTER = """
import sys
from income_bundle_dev.seldon_dataflow import DataflowEngine
engine = DataflowEngine(sys.argv[1], scheduler_port=int(sys.argv[2])).start()
print(engine.pid, flush=True)
sys.stdin.read()
"""


def test_the_engine_dies_with_the_process_that_started_it(jar, kafka):
    parent = subprocess.Popen(
        [sys.executable, "-c", STARTER, kafka.bootstrap, str(_closed_port())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        engine_pid = int(parent.stdout.readline())
        assert pid_alive(engine_pid)
        parent.send_signal(signal.SIGKILL)  # no cleanup code runs in the parent
        parent.wait(10)
        wait_for(lambda: not pid_alive(engine_pid), 30, "the engine's exit")
    finally:
        parent.kill()


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
