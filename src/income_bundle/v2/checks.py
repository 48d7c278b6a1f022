"""The request checks of the V2 core: what a request must be before any model sees it.

- `check_request_id`: the request id rule, for an `x-request-id` (header, gRPC metadata) or the
  body's `id`;
- `check_body`: the full check of a JSON request body (inputs, parameters, outputs, id);
- `check_tensor`: one tensor's own consistency (its values fill its shape and fit its datatype),
  all that is checked for a model that declares nothing more;
- `TableCheck`: a model that takes one numeric [rows, width] tensor (every income model).
  `accepts_fast` is the fast path for the usual well-formed JSON request, on the parsed body
  without building tensors; `check` is the full check, which finds and words every problem and
  returns the rows as floats. The fast path accepts only what the full check accepts.

Every problem is a ServingError(400) naming the model (or the request's field), the input and
what was expected. Imports only the standard library, numpy and the core: packaging copies it into
every model folder, where the MLServer runtimes run these same checks (see income_bundle.runtime).
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ServingError
from .datatypes import DATATYPES
from .tensors import Tensor, flatten, from_json

__all__ = [
    "MAX_REQUEST_ID_LENGTH",
    "REQUEST_ID_HEADER",
    "RequestFields",
    "TableCheck",
    "check_body",
    "check_request_id",
    "check_tensor",
    "new_request_id",
    "range_problem",
]

# -- request ids ---------------------------------------------------------------------------------
# An id goes back to the client as a response header and, on a cluster, through Envoy and Kafka
# (Seldon keys every pipeline message by it), so it must be a valid header value everywhere:
# - visible ASCII and inner spaces only. RFC 9110 field values exclude CR, LF and NUL (a newline
#   would split the response header; uvicorn refuses to send it and drops the connection), leading
#   and trailing spaces are stripped by every parser, and gRPC metadata values are ASCII.
# - at most 1024 characters. Seldon's ids are 20-character xids (`scheduler/pkg/util/ids.go`,
#   v2.10.2) and MLServer's 36-character UUIDs; Envoy in seldon-mesh keeps its default 60 KiB for
#   all request headers (`scheduler/pkg/envoy/xdscache/resource.go` sets no
#   `max_request_headers_kb`), and Node's HTTP client refuses responses whose headers pass 16 KiB,
#   so an id echoed back must stay far below both.

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_LENGTH = 1024
_VALID_ID = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def check_request_id(value: Any, source: str) -> str | None:
    """`value` when it is a valid id, None when absent (None or ""), else ServingError(400)
    naming `source` (e.g. "the 'x-request-id' header") and the rule."""
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise ServingError(
            400, f"{source} must be a string, got {type(value).__name__} {_shorten(value)}"
        )
    if len(value) > MAX_REQUEST_ID_LENGTH:
        raise ServingError(
            400,
            f"{source} is {len(value)} characters long; a request id has at most "
            f"{MAX_REQUEST_ID_LENGTH}",
        )
    if _VALID_ID.fullmatch(value) is None:
        bad = next(
            (c for c in value if not " " <= c <= "~"), value[0] if value[0] == " " else value[-1]
        )
        raise ServingError(
            400,
            f"{source} {_shorten(value)} contains {bad!r}; a request id is visible ASCII "
            "characters with no leading or trailing space (no control characters)",
        )
    return value


def new_request_id() -> str:
    return str(uuid.uuid4())


def _shorten(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


# -- the JSON body -------------------------------------------------------------------------------


@dataclass
class RequestFields:
    """A JSON request body's fields, checked."""

    inputs: list[Tensor]
    parameters: dict[str, Any]
    outputs: list[dict[str, Any]]  # requested: name, parameters
    id: str | None


def check_body(body: Any, inputs: list[Tensor] | None = None) -> RequestFields:
    """The full check of a JSON request body: a non-empty `inputs` list of tensors (read here,
    unless `inputs` holds them already, read from the binary extension's part), `parameters` an
    object, `outputs` a list of objects with a `name` (and `parameters`), `id` a request id."""
    if not isinstance(body, dict):
        raise ServingError(400, "the request body must be a JSON object with an 'inputs' list")
    items = body.get("inputs")
    if not isinstance(items, list) or not items:
        raise ServingError(400, "the request needs a non-empty 'inputs' list of tensors")
    if inputs is None:
        inputs = [from_json(item, f"inputs[{i}]") for i, item in enumerate(items)]
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ServingError(400, "'parameters' must be an object")
    outputs = body.get("outputs", [])
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict)
        and isinstance(o.get("name"), str)
        and isinstance(o.get("parameters", {}), dict)
        for o in outputs
    ):
        raise ServingError(
            400, "'outputs' must be a list of objects with a 'name' (and 'parameters')"
        )
    return RequestFields(
        inputs, parameters, outputs, check_request_id(body.get("id"), "the request's 'id'")
    )


_FAST_BODY_KEYS = {"id", "inputs", "parameters", "outputs"}
_FAST_TENSOR_KEYS = {"name", "datatype", "shape", "data", "parameters"}
_FAST_NUMBERS = {int, float}


def _fast_fields_ok(body: dict[str, Any]) -> bool:
    """The fields beside `inputs` are, beyond doubt, what `check_body` accepts."""
    if not body.keys() <= _FAST_BODY_KEYS:
        return False
    if "id" in body:
        try:
            check_request_id(body["id"], "")
        except ServingError:
            return False
    if "parameters" in body and type(body["parameters"]) is not dict:
        return False
    outputs = body.get("outputs", [])
    return type(outputs) is list and all(
        type(o) is dict and type(o.get("name")) is str and type(o.get("parameters", {})) is dict
        for o in outputs
    )


# -- values and datatypes ------------------------------------------------------------------------


def range_problem(datatype: str, values: np.ndarray) -> tuple[int, str] | None:
    """The flat index of the first value `datatype` cannot hold and what it expects, or None.
    `values`: the tensor's (finite) numbers as float64. A float beyond its datatype's largest
    value would become inf where the model decodes it, an integer out of range would wrap."""
    kind = DATATYPES.get(datatype)
    if kind is None or not kind.is_number:
        return None
    if kind.kind == "float":
        bad = np.flatnonzero(np.abs(values) > kind.high)
        expected = f"a number from {kind.low:g} to {kind.high:g} ({datatype})"
    else:
        bad = np.flatnonzero(
            (values != np.round(values)) | (values < kind.low) | (values > kind.high)
        )
        expected = f"an integer from {kind.low} to {kind.high} ({datatype})"
    return (int(bad[0]), expected) if len(bad) else None


def _numbers_fit(datatype: str, X: np.ndarray) -> bool:
    """Finite and within the datatype's range, cheaply for floats (NaN and inf fail `<=`)."""
    kind = DATATYPES[datatype]
    if kind.kind == "float":
        return bool(np.abs(X).max() <= kind.high)
    return bool(np.isfinite(X).all()) and range_problem(datatype, X.ravel()) is None


def check_tensor(model: str, tensor: Tensor) -> None:
    """ServingError(400) unless the tensor's values fill its shape and, for numbers and BOOL,
    are numbers its datatype holds."""
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
    if DATATYPES[tensor.datatype].kind == "bytes":
        return
    for position, value in enumerate(tensor.data):
        if type(value) in (int, float):
            continue
        if value is None or isinstance(value, str | bytes | dict | list):
            raise ServingError(
                400, f"{where}: value {position} is {value!r}; expected a {tensor.datatype} number"
            )
    values = np.asarray(tensor.data, dtype=np.float64)
    if tensor.datatype != "BOOL" and not np.isfinite(values).all():
        position = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ServingError(
            400, f"{where}: value {position} is {values[position]}; expected a finite number"
        )
    problem = range_problem(tensor.datatype, values)
    if problem is not None:
        position, expected_values = problem
        raise ServingError(
            400, f"{where}: value {position} is {values[position]:g}; expected {expected_values}"
        )


# -- a model taking one table of rows ------------------------------------------------------------

_PLAIN_NUMBERS = frozenset({int, float, np.float32, np.float64, np.int64, np.int32})


@dataclass
class TableCheck:
    """The checks of a model that takes one numeric [rows, width] tensor: its width, and what
    its artifact says of the columns (feature names for messages, and the number of codes of each
    categorical column, whose values must be integer codes from 0)."""

    model: str
    width: int
    feature_names: list[str] | None = None
    category_sizes: dict[int, int] = field(default_factory=dict)
    _columns: np.ndarray = field(init=False, repr=False)
    _sizes: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._columns = np.fromiter(self.category_sizes, dtype=np.int64)
        self._sizes = np.fromiter(self.category_sizes.values(), dtype=np.float64)

    def accepts_fast(self, body: Any) -> bool:
        """Whether a parsed JSON request is, beyond doubt, a valid request for this model: one
        flat, finite, numeric [n, width] input with valid category codes, and well-formed fields
        beside it. Checked with numpy on the parsed body, without building tensors. False means
        "look closer" (`check_body` and `check` find the problem and word it), not "invalid"."""
        if type(body) is not dict or not _fast_fields_ok(body):
            return False
        inputs = body.get("inputs")
        if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict:
            return False
        tensor = inputs[0]
        if not tensor.keys() <= _FAST_TENSOR_KEYS or type(tensor.get("parameters", {})) is not dict:
            return False
        name, datatype = tensor.get("name"), tensor.get("datatype")
        shape, data = tensor.get("shape"), tensor.get("data")
        if type(name) is not str or not name or type(datatype) is not str:
            return False
        if datatype not in DATATYPES or not DATATYPES[datatype].is_number:
            return False
        if type(shape) is not list or len(shape) != 2 or shape[1] != self.width:
            return False
        if type(shape[0]) is not int or type(shape[1]) is not int or shape[0] < 1:
            return False
        if type(data) is not list or len(data) != shape[0] * self.width:
            return False
        if not set(map(type, data)) <= _FAST_NUMBERS:
            return False
        X = np.array(data, dtype=np.float64).reshape(shape)
        if not _numbers_fit(datatype, X):
            return False
        if self.category_sizes:
            codes = X[:, self._columns]
            if ((codes != np.round(codes)) | (codes < 0) | (codes >= self._sizes)).any():
                return False
        return True

    def check(self, inputs: list[Tensor]) -> np.ndarray:
        """The full check of a request's input tensors; returns the rows as floats, or raises
        ServingError(400) naming the model, the input and what was expected."""
        width = self.width
        if len(inputs) != 1:
            names = ", ".join(repr(i.name) for i in inputs) or "none"
            raise ServingError(
                400,
                f"model {self.model}: expected one numeric tensor of shape [-1, {width}], "
                f"got {len(inputs)} inputs ({names})",
            )
        tensor = inputs[0]
        where = f"model {self.model}: input {tensor.name!r}"
        datatype = tensor.datatype
        if datatype not in DATATYPES or not DATATYPES[datatype].is_number:
            raise ServingError(
                400,
                f"{where} has datatype {datatype}; expected a numeric datatype "
                f"(FP32, FP64, INT32 or INT64)",
            )
        shape = list(tensor.shape)
        if len(shape) != 2 or shape[1] != width:
            raise ServingError(
                400, f"{where} has shape {shape}; expected [-1, {width}] (rows x features)"
            )
        if shape[0] < 1:
            raise ServingError(
                400, f"{where} is an empty batch (shape {shape}); send at least one row"
            )
        values = flatten(tensor.data, len(shape), where)
        if len(values) != shape[0] * width:
            raise ServingError(
                400,
                f"{where} has shape {shape}, which needs {shape[0] * width} values, "
                f"but carries {len(values)}",
            )
        # Fast path: only plain ints and floats (every well-formed request); else find the culprit.
        if not set(map(type, values)) <= _PLAIN_NUMBERS:
            self._reject_first_non_number(where, values)
        X = np.asarray(values, dtype=np.float64).reshape(shape)
        bad = np.argwhere(~np.isfinite(X))
        if len(bad):
            row, column = (int(v) for v in bad[0])
            raise ServingError(
                400,
                f"{where}: {self._position(row * width + column)} is {X[row, column]}; "
                f"expected a finite number",
            )
        self._check_codes(where, X)
        problem = range_problem(datatype, X.ravel())
        if problem is not None:
            index, expected = problem
            row, column = divmod(index, width)
            raise ServingError(
                400, f"{where}: {self._position(index)} is {X[row, column]:g}; expected {expected}"
            )
        return X

    def _check_codes(self, where: str, X: np.ndarray) -> None:
        if not self.category_sizes:
            return
        codes = X[:, self._columns]
        if not ((codes != np.round(codes)) | (codes < 0) | (codes >= self._sizes)).any():
            return  # the usual case, in one vectorised test; else find the first culprit
        for column, size in self.category_sizes.items():
            codes = X[:, column]
            invalid = np.flatnonzero((codes != np.round(codes)) | (codes < 0) | (codes >= size))
            if len(invalid):
                row = int(invalid[0])
                raise ServingError(
                    400,
                    f"{where}: {self._position(row * self.width + column)} is "
                    f"{codes[row]:g}, which is not a category code; expected an integer from 0 "
                    f"to {size - 1}",
                )

    def _reject_first_non_number(self, where: str, values: list[Any]) -> None:
        for index, value in enumerate(values):
            if type(value) in _PLAIN_NUMBERS:
                continue
            if value is None or isinstance(value, bool | str | bytes) or not _is_number(value):
                raise ServingError(
                    400,
                    f"{where}: {self._position(index)} is {value!r}; expected a finite number",
                )

    def _position(self, flat_index: int) -> str:
        row, column = divmod(flat_index, self.width)
        feature = f" ({self.feature_names[column]!r})" if self.feature_names else ""
        return f"row {row}, column {column}{feature}"


def _is_number(value: Any) -> bool:
    try:
        math.isfinite(value)
    except TypeError:
        return False
    return True
