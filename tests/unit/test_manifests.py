"""Seldon manifests: strict validation against the upstream v2.10.2 CRDs, and one name everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from income_bundle.crds import CrdSchemas, find_crd_dir
from income_bundle.paths import ARTIFACT_FOLDERS
from tests.support.paths import ROOT

EXAMPLES = ROOT / "seldon-examples"
MANIFESTS = sorted(EXAMPLES.rglob("*.yaml"))
IN_CLUSTER_ROOT = "/mnt/income-bundle/"


@pytest.fixture(scope="module")
def seldon_crds() -> CrdSchemas:
    directory = find_crd_dir(ROOT)
    if directory is None:
        pytest.skip("no CRD schemas: set CRD_DIR or put shared/crds beside the checkout")
    return CrdSchemas.load([directory / "seldon-core-v2.10.2-crds.yaml"])


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_manifest_validates_strictly_against_seldon_crds(seldon_crds, path):
    assert seldon_crds.errors(load(path)) == []


def test_unknown_field_is_rejected(seldon_crds):
    manifest = load(EXAMPLES / "models" / "income.yaml")
    manifest["spec"]["storageURI"] = manifest["spec"].pop("storageUri")  # a typo
    errors = seldon_crds.errors(manifest)
    assert any("storageURI" in e for e in errors) and any("storageUri" in e for e in errors)


def test_wrong_type_is_rejected(seldon_crds):
    manifest = load(EXAMPLES / "pipelines" / "income-production.yaml")
    manifest["spec"]["steps"][3]["batch"]["size"] = "twenty"
    assert any("steps.3.batch.size" in e for e in seldon_crds.errors(manifest))


@pytest.mark.parametrize("name", list(ARTIFACT_FOLDERS))
def test_model_name_settings_name_and_storage_uri_agree(name):
    manifest = load(EXAMPLES / "models" / f"{name}.yaml")
    assert manifest["metadata"]["name"] == name
    uri = manifest["spec"]["storageUri"]
    assert uri.startswith(IN_CLUSTER_ROOT)
    folder = ROOT / uri.removeprefix(IN_CLUSTER_ROOT)
    assert folder == ROOT / ARTIFACT_FOLDERS[name]
    assert json.loads((folder / "model-settings.json").read_text())["name"] == name


def test_pipeline_steps_are_models_of_the_bundle():
    for path in sorted((EXAMPLES / "pipelines").glob("*.yaml")):
        for step in load(path)["spec"]["steps"]:
            assert (EXAMPLES / "models" / f"{step['name']}.yaml").is_file(), (path.name, step)
