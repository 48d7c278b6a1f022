"""V2 (Open Inference Protocol) tensors as the gateway handles them: JSON and gRPC forms.

A tensor is kept as its name, datatype, shape and flat data list, the JSON form's content.
gRPC requests are decoded from typed contents or raw bytes (tritonclient sends raw bytes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from income_bundle.errors import ServingError

__all__ = [
    "DATATYPES",
    "Tensor",
    "TensorError",
    "concat_rows",
    "decode_raw",
    "encode_raw",
    "flatten",
    "from_grpc_request",
    "from_json",
    "to_grpc_response",
    "to_json",
]

# V2 datatype -> (numpy dtype for raw bytes, gRPC contents field)
DATATYPES: dict[str, tuple[str | None, str]] = {
    "BOOL": ("?", "bool_contents"),
    "UINT8": ("<u1", "uint_contents"),
    "UINT16": ("<u2", "uint_contents"),
    "UINT32": ("<u4", "uint_contents"),
    "UINT64": ("<u8", "uint64_contents"),
    "INT8": ("<i1", "int_contents"),
    "INT16": ("<i2", "int_contents"),
    "INT32": ("<i4", "int_contents"),
    "INT64": ("<i8", "int64_contents"),
    "FP16": ("<f2", "fp32_contents"),
    "FP32": ("<f4", "fp32_contents"),
    "FP64": ("<f8", "fp64_contents"),
    "BYTES": (None, "bytes_contents"),
}


# The largest finite value of each float datatype, and the bounds of each integer datatype:
# a JSON number outside them would become inf or wrap around where the model decodes it.
_FLOAT_LIMITS = {"FP16": float(np.finfo(np.float16).max), "FP32": float(np.finfo(np.float32).max)}
_INT_LIMITS = {
    name: (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    for name, (dtype, _) in DATATYPES.items()
    if name.startswith(("INT", "UINT"))
}


class TensorError(ServingError):
    """A tensor that cannot be decoded (a 400); the message says which and why."""

    def __init__(self, message: str):
        super().__init__(400, message)


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]
    parameters: dict[str, Any] = field(default_factory=dict)

    def renamed(self, name: str) -> Tensor:
        return Tensor(name, self.datatype, list(self.shape), self.data, dict(self.parameters))

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1


def range_problem(datatype: str, values: np.ndarray) -> tuple[int, str] | None:
    """The flat index of the first value `datatype` cannot hold and what it expects, or None.
    `values`: the tensor's (finite) numbers as float64."""
    if datatype in _FLOAT_LIMITS:
        limit = _FLOAT_LIMITS[datatype]
        bad = np.flatnonzero(np.abs(values) > limit)
        return (
            (int(bad[0]), f"a number from {-limit:g} to {limit:g} ({datatype})")
            if len(bad)
            else None
        )
    if datatype in _INT_LIMITS:
        low, high = _INT_LIMITS[datatype]
        bad = np.flatnonzero((values != np.round(values)) | (values < low) | (values > high))
        return (int(bad[0]), f"an integer from {low} to {high} ({datatype})") if len(bad) else None
    return None


def flatten(data: Any, max_depth: int, where: str) -> list[Any]:
    """Nested lists (a V2 JSON tensor's data) as one flat list, row-major, without recursion;
    TensorError when lists nest deeper than `max_depth` (the tensor's rank)."""
    if type(data) is not list:
        return [data]
    if not any(type(item) is list for item in data):  # the common case, already flat
        return list(data)
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                if len(stack) >= max_depth:
                    raise TensorError(
                        f"{where}: data nests lists deeper than its shape's {max_depth} "
                        f"dimension{'s' if max_depth != 1 else ''}"
                    )
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def from_json(item: Any, where: str) -> Tensor:
    """One entry of a JSON request's `inputs` (or a response's `outputs`)."""
    if not isinstance(item, dict):
        raise TensorError(f"{where} must be an object with name, datatype, shape and data")
    missing = [key for key in ("name", "datatype", "shape", "data") if key not in item]
    if missing:
        raise TensorError(f"{where} lacks {', '.join(repr(m) for m in missing)}")
    name, datatype, shape = item["name"], item["datatype"], item["shape"]
    if not isinstance(name, str) or not name:
        raise TensorError(f"{where}: name must be a non-empty string, got {name!r}")
    if datatype not in DATATYPES:
        raise TensorError(
            f"{where} ({name!r}): datatype {datatype!r} is not a V2 datatype "
            f"({', '.join(DATATYPES)})"
        )
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise TensorError(
            f"{where} ({name!r}): shape must be a list of non-negative integers, got {shape!r}"
        )
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise TensorError(f"{where} ({name!r}): parameters must be an object")
    data = flatten(item["data"], max(len(shape), 1), f"{where} ({name!r})")
    return Tensor(name, datatype, list(shape), data, dict(parameters))


def to_json(tensor: Tensor) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": tensor.shape,
        "data": tensor.data,
    }
    if tensor.parameters:
        item["parameters"] = tensor.parameters
    return item


def concat_rows(tensors: list[Tensor]) -> Tensor:
    """Concatenate on dimension 0, as Seldon's batching does."""
    first = tensors[0]
    for other in tensors[1:]:
        if other.datatype != first.datatype or other.shape[1:] != first.shape[1:]:
            raise TensorError(
                f"cannot batch tensor {first.name!r}: {first.datatype}{first.shape} and "
                f"{other.datatype}{other.shape} differ beyond the first dimension"
            )
    data = [value for t in tensors for value in t.data]
    shape = [sum(t.rows for t in tensors), *first.shape[1:]]
    return Tensor(first.name, first.datatype, shape, data, dict(first.parameters))


def decode_raw(raw: bytes, datatype: str, where: str) -> list[Any]:
    dtype = DATATYPES[datatype][0]
    if dtype is None:  # BYTES: 4-byte little-endian length, then the bytes, repeated
        values, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise TensorError(f"{where}: truncated BYTES element in raw contents")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise TensorError(
                    f"{where}: a BYTES element says it has {length} bytes, but only "
                    f"{len(raw) - offset} are left"
                )
            values.append(raw[offset : offset + length].decode("utf-8", "replace"))
            offset += length
        return values
    itemsize = np.dtype(dtype).itemsize
    if len(raw) % itemsize:
        raise TensorError(
            f"{where}: {len(raw)} raw bytes is not a whole number of {datatype} values"
        )
    return np.frombuffer(raw, dtype=dtype).tolist()


def from_grpc_request(request: Any) -> tuple[list[Tensor], dict[str, Any]]:
    """Tensors and parameters of a `ModelInferRequest` (tritonclient's or MLServer's protobuf)."""
    tensors = _from_grpc(request.inputs, list(request.raw_input_contents), "inputs")
    return tensors, _parameters(request.parameters)


def from_grpc_response(response: Any) -> list[Tensor]:
    """The output tensors of a `ModelInferResponse`."""
    return _from_grpc(response.outputs, list(response.raw_output_contents), "outputs")


def _from_grpc(items: Any, raw_contents: list[bytes], kind: str) -> list[Tensor]:
    tensors = []
    if raw_contents and len(raw_contents) != len(items):
        raise TensorError(
            f"the message has {len(items)} {kind} but {len(raw_contents)} raw contents"
        )
    for index, item in enumerate(items):
        where = f"{kind}[{index}] ({item.name!r})"
        if item.datatype not in DATATYPES:
            raise TensorError(f"{where}: datatype {item.datatype!r} is not a V2 datatype")
        if raw_contents:
            data = decode_raw(raw_contents[index], item.datatype, where)
        else:
            values = getattr(item.contents, DATATYPES[item.datatype][1])
            data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]
        tensors.append(
            Tensor(item.name, item.datatype, list(item.shape), data, _parameters(item.parameters))
        )
    return tensors


def _parameters(parameters: Any) -> dict[str, Any]:
    result = {}
    for key, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")
        result[key] = getattr(value, kind) if kind else None
    return result


def encode_raw(tensor: Tensor) -> bytes:
    dtype = DATATYPES[tensor.datatype][0]
    if dtype is None:
        chunks = []
        for value in tensor.data:
            encoded = value if isinstance(value, bytes) else str(value).encode()
            chunks.append(struct.pack("<I", len(encoded)) + encoded)
        return b"".join(chunks)
    return np.asarray(tensor.data, dtype=dtype).tobytes()


def to_grpc_request(module: Any, model_name: str, request_id: str, tensors: list[Tensor]) -> Any:
    """A `ModelInferRequest` of `module` (a service_pb2) with typed contents, as Seldon's dataflow
    writes a step's inputs to Kafka."""
    request = module.ModelInferRequest(model_name=model_name, id=request_id)
    for tensor in tensors:
        item = request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        _fill_contents(item.contents, tensor)
    return request


def _fill_contents(contents: Any, tensor: Tensor) -> None:
    field_name = DATATYPES.get(tensor.datatype, (None, "bytes_contents"))[1]
    values = tensor.data
    if tensor.datatype == "BYTES":
        values = [v if isinstance(v, bytes) else str(v).encode() for v in values]
    getattr(contents, field_name).extend(values)


def to_grpc_response(
    module: Any, model_name: str, request_id: str, tensors: list[Tensor], raw: bool = False
) -> Any:
    """A `ModelInferResponse` of `module` (a service_pb2): raw bytes, as tritonclient expects when
    it sent raw inputs, or typed contents."""
    response = module.ModelInferResponse(model_name=model_name, id=request_id)
    for tensor in tensors:
        output = response.outputs.add(
            name=tensor.name, datatype=tensor.datatype, shape=tensor.shape
        )
        if raw:
            response.raw_output_contents.append(encode_raw(tensor))
            continue
        _fill_contents(output.contents, tensor)
    return response
