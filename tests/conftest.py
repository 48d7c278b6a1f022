"""Fixture chain: data -> trained artifacts -> one real MLServer per session -> clients."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from income_bundle.client import V2Client
from income_bundle.scenarios import SCENARIOS, load_scenario
from income_bundle.server import MLServer


@pytest.fixture(scope="session")
def training_report():
    """Train once per session, or reuse artifacts whose recipe matches."""
    from income_bundle.training import train

    return train()


@pytest.fixture(scope="session")
def scenario(training_report):
    return {name: load_scenario(name) for name in SCENARIOS}


@pytest.fixture(scope="session")
def mlserver(training_report):
    with MLServer() as server:
        yield server


@pytest.fixture(scope="session")
def rest(mlserver):
    client = V2Client(mlserver.http_url.removeprefix("http://"), "rest")
    yield client
    client.close()


@pytest.fixture(scope="session")
def grpc(mlserver):
    client = V2Client(mlserver.grpc_address, "grpc")
    yield client
    client.close()


@pytest.fixture(scope="session", params=["rest", "grpc"])
def client(request, rest, grpc):
    return rest if request.param == "rest" else grpc


@pytest.fixture(scope="session")
def seldon_bundle(tmp_path_factory):
    """The shipped manifests plus the small pipelines the gateway tests use."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bundle = tmp_path_factory.mktemp("bundle")
    shutil.copytree(root / "seldon-examples", bundle, dirs_exist_ok=True)
    for path in (root / "tests" / "data" / "pipelines").glob("*.yaml"):
        shutil.copy(path, bundle / "pipelines" / path.name)
    return bundle


@pytest.fixture(scope="session")
def seldon(training_report, seldon_bundle, tmp_path_factory):
    """`income-bundle serve` in its own process: real MLServer behind the local gateway."""
    from income_bundle.seldon.local import LocalSeldon, ServeConfig

    config = ServeConfig(bundle_dir=seldon_bundle, state_dir=tmp_path_factory.mktemp("state"))
    with LocalSeldon(config) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def mesh_rest(seldon):
    """A REST client of the gateway; set `.headers['seldon-model']` per call via `routed`."""
    return seldon.http_url.removeprefix("http://")


def routed(seldon, target: str, protocol: str = "rest") -> V2Client:
    """A tritonclient-based client that sends the seldon-model header, as for seldon-mesh."""
    address = seldon.http_url.removeprefix("http://") if protocol == "rest" else seldon.grpc_address
    return V2Client(address, protocol, headers={"seldon-model": target})


@pytest.fixture(scope="session")
def rendered(tmp_path_factory):
    """Every template the Ansible roles apply, rendered with the roles' defaults (once)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bin_dir = Path(sys.executable).parent
    directory = tmp_path_factory.mktemp("rendered")
    result = subprocess.run(
        [str(bin_dir / "ansible-playbook"), str(root / "tests" / "ansible" / "render.yaml"),
         "-e", f"render_dir={directory}", "-e", f"repo_root={root}"],
        cwd=root / "ansible", capture_output=True, text=True, timeout=300,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


@pytest.fixture(scope="session")
def sim_cluster():
    """The simulated cluster (real kube-apiserver and etcd, kwok's simulated kubelets), once per
    session. Skips naming what is missing (Go, to build the binaries once)."""
    from income_bundle.simcluster import SimCluster, unavailable_reason

    if reason := unavailable_reason():
        pytest.skip(reason)
    with SimCluster() as cluster:
        yield cluster
