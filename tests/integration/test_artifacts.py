"""Training and packaging: quality recorded, metadata complete, tampering and version skew refused."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from income_bundle import artifacts
from income_bundle.data import CATEGORY_MAP, data_fingerprint, load_adult
from income_bundle.errors import ArtifactError
from income_bundle.paths import ARTIFACT_FOLDERS, artifact_dir
from income_bundle.runtime.artifact import (
    ALLOW_VERSION_MISMATCH_ENV,
    file_sha256,
    installed_version,
    verify_artifact,
    versions_compatible,
)
from income_bundle.scenarios import make_splits
from income_bundle.training import category_pooling, train, train_classifier


@pytest.mark.parametrize("name", list(ARTIFACT_FOLDERS))
def test_metadata_records_files_versions_data_parameters_metrics(training_report, name):
    folder = artifact_dir(name)
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["name"] == name
    assert metadata["data_sha256"] == data_fingerprint()
    assert metadata["training"] and metadata["metrics"]
    assert metadata["libraries"]["scikit-learn"] == installed_version("scikit-learn")
    assert metadata["libraries"]["alibi-detect"] == installed_version("alibi-detect")
    copies = {f"{artifacts.RUNTIME_PACKAGE}/{module}" for module in artifacts.RUNTIME_MODULES}
    assert copies <= set(metadata["files"])
    on_disk = {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file()
        and p.name not in ("model-settings.json", "metadata.json")
        and "__pycache__" not in p.parts
    }
    assert set(metadata["files"]) == on_disk
    for relative, digest in metadata["files"].items():
        assert file_sha256(folder / relative) == digest


@pytest.mark.parametrize("name", list(ARTIFACT_FOLDERS))
def test_settings_name_is_the_model_name(name):
    settings = json.loads((artifact_dir(name) / "model-settings.json").read_text())
    assert settings["name"] == name
    assert settings["implementation"].startswith(f"{artifacts.RUNTIME_PACKAGE}.runtime.models.")
    assert len(settings["inputs"]) == 1


def test_explainer_explains_the_served_classifier(training_report):
    served = file_sha256(artifact_dir("income") / "model.joblib")
    assert file_sha256(artifact_dir("income-explainer") / "classifier.joblib") == served


def test_quality_bars_are_met_and_recorded(training_report):
    metrics = {
        name: artifacts.read_metadata(artifact_dir(name))["metrics"] for name in ARTIFACT_FOLDERS
    }
    income = metrics["income"]
    assert income["accuracy"] >= 0.80 and income["roc_auc"] >= 0.85
    assert income["accuracy"] > income["baseline_random_forest_50_accuracy"]
    drift = metrics["income-drift"]
    assert drift["batches"] >= 100 and drift["batch_size"] == 20
    assert drift["reference_batches_flagged"] <= 0.07
    assert drift["low_education_batches_flagged"] >= 0.95
    # The stock, unpooled chi-squared test is what flags too many clean batches.
    assert drift["unpooled_reference_batches_flagged"] > 0.07
    outlier = metrics["income-outlier"]
    assert outlier["outlier_recall"] >= 0.90 and outlier["clean_heldout_flagged"] <= 0.05
    assert outlier["iforest_outlier_recall"] < outlier["outlier_recall"]
    assert metrics["income-explainer"]["heldout_row0_anchor_precision"] >= 0.9


def test_second_training_reuses_up_to_date_artifacts(training_report):
    report = train()
    assert report.reused
    assert report.seconds < 30


def test_training_is_seeded():
    splits = make_splits(load_adult())
    first, _ = train_classifier(splits)
    second, _ = train_classifier(splits)
    rows = splits.x_heldout[:500]
    assert np.array_equal(first.predict_proba(rows), second.predict_proba(rows))


def test_pooling_merges_only_rare_categories():
    x_ref = np.zeros((100, 12))
    x_ref[:, 11] = [9] * 85 + [0] * 7 + [1] * 4 + [2] * 4  # Country: US 85%, '?' 7%, 4%, 4%
    table = category_pooling(x_ref, min_frequency=0.10)[11]
    assert table[9] == 9
    assert table[0] == table[1] == table[2] == table[10] == 0  # pooled (15% together)
    assert len(table) == len(CATEGORY_MAP[11])


def test_pool_too_small_joins_least_common_category():
    x_ref = np.zeros((100, 12))
    x_ref[:, 7] = [1] * 60 + [0] * 40  # Sex: nothing rare
    x_ref[:, 6] = [4] * 70 + [2] * 28 + [0] * 2  # Race: the pool (2%) joins "Black" (28%)
    pooling = category_pooling(x_ref, min_frequency=0.10)
    assert pooling[7] == [0, 1]
    assert pooling[6] == [2, 2, 2, 2, 4]


@pytest.fixture
def copied_artifact(training_report, tmp_path):
    def copy(name: str):
        target = tmp_path / name
        shutil.copytree(artifact_dir(name), target)
        return target

    return copy


def test_tampered_file_is_refused_naming_the_file(copied_artifact):
    folder = copied_artifact("income")
    with (folder / "model.joblib").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError) as error:
        verify_artifact(folder, "income")
    message = str(error.value)
    assert "model income" in message and "model.joblib" in message and "tampered" in message


def test_missing_file_is_refused(copied_artifact):
    folder = copied_artifact("income-drift")
    shutil.rmtree(folder / "detector")
    with pytest.raises(ArtifactError, match=r"detector/.* is missing"):
        verify_artifact(folder, "income-drift")


def test_missing_metadata_is_refused(copied_artifact):
    folder = copied_artifact("income-outlier")
    (folder / "metadata.json").unlink()
    with pytest.raises(ArtifactError, match=r"metadata\.json is missing"):
        verify_artifact(folder, "income-outlier")


def test_other_library_version_is_refused(copied_artifact, monkeypatch):
    folder = copied_artifact("income")
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["libraries"]["scikit-learn"] = "1.4.0"
    (folder / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError) as error:
        verify_artifact(folder, "income")
    assert "scikit-learn" in str(error.value) and "built with 1.4.0" in str(error.value)
    monkeypatch.setenv(ALLOW_VERSION_MISMATCH_ENV, "1")
    assert verify_artifact(folder, "income")["name"] == "income"


@pytest.mark.parametrize(
    ("built", "running", "level", "compatible"),
    [
        ("1.5.2", "1.5.2", "exact", True),
        ("1.5.2", "1.5.1", "exact", False),
        ("2.18.0", "2.18.1", "minor", True),
        ("2.18.0", "2.19.0", "minor", False),
        ("1.26.4", "1.24.0", "major", True),
        ("1.26.4", "2.0.0", "major", False),
        (None, "1.0", "major", False),
    ],
)
def test_version_levels(built, running, level, compatible):
    assert versions_compatible(built, running, level) is compatible


def test_mlserver_refuses_to_serve_a_tampered_artifact(copied_artifact):
    from income_bundle.server import MLServer, MLServerError

    folder = copied_artifact("income-drift")
    (folder / "detector" / "x_ref.npy").write_bytes(b"not the reference data")
    server = MLServer(models={"income-drift": folder}, ready_timeout_s=90)
    with pytest.raises(MLServerError) as error:
        server.start()
    server.stop()
    message = str(error.value)
    assert "model income-drift" in message and "detector/x_ref.npy has sha256" in message
    assert "make artifacts" in message


def test_changed_runtime_module_repackages_without_retraining(training_report, tmp_path):
    source = artifact_dir("income-drift")
    folder = artifact_dir("income-drift", tmp_path)
    shutil.copytree(source, folder)
    trained = file_sha256(folder / "detector" / "x_ref.npy")
    runtime = f"{artifacts.RUNTIME_PACKAGE}/runtime/models.py"
    (folder / runtime).write_text("# an older runtime\n")
    with pytest.raises(ArtifactError, match=re.escape(runtime)):
        artifacts.verify("income-drift", tmp_path)

    assert artifacts.refresh_runtime_modules("income-drift", tmp_path) is True
    assert (folder / runtime).read_bytes() == (source / runtime).read_bytes()
    artifacts.verify("income-drift", tmp_path)
    assert file_sha256(folder / "detector" / "x_ref.npy") == trained
    assert artifacts.refresh_runtime_modules("income-drift", tmp_path) is False
