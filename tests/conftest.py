"""Fixture chain: data -> trained artifacts -> one real MLServer per session -> clients.

Tiers come from the folder: every test under tests/unit is marked `unit`, under tests/integration
`integration`, under tests/cluster `cluster` (`pytest -m unit` is `make test-fast`)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from income_bundle.client import V2Client
from income_bundle.scenarios import SCENARIOS, load_scenario
from income_bundle.server import MLServer

TIERS = ("unit", "integration", "cluster")
_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Mark each test with the tier of its folder; a test outside the tiers' folders is an error."""
    for item in items:
        try:
            tier = Path(item.path).resolve().relative_to(_TESTS).parts[0]
        except ValueError:
            continue
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/{{{','.join(TIERS)}}}/")
        item.add_marker(tier)


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

    from tests.support.paths import ROOT

    bundle = tmp_path_factory.mktemp("bundle")
    shutil.copytree(ROOT / "seldon-examples", bundle, dirs_exist_ok=True)
    for path in (ROOT / "tests" / "data" / "pipelines").glob("*.yaml"):
        shutil.copy(path, bundle / "pipelines" / path.name)
    return bundle


@pytest.fixture(scope="session")
def seldon(training_report, seldon_bundle, tmp_path_factory):
    """`income-bundle serve` in its own process: real MLServer behind the local gateway."""
    from income_bundle.seldon.local import LocalSeldon, ServeSettings

    config = ServeSettings(bundle_dir=seldon_bundle, state_dir=tmp_path_factory.mktemp("state"))
    with LocalSeldon(config) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def mesh_rest(seldon):
    """A REST client of the gateway; set `.headers['seldon-model']` per call via `routed`."""
    return seldon.http_url.removeprefix("http://")


@pytest.fixture(scope="session")
def rendered(tmp_path_factory):
    """Every template the Ansible roles apply, rendered with the roles' defaults (once)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.support.paths import ROOT

    bin_dir = Path(sys.executable).parent
    directory = tmp_path_factory.mktemp("rendered")
    result = subprocess.run(
        [str(bin_dir / "ansible-playbook"), str(ROOT / "tests" / "ansible" / "render.yaml"),
         "-e", f"render_dir={directory}", "-e", f"repo_root={ROOT}"],
        cwd=ROOT / "ansible", capture_output=True, text=True, timeout=300,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


@pytest.fixture(scope="session")
def dashboard() -> dict:
    """The Grafana dashboard as income_bundle.monitoring.dashboard builds it (not the file)."""
    from income_bundle.monitoring.dashboard import build_dashboard

    return build_dashboard()


@pytest.fixture(scope="session")
def sim_cluster():
    """The simulated cluster (real kube-apiserver and etcd, kwok's simulated kubelets), once per
    session. Skips naming what is missing (Go, to build the binaries once)."""
    from income_bundle_dev.simcluster import SimCluster, unavailable_reason

    if reason := unavailable_reason():
        pytest.skip(reason)
    with SimCluster() as cluster:
        yield cluster
