"""V2 (Open Inference Protocol) tensors: the one Tensor type and its codecs (JSON, gRPC, raw).

A tensor is kept as its name, datatype, shape and flat, row-major data list (the JSON form's
content). `from_json` reads a JSON tensor (nested data flattened, bounded by the shape's rank),
`from_grpc_request` / `from_grpc_response` read gRPC messages with typed contents or raw bytes
(tritonclient sends raw bytes), `decode_raw` / `encode_raw` are the raw bytes of the binary
extension and gRPC's raw contents; `to_json` and `to_grpc_*` write them back.

Imports only numpy and the bundle's error base: packaging copies it into every model folder (see
income_bundle.runtime). A tensor that cannot be read is a ServingError(400) saying which and why.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ServingError
from .datatypes import DATATYPES

__all__ = [
    "Tensor",
    "concat_rows",
    "decode_raw",
    "encode_raw",
    "find_json",
    "flatten",
    "from_grpc_request",
    "from_grpc_response",
    "from_json",
    "to_grpc_request",
    "to_grpc_response",
    "to_json",
]


@dataclass
class Tensor:
    """One input or output tensor: `data` is flat, row-major."""

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

    def to_array(self, dtype: Any = None) -> np.ndarray:
        """The data as an array of the tensor's shape, of `dtype` (default: the datatype's own;
        BYTES as objects); ServingError(400) when the data does not fill the shape."""
        own = DATATYPES[self.datatype].dtype if self.datatype in DATATYPES else None
        values = np.asarray(self.data, dtype=dtype or own or object)
        expected = int(np.prod(self.shape, dtype=np.int64))
        if values.size != expected:
            raise ServingError(
                400,
                f"tensor {self.name!r} has shape {self.shape}, which needs {expected} values, "
                f"but carries {values.size}",
            )
        return values.reshape(self.shape)


def flatten(data: Any, max_depth: int, where: str) -> list[Any]:
    """Nested lists (a V2 JSON tensor's data) as one flat list, row-major, without recursion;
    ServingError(400) when lists nest deeper than `max_depth` (the tensor's rank)."""
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
                    raise ServingError(
                        400,
                        f"{where}: data nests lists deeper than its shape's {max_depth} "
                        f"dimension{'s' if max_depth != 1 else ''}",
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
        raise ServingError(400, f"{where} must be an object with name, datatype, shape and data")
    missing = [key for key in ("name", "datatype", "shape", "data") if key not in item]
    if missing:
        raise ServingError(400, f"{where} lacks {', '.join(repr(m) for m in missing)}")
    name, datatype, shape = item["name"], item["datatype"], item["shape"]
    if not isinstance(name, str) or not name:
        raise ServingError(400, f"{where}: name must be a non-empty string, got {name!r}")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise ServingError(
            400,
            f"{where} ({name!r}): datatype {datatype!r} is not a V2 datatype "
            f"({', '.join(DATATYPES)})",
        )
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ServingError(
            400,
            f"{where} ({name!r}): shape must be a list of non-negative integers, got {shape!r}",
        )
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ServingError(400, f"{where} ({name!r}): parameters must be an object")
    data = flatten(item["data"], max(len(shape), 1), f"{where} ({name!r})")
    return Tensor(name, datatype, list(shape), data, dict(parameters))


def find_json(items: Any, name: str, where: str) -> Tensor | None:
    """The tensor called `name` in a JSON `inputs` or `outputs` list, read by `from_json`
    (ServingError(400) when it is malformed), or None when the list has no such tensor."""
    for index, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("name") == name:
            return from_json(item, f"{where} [{index}]")
    return None


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
            raise ServingError(
                400,
                f"cannot batch tensor {first.name!r}: {first.datatype}{first.shape} and "
                f"{other.datatype}{other.shape} differ beyond the first dimension",
            )
    data = [value for t in tensors for value in t.data]
    shape = [sum(t.rows for t in tensors), *first.shape[1:]]
    return Tensor(first.name, first.datatype, shape, data, dict(first.parameters))


def decode_raw(raw: bytes, datatype: str, where: str) -> list[Any]:
    """The values of raw contents: little-endian numbers, or BYTES as 4-byte lengths each
    followed by that many bytes."""
    kind = DATATYPES[datatype]
    if kind.dtype is None:
        values, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise ServingError(400, f"{where}: truncated BYTES element in raw contents")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise ServingError(
                    400,
                    f"{where}: a BYTES element says it has {length} bytes, but only "
                    f"{len(raw) - offset} are left",
                )
            values.append(raw[offset : offset + length].decode("utf-8", "replace"))
            offset += length
        return values
    if len(raw) % kind.dtype.itemsize:
        raise ServingError(
            400, f"{where}: {len(raw)} raw bytes is not a whole number of {datatype} values"
        )
    return np.frombuffer(raw, dtype=kind.dtype).tolist()


def encode_raw(tensor: Tensor) -> bytes:
    dtype = DATATYPES[tensor.datatype].dtype
    if dtype is None:
        chunks = []
        for value in tensor.data:
            encoded = value if isinstance(value, bytes) else str(value).encode()
            chunks.append(struct.pack("<I", len(encoded)) + encoded)
        return b"".join(chunks)
    return np.asarray(tensor.data, dtype=dtype).tobytes()


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
        raise ServingError(
            400, f"the message has {len(items)} {kind} but {len(raw_contents)} raw contents"
        )
    for index, item in enumerate(items):
        where = f"{kind}[{index}] ({item.name!r})"
        if item.datatype not in DATATYPES:
            raise ServingError(400, f"{where}: datatype {item.datatype!r} is not a V2 datatype")
        if raw_contents:
            data = decode_raw(raw_contents[index], item.datatype, where)
        else:
            values = getattr(item.contents, DATATYPES[item.datatype].grpc_field)
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


def to_grpc_request(
    module: Any,
    model_name: str,
    request_id: str,
    tensors: list[Tensor],
    *,
    model_version: str = "",
    parameters: dict[str, Any] | None = None,
    outputs: Sequence[str] = (),
) -> Any:
    """A `ModelInferRequest` of `module` (a service_pb2) with typed contents and each tensor's
    parameters, as Seldon's dataflow writes a step's inputs to Kafka."""
    request = module.ModelInferRequest(
        model_name=model_name, model_version=model_version, id=request_id
    )
    _fill_parameters(request.parameters, parameters)
    for tensor in tensors:
        item = request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        _fill_parameters(item.parameters, tensor.parameters)
        _fill_contents(item.contents, tensor)
    for name in outputs:
        request.outputs.add(name=name)
    return request


def _fill_parameters(target: Any, parameters: dict[str, Any] | None) -> None:
    """Parameters as MLServer writes them to gRPC (mlserver/grpc/converters.py
    `ParametersConverter.from_types`, 1.7.1): bools, strings and ints; other values are left
    out, as there."""
    for key, value in (parameters or {}).items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, str):
            target[key].string_param = value
        elif isinstance(value, int) and -(2**63) <= value < 2**63:
            target[key].int64_param = value


def _fill_contents(contents: Any, tensor: Tensor) -> None:
    datatype = DATATYPES.get(tensor.datatype, DATATYPES["BYTES"])
    values = tensor.data
    if datatype.dtype is None:
        values = [v if isinstance(v, bytes) else str(v).encode() for v in values]
    getattr(contents, datatype.grpc_field).extend(values)


def to_grpc_response(
    module: Any,
    model_name: str,
    request_id: str,
    tensors: list[Tensor],
    raw: bool = False,
    *,
    model_version: str = "",
    parameters: dict[str, Any] | None = None,
) -> Any:
    """A `ModelInferResponse` of `module` (a service_pb2) with each tensor's parameters: raw
    bytes, as tritonclient expects when it sent raw inputs, or typed contents."""
    response = module.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request_id
    )
    _fill_parameters(response.parameters, parameters)
    for tensor in tensors:
        output = response.outputs.add(
            name=tensor.name, datatype=tensor.datatype, shape=tensor.shape
        )
        _fill_parameters(output.parameters, tensor.parameters)
        if raw:
            response.raw_output_contents.append(encode_raw(tensor))
            continue
        _fill_contents(output.contents, tensor)
    return response
