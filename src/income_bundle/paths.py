"""Where the bundle keeps its data and artifacts; each folder can be moved by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ARTIFACT_FOLDERS", "artifact_dir", "data_dir", "project_root", "scenario_dir"]

# Model name -> folder under the project root (MLServer's one-folder-per-model layout).
ARTIFACT_FOLDERS = {
    "income-preprocess": "models/income-preprocess",
    "income": "models/income",
    "income-drift": "detectors/income-drift",
    "income-outlier": "detectors/income-outlier",
    "income-explainer": "models/income-explainer",
    "iris": "models/iris",  # Seldon's first sample, served beside the income models
}


def project_root() -> Path:
    """The checkout this package is installed from (an editable install), or INCOME_BUNDLE_ROOT."""
    if root := os.environ.get("INCOME_BUNDLE_ROOT"):
        return Path(root).resolve()
    return Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """Downloaded raw data and derived scenario data (INCOME_DATA_DIR, default <root>/data)."""
    return Path(os.environ.get("INCOME_DATA_DIR") or project_root() / "data")


def scenario_dir() -> Path:
    return data_dir() / "scenarios"


def artifact_dir(model_name: str, root: Path | None = None) -> Path:
    """The MLServer model folder of one of the bundle's models."""
    try:
        relative = ARTIFACT_FOLDERS[model_name]
    except KeyError:
        known = ", ".join(ARTIFACT_FOLDERS)
        raise KeyError(f"unknown model {model_name!r}; the bundle has: {known}") from None
    return (root or project_root()) / relative
