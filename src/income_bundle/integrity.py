"""Integrity and input checks shared by the income model folders' runtimes.

Packaging copies this file into every model folder as `income_integrity.py`, beside
`income_runtimes.py`. It imports only the standard library and numpy, so the bundle's own tools
and tests can use it without loading MLServer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ALLOW_VERSION_MISMATCH_ENV",
    "METADATA_FILE",
    "ArtifactIntegrityError",
    "BadRequestError",
    "Tensor",
    "check_request",
    "file_sha256",
    "installed_version",
    "verify_artifact",
    "versions_compatible",
]

METADATA_FILE = "metadata.json"
NUMERIC_DATATYPES = ("FP32", "FP64", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT8")
# Version checks can be relaxed for experiments; a mismatch is then logged, not fatal.
ALLOW_VERSION_MISMATCH_ENV = "INCOME_ALLOW_VERSION_MISMATCH"


class ArtifactIntegrityError(Exception):
    """The model folder does not match its metadata: tampered, incomplete or other versions."""


class BadRequestError(ValueError):
    """A request the model cannot take; the message names the model, the input and the problem."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def installed_version(distribution: str) -> str | None:
    try:
        return importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        return None


VERSION_LEVELS = {"exact": None, "minor": 2, "major": 1}


def versions_compatible(built: str | None, running: str, level: str) -> bool:
    """Whether `running` may load what `built` saved: same version, or same leading parts."""
    if built is None:
        return False
    parts = VERSION_LEVELS[level]
    return built.split(".")[:parts] == running.split(".")[:parts] if parts else built == running


def verify_artifact(folder: Path | str, model_name: str) -> dict[str, Any]:
    """Check every file's sha256 and the pinned library versions; return the metadata."""
    folder = Path(folder)
    metadata_path = folder / METADATA_FILE
    rebuild = "rebuild it with 'make artifacts'"
    try:
        metadata = json.loads(metadata_path.read_text())
    except FileNotFoundError:
        raise ArtifactIntegrityError(
            f"model {model_name}: {metadata_path} is missing, so the artifact cannot be verified; "
            f"{rebuild}"
        ) from None
    except json.JSONDecodeError as e:
        raise ArtifactIntegrityError(
            f"model {model_name}: {metadata_path} is not JSON ({e}); {rebuild}"
        ) from e

    problems = []
    for relative, expected in sorted(metadata.get("files", {}).items()):
        path = folder / relative
        if not path.is_file():
            problems.append(f"{relative} is missing")
        elif (actual := file_sha256(path)) != expected:
            problems.append(f"{relative} has sha256 {actual[:12]}…, expected {expected[:12]}…")
    if not metadata.get("files"):
        problems.append(f"{METADATA_FILE} lists no files")
    if problems:
        raise ArtifactIntegrityError(
            f"model {model_name}: artifact {folder} does not match its {METADATA_FILE} "
            f"(tampered or incomplete): {'; '.join(problems)}; {rebuild}"
        )

    mismatches = []
    for distribution, level in sorted(metadata.get("version_checks", {}).items()):
        built = metadata.get("libraries", {}).get(distribution)
        running = installed_version(distribution)
        if running is None or not versions_compatible(built, running, level):
            mismatches.append(
                f"{distribution} {running or 'not installed'} (built with {built}, "
                f"{level} version must match)"
            )
    if mismatches:
        message = (
            f"model {model_name}: artifact {folder} was built with other library versions than "
            f"this server runs: {'; '.join(mismatches)}; install the versions in requirements.txt "
            f"or {rebuild} with the server's versions"
        )
        if os.environ.get(ALLOW_VERSION_MISMATCH_ENV) != "1":
            raise ArtifactIntegrityError(
                message + f" (or set {ALLOW_VERSION_MISMATCH_ENV}=1 to try)"
            )
        logging.getLogger(__name__).warning(message)
    return metadata


def flatten(data: Any) -> list[Any]:
    """Nested lists (a V2 JSON tensor's data) as one flat list, row-major."""
    if not isinstance(data, list | tuple):
        return [data]
    kinds = set(map(type, data))  # the common case, already flat, at C speed
    if not any(issubclass(kind, list | tuple) for kind in kinds):
        return list(data)
    out: list[Any] = []
    for item in data:
        if isinstance(item, list | tuple):
            out.extend(flatten(item))
        else:
            out.append(item)
    return out


@dataclass(frozen=True)
class Tensor:
    """One request input as the V2 protocol carries it (JSON or gRPC contents, decoded)."""

    name: str
    datatype: str
    shape: list[int]
    data: Any


def check_request(
    model_name: str,
    inputs: list[Tensor],
    width: int,
    feature_names: list[str] | None = None,
    category_sizes: dict[int, int] | None = None,
) -> np.ndarray:
    """Validate the inputs of a model taking one numeric [n, width] tensor; return it as floats.

    Raises BadRequestError naming the model, the input and what was expected.
    """
    expected = f"one numeric tensor of shape [-1, {width}]"
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise BadRequestError(
            f"model {model_name}: expected {expected}, got {len(inputs)} inputs ({names})"
        )
    tensor = inputs[0]
    where = f"model {model_name}: input {tensor.name!r}"
    datatype = tensor.datatype
    if datatype not in NUMERIC_DATATYPES:
        raise BadRequestError(
            f"{where} has datatype {datatype}; expected a numeric datatype "
            f"(FP32, FP64, INT32 or INT64)"
        )
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[1] != width:
        raise BadRequestError(
            f"{where} has shape {shape}; expected [-1, {width}] (rows x features)"
        )
    if shape[0] < 1:
        raise BadRequestError(f"{where} is an empty batch (shape {shape}); send at least one row")
    values = flatten(tensor.data)
    if len(values) != shape[0] * width:
        raise BadRequestError(
            f"{where} has shape {shape}, which needs {shape[0] * width} values, "
            f"but carries {len(values)}"
        )
    # Fast path: only plain ints and floats (every well-formed request); else find the culprit.
    if not set(map(type, values)) <= _PLAIN_NUMBERS:
        _reject_first_non_number(where, values, width, feature_names)
    X = np.asarray(values, dtype=np.float64).reshape(shape)
    bad = np.argwhere(~np.isfinite(X))
    if len(bad):
        row, column = (int(v) for v in bad[0])
        raise BadRequestError(
            f"{where}: {_position(row * width + column, width, feature_names)} is {X[row, column]}; "
            f"expected a finite number"
        )
    if not category_sizes:
        return X
    columns = np.fromiter(category_sizes, dtype=np.int64, count=len(category_sizes))
    sizes = np.fromiter(category_sizes.values(), dtype=np.float64, count=len(category_sizes))
    codes = X[:, columns]
    if not ((codes != np.round(codes)) | (codes < 0) | (codes >= sizes)).any():
        return X  # the usual case, in one vectorised test; else find the first culprit
    for column, size in category_sizes.items():
        codes = X[:, column]
        invalid = np.flatnonzero((codes != np.round(codes)) | (codes < 0) | (codes >= size))
        if len(invalid):
            row = int(invalid[0])
            raise BadRequestError(
                f"{where}: {_position(row * width + column, width, feature_names)} is "
                f"{codes[row]:g}, which is not a category code; expected an integer from 0 to "
                f"{size - 1}"
            )
    return X


_PLAIN_NUMBERS = frozenset({int, float, np.float32, np.float64, np.int64, np.int32})


def _reject_first_non_number(
    where: str, values: list[Any], width: int, feature_names: list[str] | None
) -> None:
    for index, value in enumerate(values):
        if type(value) in _PLAIN_NUMBERS:
            continue
        if value is None or isinstance(value, bool | str | bytes) or not _is_number(value):
            raise BadRequestError(
                f"{where}: {_position(index, width, feature_names)} is {value!r}; "
                f"expected a finite number"
            )


def _is_number(value: Any) -> bool:
    try:
        math.isfinite(value)
    except TypeError:
        return False
    return True


def _position(flat_index: int, width: int, feature_names: list[str] | None) -> str:
    row, column = divmod(flat_index, width)
    feature = f" ({feature_names[column]!r})" if feature_names else ""
    return f"row {row}, column {column}{feature}"
