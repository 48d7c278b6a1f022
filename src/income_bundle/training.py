"""Train, measure and package the five income artifacts and Seldon's iris sample (`make artifacts`).

Every step is seeded; every quality number is measured on held-out data and recorded in the
artifact's metadata. Artifacts whose recipe (data hash, parameters, code, library versions)
matches are reused, so `make test` and `make demo` train at most once.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # OutlierVAE needs Keras 2; before TF loads

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from income_bundle import artifacts, quiet, scenarios
from income_bundle.data import (
    CATEGORICAL_FEATURES,
    CATEGORY_MAP,
    FEATURE_NAMES,
    NUMERIC_FEATURES,
    data_fingerprint,
    ensure_raw_files,
    load_adult,
)
from income_bundle.paths import ARTIFACT_FOLDERS, scenario_dir

__all__ = ["IRIS_REQUEST", "PARAMETERS", "TrainingReport", "current_recipe", "train"]

# Everything that shapes the artifacts; changing a value retrains.
PARAMETERS: dict[str, Any] = {
    "classifier": {
        "type": "HistGradientBoostingClassifier",
        "learning_rate": 0.05,
        "max_iter": 300,
        "max_leaf_nodes": 15,
        "l2_regularization": 1.0,
        "random_state": 0,
    },
    "baseline": {"type": "RandomForestClassifier", "n_estimators": 50, "random_state": 0},
    "drift": {
        "detector": "TabularDrift",
        "p_val": 0.05,
        "correction": "bonferroni",
        "batch_size": 20,
        # Pool categories expected fewer than this many times in a batch (chi-squared validity).
        "min_expected_count": 2,
        "evaluation_batches": 200,
    },
    "outlier": {
        "detector": "OutlierVAE",
        "latent_dim": 2,
        "encoder_units": [25, 10, 5],
        "decoder_units": [5, 10, 25],
        "samples": 5,
        "score_type": "mse",
        "epochs": 5,
        "batch_size": 64,
        "threshold_percentile": 98,
        "seed": 0,
        "comparison": {"detector": "IForest", "n_estimators": 100},
    },
    "explainer": {
        "type": "AnchorTabular",
        "disc_perc": [25, 50, 75],
        "seed": 1,
        "threshold": 0.95,
    },
    # Seldon's first sample model, on sklearn's bundled iris data (no download).
    "iris": {
        "type": "LogisticRegression",
        "max_iter": 1000,
        "heldout_fraction": 0.3,
        "random_state": 0,
    },
}
# A V2 request for iris, one held-out row per class (setosa, versicolor, virginica), beside the
# income scenarios' requests.
IRIS_REQUEST = "iris.json"
# The code that shapes the trained files. The runtime modules only serve them: a change there
# repackages the folders (artifacts.refresh_runtime_modules) without retraining.
_RECIPE_MODULES = ("data.py", "scenarios.py", "training.py")


def _code_sha256() -> str:
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in _RECIPE_MODULES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def current_recipe() -> dict[str, Any]:
    """What determines the artifacts: data, parameters, code and library versions."""
    ensure_raw_files()  # a fresh checkout has no data yet
    return {
        "data_sha256": data_fingerprint(),
        "parameters": PARAMETERS,
        "code_sha256": _code_sha256(),
        "libraries": artifacts.library_versions(),
    }


@dataclass
class TrainingReport:
    reused: bool
    seconds: float
    metrics: dict[str, dict[str, Any]]

    def table(self) -> str:
        lines = [f"{'model':18s} metric{'':26s} value"]
        for model, values in self.metrics.items():
            for key, value in values.items():
                if isinstance(value, int | float):
                    lines.append(f"{model:18s} {key:32s} {value:.4f}")
        return "\n".join(lines)


def _progress(message: str) -> None:
    print(f"[train] {message}", flush=True)


def build_preprocessor():
    """Median imputation, then scaling (numeric) or one-hot over every known code (categorical)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    # Fixed categories keep the output layout stable and make an unknown code an error.
    categories = [list(range(len(CATEGORY_MAP[column]))) for column in CATEGORICAL_FEATURES]
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("onehot", OneHotEncoder(categories=categories, handle_unknown="error")),
        ]
    )
    return ColumnTransformer(
        [("num", numeric, NUMERIC_FEATURES), ("cat", categorical, CATEGORICAL_FEATURES)],
        sparse_threshold=0,
    )


def _classifier_metrics(model, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, roc_auc_score

    scores = model.predict_proba(X)[:, 1]
    return {
        "accuracy": float(accuracy_score(y, model.predict(X))),
        "roc_auc": float(roc_auc_score(y, scores)),
    }


def train_classifier(splits: scenarios.Splits):
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.pipeline import Pipeline

    params = {k: v for k, v in PARAMETERS["classifier"].items() if k != "type"}
    model = Pipeline(
        [
            ("preprocessor", build_preprocessor()),
            ("classifier", HistGradientBoostingClassifier(**params)),
        ]
    ).fit(splits.x_train, splits.y_train)
    baseline_params = {k: v for k, v in PARAMETERS["baseline"].items() if k != "type"}
    baseline = Pipeline(
        [
            ("preprocessor", build_preprocessor()),
            ("classifier", RandomForestClassifier(**baseline_params)),
        ]
    ).fit(splits.x_train, splits.y_train)
    metrics = _classifier_metrics(model, splits.x_heldout, splits.y_heldout)
    for key, value in _classifier_metrics(baseline, splits.x_heldout, splits.y_heldout).items():
        metrics[f"baseline_random_forest_50_{key}"] = value
    metrics["heldout_rows"] = len(splits.y_heldout)
    # The label mix the model was validated on: the reference for target drift from feedback.
    metrics["heldout_positive_rate"] = float(np.mean(splits.y_heldout))
    metrics["train_rows"] = len(splits.y_train)
    return model, metrics


def category_pooling(x_ref: np.ndarray, min_frequency: float) -> dict[int, list[int]]:
    """Per categorical column, a code -> test-category table pooling rare categories.

    Categories with a reference frequency below `min_frequency` share one pooled category; if
    that pool is itself rarer than the threshold it joins the least frequent common category.
    """
    pooling = {}
    for column, names in CATEGORY_MAP.items():
        frequency = np.bincount(x_ref[:, column].astype(int), minlength=len(names)) / len(x_ref)
        rare = [code for code in range(len(names)) if frequency[code] < min_frequency]
        common = [code for code in range(len(names)) if frequency[code] >= min_frequency]
        table = list(range(len(names)))
        if rare:
            target = rare[0]
            if frequency[rare].sum() < min_frequency and common:
                target = min(common, key=lambda code: frequency[code])
            for code in rare:
                table[code] = target
        pooling[column] = table
    return pooling


def apply_pooling(X: np.ndarray, pooling: dict[int, list[int]]) -> np.ndarray:
    X = np.array(X, dtype=np.float64, copy=True)
    for column, table in pooling.items():
        X[:, column] = np.asarray(table)[X[:, column].astype(int)]
    return X


def flag_rate(predict, batches: list[np.ndarray], key: str) -> float:
    return float(np.mean([int(predict(batch)["data"][key]) for batch in batches]))


def train_drift_detector(splits: scenarios.Splits, scenario_data: dict[str, scenarios.Scenario]):
    from alibi_detect.cd import TabularDrift

    params = PARAMETERS["drift"]
    pooling = category_pooling(splits.x_train, params["min_expected_count"] / params["batch_size"])
    detector = TabularDrift(
        apply_pooling(splits.x_train, pooling),
        p_val=params["p_val"],
        correction=params["correction"],
        categories_per_feature={column: None for column in CATEGORY_MAP},
    )

    def predict(batch: np.ndarray) -> dict:
        return detector.predict(apply_pooling(batch, pooling), drift_type="batch")

    def predict_unpooled(batch: np.ndarray) -> dict:
        return unpooled.predict(batch, drift_type="batch")

    unpooled = TabularDrift(
        splits.x_train,
        p_val=params["p_val"],
        correction=params["correction"],
        categories_per_feature={column: None for column in CATEGORY_MAP},
    )
    size, count = params["batch_size"], params["evaluation_batches"]
    reference = scenario_data["reference"].batches(size, count, seed=1)
    drifted = scenario_data["low-education"].batches(size, count, seed=2)
    metrics = {
        "reference_batches_flagged": flag_rate(predict, reference, "is_drift"),
        "low_education_batches_flagged": flag_rate(predict, drifted, "is_drift"),
        "unpooled_reference_batches_flagged": flag_rate(predict_unpooled, reference, "is_drift"),
        "unpooled_low_education_batches_flagged": flag_rate(predict_unpooled, drifted, "is_drift"),
        "batches": count,
        "batch_size": size,
    }
    return detector, pooling, metrics


def _dense_net(input_dim: int, units: list[int], output_dim: int | None = None):
    import tensorflow as tf

    layers = [tf.keras.layers.InputLayer(input_shape=(input_dim,))]
    layers += [tf.keras.layers.Dense(n, activation="relu") for n in units]
    if output_dim is not None:
        layers.append(tf.keras.layers.Dense(output_dim, activation=None))
    return tf.keras.Sequential(layers)


def _outlier_metrics(detector, transform, scenario_data) -> dict[str, float]:
    outliers = scenario_data["outliers"]
    flagged = detector.predict(transform(outliers.X))["data"]["is_outlier"]
    clean = detector.predict(transform(scenario_data["reference"].X))["data"]["is_outlier"]
    low = detector.predict(transform(scenario_data["low-education"].X[:5000]))["data"]["is_outlier"]
    return {
        "outlier_recall": float(flagged[outliers.is_outlier == 1].mean()),
        "clean_heldout_flagged": float(clean.mean()),
        "low_education_flagged": float(low.mean()),
    }


def train_outlier_detector(preprocessor, splits, scenario_data):
    import tensorflow as tf
    from alibi_detect.od import IForest, OutlierVAE

    params = PARAMETERS["outlier"]
    tf.keras.utils.set_random_seed(params["seed"])

    def transform(X: np.ndarray) -> np.ndarray:
        return preprocessor.transform(X).astype(np.float32)

    x_train = transform(splits.x_train)
    width = x_train.shape[1]
    detector = OutlierVAE(
        threshold=None,
        score_type=params["score_type"],
        encoder_net=_dense_net(width, params["encoder_units"]),
        decoder_net=_dense_net(params["latent_dim"], params["decoder_units"], width),
        latent_dim=params["latent_dim"],
        samples=params["samples"],
    )
    detector.fit(
        x_train,
        loss_fn=tf.keras.losses.mse,
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        verbose=False,
    )
    # Unsupervised threshold: a percentile of the clean training scores (no outlier labels needed).
    detector.infer_threshold(x_train, threshold_perc=params["threshold_percentile"])
    metrics = _outlier_metrics(detector, transform, scenario_data)
    metrics["threshold"] = float(detector.threshold)

    comparison = IForest(threshold=None, n_estimators=params["comparison"]["n_estimators"])
    comparison.fit(x_train)
    comparison.infer_threshold(x_train, threshold_perc=params["threshold_percentile"])
    for key, value in _outlier_metrics(comparison, transform, scenario_data).items():
        metrics[f"iforest_{key}"] = value
    return detector, width, metrics


def train_explainer(classifier, splits):
    from alibi.explainers import AnchorTabular

    params = PARAMETERS["explainer"]
    explainer = AnchorTabular(
        classifier.predict,
        feature_names=FEATURE_NAMES,
        categorical_names={column: list(names) for column, names in CATEGORY_MAP.items()},
        seed=params["seed"],
    )
    explainer.fit(splits.x_train, disc_perc=params["disc_perc"])
    explanation = explainer.explain(splits.x_heldout[0], threshold=params["threshold"])
    metrics = {
        "heldout_row0_anchor_precision": float(explanation.precision),
        "heldout_row0_anchor_coverage": float(explanation.coverage),
    }
    return explainer, explanation.anchor, metrics


def train_iris():
    """Scaled logistic regression on sklearn's iris data; accuracy on a stratified held-out set.

    Returns the model, its metrics, the feature and class names, and one held-out row per class.
    """
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    params = PARAMETERS["iris"]
    iris = load_iris()
    x_train, x_heldout, y_train, y_heldout = train_test_split(
        iris.data,
        iris.target,
        test_size=params["heldout_fraction"],
        random_state=params["random_state"],
        stratify=iris.target,
    )
    model = Pipeline(
        [
            ("scale", StandardScaler()),
            ("classifier", LogisticRegression(max_iter=params["max_iter"])),
        ]
    ).fit(x_train, y_train)
    metrics = {
        "accuracy": float(accuracy_score(y_heldout, model.predict(x_heldout))),
        "heldout_rows": len(y_heldout),
        "train_rows": len(y_train),
    }
    one_per_class = np.stack([x_heldout[y_heldout == label][0] for label in range(3)])
    names = {"feature_names": list(iris.feature_names), "class_names": list(iris.target_names)}
    return model, metrics, names, one_per_class


def _features_metadata() -> dict[str, Any]:
    return {
        "names": FEATURE_NAMES,
        "category_map": {str(k): v for k, v in CATEGORY_MAP.items()},
    }


def train(*, force: bool = False, root: Path | None = None) -> TrainingReport:
    """Build the model folders (five income, one iris) and the scenario data, unless up to date."""
    start = time.perf_counter()
    recipe = current_recipe()
    recipe_key = artifacts.recipe_key(recipe)
    scenario_files = [scenario_dir() / f"{name}.npz" for name in scenarios.SCENARIOS]
    scenario_files.append(scenario_dir() / IRIS_REQUEST)
    if not force and artifacts.all_fresh(recipe, root) and all(p.is_file() for p in scenario_files):
        metrics = {
            name: (artifacts.read_metadata(artifacts.artifact_dir(name, root)) or {}).get(
                "metrics", {}
            )
            for name in ARTIFACT_FOLDERS
        }
        refreshed = [n for n in ARTIFACT_FOLDERS if artifacts.refresh_runtime_modules(n, root)]
        if refreshed:
            _progress(f"repackaged with the current runtime modules: {', '.join(refreshed)}")
        _progress("artifacts are up to date (same data, parameters, code and library versions)")
        return TrainingReport(True, time.perf_counter() - start, metrics)

    # TensorFlow, CUDA and alibi-detect chatter off (LOG_LEVEL=debug keeps it), before they load.
    quiet.import_tensorflow()
    import joblib
    from alibi.saving import save_explainer
    from alibi_detect.saving import save_detector

    _progress("loading the Adult data")
    data = load_adult()
    splits = scenarios.make_splits(data)
    scenario_data = scenarios.make_scenarios(splits)
    scenarios.write_scenarios(scenario_data)
    _progress(
        f"{len(splits.y_train)} training rows, {len(splits.y_heldout)} held-out reference rows, "
        f"{len(splits.y_low)} low-education rows; scenarios written to {scenario_dir()}"
    )
    meta = {"recipe_sha256": recipe_key, "data_sha256": recipe["data_sha256"]}
    all_metrics: dict[str, dict[str, Any]] = {}

    def package(name, write, metrics, parameters, extra=None):
        artifacts.package_artifact(
            name,
            write,
            recipe={**meta, "training": parameters},
            metrics=metrics,
            root=root,
            extra=extra,
        )
        all_metrics[name] = metrics
        _progress(f"packaged {name}: {json.dumps(metrics)}")

    _progress("training the classifier (and the RandomForest-50 baseline)")
    classifier, classifier_metrics = train_classifier(splits)
    preprocessor = classifier.named_steps["preprocessor"]
    width = int(preprocessor.transform(splits.x_heldout[:1]).shape[1])
    features = {"input_features": _features_metadata()}
    package(
        "income-preprocess",
        lambda folder: joblib.dump(preprocessor, folder / "model.joblib"),
        {"output_width": width},
        {"preprocessor": "ColumnTransformer(median impute + scale | median impute + one-hot)"},
        features,
    )
    package(
        "income",
        lambda folder: joblib.dump(classifier, folder / "model.joblib"),
        classifier_metrics,
        {"classifier": PARAMETERS["classifier"], "baseline": PARAMETERS["baseline"]},
        features,
    )

    _progress("fitting the drift detector and measuring it on 20-row batches")
    drift, pooling, drift_metrics = train_drift_detector(splits, scenario_data)
    package(
        "income-drift",
        lambda folder: save_detector(drift, str(folder / "detector")),
        drift_metrics,
        {"drift": PARAMETERS["drift"]},
        {**features, "category_pooling": {str(k): v for k, v in pooling.items()}},
    )

    _progress("training the outlier detector (OutlierVAE) and the IForest comparison")
    outlier, outlier_width, outlier_metrics = train_outlier_detector(
        preprocessor, splits, scenario_data
    )
    package(
        "income-outlier",
        lambda folder: save_detector(outlier, str(folder / "detector")),
        outlier_metrics,
        {"outlier": PARAMETERS["outlier"]},
        {"input_features": {"width": outlier_width}},
    )

    _progress("fitting the AnchorTabular explainer")
    explainer, anchor, explainer_metrics = train_explainer(classifier, splits)
    explainer_metrics["heldout_row0_anchor"] = " AND ".join(anchor)

    def write_explainer(folder: Path) -> None:
        save_explainer(explainer, str(folder / "explainer"))
        # The very file the income model serves, so explanations describe that model.
        shutil.copyfile(
            artifacts.artifact_dir("income", root) / "model.joblib", folder / "classifier.joblib"
        )

    package(
        "income-explainer",
        write_explainer,
        explainer_metrics,
        {"explainer": PARAMETERS["explainer"]},
        features,
    )

    _progress("training the iris classifier (Seldon's first sample)")
    iris, iris_metrics, iris_names, iris_rows = train_iris()
    package(
        "iris",
        lambda folder: joblib.dump(iris, folder / "model.joblib"),
        iris_metrics,
        {"iris": PARAMETERS["iris"]},
        {
            "input_features": {"names": iris_names["feature_names"]},
            "classes": iris_names["class_names"],
        },
    )
    (scenario_dir() / IRIS_REQUEST).write_text(json.dumps(scenarios.v2_request(iris_rows)) + "\n")
    seconds = time.perf_counter() - start
    _progress(f"done in {seconds:.1f} s")
    return TrainingReport(False, seconds, all_metrics)
