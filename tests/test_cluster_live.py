"""The three scenarios against a live Seldon Core v2 cluster (`make cluster deploy test-cluster`).

Skipped unless SELDON_MESH (host:port of seldon-mesh) answers; nothing here can run without a
cluster, so `make test` only collects it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from income_bundle.client import V2Client
from income_bundle.scenarios import load_scenario

MESH = os.environ.get("SELDON_MESH", "")
ROOT = Path(__file__).resolve().parents[1]
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


def test_seldon_cli_reads_the_drift_verdict():
    if not SELDON_CLI.is_file() and not shutil.which("seldon"):
        pytest.skip("no seldon CLI (make cluster downloads it)")
    cli = str(SELDON_CLI) if SELDON_CLI.is_file() else "seldon"
    kafka = os.environ.get("SELDON_KAFKA", "127.0.0.1:9092")
    result = subprocess.run(
        [cli, "pipeline", "inspect", "income-production.income-drift.outputs.is_drift", "--kafka-broker", kafka],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "is_drift" in result.stdout
