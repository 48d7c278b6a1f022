"""The shipped models leave MLServer's adaptive batching off (why, shown on real MLServer:
tests/integration/test_adaptive_batching.py)."""

from __future__ import annotations

import json

from income_bundle.paths import ARTIFACT_FOLDERS, project_root


def test_shipped_models_do_not_batch_adaptively():
    folders = [project_root() / group for group in ("models", "detectors")]
    settings = [json.loads(p.read_text()) for f in folders for p in f.glob("*/model-settings.json")]
    assert len(settings) == len(ARTIFACT_FOLDERS)
    for model in settings:
        assert model.get("max_batch_size", 1) <= 1, model["name"]
