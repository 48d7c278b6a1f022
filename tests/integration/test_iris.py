"""Seldon's first sample, iris, before the income pipeline: trained by `make artifacts` on sklearn's
bundled data, verified like the income artifacts, and served by the local gateway as seldon-mesh
would serve it (header `seldon-model: iris`). Its one name everywhere, read from the files, is
tests/unit/test_iris.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from income_bundle import artifacts
from income_bundle.client import V2Error
from income_bundle.paths import scenario_dir
from income_bundle.training import IRIS_REQUEST
from tests.support.clients import routed

# sklearn's load_iris: target 0, 1, 2 = setosa, versicolor, virginica.
CLASSES = ["setosa", "versicolor", "virginica"]


def iris_request() -> np.ndarray:
    (tensor,) = json.loads((scenario_dir() / IRIS_REQUEST).read_text())["inputs"]
    return np.asarray(tensor["data"], dtype=float).reshape(tensor["shape"])


def test_iris_artifact_verifies_and_is_measured(training_report):
    metadata = artifacts.verify("iris")
    assert metadata["metrics"]["accuracy"] >= 0.9
    assert metadata["metrics"]["heldout_rows"] == 45
    assert metadata["classes"] == CLASSES
    assert len(metadata["input_features"]["names"]) == 4


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_local_gateway_serves_iris(seldon, protocol):
    rows = iris_request()
    assert rows.shape == (3, 4)
    outputs = routed(seldon, "iris", protocol).infer("iris", rows)
    # One held-out row per class, in class order.
    assert outputs["predict"].ravel().tolist() == [0, 1, 2]


def test_local_gateway_rejects_a_malformed_iris_request_naming_the_model(seldon):
    with pytest.raises(V2Error) as error:
        routed(seldon, "iris").infer("iris", iris_request()[:, :3])
    assert error.value.status == "400"
    assert "iris" in error.value.message and "[-1, 4]" in error.value.message
