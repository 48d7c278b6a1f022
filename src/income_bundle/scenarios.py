"""Reference, drift and outlier data, split as in Seldon's income sample.

- reference: "high education" rows (Bachelors, Masters, Doctorate), split 60/40 into the training
  set every model is fitted on and the held-out rows every quality number is measured on;
- low-education: "Dropout" and "High School grad" rows, the drift scenario (Seldon's sample also
  puts Bachelors in this group, so some of its drift rows are reference rows; here the groups
  are disjoint);
- outliers: held-out reference rows with outliers injected into the numeric features
  (alibi-detect's `inject_outlier_tabular`, every row selected, n_std 8, min_std 6).

Training writes the three scenarios to `<data>/scenarios/<name>.npz` (X, y and, for outliers,
`is_outlier`), and a ready V2 request of their first 20 rows as `<name>.json`, like Seldon's
`infer-data`; every client and test reads them from there.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from income_bundle.data import CATEGORY_MAP, FEATURE_NAMES, NUMERIC_FEATURES, AdultData
from income_bundle.errors import DataError
from income_bundle.paths import scenario_dir

__all__ = [
    "DRIFT_EDUCATION",
    "REFERENCE_EDUCATION",
    "SCENARIOS",
    "Scenario",
    "Splits",
    "load_scenario",
    "make_scenarios",
    "make_splits",
    "v2_request",
    "write_scenarios",
]

REFERENCE_EDUCATION = ("Bachelors", "Masters", "Doctorate")
DRIFT_EDUCATION = ("Dropout", "High School grad")
HELD_OUT_FRACTION = 0.4
SPLIT_SEED = 5
OUTLIER_SEED = 0
OUTLIER_N_STD = 8.0
OUTLIER_MIN_STD = 6.0
SCENARIOS = ("reference", "low-education", "outliers")
REQUEST_ROWS = 20


@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_heldout: np.ndarray
    y_heldout: np.ndarray
    x_low: np.ndarray
    y_low: np.ndarray


@dataclass(frozen=True)
class Scenario:
    name: str
    X: np.ndarray
    y: np.ndarray
    is_outlier: np.ndarray  # 1 where an outlier was injected (all 0 outside "outliers")

    def batches(self, size: int, count: int, seed: int = 0) -> list[np.ndarray]:
        """`count` random batches of `size` distinct rows, reproducible for a seed."""
        rng = np.random.default_rng(seed)
        return [self.X[rng.choice(len(self.X), size, replace=False)] for _ in range(count)]


def _education_mask(data: AdultData, groups: tuple[str, ...]) -> np.ndarray:
    column = FEATURE_NAMES.index("Education")
    codes = [CATEGORY_MAP[column].index(group) for group in groups]
    return np.isin(data.X[:, column].astype(int), codes)


def make_splits(data: AdultData) -> Splits:
    from sklearn.model_selection import train_test_split

    high = _education_mask(data, REFERENCE_EDUCATION)
    low = _education_mask(data, DRIFT_EDUCATION)
    x_train, x_heldout, y_train, y_heldout = train_test_split(
        data.X[high], data.y[high], test_size=HELD_OUT_FRACTION, random_state=SPLIT_SEED
    )
    return Splits(x_train, y_train, x_heldout, y_heldout, data.X[low], data.y[low])


def inject_outliers(X: np.ndarray, percent: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """alibi-detect's tabular outlier injection on the numeric features, seeded."""
    from alibi_detect.utils.perturbation import inject_outlier_tabular

    # inject_outlier_tabular draws from both global generators.
    random.seed(seed)
    np.random.seed(seed)
    bunch = inject_outlier_tabular(
        X.copy(),
        NUMERIC_FEATURES,
        percent,
        y=np.zeros(len(X), dtype=np.int64),
        n_std=OUTLIER_N_STD,
        min_std=OUTLIER_MIN_STD,
    )
    return bunch.data.astype(np.float64), bunch.target.astype(np.int64)


def make_scenarios(splits: Splits) -> dict[str, Scenario]:
    x_outliers, is_outlier = inject_outliers(splits.x_heldout, 100, OUTLIER_SEED)
    return {
        "reference": Scenario(
            "reference", splits.x_heldout, splits.y_heldout, np.zeros(len(splits.y_heldout), int)
        ),
        "low-education": Scenario(
            "low-education", splits.x_low, splits.y_low, np.zeros(len(splits.y_low), int)
        ),
        "outliers": Scenario("outliers", x_outliers, splits.y_heldout, is_outlier),
    }


def v2_request(X: np.ndarray, input_name: str = "predict", datatype: str = "FP32") -> dict:
    """An Open Inference Protocol (V2) JSON request carrying rows of the 12 features."""
    X = np.asarray(X, dtype=np.float64)
    return {
        "inputs": [
            {
                "name": input_name,
                "datatype": datatype,
                "shape": list(X.shape),
                "data": X.ravel().tolist(),
            }
        ]
    }


def write_scenarios(scenarios: dict[str, Scenario], directory: Path | None = None) -> Path:
    directory = directory or scenario_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for name, scenario in scenarios.items():
        np.savez_compressed(
            directory / f"{name}.npz", X=scenario.X, y=scenario.y, is_outlier=scenario.is_outlier
        )
        request = v2_request(scenario.X[:REQUEST_ROWS])
        (directory / f"{name}.json").write_text(json.dumps(request) + "\n")
    return directory


def load_scenario(name: str, directory: Path | None = None) -> Scenario:
    if name not in SCENARIOS:
        raise DataError(f"unknown scenario {name!r}; expected one of {', '.join(SCENARIOS)}")
    path = (directory or scenario_dir()) / f"{name}.npz"
    if not path.is_file():
        raise DataError(f"scenario data {path} is missing: run 'make artifacts' to write it")
    with np.load(path) as archive:
        return Scenario(name, archive["X"], archive["y"], archive["is_outlier"])
