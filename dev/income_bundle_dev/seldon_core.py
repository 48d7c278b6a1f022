"""Seldon Core v2's own Go components, built from source and run on loopback without Kubernetes.

The source is Seldon's release tag (`../shared/upstream/src/seldon-core-<version>.tar.gz` beside the
checkout, an exact `git archive` of the tag, checked by its sha256; without it a shallow git clone
of the tag, checked by its commit). It is extracted once into
`~/.cache/income-bundle/seldon-core-<version>/src` and the seldon CLI, scheduler, agent,
modelgateway and pipelinegateway are built with `go build` inside that tree (Seldon's modules are
not on the Go module proxy; their go.mod files replace them with folders of the tree) into
`.../bin`, reused when present.

`SeldonCore` then runs the control and data plane for models on 127.0.0.1: the scheduler, rclone
(as Seldon's server pods run it), an MLServer with an empty model repository, and Seldon's agent,
which the scheduler tells to load models into that MLServer. `income_bundle_dev.seldon_mesh`
adds what Pipelines need (Kafka, the gateways, the dataflow engine, an Envoy stand-in), and
`python -m income_bundle_dev.seldon_mesh` (`make seldon-local`) runs that until Ctrl-C. It is
Seldon's code under the Business Source License 1.1: for testing, not for production use.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from income_bundle.errors import BundleError
from income_bundle.paths import project_root
from income_bundle.settings_cli import CommandSettings, parse_settings

__all__ = [
    "BINARIES",
    "FORWARDED",
    "SELDON_COMMIT",
    "SELDON_VERSION",
    "SeldonCore",
    "SeldonCoreError",
    "SeldonCoreSettings",
    "binary_dir",
    "build_binaries",
    "cache_dir",
    "ensure_source",
    "forward_ports",
    "runtime_unavailable_reason",
    "source_dir",
    "unavailable_reason",
]

SELDON_VERSION = "v2.10.2"
# The commit of tag v2.10.2 (`git get-tar-commit-id` of the tarball says the same).
SELDON_COMMIT = "8ca3c3c741d6b7d25a1eedf2d415359ab042d2ce"
SOURCE_SHA256 = "e270a9ecc44511df96dfc3014179c3b6608b6ad51b9c2461e09535a8ffa37a35"
# Relative to the checkout; CI clones the project with ../shared beside it.
SOURCE_TARBALL = Path("..") / "shared" / "upstream" / "src" / f"seldon-core-{SELDON_VERSION}.tar.gz"
SOURCE_GIT_URL = "https://github.com/SeldonIO/seldon-core"
# Written into the extracted tree last, so its presence means the tree is whole.
SOURCE_MARKER = ".income-bundle-source"


@dataclass(frozen=True)
class GoBinary:
    """One of Seldon's Go programs: its module folder in the tree and its main package there."""

    module: str
    package: str
    # Seldon's Makefiles build the agent with CGO_ENABLED=0 (it is a static binary in its image);
    # the others link confluent-kafka-go's bundled librdkafka through cgo.
    cgo: bool = True
    # The package whose version.Tag the Makefile stamps with the release (-X ...=$(RELEASE_TAG)).
    version_package: str | None = "github.com/seldonio/seldon-core/scheduler/v2/version"


# Built in this order: what the cluster tests need first (operator/Makefile `build-seldon` and
# scheduler/Makefile `build-*` targets).
BINARIES = {
    "scheduler": GoBinary("scheduler", "./cmd/scheduler"),
    "agent": GoBinary("scheduler", "./cmd/agent", cgo=False),
    "seldon": GoBinary("operator", "./cmd/seldon", version_package=None),
    "modelgateway": GoBinary("scheduler", "./cmd/modelgateway"),
    "pipelinegateway": GoBinary("scheduler", "./cmd/pipelinegateway"),
}

GO_JOBS_ENV = "INCOME_BUNDLE_GO_JOBS"


class SeldonCoreError(BundleError):
    """Seldon's components could not be fetched, built, started or used."""


def cache_dir() -> Path:
    """`~/.cache/income-bundle/seldon-core-<version>` (or under $XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "income-bundle" / f"seldon-core-{SELDON_VERSION}"


def source_dir() -> Path:
    """The extracted source tree of the release (there or not)."""
    return cache_dir() / "src"


def binary_dir() -> Path:
    """Where the binaries of this release live (built or not)."""
    return cache_dir() / "bin"


def _missing_binaries() -> list[str]:
    return [name for name in BINARIES if not (binary_dir() / name).is_file()]


def unavailable_reason() -> str | None:
    """Why Seldon's components cannot run here, or None when they can (built or buildable)."""
    missing = _missing_binaries()
    if missing and shutil.which("go") is None:
        return (
            f"Seldon Core {SELDON_VERSION}'s {', '.join(missing)} are built from source into "
            f"{binary_dir()}, and Go (>= 1.24, https://go.dev/dl/) is not on PATH"
        )
    return None


# -- source ------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tree_matches_tarball(tree: Path, tarball: Path) -> bool:
    """Whether every regular file of the tarball is in `tree` with its size: a tree another
    process extracted (maybe without our marker) is whole."""
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            if not member.isfile():
                continue
            relative = Path(*Path(member.name).parts[1:])
            path = tree / relative
            if not path.is_file() or path.stat().st_size != member.size:
                return False
    return True


def _extract_tarball(tarball: Path, scratch: Path) -> Path:
    digest = _sha256(tarball)
    if digest != SOURCE_SHA256:
        raise SeldonCoreError(
            f"{tarball} has sha256 {digest}, not {SOURCE_SHA256} (Seldon Core {SELDON_VERSION}, "
            f"git archive of {SELDON_COMMIT}): replace it with the release's archive"
        )
    with tarfile.open(tarball) as archive:
        archive.extractall(scratch, filter="tar")
    (top,) = scratch.iterdir()  # git archive --prefix=seldon-core-<version>/
    return top


def _clone_tag(scratch: Path) -> Path:
    """A user without ../shared: the tag from GitHub, checked against the pinned commit."""
    if shutil.which("git") is None:
        raise SeldonCoreError(
            f"no {SOURCE_TARBALL} beside the checkout and no git to clone {SOURCE_GIT_URL}"
        )
    tree = scratch / "seldon-core"
    command = ["git", "clone", "--quiet", "--depth", "1", "-b", SELDON_VERSION, SOURCE_GIT_URL]
    result = subprocess.run([*command, str(tree)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SeldonCoreError(
            f"cloning {SOURCE_GIT_URL} at {SELDON_VERSION} failed:\n{result.stderr}"
        )
    head = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if head != SELDON_COMMIT:
        raise SeldonCoreError(
            f"{SOURCE_GIT_URL} tag {SELDON_VERSION} is commit {head}, not {SELDON_COMMIT}: "
            "the tag moved; do not build from it"
        )
    shutil.rmtree(tree / ".git")
    return tree


def ensure_source(log: Callable[[str], None] = print) -> Path:
    """The release's source tree in the cache, extracted (or cloned) once.

    Safe against another process doing the same at the same time (the Maven build of Seldon's
    dataflow engine extracts this tarball here too): the tree is made in a scratch folder and
    renamed into place whole; whoever loses the rename uses the winner's tree.
    """
    target = source_dir()
    if (target / SOURCE_MARKER).is_file():
        return target
    tarball = (project_root() / SOURCE_TARBALL).resolve()
    if target.is_dir() and tarball.is_file() and _tree_matches_tarball(target, tarball):
        (target / SOURCE_MARKER).write_text(SELDON_COMMIT + "\n")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".src-", dir=target.parent))
    try:
        if tarball.is_file():
            log(f"extracting {tarball} into {target} ...")
            tree = _extract_tarball(tarball, scratch)
        else:
            log(f"no {tarball}: cloning {SOURCE_GIT_URL} at {SELDON_VERSION} into {target} ...")
            tree = _clone_tag(scratch)
        (tree / SOURCE_MARKER).write_text(SELDON_COMMIT + "\n")
        try:
            tree.rename(target)
        except OSError:
            # Someone renamed theirs into place first (rename onto a non-empty folder fails).
            if not target.is_dir():
                raise
            log(f"{target} appeared meanwhile: using it")
            if tarball.is_file():
                _wait_until_whole(target, tarball)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _wait_until_whole(tree: Path, tarball: Path, timeout_s: float = 300.0) -> None:
    """Wait for a tree someone else may still be extracting in place, then mark it whole."""
    deadline = time.monotonic() + timeout_s
    while not ((tree / SOURCE_MARKER).is_file() or _tree_matches_tarball(tree, tarball)):
        if time.monotonic() > deadline:
            raise SeldonCoreError(
                f"{tree} is not the whole of {tarball} after {timeout_s:.0f} s: remove it and retry"
            )
        time.sleep(1)
    (tree / SOURCE_MARKER).write_text(SELDON_COMMIT + "\n")


# -- build -------------------------------------------------------------------------------------


def build_binaries(log: Callable[[str], None] = print) -> Path:
    """Build whatever binary of this release is missing (one at a time, one compile job unless
    $INCOME_BUNDLE_GO_JOBS says more: developers' machines are shared) and return their directory."""
    if reason := unavailable_reason():
        raise SeldonCoreError(reason)
    target = binary_dir()
    target.mkdir(parents=True, exist_ok=True)
    if not _missing_binaries():
        return target
    source = ensure_source(log)
    jobs = os.environ.get(GO_JOBS_ENV, "1")
    # One build at a time per cache, across processes (make seldon-build and pytest may race).
    with (target.parent / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in _missing_binaries():
            binary = BINARIES[name]
            partial = target / f".{name}.partial"
            ldflags = "-w"
            if binary.version_package:
                ldflags += f" -X {binary.version_package}.Tag={SELDON_VERSION}"
            env = {
                **os.environ,
                # -buildvcs=false: the extracted tree is not a git checkout.
                "GOFLAGS": f"-p={jobs} -trimpath -buildvcs=false",
                "GOMAXPROCS": jobs,
                "CGO_ENABLED": "1" if binary.cgo else "0",
            }
            command = ["go", "build", "-mod=readonly", "-ldflags", ldflags, "-o", str(partial)]
            started = time.monotonic()
            log(
                f"building {name} ({binary.module}/{binary.package.removeprefix('./')}) into {target} ..."
            )
            result = subprocess.run(
                [*command, binary.package],
                cwd=source / binary.module,
                env=env,
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise SeldonCoreError(f"building {name} failed:\n{result.stderr[-4000:]}")
            partial.replace(target / name)
            log(f"built {name} in {time.monotonic() - started:.0f} s")
    return target


# -- run -----------------------------------------------------------------------------------------

# Every Seldon component listens on all interfaces (":<port>", hard-coded in scheduler/pkg and
# scheduler/cmd), so they run in a private network namespace whose only interface is loopback: a
# pod of their own. Inside it they keep the ports the charts give them; chosen host ports on
# 127.0.0.1 are forwarded in, as `kubectl port-forward` does into a pod.
# Ports inside the namespace, from seldon-core-v2-setup's ServerConfig `mlserver` and the
# scheduler's defaults (scheduler/cmd/scheduler/main.go).
SCHEDULER_PORT = 9004  # the CLI's and the operator's
SCHEDULER_AGENT_PORT = 9005
SCHEDULER_HEALTH_PORT = 9999
SCHEDULER_READY_TIMEOUT_S = 30
MLSERVER_HTTP_PORT = 9000
MLSERVER_GRPC_PORT = 9500
MLSERVER_METRICS_PORT = 8082
AGENT_PROXY_HTTP_PORT = 9001
AGENT_PROXY_GRPC_PORT = 9501
# The agent's readiness service defaults to 9008, the scheduler's dataflow port: in a cluster
# they are in different pods, here in one namespace, so the agent's moves (SELDON_READINESS_PORT).
AGENT_READINESS_PORT = 9009
RCLONE_PORT = 5572
# Where the Models' storageUri points (seldon-examples/models/*.yaml): the checkout, bind-mounted
# there in rclone's private mount namespace, as the cluster mounts the repository there.
STORAGE_MOUNT = Path("/mnt/income-bundle")
# The ports forwarded to host loopback: what clients and readiness checks need.
FORWARDED = {
    "scheduler": SCHEDULER_PORT,
    "scheduler-health": SCHEDULER_HEALTH_PORT,
    "mlserver-http": MLSERVER_HTTP_PORT,
    "mlserver-grpc": MLSERVER_GRPC_PORT,
    "agent-http": AGENT_PROXY_HTTP_PORT,
    "agent-grpc": AGENT_PROXY_GRPC_PORT,
    "agent-readiness": AGENT_READINESS_PORT,
}
FORWARDS_ENV = "INCOME_BUNDLE_SELDON_FORWARDS"
NAMESPACE_PID_ENV = "INCOME_BUNDLE_SELDON_NAMESPACE_PID"
# The MLServer Server's capabilities (seldon-core-v2-setup values.yaml serverConfig.mlserver).
MLSERVER_CAPABILITIES = "mlserver,alibi-detect,alibi-explain,huggingface,lightgbm,mlflow,python,sklearn,spark-mlib,xgboost"
SERVER_NAME = "mlserver"  # the Server the charts create; its first replica is pod mlserver-0


def runtime_unavailable_reason() -> str | None:
    """Why the components cannot be started here (beyond building them), or None."""
    missing = [
        tool for tool in ("unshare", "nsenter", "ip", "mount", "rclone") if not shutil.which(tool)
    ]
    if missing:
        return (
            f"running Seldon's components needs {', '.join(missing)} (Debian: util-linux, "
            "iproute2, mount, rclone)"
        )
    return None


async def _pump(reader, writer) -> None:
    """Copy one direction of a forwarded connection; pass the end of stream on."""
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass  # the other side went away: the connection ends


def forward_ports() -> None:
    """Run by `SeldonCore` as its own process: listen on the host's 127.0.0.1 at the ports of
    $INCOME_BUNDLE_SELDON_FORWARDS (`host_port:inner_port,...`), then enter the network namespace
    of process $INCOME_BUNDLE_SELDON_NAMESPACE_PID: the listeners stay on the host, and every
    connection they accept is connected to its inner port on the namespace's loopback."""
    import asyncio
    import ctypes
    import socket

    pairs = [item.split(":") for item in os.environ[FORWARDS_ENV].split(",")]
    listeners = []
    for host_port, inner_port in pairs:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(host_port)))
        listener.listen(64)
        listeners.append((listener, int(inner_port)))
    # Sockets made from now on are the namespace's. (Entering a user namespace needs a process
    # with one thread: this one, before asyncio starts.)
    holder = os.environ[NAMESPACE_PID_ENV]
    setns = ctypes.CDLL(None, use_errno=True).setns
    for kind in ([] if os.geteuid() == 0 else ["user"]) + ["net"]:
        with open(f"/proc/{holder}/ns/{kind}") as namespace:
            if setns(namespace.fileno(), 0) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {kind} namespace of {holder}")

    async def serve() -> None:
        servers = []
        for listener, inner_port in listeners:

            async def connect(client_reader, client_writer, port: int = inner_port) -> None:
                try:
                    upstream_reader, upstream_writer = await asyncio.open_connection(
                        "127.0.0.1", port
                    )
                except OSError:
                    client_writer.close()
                    return
                await asyncio.gather(
                    _pump(client_reader, upstream_writer), _pump(upstream_reader, client_writer)
                )
                upstream_writer.close()
                client_writer.close()

            servers.append(await asyncio.start_server(connect, sock=listener))
        await asyncio.gather(*(server.serve_forever() for server in servers))

    asyncio.run(serve())


class SeldonCore:
    """Seldon's scheduler, rclone, an MLServer and Seldon's agent on loopback, no Kubernetes.

    As in the cluster: the scheduler is told about Models (by the seldon CLI here, by the operator
    there); the agent, beside MLServer as in Seldon's `mlserver` Server pods, registers with the
    scheduler, has rclone copy each model's storageUri into its folder and loads it into MLServer
    through MLServer's model repository API (MLServer starts with an empty repository and
    `load_models_at_startup` false, as the ServerConfig runs it). Inference reaches a model through
    the agent's reverse proxy with header `seldon-internal-model: <name>_<version>` (what Envoy
    adds in the cluster; Envoy is not run here).

    Use as a context manager: every process is stopped and the working folder removed on exit,
    also when starting fails halfway. If the starting process dies, ServerProcess's guard kills
    the namespace holder, and with it, the kernel kills everything in the PID namespace.
    """

    def __init__(self, checkout: Path | None = None, ready_timeout_s: float = 180.0) -> None:
        self.checkout = (checkout or project_root()).resolve()
        self.ready_timeout_s = ready_timeout_s
        self.bin_dir = binary_dir()
        self.workdir: Path | None = None
        self.ports: dict[str, int] = {}  # FORWARDED's names -> host port on 127.0.0.1
        self._holder_pid: int | None = None
        self._processes: list = []
        self._tempdir = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> SeldonCore:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        if reason := runtime_unavailable_reason():
            raise SeldonCoreError(reason)
        if self.checkout.is_relative_to("/mnt"):
            raise SeldonCoreError(
                f"{self.checkout} is under /mnt, which rclone's namespace covers with its own "
                f"folder to mount it at {STORAGE_MOUNT}: use a checkout elsewhere"
            )
        build_binaries()
        from income_bundle.server import preflight

        preflight()
        from income_bundle.process import run_temp_dir

        # Named after this process: the next start removes the folder of a run killed with -9.
        self._tempdir = run_temp_dir("income-seldon-core-")
        self.workdir = Path(self._tempdir.name)
        self._start_namespace()
        self._start_forwarder()
        self._start_kafka()
        self._start_scheduler()
        self._start_rclone()
        self._start_mlserver()
        self._start_agent()
        self._start_pipeline_plane()

    def stop(self) -> None:
        """Stop every process (last started first) and remove the working folder."""
        while self._processes:
            self._processes.pop().stop()
        self._holder_pid = None
        if self.workdir:
            if self._tempdir is not None:
                self._tempdir.cleanup()
                self._tempdir = None
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # -- use ---------------------------------------------------------------------------------

    @property
    def scheduler_address(self) -> str:
        """host:port of the scheduler for `seldon --scheduler-host`."""
        return f"127.0.0.1:{self.ports['scheduler']}"

    def url(self, name: str) -> str:
        """http://127.0.0.1:<port> of one of FORWARDED's ports."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def seldon(
        self, *args: str, timeout_s: float = 600, scheduler: bool = True
    ) -> subprocess.CompletedProcess:
        """Run Seldon's CLI against this scheduler (the CLI's own config file is not read);
        `scheduler=False` for the commands that have no --scheduler-host (`infer`)."""
        env = {**os.environ, "HOME": str(self.workdir)}
        host = ["--scheduler-host", self.scheduler_address] if scheduler else []
        return subprocess.run(
            [str(self.bin_dir / "seldon"), *args, *host],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
        )

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The end of one process's log ('scheduler', 'rclone', 'mlserver', 'agent', ...)."""
        for process in self._processes:
            if getattr(process, "name", None) == name:
                return process.log_tail(lines)
        return ""

    def check_alive(self) -> None:
        """Raise, with its log, if a process has ended."""
        for process in self._processes:
            if process.exited():
                raise SeldonCoreError(f"{process.name} exited; log:\n{process.log_tail()}")

    # -- internals ---------------------------------------------------------------------------

    def _user_namespace(self) -> list[str]:
        # A user without root makes the namespaces inside a user namespace of its own (needs
        # unprivileged user namespaces: sysctl user.max_user_namespaces > 0).
        return [] if os.geteuid() == 0 else ["--user", "--map-root-user"]

    def _enter(self) -> list[str]:
        """The command prefix that runs a program inside the pod's network and PID namespaces
        (nsenter forks it into the PID namespace and waits for it)."""
        assert self._holder_pid is not None
        user = [] if os.geteuid() == 0 else ["--user", "--preserve-credentials"]
        return ["nsenter", f"--target={self._holder_pid}", *user, "--net", "--pid", "--"]

    def _spawn(self, name: str, command: list[str], **popen_kwargs):
        from income_bundle.process import ServerProcess

        assert self.workdir is not None
        process = ServerProcess(
            name,
            command,
            self.workdir / f"{name}.log",
            **popen_kwargs,
        )
        self._processes.append(process)
        return process

    def _wait(self, process, ready: Callable[[], bool]) -> None:
        process.wait_until(ready, self.ready_timeout_s, SeldonCoreError)

    def _start_namespace(self) -> None:
        """The pod: network and PID namespaces held by a process that only waits (Kubernetes'
        pause container), with loopback up. It is PID 1 of the PID namespace, so when it ends,
        by `stop` or because its parent died, the kernel kills every process inside, MLServer's
        workers too."""
        holder = self._spawn(
            "namespace",
            [
                "unshare",
                *self._user_namespace(),
                "--net",
                "--pid",
                # unshare forks the holder and SIGKILLs it when unshare itself ends.
                "--kill-child",
                "--",
                "sh",
                "-c",
                # As PID 1 it gets only the signals it handles: `stop`'s SIGTERM ends it.
                "set -e; ip link set lo up; trap 'exit 0' TERM; echo namespace-ready;"
                " sleep infinity & wait",
            ],
        )
        self._wait(holder, lambda: "namespace-ready" in holder.log_tail())
        # Under ServerProcess's guard and unshare: the shell that is PID 1 inside.
        self._holder_pid = _first_descendant_in_other_pid_namespace(holder.pid)

    def _forwarded(self) -> dict[str, int | None]:
        """The ports forwarded from the host: name -> port inside (None: the same number as the
        free host port chosen for it, for a server that must advertise the address clients use)."""
        return dict(FORWARDED)

    def _kafka_config(self) -> dict:
        """The scheduler's kafka.json (the SeldonConfig's kafkaConfig): none without Kafka."""
        return {}

    def _agent_extra_env(self) -> dict[str, str]:
        """Models only: no Envoy for an explainer to call its model through (SeldonMesh: the
        stand-in, as the ServerConfig's SELDON_ENVOY_HOST/PORT point at seldon-mesh)."""
        return {}

    def _start_kafka(self) -> None:
        """Models only: no Kafka (SeldonMesh starts one)."""

    def _start_pipeline_plane(self) -> None:
        """Models only: no gateways, engine or Envoy (SeldonMesh starts them)."""

    def _start_forwarder(self) -> None:
        from income_bundle.server import free_port

        forwarded = self._forwarded()
        self.ports = {name: free_port() for name in forwarded}
        inner = {name: port or self.ports[name] for name, port in forwarded.items()}
        forwards = ",".join(f"{self.ports[name]}:{inner[name]}" for name in forwarded)
        code = "from income_bundle_dev.seldon_core import forward_ports; forward_ports()"
        env = {**os.environ, FORWARDS_ENV: forwards, NAMESPACE_PID_ENV: str(self._holder_pid)}
        self._spawn("port-forward", [sys.executable, "-c", code], env=env)

    def _start_scheduler(self) -> None:
        assert self.workdir is not None
        scaling = self.workdir / "scaling"
        scaling.mkdir()
        # seldon-core-v2-setup's SeldonConfig scalingConfig with the chart's values (autoscaling:
        # models off, servers on, no packing); the scheduler wants its folder, not the file.
        (scaling / "scaling.yaml").write_text(
            "models:\n  enabled: false\n"
            "servers:\n  enabled: true\n  scaleDownPackingEnabled: false\n"
            "  scaleDownPackingPercentage: 0\n"
            "pipelines:\n  maxShardCountMultiplier: 1\n"
        )
        # Models only: the scheduler reads the file but needs no field (SeldonMesh: its Kafka).
        kafka = self.workdir / "kafka.json"
        kafka.write_text(json.dumps(self._kafka_config()) + "\n")
        scheduler = self._spawn(
            "scheduler",
            [
                *self._enter(),
                str(self.bin_dir / "scheduler"),
                f"--db-path={self.workdir / 'scheduler-db'}",
                f"--kafka-config-path={kafka}",
                f"--scaling-config-path={scaling}",
                "--allow-plaintxt=true",
                "--enable-model-autoscaling=false",
                "--enable-server-autoscaling=true",
                "--server-packing-enabled=false",
                f"--envoy-accesslog-path={self.workdir / 'envoy-accesslog.txt'}",
                f"--health-probe-port={SCHEDULER_HEALTH_PORT}",
                "--pipeline-gateway-host=127.0.0.1",
                # Without a namespace the scheduler schedules nothing until this has passed (its
                # SimpleSynchroniser gives agents time to reconnect): 30 s as in Seldon's own
                # setup outside Kubernetes (scheduler/env.all), not the flag's 300 s.
                f"--scheduler-ready-timeout-seconds={SCHEDULER_READY_TIMEOUT_S}",
                "--log-level=info",
            ],
        )
        self._wait(scheduler, lambda: _http_ok(f"{self.url('scheduler-health')}/ready"))

    def _start_rclone(self) -> None:
        """rclone's remote-control daemon, as the seldon-rclone image runs it (Dockerfile.rclone:
        `rcd --rc-no-auth --config=/rclone/rclone.conf`), in a mount namespace of its own where
        a folder of its own covers /mnt and the checkout is bound read-only at /mnt/income-bundle."""
        assert self.workdir is not None
        config = self.workdir / "rclone.conf"
        config.write_text("")
        mounts = (
            "mount -t tmpfs -o mode=0755 income-bundle-mnt /mnt"
            f" && mkdir {STORAGE_MOUNT}"
            f' && mount --bind -o ro "$0" {STORAGE_MOUNT}'
            ' && exec rclone rcd --rc-no-auth --config="$1"'
            f" --rc-addr=127.0.0.1:{RCLONE_PORT} --log-level=INFO"
        )
        self._spawn(
            "rclone",
            [
                *self._enter(),
                "unshare",
                "--mount",
                "--propagation=private",
                "--",
                "sh",
                "-c",
                mounts,
                str(self.checkout),
                str(config),
            ],
        )

    def _start_mlserver(self) -> None:
        """MLServer as the ServerConfig `mlserver` runs it, with the project's process settings
        (income_bundle.server: TF_USE_LEGACY_KERAS, quiet workers, one OpenMP thread)."""
        from income_bundle import quiet

        assert self.workdir is not None
        models = self.workdir / "agent" / "models"
        models.mkdir(parents=True)
        env = {
            **os.environ,
            "TF_USE_LEGACY_KERAS": "1",
            **quiet.environment(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "PYTHONUNBUFFERED": "1",
            "MLSERVER_HOST": "127.0.0.1",
            "MLSERVER_PARALLEL_WORKERS": "1",
            "MLSERVER_HTTP_PORT": str(MLSERVER_HTTP_PORT),
            "MLSERVER_GRPC_PORT": str(MLSERVER_GRPC_PORT),
            "MLSERVER_METRICS_PORT": str(MLSERVER_METRICS_PORT),
            "MLSERVER_MODELS_DIR": str(models),
            "MLSERVER_LOAD_MODELS_AT_STARTUP": "false",
            "MLSERVER_GRPC_MAX_MESSAGE_LENGTH": "1048576000",
        }
        mlserver = Path(sys.executable).with_name("mlserver")
        process = self._spawn(
            "mlserver",
            [*self._enter(), str(mlserver), "start", str(models)],
            env=env,
            cwd=models,
        )
        self._wait(process, lambda: _http_ok(f"{self.url('mlserver-http')}/v2/health/live"))

    def _start_agent(self) -> None:
        """Seldon's agent with the ServerConfig `mlserver` environment (values.yaml defaults),
        plaintext control plane, and no namespace: with one it builds a Kubernetes client."""
        assert self.workdir is not None
        config = self.workdir / "agent-config"
        config.mkdir()
        # The SeldonConfig's agentConfig without its Kubernetes secret (gs:// credentials).
        (config / "agent.yaml").write_text("rclone:\n  config_secrets: []\n")
        env = {
            **os.environ,
            "SELDON_SERVER_CAPABILITIES": MLSERVER_CAPABILITIES,
            "SELDON_MODEL_INFERENCE_LAG_THRESHOLD": "30",
            "SELDON_MODEL_INACTIVE_SECONDS_THRESHOLD": "600",
            "SELDON_SCALING_STATS_PERIOD_SECONDS": "20",
            "SELDON_MAX_TIME_READY_SUB_SERVICE_AFTER_START_SECONDS": "30",
            "SELDON_MAX_ELAPSED_TIME_READY_SUB_SERVICE_BEFORE_START_MINUTES": "15",
            "SELDON_PERIOD_READY_SUB_SERVICE_SECONDS": "60",
            "SELDON_MAX_LOAD_ELAPSED_TIME_MINUTES": "120",
            "SELDON_MAX_UNLOAD_ELAPSED_TIME_MINUTES": "15",
            "SELDON_MAX_LOAD_RETRY_COUNT": "5",
            "SELDON_MAX_UNLOAD_RETRY_COUNT": "1",
            "SELDON_UNLOAD_GRACE_PERIOD_SECONDS": "2",
            "SELDON_OVERCOMMIT_PERCENTAGE": "10",
            "CONTROL_PLANE_SECURITY_PROTOCOL": "PLAINTEXT",
            "ENVOY_SECURITY_PROTOCOL": "PLAINTEXT",
            "SELDON_LOG_LEVEL": "info",
            "SELDON_USE_DEPLOYMENTS_FOR_SERVERS": "false",
            "SELDON_SERVER_HTTP_PORT": str(MLSERVER_HTTP_PORT),
            "SELDON_SERVER_GRPC_PORT": str(MLSERVER_GRPC_PORT),
            "SELDON_REVERSE_PROXY_HTTP_PORT": str(AGENT_PROXY_HTTP_PORT),
            "SELDON_REVERSE_PROXY_GRPC_PORT": str(AGENT_PROXY_GRPC_PORT),
            "SELDON_SCHEDULER_HOST": "127.0.0.1",
            "SELDON_SCHEDULER_PORT": str(SCHEDULER_AGENT_PORT),
            "SELDON_METRICS_PORT": "9006",
            "SELDON_DRAINER_PORT": "9007",
            "SELDON_READINESS_PORT": str(AGENT_READINESS_PORT),
            "SELDON_SERVER_TYPE": "mlserver",
            "POD_NAME": f"{SERVER_NAME}-0",
            "POD_IP": "127.0.0.1",
            "MEMORY_REQUEST": str(1 << 30),  # the chart's mlserver requests.memory, 1Gi
            **self._agent_extra_env(),
        }
        agent = self._spawn(
            "agent",
            [
                *self._enter(),
                str(self.bin_dir / "agent"),
                f"--agent-folder={self.workdir / 'agent'}",
                f"--config-path={config}",
                "--inference-host=127.0.0.1",
                "--rclone-host=127.0.0.1",
                f"--rclone-port={RCLONE_PORT}",
            ],
            env=env,
        )
        self._wait(agent, lambda: _http_ok(f"{self.url('agent-readiness')}/ready"))


def _first_descendant_in_other_pid_namespace(pid: int) -> int:
    """The first process under `pid` (breadth first) in a PID namespace other than ours."""
    ours = os.readlink("/proc/self/ns/pid")
    pending = [pid]
    while pending:
        current = pending.pop(0)
        if os.readlink(f"/proc/{current}/ns/pid") != ours:
            return current
        children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        pending += [int(child) for child in children]
    raise SeldonCoreError(f"no process under {pid} holds a PID namespace of its own")


def _http_ok(url: str) -> bool:
    from income_bundle.process import http_ok

    return http_ok(url)


# -- command -----------------------------------------------------------------------------------


class SeldonCoreSettings(CommandSettings):
    """Options of `python -m income_bundle_dev.seldon_core` (`make seldon-build`)."""

    model_config = SettingsConfigDict(env_prefix="INCOME_BUNDLE_SELDON_CORE_")

    build_only: bool = Field(False, description="build Seldon's binaries and exit")


def main(argv: list[str] | None = None) -> int:
    """`make seldon-build` (--build-only) builds; without it, run Seldon's Models-only part until
    Ctrl-C (`make seldon-local` runs the whole data plane: `income_bundle_dev.seldon_mesh`)."""
    settings = parse_settings(
        SeldonCoreSettings,
        argv,
        prog="python -m income_bundle_dev.seldon_core",
        description=__doc__,
    )
    if settings.build_only:
        print(build_binaries())
        return 0
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with SeldonCore() as seldon:
        print(
            f"Seldon Core {SELDON_VERSION} up (scheduler, rclone, MLServer, agent; no Envoy, no "
            "Kafka, no dataflow engine). Seldon's code, Business Source License 1.1: not for "
            "production use.\n"
            f"  {seldon.bin_dir / 'seldon'} model load -f seldon-examples/models/iris.yaml "
            f"--scheduler-host {seldon.scheduler_address}\n"
            f"  agent proxy: {seldon.url('agent-http')} (header seldon-internal-model: <name>_1)\n"
            f"  MLServer: {seldon.url('mlserver-http')}; logs in {seldon.workdir}\n"
            "Ctrl-C stops it and removes its files.",
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
