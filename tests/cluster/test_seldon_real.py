"""Seldon Core v2's own components, built from the release's source, serve the shipped Models.

Seldon's CLI loads every Model in seldon-examples/models/ into Seldon's scheduler, Seldon's agent
has rclone fetch each storageUri (the manifests unchanged: /mnt/income-bundle is the checkout in
rclone's mount namespace) and loads it into a real MLServer, and the income model answers the
three scenarios through the agent's reverse proxy exactly as MLServer answers them directly.
(income_bundle_dev.seldon_core runs them; Envoy, Kafka and the dataflow engine are not run.)
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import yaml

from income_bundle.client import V2Client
from income_bundle.scenarios import SCENARIOS, load_scenario
from income_bundle_dev import seldon_core
from income_bundle_dev.seldon_core import SeldonCore
from tests.support.paths import ROOT

pytestmark = pytest.mark.skipif(
    seldon_core.unavailable_reason() is not None, reason=str(seldon_core.unavailable_reason())
)

MANIFESTS = sorted((ROOT / "seldon-examples" / "models").glob("*.yaml"))
# The first version of a Model is <name>_1 on its server (what Envoy's route sets as the header).
FIRST_VERSION = 1
LOAD_TIMEOUT_S = 600


def _model_name(manifest) -> str:
    return yaml.safe_load(manifest.read_text())["metadata"]["name"]


@pytest.fixture(scope="module")
def seldon(training_report):
    with SeldonCore() as seldon:
        yield seldon


@pytest.fixture(scope="module")
def loaded_models(seldon) -> list[str]:
    """Every Model loaded with `seldon model load`, then waited for with `seldon model status -w`."""
    for manifest in MANIFESTS:
        loaded = seldon.seldon("model", "load", "-f", str(manifest), "--force")
        assert loaded.returncode == 0, f"seldon model load -f {manifest}:\n{loaded.stderr}"
    names = [_model_name(manifest) for manifest in MANIFESTS]
    for name in names:
        waited = seldon.seldon(
            "model", "status", name, "-w", "ModelAvailable", "-t", str(LOAD_TIMEOUT_S),
            timeout_s=LOAD_TIMEOUT_S + 60,
        )  # fmt: skip
        assert waited.returncode == 0, (
            f"{name} not ModelAvailable: {waited.stdout}{waited.stderr}\n"
            f"agent log:\n{seldon.log_tail('agent')}"
        )
    return names


def test_every_shipped_model_reaches_model_available(seldon, loaded_models):
    assert {path.stem for path in MANIFESTS} == set(loaded_models)  # file name = Model name
    for name in loaded_models:
        status = seldon.seldon("model", "status", name)
        assert status.returncode == 0, status.stderr
        (version,) = json.loads(status.stdout)["versions"]
        assert version["state"]["state"] == "ModelAvailable", version
        # On the one MLServer replica the agent registered, as version 1.
        assert version["serverName"] == seldon_core.SERVER_NAME
        assert version["version"] == FIRST_VERSION


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_income_answers_through_the_agent_as_mlserver_does(seldon, loaded_models, rest, scenario):
    rows = load_scenario(scenario).X[:20]
    internal_name = f"income_{FIRST_VERSION}"
    proxy = V2Client(
        seldon.url("agent-http").removeprefix("http://"),
        "rest",
        headers={"seldon-internal-model": internal_name},
    )
    try:
        through_seldon = proxy.infer("income", rows)
    finally:
        proxy.close()
    direct = rest.infer("income", rows)  # the session's MLServer over the same model folder
    assert through_seldon.keys() == direct.keys()
    for name, expected in direct.items():
        assert through_seldon[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(through_seldon[name], expected, err_msg=name)


def _processes_in_pid_namespace(namespace: str) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "ns" / "pid") == namespace:
                pids.add(int(entry.name))
        except OSError:
            continue  # ended meanwhile, or not ours to read
    return pids


def test_stop_leaves_no_process_no_port_and_no_file(training_report):
    seldon = SeldonCore()
    with seldon:
        namespace = os.readlink(f"/proc/{seldon._holder_pid}/ns/pid")
        inside = _processes_in_pid_namespace(namespace)
        started = {process.pid for process in seldon._processes}
        workdir, ports = seldon.workdir, dict(seldon.ports)
        # scheduler, rclone, MLServer and its workers, the agent, the forwarder, the holder
        assert len(inside) >= 6
    alive = {pid for pid in inside | started if Path(f"/proc/{pid}").exists()}
    assert not alive, f"still running after stop: {alive}"
    assert not workdir.exists()
    for name, port in ports.items():
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"{name} port {port} still open"
