"""What the runtimes export on MLServer's metrics endpoint (through its multiprocess collector)."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from income_bundle.data import FEATURE_NAMES

ROWS = 20
FEATURES = list(FEATURE_NAMES)


def scrape(mlserver) -> dict[tuple[str, tuple], float]:
    """Every sample on the metrics endpoint, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(mlserver.metrics_url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_classifier_counts_predictions_per_class(rest, mlserver, scenario):
    before = scrape(mlserver)
    predicted = rest.infer("income", scenario["reference"].X[:ROWS])["predict"].ravel()
    after = scrape(mlserver)
    for index, name in enumerate(["<=50K", ">50K"]):
        delta = value(after, "income_predictions_total", model="income", **{"class": name})
        delta -= value(before, "income_predictions_total", model="income", **{"class": name})
        assert delta == np.count_nonzero(predicted == index)
    assert not any(
        key[0] == "income_predictions_total" and ("model", "income-preprocess") in key[1]
        for key in after
    ), "the preprocessor has no classes to count"


def test_drift_run_exports_verdict_and_per_feature_p_values(rest, mlserver, scenario):
    before = scrape(mlserver)
    outputs = rest.infer("income-drift", scenario["reference"].X[:ROWS])
    after = scrape(mlserver)
    assert value(after, "income_drift_runs_total", model="income-drift") == (
        value(before, "income_drift_runs_total", model="income-drift") + 1
    )
    assert value(after, "income_drift_rows_total", model="income-drift") == (
        value(before, "income_drift_rows_total", model="income-drift") + ROWS
    )
    assert value(after, "income_drift_is_drift", model="income-drift") == outputs["is_drift"][0]
    assert value(after, "income_drift_threshold", model="income-drift") == pytest.approx(
        float(outputs["threshold"][0])
    )
    for feature, p_value, distance in zip(
        FEATURES, outputs["p_val"].ravel(), outputs["distance"].ravel(), strict=True
    ):
        exported = value(
            after, "income_drift_feature_p_value", model="income-drift", feature=feature
        )
        assert exported == pytest.approx(float(p_value), rel=1e-6)
        exported = value(
            after, "income_drift_feature_distance", model="income-drift", feature=feature
        )
        assert exported == pytest.approx(float(distance), rel=1e-6)


def test_drifted_batch_sets_is_drift_and_names_the_drifting_feature(rest, mlserver, scenario):
    before = scrape(mlserver)
    rest.infer("income-drift", scenario["low-education"].X[:ROWS])
    after = scrape(mlserver)
    assert value(after, "income_drift_is_drift", model="income-drift") == 1
    assert value(after, "income_drift_detected_runs_total", model="income-drift") == (
        value(before, "income_drift_detected_runs_total", model="income-drift") + 1
    )
    threshold = value(after, "income_drift_threshold", model="income-drift")
    p_education = value(
        after, "income_drift_feature_p_value", model="income-drift", feature="Education"
    )
    assert p_education < threshold


def test_outlier_detector_counts_rows_outliers_and_scores(rest, mlserver, scenario):
    outliers = scenario["outliers"]
    features = rest.infer("income-preprocess", outliers.X[:ROWS])["transform"]
    before = scrape(mlserver)
    outputs = rest.infer("income-outlier", features, input_name="transform", datatype="FP64")
    after = scrape(mlserver)

    def delta(name, **labels):
        return value(after, name, model="income-outlier", **labels) - value(
            before, name, model="income-outlier", **labels
        )

    flagged = int(outputs["is_outlier"].sum())
    assert flagged > 0
    assert delta("income_outlier_rows_total") == ROWS
    assert delta("income_outlier_outliers_total") == flagged
    assert delta("income_outlier_score_count") == ROWS
    assert delta("income_outlier_score_sum") == pytest.approx(
        float(outputs["instance_score"].sum()), rel=1e-5
    )
    # Every flagged row scored above the threshold bucket (0.45).
    assert delta("income_outlier_score_bucket", le="0.45") <= ROWS - flagged


def test_metric_names_follow_prometheus_conventions(rest, mlserver, scenario):
    samples = scrape(mlserver)
    ours = {name for name, _ in samples if name.startswith("income_")}
    assert ours, "no income_* metrics exported"
    for name in ours:
        assert name == name.lower()
    counters = {n for n in ours if n.endswith("_total")}
    assert {"income_drift_runs_total", "income_outlier_rows_total"} <= counters
    label_names = {label for _, labels in samples for label, _value in labels}
    assert "request_id" not in label_names and "id" not in label_names
