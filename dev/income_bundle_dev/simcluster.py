"""A simulated Kubernetes cluster on loopback: a real API server, simulated kubelets.

kube-apiserver, kube-controller-manager, kube-scheduler and kubectl are built from the
`k8s.io/kubernetes` Go module at the release of the kind node image the roles pin, etcd from
`go.etcd.io/etcd` at the version that release pins, and kwok (`sigs.k8s.io/kwok`) plays the
kubelets: nodes report Ready and pods go Running, but no container ever runs. What this checks is
what the API server and the stock controllers decide: admission, structural schemas, defaulting,
CEL rules, immutable fields, server-side apply, garbage collection and namespace deletion.

The binaries are built once into a cache outside the checkout, keyed by their versions
(`~/.cache/income-bundle/sim-cluster/<versions>/bin`, or $INCOME_BUNDLE_SIM_CLUSTER_CACHE), from
`dev/sim-cluster/go.mod`.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
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

import yaml
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from income_bundle.errors import BundleError
from income_bundle.paths import project_root
from income_bundle.process import ServerProcess
from income_bundle.settings_cli import CommandSettings, parse_settings
from income_bundle_dev.caches import cache_dir

__all__ = [
    "BINARIES",
    "ETCD_VERSION",
    "KUBERNETES_VERSION",
    "KWOK_VERSION",
    "SimCluster",
    "SimClusterError",
    "SimClusterSettings",
    "binary_dir",
    "build_binaries",
    "unavailable_reason",
]

# The kind node image's release (ansible/roles/kind_cluster: kindest/node:v1.33.1).
KUBERNETES_VERSION = "v1.33.1"
# proxy.golang.org/k8s.io/kubernetes/@v/v1.33.1.info: Origin.Hash of refs/tags/v1.33.1.
KUBERNETES_COMMIT = "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828"
KUBERNETES_BUILD_DATE = "2025-05-15T08:19:07Z"
# k8s.io/kubernetes v1.33.1 go.mod requires go.etcd.io/etcd/{api,client,server}/v3 v3.5.21 (kubeadm's
# etcd for 1.33 is 3.5.21 too). Debian bookworm's etcd-server is 3.4.23, older than what this
# release's client and its watch-progress checks are written against, so etcd is built as well.
ETCD_VERSION = "v3.5.21"
# kwok v0.7.0's go.mod builds against k8s.io/* v0.33.0 (its consts.KubeVersion is 1.33.0).
KWOK_VERSION = "v0.7.0"

GO_MODULE_DIR = Path("dev") / "sim-cluster"
# Binary name -> Go package, built inside GO_MODULE_DIR (kwok alone, with its own go.mod).
BINARIES = {
    "etcd": "go.etcd.io/etcd/server/v3",
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "kwok": f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}",
}

CACHE_ENV = "INCOME_BUNDLE_SIM_CLUSTER_CACHE"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
NODE_NAME = "sim-node"


class SimClusterError(BundleError):
    """The simulated cluster could not be built, started or used."""


def _cache_root() -> Path:
    return cache_dir("sim-cluster", CACHE_ENV)


def binary_dir() -> Path:
    """Where the binaries of these versions live (built or not)."""
    key = f"kubernetes-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}"
    return _cache_root() / key / "bin"


def _missing_binaries() -> list[str]:
    return [name for name in BINARIES if not (binary_dir() / name).is_file()]


def unavailable_reason() -> str | None:
    """Why the simulated cluster cannot run here, or None when it can (built or buildable)."""
    missing = _missing_binaries()
    if not missing:
        return None
    if shutil.which("go") is None:
        return (
            f"the simulated cluster needs {', '.join(missing)} built from Go modules into "
            f"{binary_dir()}, and Go (>= 1.24, https://go.dev/dl/) is not on PATH"
        )
    return None


def _version_ldflags() -> str:
    """What Kubernetes' hack/lib/version.sh stamps, so /version and kubectl report the release."""
    minor = KUBERNETES_VERSION.split(".")[1]
    values = {
        "gitVersion": KUBERNETES_VERSION,
        "gitMajor": "1",
        "gitMinor": minor,
        "gitCommit": KUBERNETES_COMMIT,
        "gitTreeState": "clean",
        "buildDate": KUBERNETES_BUILD_DATE,
    }
    packages = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
    return " ".join(
        f"-X {package}.{key}={value}" for package in packages for key, value in values.items()
    )


GO_JOBS_ENV = "INCOME_BUNDLE_GO_JOBS"


def build_binaries(log: Callable[[str], None] = print) -> Path:
    """Build whatever binary of these versions is missing (one at a time, one compile job unless
    $INCOME_BUNDLE_GO_JOBS says more: developers' machines are shared) and return their directory."""
    target = binary_dir()
    target.mkdir(parents=True, exist_ok=True)
    if reason := unavailable_reason():
        raise SimClusterError(reason)
    module_dir = project_root() / GO_MODULE_DIR
    # One compile job unless told otherwise (CI, alone on its machine, uses every core).
    jobs = os.environ.get(GO_JOBS_ENV, "1")
    # One build at a time per cache, across processes (make sim-cluster and pytest may race).
    with (target.parent / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in _missing_binaries():
            package = BINARIES[name]
            partial = target / f".{name}.partial"
            env = {**os.environ, "GOFLAGS": f"-p={jobs} -trimpath", "GOMAXPROCS": jobs}
            ldflags = "-s -w" + ("" if name in ("etcd", "kwok") else " " + _version_ldflags())
            started = time.monotonic()
            log(f"building {name} ({package}) into {target} ...")
            if name == "kwok":
                # `go install pkg@version` uses kwok's own go.mod and go.sum (checked by the Go
                # checksum database); GOBIN receives it, so build into a scratch dir and move it.
                scratch = Path(tempfile.mkdtemp(dir=target.parent))
                command = ["go", "install", "-ldflags", ldflags, package]
                env |= {"GOBIN": str(scratch), "GOFLAGS": f"-p={jobs} -trimpath"}
                cwd, built = tempfile.gettempdir(), scratch / "kwok"
            else:
                command = [
                    "go",
                    "build",
                    "-mod=readonly",
                    "-ldflags",
                    ldflags,
                    "-o",
                    str(partial),
                    package,
                ]
                cwd, built, scratch = str(module_dir), partial, None
            result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise SimClusterError(f"building {name} failed:\n{result.stderr[-4000:]}")
            built.replace(target / name)
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
            log(f"built {name} in {time.monotonic() - started:.0f} s")
    return target


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class _Pki:
    """A throwaway CA, one serving certificate for every loopback component, an admin client
    certificate (group system:masters) and the service-account signing key."""

    directory: Path
    files: dict[str, Path] = field(default_factory=dict)

    def generate(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.UTC)
        valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=2))

        def write(name: str, data: bytes) -> Path:
            path = self.directory / name
            path.write_bytes(data)
            path.chmod(0o600)
            self.files[name] = path
            return path

        def pem_key(key) -> bytes:
            return key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )

        def name(common: str, organisation: str | None = None) -> x509.Name:
            parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
            if organisation:
                parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
            return x509.Name(parts)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = name("income-bundle-sim-cluster-ca")
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        write("ca.crt", ca.public_bytes(serialization.Encoding.PEM))

        def leaf(file: str, subject: x509.Name, usage, sans=None) -> None:
            key = ec.generate_private_key(ec.SECP256R1())
            builder = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(ca_name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(valid[0])
                .not_valid_after(valid[1])
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            )
            if sans:
                builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            cert = builder.sign(ca_key, hashes.SHA256())
            write(f"{file}.crt", cert.public_bytes(serialization.Encoding.PEM))
            write(f"{file}.key", pem_key(key))

        service_ip = next(ipaddress.ip_network(SERVICE_CIDR).hosts())
        leaf(
            "serving",
            name("kube-apiserver"),
            ExtendedKeyUsageOID.SERVER_AUTH,
            [
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(service_ip),
                x509.DNSName("localhost"),
                x509.DNSName("kubernetes"),
                x509.DNSName("kubernetes.default"),
                x509.DNSName("kubernetes.default.svc"),
                x509.DNSName("kubernetes.default.svc.cluster.local"),
            ],
        )
        leaf("admin", name("sim-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
        service_account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write("sa.key", pem_key(service_account_key))
        write(
            "sa.pub",
            service_account_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )


class SimCluster:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on loopback, one node.

    Use as a context manager: everything started is stopped, and the working directory (data,
    certificates, kubeconfig, logs) removed, on exit, also when starting fails halfway.
    """

    def __init__(
        self, nodes: int = 1, ready_timeout_s: float = 180.0, admission_webhooks: bool = True
    ) -> None:
        self.nodes = nodes
        self.ready_timeout_s = ready_timeout_s
        # False: the API server calls no admission webhook. Charts register webhooks served by
        # pods that never run here (cert-manager, KServe, Knative, prometheus-operator); with
        # failurePolicy Fail each would refuse every later write of its kinds.
        self.admission_webhooks = admission_webhooks
        self.bin_dir = binary_dir()
        self.workdir: Path | None = None
        self.kubeconfig: Path | None = None
        self.server = ""
        self._processes: list[ServerProcess] = []
        self._ssl: ssl.SSLContext | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> SimCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        build_binaries()
        self.workdir = Path(tempfile.mkdtemp(prefix="income-sim-cluster-"))
        pki = _Pki(self.workdir / "pki")
        pki.directory.mkdir()
        pki.generate()
        certs = pki.files
        self._ssl = ssl.create_default_context(cafile=str(certs["ca.crt"]))
        self._ssl.load_cert_chain(str(certs["admin.crt"]), str(certs["admin.key"]))

        etcd_port, etcd_peer_port, api_port = _free_port(), _free_port(), _free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        etcd = self._spawn(
            "etcd",
            [
                "--name=sim",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-cluster=sim=http://127.0.0.1:{etcd_peer_port}",
                # A throwaway store: durability buys nothing here and fsyncs cost seconds.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        etcd.wait_until(lambda: _etcd_healthy(etcd_url), self.ready_timeout_s, SimClusterError)

        self.server = f"https://127.0.0.1:{api_port}"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={certs['serving.crt']}",
                f"--tls-private-key-file={certs['serving.key']}",
                f"--client-ca-file={certs['ca.crt']}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={certs['sa.pub']}",
                f"--service-account-signing-key-file={certs['sa.key']}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                # kind's API server allows privileged pods (node-exporter asks for host namespaces).
                "--allow-privileged=true",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                *(
                    []
                    if self.admission_webhooks
                    else [
                        "--disable-admission-plugins="
                        "MutatingAdmissionWebhook,ValidatingAdmissionWebhook"
                    ]
                ),
            ],
        )
        self.kubeconfig = self._write_kubeconfig(certs)
        apiserver.wait_until(lambda: self._get_ok("/readyz"), self.ready_timeout_s, SimClusterError)

        common = [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--tls-cert-file={certs['serving.crt']}",
            f"--tls-private-key-file={certs['serving.key']}",
            "--leader-elect=false",
        ]
        self._spawn(
            "kube-controller-manager",
            [
                *common,
                f"--secure-port={_free_port()}",
                f"--service-account-private-key-file={certs['sa.key']}",
                f"--root-ca-file={certs['ca.crt']}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--use-service-account-credentials=false",
            ],
        )
        self._spawn("kube-scheduler", [*common, f"--secure-port={_free_port()}"])
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=true",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                # Heartbeat through a Lease renewed every 10 s, as kwok's configuration defaults
                # (v1alpha1 NodeLeaseDurationSeconds 40) and kubelets do: the empty --config leaves
                # it 0, and the status heartbeats (every 20-45 s) then miss the node lifecycle
                # controller's 50 s grace on a busy machine, which marks every pod NotReady for good.
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{_free_port()}",
                # An empty configuration: a user's ~/.kwok/kwok.yaml must not change the stages.
                f"--config={self._empty_file('kwok.yaml')}",
            ],
        )
        for index in range(self.nodes):
            self.kubectl("apply", "-f", "-", input=json.dumps(_node(f"{NODE_NAME}-{index}")))
        self._wait_for_cluster()

    def stop(self) -> None:
        """Stop every process (last started first) and remove the working directory."""
        while self._processes:
            self._processes.pop().stop()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # -- use ---------------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients (kubectl, helm, ansible's kubernetes.core) to reach this cluster."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout_s: float = 300
    ) -> subprocess.CompletedProcess:
        """Run this release's kubectl against the cluster."""
        result = subprocess.run(
            [str(self.bin_dir / "kubectl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout_s,
        )
        if check and result.returncode != 0:
            raise SimClusterError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def server_side_apply(
        self,
        docs: list[dict],
        field_manager: str = "income-bundle",
        namespace: str | None = None,
        dry_run: bool = False,
    ) -> str:
        """Server-side apply `docs` (namespace-less namespaced ones into `namespace`); the
        refusals kubectl printed, '' when all were accepted."""
        result = self.kubectl(
            "apply",
            "--server-side",
            f"--field-manager={field_manager}",
            *([f"--namespace={namespace}"] if namespace else []),
            *(["--dry-run=server"] if dry_run else []),
            "-f",
            "-",
            input=yaml.safe_dump_all(docs),
            check=False,
        )
        return "" if result.returncode == 0 else result.stderr

    def install_crds(self, files: list[Path]) -> list[str]:
        """Apply the CRDs in `files` and wait until each is Established; their names."""
        crds = [doc for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]
        if refusals := self.server_side_apply(crds):
            raise SimClusterError(f"CRDs refused:\n{refusals}")
        names = [crd["metadata"]["name"] for crd in crds]
        self.wait_for_established(names)
        return names

    def wait_for_established(self, names: list[str]) -> None:
        """Wait until the API server serves each CRD. (`kubectl wait` gives up at once on a CRD
        whose status.conditions is still null, so this polls.)"""

        def established() -> bool:
            listed = self.get_json("customresourcedefinitions")["items"]
            ready = {
                crd["metadata"]["name"]
                for crd in listed
                if _condition(crd, "Established") == "True"
            }
            return set(names) <= ready

        self.wait_for(f"CRDs established ({len(names)})", established)

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def wait_for(
        self, what: str, ready: Callable[[], bool], timeout_s: float | None = None
    ) -> None:
        """Poll `ready` until it holds, else raise naming `what`."""
        deadline = time.monotonic() + (timeout_s or self.ready_timeout_s)
        while not ready():
            if time.monotonic() > deadline:
                raise SimClusterError(
                    f"{what}: not within {timeout_s or self.ready_timeout_s:.0f} s"
                )
            self._check_alive()
            time.sleep(0.5)

    # -- internals ---------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> ServerProcess:
        assert self.workdir is not None
        process = ServerProcess(
            name, [str(self.bin_dir / name), *args], self.workdir / f"{name}.log"
        )
        self._processes.append(process)
        return process

    def _check_alive(self) -> None:
        for process in self._processes:
            if process.exited():
                raise SimClusterError(f"{process.name} exited; log:\n{process.log_tail()}")

    def _empty_file(self, name: str) -> Path:
        assert self.workdir is not None
        path = self.workdir / name
        path.write_text("")
        return path

    def _get_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.server + path, context=self._ssl, timeout=5) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _write_kubeconfig(self, certs: dict[str, Path]) -> Path:
        assert self.workdir is not None
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "sim",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(certs["ca.crt"]),
                    },
                }
            ],
            "users": [
                {
                    "name": "sim-admin",
                    "user": {
                        "client-certificate": str(certs["admin.crt"]),
                        "client-key": str(certs["admin.key"]),
                    },
                }
            ],
            "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "sim-admin"}}],
            "current-context": "sim",
        }
        path = self.workdir / "kubeconfig"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def _wait_for_cluster(self) -> None:
        """Ready once kwok reports every node Ready and the controller manager has given the
        default namespace its ServiceAccount (pods are admitted only then)."""

        def nodes_ready() -> bool:
            nodes = self.get_json("nodes")["items"]
            return len(nodes) == self.nodes and all(
                _condition(node, "Ready") == "True" for node in nodes
            )

        def default_service_account() -> bool:
            return self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0

        self.wait_for("kwok marks the nodes Ready", nodes_ready)
        self.wait_for(
            "the controller manager creates the default ServiceAccount", default_service_account
        )


def _etcd_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
            return json.load(answer).get("health") == "true"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _condition(obj: dict, kind: str) -> str | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition.get("status")
    return None


def _node(name: str) -> dict:
    """A node for kwok to manage, labelled like a kind node (kwok's own docs label theirs so)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
        },
    }


class SimClusterSettings(CommandSettings):
    """Options of `python -m income_bundle_dev.simcluster` (`make sim-cluster`)."""

    # The prefix of the binaries' cache variable (INCOME_BUNDLE_SIM_CLUSTER_CACHE) too.
    model_config = SettingsConfigDict(env_prefix="INCOME_BUNDLE_SIM_CLUSTER_")

    build_only: bool = Field(False, description="build the binaries and exit")
    nodes: int = Field(1, ge=1, description="simulated nodes")


def main(argv: list[str] | None = None) -> int:
    """`make sim-cluster`: build if needed, start, print how to reach it, run until Ctrl-C."""
    settings = parse_settings(
        SimClusterSettings, argv, prog="python -m income_bundle_dev.simcluster", description=__doc__
    )
    if settings.build_only:
        print(build_binaries())
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with SimCluster(nodes=settings.nodes) as cluster:
        print(
            f"simulated cluster up (real kube-apiserver {KUBERNETES_VERSION} and etcd {ETCD_VERSION}, "
            f"kwok {KWOK_VERSION} nodes: no container ever runs)\n"
            f"  export KUBECONFIG={cluster.kubeconfig}\n"
            f"  export PATH={cluster.bin_dir}:$PATH\n"
            "Ctrl-C stops it and removes its files.",
            flush=True,
        )
        try:
            while not stop.wait(1):
                cluster._check_alive()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
