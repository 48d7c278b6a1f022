"""The stand-in controllers on the simulated cluster: the roles' waits are satisfied by exactly
the conditions the real controllers set, and a wait for a condition the real controller never
sets in that configuration fails. That a stand-in sets every condition a role waits for is
checked from the files alone in tests/unit/test_sim_cluster_standins.py."""

from __future__ import annotations

import pytest
import yaml

from income_bundle_dev.standins import StandInControllers
from tests.support.ansible_files import role_waits as _role_waits
from tests.support.paths import ROOT, UPSTREAM


@pytest.fixture(scope="module")
def controllers(sim_cluster):
    if not (UPSTREAM / "crds").is_dir():
        pytest.skip(f"the pinned upstream CRDs are not beside the checkout ({UPSTREAM / 'crds'})")
    sim_cluster.install_crds(sorted((UPSTREAM / "crds").glob("*.yaml")))
    sim_cluster.kubectl("create", "namespace", "stand-ins")
    with StandInControllers(sim_cluster.kubeconfig) as running:
        yield running
    sim_cluster.kubectl("delete", "namespace", "stand-ins", "--wait=false")
    assert running.error is None, running.error


def _reconciled(cluster, kind: str, name: str) -> bool:
    obj = cluster.get_json("-n", "stand-ins", kind, name)
    return obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]


def _runtime(overrides: list[dict]) -> dict:
    return {
        "apiVersion": "mlops.seldon.io/v1alpha1",
        "kind": "SeldonRuntime",
        "metadata": {"name": "runtime", "namespace": "stand-ins"},
        "spec": {"seldonConfig": "default", "overrides": overrides},
    }


def test_a_disabled_seldon_component_keeps_the_runtime_from_ready(sim_cluster, controllers):
    # Issue 12's defect 2 as the operator would show it: hodometer disabled, Ready never True.
    assert not sim_cluster.server_side_apply([_runtime([{"name": "hodometer", "disable": True}])])
    sim_cluster.wait_for(
        "the stand-in reconciles the runtime",
        lambda: _reconciled(sim_cluster, "seldonruntime", "runtime"),
    )
    conditions = {
        c["type"]: c["status"]
        for c in sim_cluster.get_json("-n", "stand-ins", "seldonruntime", "runtime")["status"][
            "conditions"
        ]
    }
    assert conditions["Ready"] == "Unknown"
    assert "HodometerReady" not in conditions
    waited = sim_cluster.kubectl(
        "-n", "stand-ins", "wait", "seldonruntime/runtime", "--for=condition=Ready",
        "--timeout=3s", check=False,
    )  # fmt: skip
    assert waited.returncode != 0

    # Scaled to zero instead (what the role does now): every component reports, Ready is True.
    assert not sim_cluster.server_side_apply([_runtime([{"name": "hodometer", "replicas": 0}])])
    sim_cluster.kubectl(
        "-n", "stand-ins", "wait", "seldonruntime/runtime", "--for=condition=Ready",
        "--timeout=60s", timeout_s=90,
    )  # fmt: skip


def test_the_income_models_and_pipelines_reach_the_conditions_the_role_waits_for(
    sim_cluster, controllers
):
    docs = []
    for folder in ("models", "pipelines"):
        for path in sorted((ROOT / "seldon-examples" / folder).glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                doc["metadata"]["namespace"] = "stand-ins"
                docs.append(doc)
    assert not sim_cluster.server_side_apply(docs)
    waits = {
        kind: condition for role, kind, condition in _role_waits() if role == "income_pipeline"
    }
    assert set(waits) == {"Model", "Pipeline"}
    for kind, condition in waits.items():
        sim_cluster.kubectl(
            "-n", "stand-ins", "wait", kind.lower(), "--all", f"--for=condition={condition}",
            "--timeout=60s", timeout_s=90,
        )  # fmt: skip


def test_a_server_gets_the_status_fields_its_crd_requires(sim_cluster, controllers):
    # The Server CRD's scale subresource requires status.replicas/selector (and loadedModels):
    # a stand-in writing conditions alone is refused with 422, as the real operator would not be.
    server = {
        "apiVersion": "mlops.seldon.io/v1alpha1",
        "kind": "Server",
        "metadata": {"name": "scaled", "namespace": "stand-ins"},
        "spec": {"serverConfig": "mlserver", "minReplicas": 2},
    }
    assert not sim_cluster.server_side_apply([server])
    sim_cluster.kubectl(
        "-n", "stand-ins", "wait", "server/scaled", "--for=condition=Ready",
        "--timeout=60s", timeout_s=90,
    )  # fmt: skip
    status = sim_cluster.get_json("-n", "stand-ins", "server", "scaled")["status"]
    assert (status["replicas"], status["selector"]) == (2, "seldon-server-name=scaled")
