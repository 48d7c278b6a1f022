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
