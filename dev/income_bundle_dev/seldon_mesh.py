"""Seldon Core v2's whole data plane on one machine: Models and Pipelines, no Kubernetes.

`SeldonMesh` is `SeldonCore` (scheduler, rclone, MLServer, Seldon's agent, in a network and PID
namespace of their own) plus what runs Pipelines in real Seldon: the project's Kafka broker
(`income_bundle_dev.kafka_broker`), Seldon's modelgateway and pipelinegateway, Seldon's dataflow
engine (`income_bundle_dev.seldon_dataflow`: the Maven-built jar run with Java 17), and, since
Envoy cannot run here, the stand-in `income_bundle_dev.envoy_standin`, which routes as the
scheduler's Envoy routes do. All of them run inside the namespace at the ports the charts give
them; the host reaches them through chosen free ports on 127.0.0.1 (`ports`), and Kafka on the
same port number inside and out, so the address it advertises works from both sides.

`load_examples` has Seldon's CLI load every Model and Pipeline in `seldon-examples/` (manifests
unchanged) and waits until each is ModelAvailable or PipelineReady. It is Seldon's code under the
Business Source License 1.1: for testing and development, not for production use.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import yaml
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from income_bundle.paths import project_root
from income_bundle.settings_cli import CommandSettings, parse_settings
from income_bundle_dev.seldon_core import (
    FORWARDED,
    SCHEDULER_PORT,
    SELDON_VERSION,
    SeldonCore,
    SeldonCoreError,
)

__all__ = [
    "MESH_GRPC_PORT",
    "MESH_HTTP_PORT",
    "NAMESPACE",
    "SeldonMesh",
    "SeldonMeshSettings",
    "example_manifests",
    "unavailable_reason",
]

# Inside the namespace (the charts' values where they fit; moved where two would collide in one
# namespace, which in a cluster are different pods).
MESH_HTTP_PORT = 8080  # the stand-in's REST (seldon-mesh's 80)
MESH_GRPC_PORT = 8081  # the stand-in's gRPC (also 80 in a cluster: Envoy serves both there)
PIPELINEGATEWAY_HTTP_PORT = 9010  # chart
PIPELINEGATEWAY_GRPC_PORT = 9011  # chart
PIPELINEGATEWAY_METRICS_PORT = 9016  # chart 9006: the agent's metrics port here
PIPELINEGATEWAY_HEALTH_PORT = 9998  # chart 9999: the scheduler's health port here
MODELGATEWAY_HEALTH_PORT = 9997  # chart 9999, likewise
DATAFLOW_HEALTH_PORT = 8000  # chart (SELDON_HEALTH_SERVER_PORT)
DATAFLOW_PORT = 9008  # the scheduler's --dataflow-port
# The scheduler runs without a namespace (with one it waits for Kubernetes' Servers); Seldon's
# topic namer then uses "default": seldon.default.model.<name>.inputs ...
NAMESPACE = "default"
TOPIC_PREFIX = "seldon"
MESH_FORWARDED: dict[str, int | None] = {
    "kafka": None,
    "mesh-http": MESH_HTTP_PORT,
    "mesh-grpc": MESH_GRPC_PORT,
    "pipelinegateway-health": PIPELINEGATEWAY_HEALTH_PORT,
    "modelgateway-health": MODELGATEWAY_HEALTH_PORT,
    "dataflow-health": DATAFLOW_HEALTH_PORT,
}
EXAMPLES = Path("seldon-examples")
WORKDIR_PREFIX = "income-seldon-core-"  # SeldonCore's run_temp_dir prefix
KAFKA_WORKDIR_RECORD = "kafka-workdir"
SECURITY_PLAINTEXT = {
    "CONTROL_PLANE_SECURITY_PROTOCOL": "PLAINTEXT",
    "ENVOY_SECURITY_PROTOCOL": "PLAINTEXT",
    "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
}


def unavailable_reason() -> str | None:
    """Why the whole data plane cannot run here, or None: Go (or the built binaries), Java and
    Maven (or the built jar and the fetched broker), rclone, util-linux and iproute2."""
    from income_bundle_dev import kafka_broker, seldon_core, seldon_dataflow

    for reason in (
        seldon_core.unavailable_reason(),
        seldon_core.runtime_unavailable_reason(),
        seldon_dataflow.unavailable_reason(),
        kafka_broker.missing_tools(),
    ):
        if reason:
            return reason
    return None


def example_manifests(kind: str) -> list[Path]:
    """seldon-examples/<kind>/*.yaml ('models' or 'pipelines')."""
    return sorted((project_root() / EXAMPLES / kind).glob("*.yaml"))


def manifest_name(path: Path) -> str:
    return yaml.safe_load(path.read_text())["metadata"]["name"]


def kafka_answers(port: int, timeout_s: float = 2.0) -> bool:
    """Whether a Kafka broker answers an ApiVersions request (v0) at 127.0.0.1:`port`: the
    forwarder accepts a connection before anything listens inside, so a connect is not enough."""
    body = struct.pack(">hhih", 18, 0, 1, -1)  # api key, version, correlation id, null client id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            return len(sock.recv(8)) >= 8
    except OSError:
        return False


class _Managed:
    """Something with its own start and stop (the broker) among SeldonCore's processes."""

    def __init__(self, name: str, stop, process) -> None:
        self.name = name
        self._stop = stop
        self._process = process
        self.pid = process.pid

    def stop(self) -> None:
        self._stop()

    def exited(self) -> bool:
        return self._process.exited()

    def log_tail(self, lines: int = 40) -> str:
        return self._process.log_tail(lines)


class SeldonMesh(SeldonCore):
    """SeldonCore plus Kafka, the model and pipeline gateways, the dataflow engine and the Envoy
    stand-in: the data plane for Pipelines. Clients use `mesh_address` (REST) and
    `mesh_grpc_address` as they use seldon-mesh; the CLI uses `scheduler_address` and
    `kafka_bootstrap`."""

    def __init__(self, checkout: Path | None = None, ready_timeout_s: float = 180.0) -> None:
        super().__init__(checkout, ready_timeout_s)
        self.timings: dict[str, float] = {}

    # -- use ---------------------------------------------------------------------------------

    @property
    def mesh_address(self) -> str:
        """host:port of the Envoy stand-in's REST listener (`--inference-host`)."""
        return f"127.0.0.1:{self.ports['mesh-http']}"

    @property
    def mesh_grpc_address(self) -> str:
        return f"127.0.0.1:{self.ports['mesh-grpc']}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['kafka']}"

    def seldon_mesh(self, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
        """Seldon's CLI with this mesh's addresses: `--inference-host` for `infer`, Kafka and the
        scheduler for `inspect`, the scheduler otherwise."""
        if len(args) > 1 and args[1] == "infer":
            extra = ["--inference-host", self.mesh_address]
            return self.seldon(*args, *extra, timeout_s=timeout_s, scheduler=False)
        if len(args) > 1 and args[1] == "inspect":
            extra = ["--kafka-broker", self.kafka_bootstrap, "--namespace", NAMESPACE]
            return self.seldon(*args, *extra, timeout_s=timeout_s)
        return self.seldon(*args, timeout_s=timeout_s)

    def inspect(self, reference: str) -> tuple[str | None, dict[str, dict]]:
        """`seldon pipeline inspect <reference> --format json`: the last message's key (the
        request id) and its tensors by name ({"name", "datatype", "shape", "data"})."""
        result = self.seldon_mesh("pipeline", "inspect", reference, "--format", "json")
        if result.returncode != 0:
            raise SeldonCoreError(f"seldon pipeline inspect {reference}: {result.stderr}")
        documents = [line for line in result.stdout.splitlines() if line.startswith("{")]
        key, tensors = None, {}
        # No message yet: "topics" is null.
        for topic in (json.loads(documents[0])["topics"] or []) if documents else []:
            for message in topic["msgs"] or []:
                key, value = message["key"], message["value"]
                # One tensor (`<step>.outputs.<tensor>`) or the whole response (`<step>.outputs`).
                tensors = {}
                for tensor in value.get("outputs", value.get("inputs", [value])):
                    tensors[tensor["name"]] = {
                        "name": tensor["name"],
                        "datatype": tensor["datatype"],
                        "shape": [int(n) for n in tensor["shape"]],
                        "data": [
                            float(v) for v in next(iter(tensor.get("contents", {}).values()), [])
                        ],
                    }
        return key, tensors

    def drift_reader(self, reference: str, timeout_s: float = 60.0):
        """A callable that waits for the next message of `reference` (a drift step's outputs run
        asynchronously, after the pipeline answered) and returns it as the local gateway's
        /inspect does: {"tensors": [...]}."""
        last = {"key": self.inspect(reference)[0]}

        def read() -> dict:
            deadline = time.monotonic() + timeout_s
            while True:
                key, tensors = self.inspect(reference)
                if key != last["key"]:
                    last["key"] = key
                    return {"tensors": list(tensors.values())}
                if time.monotonic() > deadline:
                    raise SeldonCoreError(f"no new message of {reference} in {timeout_s:.0f} s")
                time.sleep(0.5)

        return read

    def load_examples(self, timeout_s: float = 600) -> dict[str, list[str]]:
        """`seldon model load` every Model and `seldon pipeline load` every Pipeline of
        seldon-examples/, then wait until each is ModelAvailable / PipelineReady."""
        started = time.monotonic()
        loaded: dict[str, list[str]] = {"models": [], "pipelines": []}
        for kind, noun, condition in (
            ("models", "model", "ModelAvailable"),
            ("pipelines", "pipeline", "PipelineReady"),
        ):
            for manifest in example_manifests(kind):
                result = self.seldon(noun, "load", "-f", str(manifest), "--force")
                if result.returncode != 0:
                    raise SeldonCoreError(f"seldon {noun} load -f {manifest}:\n{result.stderr}")
                loaded[kind].append(manifest_name(manifest))
            for name in loaded[kind]:
                left = max(1, int(timeout_s - (time.monotonic() - started)))
                waited = self.seldon(
                    noun, "status", name, "-w", condition, "-t", str(left), timeout_s=left + 60
                )
                if waited.returncode != 0:
                    raise SeldonCoreError(
                        f"{noun} {name} not {condition} within {left} s: {waited.stdout}"
                        f"{waited.stderr}\nagent log:\n{self.log_tail('agent')}\n"
                        f"dataflow log:\n{self.log_tail('dataflow-engine')}"
                    )
            self.timings[f"{kind} ready"] = time.monotonic() - started
        return loaded

    # -- internals ---------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        _remove_stale_kafka_folders()
        super().start()
        self.timings["started"] = time.monotonic() - started

    def _forwarded(self) -> dict[str, int | None]:
        return {**FORWARDED, **MESH_FORWARDED}

    def _agent_extra_env(self) -> dict[str, str]:
        # The ServerConfig points the agent at seldon-mesh:80; an explainer calls its model there.
        return {"SELDON_ENVOY_HOST": "127.0.0.1", "SELDON_ENVOY_PORT": str(MESH_HTTP_PORT)}

    def _kafka_config(self) -> dict:
        # The SeldonConfig's kafkaConfig with seldon-core-v2-setup's values.yaml (kafka.*).
        return {
            "bootstrap.servers": self.kafka_bootstrap,
            "consumer": {
                "auto.offset.reset": "earliest",
                "message.max.bytes": "1000000000",
                "session.timeout.ms": "6000",
                "topic.metadata.propagation.max.ms": "300000",
            },
            "consumerGroupIdPrefix": "",
            "debug": "",
            "producer": {"linger.ms": "0", "message.max.bytes": "1000000000"},
            "topicPrefix": TOPIC_PREFIX,
            "topics": {"numPartitions": "1", "replicationFactor": "1"},
        }

    def _start_kafka(self) -> None:
        """The project's broker, inside the namespace, on the port number the host uses too."""
        from income_bundle_dev.kafka_broker import KafkaBroker

        prefix = self._enter()
        record = self.workdir / KAFKA_WORKDIR_RECORD

        class NamespacedBroker(KafkaBroker):
            def _java(self, libs, *args):
                # Its folder is its own (KafkaBroker's); noted in ours, so that the next start
                # removes it if this run is killed before it can (stale_kafka_folders).
                record.write_text(str(self.workdir))
                return [*prefix, *super()._java(libs, *args)]

        started = time.monotonic()
        broker = NamespacedBroker(self.ports["kafka"])
        broker.start()
        managed = _Managed("kafka", broker.stop, broker._process)
        self._processes.append(managed)
        deadline = time.monotonic() + self.ready_timeout_s
        while not kafka_answers(self.ports["kafka"]):
            if managed.exited() or time.monotonic() > deadline:
                raise SeldonCoreError(f"Kafka did not answer; log:\n{managed.log_tail()}")
            time.sleep(0.5)
        self.timings["kafka"] = time.monotonic() - started

    def _start_pipeline_plane(self) -> None:
        self._start_dataflow_engine()
        self._start_gateway("modelgateway", MODELGATEWAY_HEALTH_PORT, [], {
            "MODELGATEWAY_NUM_WORKERS": "8",  # values.yaml modelgateway.workers
            "MODELGATEWAY_MAX_NUM_CONSUMERS": "100",
            "KAFKA_DEFAULT_REPLICATION_FACTOR": "1",
            "KAFKA_DEFAULT_NUM_PARTITIONS": "1",
            "POD_NAME": "seldon-modelgateway-0",
        }, envoy_port=MESH_GRPC_PORT)  # fmt: skip
        self._start_gateway("pipelinegateway", PIPELINEGATEWAY_HEALTH_PORT, [
            f"--http-port={PIPELINEGATEWAY_HTTP_PORT}",
            f"--grpc-port={PIPELINEGATEWAY_GRPC_PORT}",
            f"--metrics-port={PIPELINEGATEWAY_METRICS_PORT}",
        ], {
            "PIPELINEGATEWAY_MAX_NUM_CONSUMERS": "100",
            "POD_NAME": "seldon-pipelinegateway-0",
            # It tells the scheduler where it is (SubscribePipelineEvents): no default.
            "POD_IP": "127.0.0.1",
        }, envoy_port=MESH_HTTP_PORT)  # fmt: skip
        self._start_envoy_standin()

    def _start_dataflow_engine(self) -> None:
        from income_bundle_dev.seldon_dataflow import build_jar, engine_command

        assert self.workdir is not None
        tmpdir = self.workdir / "dataflow-tmp"
        tmpdir.mkdir()
        env = {
            **os.environ,
            # The chart's values (dataflow.* and the SeldonConfig's pod); the health port has no
            # default in Seldon's local.properties.
            "SELDON_HEALTH_SERVER_PORT": str(DATAFLOW_HEALTH_PORT),
            "SELDON_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "SELDON_UPSTREAM_HOST": "127.0.0.1",
            "SELDON_UPSTREAM_PORT": str(DATAFLOW_PORT),
            "SELDON_POD_NAMESPACE": NAMESPACE,
            "SELDON_CORES_COUNT": "4",
            "SELDON_LOG_LEVEL_APP": "INFO",
            "SELDON_LOG_LEVEL_KAFKA": "WARN",
            "SELDON_PIPELINE_CTLOPS_THREADS": "8",
        }
        started = time.monotonic()
        engine = self._spawn(
            "dataflow-engine",
            [*self._enter(), *engine_command(build_jar(), "512m", tmpdir)],
            env=env,
        )
        self._wait(engine, lambda: _http_ok(f"{self.url('dataflow-health')}/ready"))
        self.timings["dataflow engine"] = time.monotonic() - started

    def _start_gateway(
        self, name: str, health_port: int, args: list[str], extra_env: dict, envoy_port: int
    ) -> None:
        assert self.workdir is not None
        kafka = self.workdir / "kafka.json"
        env = {**os.environ, **SECURITY_PLAINTEXT, "LOG_LEVEL": "info", **extra_env}
        process = self._spawn(
            name,
            [
                *self._enter(),
                str(self.bin_dir / name),
                *args,
                "--scheduler-host=127.0.0.1",
                f"--scheduler-plaintxt-port={SCHEDULER_PORT}",
                "--envoy-host=127.0.0.1",
                f"--envoy-port={envoy_port}",
                f"--kafka-config-path={kafka}",
                "--log-level=info",
                f"--health-probe-port={health_port}",
            ],
            env=env,
        )
        self._wait(process, lambda: _http_ok(f"{self.url(name + '-health')}/ready"))

    def _start_envoy_standin(self) -> None:
        from income_bundle_dev.envoy_standin import StandinConfig

        assert self.workdir is not None
        config = StandinConfig(
            http_port=MESH_HTTP_PORT,
            grpc_port=MESH_GRPC_PORT,
            agent_http_port=9001,
            agent_grpc_port=9501,
            pipeline_http_port=PIPELINEGATEWAY_HTTP_PORT,
            pipeline_grpc_port=PIPELINEGATEWAY_GRPC_PORT,
            seldon_cli=str(self.bin_dir / "seldon"),
            scheduler=f"127.0.0.1:{SCHEDULER_PORT}",
        )
        env = {**os.environ, **config.env(), "HOME": str(self.workdir)}
        code = "from income_bundle_dev.envoy_standin import serve; serve()"
        process = self._spawn(
            "envoy-standin", [*self._enter(), sys.executable, "-c", code], env=env
        )
        self._wait(process, lambda: "Envoy stand-in: REST" in process.log_tail())

    def describe(self) -> str:
        """What runs where, for people (make seldon-local)."""
        rows = [
            ("Envoy stand-in (seldon-mesh)", f"REST {self.mesh_address}, gRPC {self.mesh_grpc_address}"),
            ("scheduler", self.scheduler_address),
            ("Kafka", self.kafka_bootstrap),
            ("agent proxy", f"{self.url('agent-http')} (seldon-internal-model: <name>_<version>)"),
            ("MLServer", self.url("mlserver-http")),
            ("dataflow engine health", self.url("dataflow-health")),
            ("pipelinegateway health", self.url("pipelinegateway-health")),
            ("modelgateway health", self.url("modelgateway-health")),
            ("logs", str(self.workdir)),
        ]  # fmt: skip
        return "\n".join(f"  {name:30s} {where}" for name, where in rows)


def _remove_stale_kafka_folders() -> None:
    """The broker folders of runs killed before they could stop (their working folder, named
    after a process that no longer runs, notes it; run_temp_dir then removes that folder)."""
    import shutil
    import tempfile

    for stale in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*-*/{KAFKA_WORKDIR_RECORD}"):
        owner = stale.parent.name.removeprefix(WORKDIR_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            folder = Path(stale.read_text().strip())
            if folder.name.startswith("income-kafka-"):
                shutil.rmtree(folder, ignore_errors=True)


def _http_ok(url: str) -> bool:
    from income_bundle.process import http_ok

    return http_ok(url)


def pipeline_request(rows) -> str:
    """A V2 JSON request of rows (for `seldon pipeline infer`)."""
    from income_bundle.scenarios import v2_request

    return json.dumps(v2_request(rows))


# -- command -----------------------------------------------------------------------------------


class SeldonMeshSettings(CommandSettings):
    """Options of `python -m income_bundle_dev.seldon_mesh` (`make seldon-local`)."""

    model_config = SettingsConfigDict(env_prefix="INCOME_BUNDLE_SELDON_MESH_")

    load: bool = Field(
        True,
        description="load every Model and Pipeline of seldon-examples/ (--no-load: start empty, "
        "for loading by hand with Seldon's CLI)",
    )


def main(argv: list[str] | None = None) -> int:
    """`make seldon-local`: the whole data plane, every example loaded, until Ctrl-C."""
    settings = parse_settings(
        SeldonMeshSettings,
        argv,
        prog="python -m income_bundle_dev.seldon_mesh",
        description=__doc__,
    )
    import signal
    import threading

    from income_bundle.training import train

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    train()  # the Models' folders must hold their artifacts before the agent copies them
    started = time.monotonic()
    with SeldonMesh() as seldon:
        print(f"Seldon Core {SELDON_VERSION}'s data plane is up:\n{seldon.describe()}", flush=True)
        loaded: dict[str, list[str]] = {"models": [], "pipelines": []}
        if settings.load:
            print("loading every Model and Pipeline of seldon-examples/ with Seldon's CLI ...")
            loaded = seldon.load_examples()
        cli = seldon.bin_dir / "seldon"
        request = project_root() / "data" / "scenarios" / "low-education.json"
        print(
            f"Ready in {time.monotonic() - started:.0f} s: Models "
            f"{', '.join(loaded['models']) or '(none)'}; Pipelines "
            f"{', '.join(loaded['pipelines']) or '(none)'}.\n"
            "Seldon's code, Business Source License 1.1: not for production use. Try:\n"
            f"  {cli} pipeline infer income-production --inference-host {seldon.mesh_address} "
            f'"$(cat {request})"\n'
            f"  {cli} pipeline inspect income-production.income-drift.outputs.is_drift "
            f"--kafka-broker {seldon.kafka_bootstrap} --scheduler-host {seldon.scheduler_address}\n"
            f"  {cli} model infer iris --inference-host {seldon.mesh_address} "
            '\'{"inputs":[{"name":"predict","datatype":"FP32","shape":[1,4],'
            '"data":[5.1,3.5,1.4,0.2]}]}\'\n'
            f"  {cli} pipeline list --scheduler-host {seldon.scheduler_address}\n"
            "  (make demo SELDON=real runs the demo's scenarios through a mesh of its own)\n"
            "Ctrl-C stops it all and removes its files.",
            flush=True,
        )
        try:
            while not stop.wait(1):
                seldon.check_alive()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
