"""The three scenarios against a live Seldon Core v2 cluster (`make cluster deploy test-cluster`).

Skipped unless SELDON_MESH (host:port of seldon-mesh) answers; nothing here can run without a
cluster, so `make test` only collects it.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request

import numpy as np
import pytest

from income_bundle.client import V2Client
from income_bundle.scenarios import load_scenario
from tests.support.paths import ROOT

MESH = os.environ.get("SELDON_MESH", "")
SELDON_CLI = ROOT / "build" / "cluster" / "bin" / "seldon"


def _mesh_ready() -> bool:
    if not MESH:
        return False
    request = urllib.request.Request(
        f"http://{MESH}/v2/models/income/ready", headers={"seldon-model": "income"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not _mesh_ready(), reason="no live seldon-mesh: set SELDON_MESH=host:port"
)


@pytest.mark.parametrize(("scenario", "outliers_at_least", "outliers_at_most"), [
    ("reference", 0, 2), ("low-education", 0, 2), ("outliers", 12, 20),
])  # fmt: skip
def test_scenario_through_income_production(scenario, outliers_at_least, outliers_at_most):
    client = V2Client(MESH, "rest", headers={"seldon-model": "income-production.pipeline"})
    outputs = client.infer("income-production", load_scenario(scenario).X[:20])
    assert outputs["predict"].shape[0] == 20
    assert outliers_at_least <= int(outputs["is_outlier"].sum()) <= outliers_at_most


def test_iris_first_then_the_income_models():
    """Seldon's simple test: the iris model on the income MLServer Server."""
    import json

    from income_bundle.paths import scenario_dir
    from income_bundle.training import IRIS_REQUEST

    (tensor,) = json.loads((scenario_dir() / IRIS_REQUEST).read_text())["inputs"]
    rows = np.asarray(tensor["data"], dtype=float).reshape(tensor["shape"])
    outputs = V2Client(MESH, "rest", headers={"seldon-model": "iris"}).infer("iris", rows)
    assert outputs["predict"].ravel().tolist() == [0, 1, 2]


def test_seldon_cli_reads_the_drift_verdict():
    if not SELDON_CLI.is_file():
        pytest.skip("no seldon CLI (make cluster downloads it)")
    kafka = os.environ.get("SELDON_KAFKA", "127.0.0.1:9092")
    # make inspect-cluster: the mesh namespace's topics, the scheduler through a port-forward.
    result = subprocess.run(
        ["make", "--no-print-directory", "inspect-cluster", f"KAFKA={kafka}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "seldon.seldon-mesh.model.income-drift.outputs" in result.stdout
    assert "is_drift" in result.stdout
