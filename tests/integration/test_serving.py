"""All five models on one real MLServer, over REST and gRPC: outputs and measured quality."""

from __future__ import annotations

import json

import numpy as np
import pytest

ROWS = 20


def test_classifier_outputs(client, scenario):
    outputs = client.infer("income", scenario["reference"].X[:ROWS])
    assert list(outputs) == ["predict"]
    assert outputs["predict"].shape == (ROWS, 1)
    assert outputs["predict"].dtype == np.int64
    assert set(np.unique(outputs["predict"])) <= {0, 1}


def test_classifier_probabilities_on_request(client, scenario):
    outputs = client.infer("income", scenario["reference"].X[:ROWS], outputs=["predict_proba"])
    assert outputs["predict_proba"].shape == (ROWS, 2)
    assert np.allclose(outputs["predict_proba"].sum(axis=1), 1.0)


def test_preprocessor_outputs_the_outlier_detectors_input(client, scenario):
    outputs = client.infer("income-preprocess", scenario["reference"].X[:ROWS])
    assert list(outputs) == ["transform"]
    assert outputs["transform"].shape == (ROWS, 57)
    assert outputs["transform"].dtype == np.float64


def test_outlier_detector_outputs(client, scenario):
    features = client.infer("income-preprocess", scenario["outliers"].X[:ROWS])["transform"]
    outputs = client.infer("income-outlier", features, input_name="transform", datatype="FP64")
    assert set(outputs) == {"is_outlier", "instance_score"}
    assert outputs["is_outlier"].shape == (1, ROWS)
    assert outputs["instance_score"].shape == (1, ROWS)


def test_drift_detector_outputs(client, scenario):
    outputs = client.infer("income-drift", scenario["reference"].X[:ROWS])
    assert set(outputs) == {"is_drift", "p_val", "distance", "threshold"}
    assert outputs["is_drift"].shape == (1, 1)
    assert outputs["p_val"].shape == (1, 12)
    assert outputs["distance"].shape == (1, 12)


def test_explainer_returns_a_precise_anchor(client, scenario):
    outputs = client.infer("income-explainer", scenario["reference"].X[:1])
    assert outputs["explanation"].shape == (1, 1)
    raw = outputs["explanation"].ravel()[0]
    explanation = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    assert explanation["meta"]["name"] == "AnchorTabular"
    assert explanation["data"]["anchor"]
    assert explanation["data"]["precision"] >= 0.9


def _chunks(X: np.ndarray, size: int = 1000):
    return [X[i : i + size] for i in range(0, len(X), size)]


def test_classifier_quality_through_mlserver(grpc, scenario):
    from sklearn.metrics import accuracy_score, roc_auc_score

    heldout = scenario["reference"]
    proba = np.concatenate(
        [
            grpc.infer("income", X, outputs=["predict_proba"])["predict_proba"]
            for X in _chunks(heldout.X)
        ]
    )
    assert accuracy_score(heldout.y, proba.argmax(axis=1)) >= 0.80
    assert roc_auc_score(heldout.y, proba[:, 1]) >= 0.85


@pytest.mark.parametrize(
    ("name", "low", "high"), [("reference", 0.0, 0.07), ("low-education", 0.95, 1.0)]
)
def test_drift_rates_over_100_batches_of_20(client, scenario, name, low, high):
    batches = scenario[name].batches(size=20, count=100, seed=11)
    flags = [int(client.infer("income-drift", batch)["is_drift"].ravel()[0]) for batch in batches]
    assert low <= np.mean(flags) <= high


def test_outlier_rates_through_mlserver(grpc, scenario):
    def flags(X):
        features = grpc.infer("income-preprocess", X)["transform"]
        result = grpc.infer("income-outlier", features, input_name="transform", datatype="FP64")
        return result["is_outlier"].ravel()

    outliers = scenario["outliers"]
    flagged = np.concatenate([flags(X) for X in _chunks(outliers.X)])
    assert flagged[outliers.is_outlier == 1].mean() >= 0.90
    clean = np.concatenate([flags(X) for X in _chunks(scenario["reference"].X)])
    assert clean.mean() <= 0.05
