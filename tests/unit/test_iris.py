"""Seldon's first sample, iris, has one name everywhere: its Model manifest, its model-settings.json
and the folder its storageUri points at (served: tests/integration/test_iris.py)."""

from __future__ import annotations

import json

import yaml

from income_bundle.paths import artifact_dir
from tests.support.paths import ROOT


def test_iris_has_one_name_everywhere():
    manifest = yaml.safe_load((ROOT / "seldon-examples" / "models" / "iris.yaml").read_text())
    settings = json.loads((artifact_dir("iris") / "model-settings.json").read_text())
    assert manifest["metadata"]["name"] == settings["name"] == "iris"
    assert manifest["spec"]["storageUri"] == "/mnt/income-bundle/models/iris"
    assert manifest["spec"]["requirements"] == ["sklearn"]  # what Seldon's MLServer Server offers
