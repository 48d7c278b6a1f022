"""kserve/'s detectors serve the Seldon path's trained artifacts, under the mount the manifests
name. Every other check of kserve/ reads the files alone: tests/unit/test_kserve_manifests.py."""

from __future__ import annotations

import json

import pytest

from income_bundle.kserve.manifests import DETECTORS, MOUNT_PATH, load_documents
from tests.support.manifests import one
from tests.support.paths import ROOT


@pytest.fixture(scope="module")
def docs() -> dict[str, list[dict]]:
    return load_documents(ROOT)


def test_detectors_serve_the_seldon_path_artifacts_under_the_mount(docs, training_report):
    for name in DETECTORS:
        (container,) = one(docs, "Service", name)["spec"]["template"]["spec"]["containers"]
        folder = ROOT / container["command"][2].removeprefix(MOUNT_PATH + "/")
        settings = json.loads((folder / "model-settings.json").read_text())
        assert settings["name"] == name
        artifact = (folder / settings["parameters"]["extra"]["cloudevents"]["artifact"]).resolve()
        assert artifact == ROOT / "detectors" / name
        pythonpath = {e["name"]: e["value"] for e in container["env"]}["PYTHONPATH"]
        assert ROOT / pythonpath.removeprefix(MOUNT_PATH + "/") == artifact
        module = settings["implementation"].rpartition(".")[0]  # package.module.Class
        assert (artifact / f"{module.replace('.', '/')}.py").is_file()
        # The detector reads what the Seldon path's detector reads.
        seldon = json.loads((artifact / "model-settings.json").read_text())
        assert settings["inputs"] == seldon["inputs"] and settings["outputs"] == seldon["outputs"]
