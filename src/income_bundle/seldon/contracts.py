"""What each model accepts: its declared inputs, checked before any model sees a request.

`ModelContract.validate` is the one request check: `accepts_fast`, its fast path for the usual
well-formed JSON request on the parsed body without building tensors, then `check`, which finds
and words every problem. A model that declares nothing gets each tensor's own consistency checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from income_bundle import integrity
from income_bundle.errors import ServingError
from income_bundle.seldon.request_id import check_request_id
from income_bundle.v2.tensors import Tensor, range_problem

if TYPE_CHECKING:
    from income_bundle.seldon.protocol import InferRequest

__all__ = ["ModelContract", "check_tensor"]

NUMERIC = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
FLOATS = {"FP16", "FP32", "FP64"}


@dataclass
class ModelContract:
    """What a model declares it takes and gives (model-settings.json `inputs` and `outputs`,
    artifact metadata)."""

    name: str
    declared: list[dict[str, Any]]
    feature_names: list[str] | None = None
    category_sizes: dict[int, int] = field(default_factory=dict)
    declared_outputs: list[dict[str, Any]] = field(default_factory=list)
    _categories: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def from_folder(cls, name: str, folder: Path) -> ModelContract:
        settings = json.loads((folder / "model-settings.json").read_text())
        metadata = json.loads((folder / integrity.METADATA_FILE).read_text())
        features = metadata.get("input_features") or {}
        sizes = {int(k): len(v) for k, v in (features.get("category_map") or {}).items()}
        return cls(
            name,
            settings.get("inputs") or [],
            features.get("names"),
            sizes,
            settings.get("outputs") or [],
        )

    def accepts_fast(self, body: dict[str, Any]) -> bool:
        """Whether a parsed JSON request is, beyond doubt, a valid request for this model: one
        flat, finite, numeric [n, width] input with valid category codes, and well-formed extras.
        Checked with numpy on the parsed body, without building tensors. False means "look
        closer" (`check` finds the problem and words it), not "invalid"."""
        if len(self.declared) != 1 or len(self.declared[0].get("shape", [])) != 2:
            return False
        if not body.keys() <= _FAST_BODY_KEYS or not _fast_extras_ok(body):
            return False
        inputs = body.get("inputs")
        if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict:
            return False
        tensor = inputs[0]
        if not tensor.keys() <= _FAST_TENSOR_KEYS or type(tensor.get("parameters", {})) is not dict:
            return False
        name, datatype = tensor.get("name"), tensor.get("datatype")
        shape, data = tensor.get("shape"), tensor.get("data")
        width = int(self.declared[0]["shape"][1])
        if type(name) is not str or not name or datatype not in integrity.NUMERIC_DATATYPES:
            return False
        if type(shape) is not list or len(shape) != 2 or shape[1] != width:
            return False
        if type(shape[0]) is not int or type(shape[1]) is not int or shape[0] < 1:
            return False
        if type(data) is not list or len(data) != shape[0] * width:
            return False
        if not set(map(type, data)) <= _FAST_NUMBERS:
            return False
        X = np.array(data, dtype=np.float64).reshape(shape)
        if not _numbers_fit(datatype, X):
            return False
        if self.category_sizes:
            columns, sizes = self._category_arrays()
            codes = X[:, columns]
            if ((codes != np.round(codes)) | (codes < 0) | (codes >= sizes)).any():
                return False
        return True

    def _category_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._categories is None:
            self._categories = (
                np.fromiter(self.category_sizes, dtype=np.int64),
                np.fromiter(self.category_sizes.values(), dtype=np.float64),
            )
        return self._categories

    def validate(self, request: InferRequest) -> None:
        """The one check of a request for this model: the fast path on the parsed JSON body when
        that is beyond doubt valid (no tensors built), else the full check of the decoded
        tensors, which raises ServingError(400) naming the problem."""
        body = request.body
        if request.raw is not None and body is not None and self.accepts_fast(body):
            return
        self.check(request.decode())

    def check(self, tensors: list[Tensor]) -> None:
        """Raise ServingError(400) when the tensors do not fit the declaration."""
        if not (len(self.declared) == 1 and len(self.declared[0].get("shape", [])) == 2):
            for index, tensor in enumerate(tensors):
                check_tensor(self.name, index, tensor)
        else:
            width = int(self.declared[0]["shape"][1])
            inputs = tensors  # integrity reads name, datatype, shape and data: no second type
            try:
                X = integrity.check_request(
                    self.name,
                    inputs,  # type: ignore[arg-type]
                    width,
                    self.feature_names,
                    self.category_sizes,
                )
            except integrity.BadRequestError as e:
                raise ServingError(400, str(e)) from e
            problem = range_problem(inputs[0].datatype, X.ravel())
            if problem is not None:
                index, expected = problem
                row, column = divmod(index, width)
                feature = f" ({self.feature_names[column]!r})" if self.feature_names else ""
                raise ServingError(
                    400,
                    f"model {self.name}: input {inputs[0].name!r}: row {row}, column {column}"
                    f"{feature} is {X[row, column]:g}; expected {expected}",
                )


_FAST_BODY_KEYS = {"id", "inputs", "parameters", "outputs"}
_FAST_TENSOR_KEYS = {"name", "datatype", "shape", "data", "parameters"}
_FAST_NUMBERS = {int, float}


# The largest finite value of each float datatype: one reduction tells finite and in range.
_FLOAT_PEAKS = {
    "FP16": float(np.finfo(np.float16).max),
    "FP32": float(np.finfo(np.float32).max),
    "FP64": float(np.finfo(np.float64).max),
}


def _numbers_fit(datatype: str, X: np.ndarray) -> bool:
    """Finite and within the datatype's range, cheaply for floats (NaN and inf fail `<=`)."""
    peak = _FLOAT_PEAKS.get(datatype)
    if peak is not None:
        return bool(np.abs(X).max() <= peak)
    return bool(np.isfinite(X).all()) and range_problem(datatype, X.ravel()) is None


def _fast_extras_ok(body: dict[str, Any]) -> bool:
    if "id" in body:
        try:
            check_request_id(body["id"], "")
        except ServingError:
            return False
    if "parameters" in body and type(body["parameters"]) is not dict:
        return False
    outputs = body.get("outputs", [])
    return type(outputs) is list and all(
        type(o) is dict and type(o.get("name")) is str for o in outputs
    )


def check_tensor(model: str, index: int, tensor: Tensor) -> None:
    expected = 1
    for dimension in tensor.shape:
        expected *= dimension
    where = f"model {model}: input {tensor.name!r}"
    if len(tensor.data) != expected:
        raise ServingError(
            400,
            f"{where} has shape {tensor.shape}, which needs {expected} values, "
            f"but carries {len(tensor.data)}",
        )
    if tensor.datatype in NUMERIC | FLOATS:
        for position, value in enumerate(tensor.data):
            if type(value) in (int, float):
                continue
            if value is None or isinstance(value, str | bytes | dict | list):
                raise ServingError(
                    400,
                    f"{where}: value {position} is {value!r}; expected a {tensor.datatype} number",
                )
        values = np.asarray(tensor.data, dtype=np.float64)
        if tensor.datatype != "BOOL" and not np.isfinite(values).all():
            position = int(np.flatnonzero(~np.isfinite(values))[0])
            raise ServingError(
                400, f"{where}: value {position} is {values[position]}; expected a finite number"
            )
        problem = range_problem(tensor.datatype, values)
        if problem is not None:
            position, expected = problem
            raise ServingError(
                400, f"{where}: value {position} is {values[position]:g}; expected {expected}"
            )
