"""One inference request and its result as both fronts hand them to the gateway, and the REST
forms of the Open Inference Protocol: the JSON body and the binary tensor extension.

The binary extension (Triton's, which tritonclient, the KServe SDK and `mlserver infer -b` use by
default): the `Inference-Header-Content-Length` header gives the length of the JSON part at the
start of the body; the rest is the raw data of every input whose `parameters.binary_data_size`
says how many bytes it takes, in order. An answer carries outputs the same way when the request
asks (`parameters.binary_data_output`, or an output's own `parameters.binary_data`). MLServer
1.7.1 answers such requests with 500, so the gateway decodes them and forwards JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from income_bundle.errors import ServingError
from income_bundle.v2.checks import check_body
from income_bundle.v2.datatypes import DATATYPES
from income_bundle.v2.tensors import Tensor, decode_raw, encode_raw, from_json, to_json

__all__ = [
    "BINARY_HEADER",
    "DEFAULT_MAX_REQUEST_ROWS",
    "InferRequest",
    "InferResult",
    "check_rows",
    "declared_shapes",
    "decode_binary_body",
    "encode_answer",
    "parse_json",
]

BINARY_HEADER = "inference-header-content-length"

# The income models take rows of 12 features ([-1, 12]): 100 000 rows are about 5 MB as FP32,
# a batch MLServer answers in seconds; the 64 MiB body limit alone would let 1.3 M rows through,
# which kept the workers busy past the step timeout and every request behind it waiting.
DEFAULT_MAX_REQUEST_ROWS = 100_000
BINARY_SIZE = "binary_data_size"
BINARY_OUTPUT = "binary_data_output"
_BYTE_COUNT = re.compile(r"[0-9]{1,15}")


@dataclass
class InferRequest:
    """One inference request, whichever front it came through.

    REST gives the parsed JSON `body` (and the `raw` bytes when MLServer may take them unchanged);
    gRPC and binary REST give decoded `inputs`. `decode()` fills `inputs`, `parameters`,
    `outputs` and `id` from the body when the gateway needs them (the fast path does not)."""

    target: str | None  # the seldon-model header (gRPC metadata)
    protocol: str  # "rest" or "grpc", for the metrics
    header_id: str | None = None  # x-request-id, already checked
    body: dict[str, Any] | None = None
    raw: bytes | None = None
    inputs: list[Tensor] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)  # requested: name, parameters
    id: str | None = None
    _decoded: bool = False

    def decode(self) -> list[Tensor]:
        """The input tensors; ServingError(400) naming what is wrong with the body."""
        if self._decoded:
            assert self.inputs is not None
            return self.inputs
        if self.body is not None:
            fields = check_body(self.body, self.inputs)
            self.inputs, self.parameters = fields.inputs, fields.parameters
            self.outputs, self.id = fields.outputs, fields.id
        if not self.inputs:
            raise ServingError(400, "the request needs a non-empty 'inputs' list of tensors")
        self._decoded = True
        return self.inputs

    def body_id(self) -> str | None:
        """The request's own id: decoded and checked, or (on the fast path, which checked it)
        straight from the body."""
        if self._decoded or self.body is None:
            return self.id
        found = self.body.get("id")
        return found if isinstance(found, str) and found else None

    def forwarded_extra(self) -> dict[str, Any]:
        """What MLServer gets beside the inputs: parameters without the binary extension's,
        the requested output names, the id."""
        extra: dict[str, Any] = {}
        parameters = {k: v for k, v in self.parameters.items() if k != BINARY_OUTPUT}
        if parameters:
            extra["parameters"] = parameters
        if self.outputs:
            extra["outputs"] = [{"name": o["name"]} for o in self.outputs]
        if self.id:
            extra["id"] = self.id
        return extra

    def _requested(self) -> tuple[dict[str, Any], list[Any]]:
        """The request's parameters and requested outputs, read from the body when it has one:
        a model request on the fast path is checked without being decoded."""
        if self.body is None or self._decoded:
            return self.parameters, self.outputs
        parameters = self.body.get("parameters")
        outputs = self.body.get("outputs")
        return (
            parameters if isinstance(parameters, dict) else {},
            outputs if isinstance(outputs, list) else [],
        )

    def wants_binary(self) -> bool:
        """Whether any output is to be answered in the binary extension's form."""
        parameters, outputs = self._requested()
        return parameters.get(BINARY_OUTPUT) is True or any(
            isinstance(o, dict)
            and isinstance(o.get("parameters"), dict)
            and o["parameters"].get("binary_data") is True
            for o in outputs
        )

    def binary_for(self, output: str) -> bool:
        """An output's own `binary_data` wins over the request's `binary_data_output`."""
        parameters, outputs = self._requested()
        for item in outputs:
            if (
                isinstance(item, dict)
                and item.get("name") == output
                and isinstance(item.get("parameters"), dict)
                and "binary_data" in item["parameters"]
            ):
                return item["parameters"]["binary_data"] is True
        return parameters.get(BINARY_OUTPUT) is True


@dataclass
class InferResult:
    """What the gateway answers: MLServer's answer as it came (`raw`, a model request passed
    through) or the output tensors, the response id, and the x-request-id to send back."""

    kind: str  # "model" or "pipeline"
    name: str
    id: str | None
    header_id: str | None
    outputs: list[Tensor] | None = None
    raw: bytes | None = None

    def as_json(self) -> dict[str, Any]:
        if self.raw is not None:
            return orjson.loads(self.raw)
        return {
            "model_name": self.name,
            "id": self.id,
            "parameters": {},
            "outputs": [to_json(t) for t in self.outputs or []],
        }


def parse_json(raw: bytes) -> Any:
    """The JSON document in `raw`; ServingError(400) when it is not JSON or an object repeats a
    key. Parsers disagree on which of two equal keys wins (first or last), so a repeated key
    could let the gateway check one value while a model reads the other."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ServingError(400, f"the request body is not JSON: {e}") from e
    # Every key ends with `"`, optional space, `:`; so when that pattern occurs no more often than
    # the parsed objects hold keys, no key was repeated (the usual case, in one regex scan).
    if len(_KEY_END.findall(raw)) > _count_keys(document):
        try:
            json.loads(raw, object_pairs_hook=_refuse_repeated_keys)
        except RecursionError:
            raise ServingError(400, "the request body nests too deeply") from None
    return document


_KEY_END = re.compile(rb'"[ \t\r\n]*:')


def _count_keys(document: Any) -> int:
    """Keys of the objects in `document`, not looking into lists that start with a scalar (tensor
    data). Counting too few only sends a body to the slow exact check, never lets a repeat by."""
    count, pending = 0, [document]
    while pending:
        value = pending.pop()
        if type(value) is dict:
            count += len(value)
            pending.extend(value.values())
        elif type(value) is list and value and type(value[0]) in _CONTAINERS:
            pending.extend(value)
    return count


_CONTAINERS = (dict, list)


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ServingError(
                400, f"the request body repeats the key {key!r} in one object; send each once"
            )
        found[key] = value
    return found


def declared_shapes(inputs: object) -> list[tuple[object, object]]:
    """(name, shape) of each input of a request's JSON `inputs`, as declared; what is not a
    tensor header is left for the full check."""
    if not isinstance(inputs, list):
        return []
    return [(item.get("name"), item.get("shape")) for item in inputs if isinstance(item, dict)]


def check_rows(shapes: Iterable[tuple[object, Sequence[object] | object]], max_rows: int) -> None:
    """ServingError(413) when an input's shape declares more than `max_rows` rows: read from the
    tensor headers, before any data is decoded, so an oversized request costs next to nothing."""
    for name, shape in shapes:
        if not isinstance(shape, Sequence) or not shape:
            continue
        rows = shape[0]
        if type(rows) is int and rows > max_rows:
            raise ServingError(
                413,
                f"input {name!r} has {rows} rows; this gateway takes at most {max_rows} rows per "
                "request (income-bundle serve --max-request-rows): send them in smaller requests",
            )


def decode_binary_body(
    raw: bytes, header_length: str, max_rows: int
) -> tuple[dict[str, Any], list[Tensor]]:
    """The JSON part of a binary-extension body, parsed, and every input decoded (from the
    binary part where `binary_data_size` says so). ServingError(400) when the lengths lie,
    413 when an input has more than `max_rows` rows (checked before decoding)."""
    if _BYTE_COUNT.fullmatch(header_length) is None:
        raise ServingError(
            400,
            f"the 'Inference-Header-Content-Length' header is {header_length[:40]!r}; "
            "expected the JSON part's length in bytes",
        )
    length = int(header_length)
    if length > len(raw):
        raise ServingError(
            400,
            f"the 'Inference-Header-Content-Length' header says the JSON part is {length} bytes, "
            f"but the whole body is {len(raw)}",
        )
    body = parse_json(raw[:length])
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise ServingError(400, "the request's JSON part must be an object with an 'inputs' list")
    check_rows(declared_shapes(body["inputs"]), max_rows)
    binary = memoryview(raw)[length:]
    offset = 0
    tensors = []
    for index, item in enumerate(body["inputs"]):
        where = f"inputs[{index}]"
        parameters = item.get("parameters") if isinstance(item, dict) else None
        if not isinstance(parameters, dict) or BINARY_SIZE not in parameters:
            tensors.append(from_json(item, where))
            continue
        size = parameters[BINARY_SIZE]
        name = item.get("name")
        where = f"{where} ({name!r})"
        if type(size) is not int or size < 0:
            raise ServingError(
                400, f"{where}: binary_data_size is {size!r}; expected a number of bytes"
            )
        if "data" in item:
            raise ServingError(400, f"{where} has both 'data' and binary_data_size; send one")
        if offset + size > len(binary):
            raise ServingError(
                400,
                f"{where}: binary_data_size says {size} bytes, but only {len(binary) - offset} "
                "bytes of binary data are left",
            )
        datatype = item.get("datatype")
        if not isinstance(datatype, str) or datatype not in DATATYPES:
            raise ServingError(
                400, f"{where}: datatype {datatype!r} is not a V2 datatype ({', '.join(DATATYPES)})"
            )
        data = decode_raw(bytes(binary[offset : offset + size]), datatype, where)
        offset += size
        rest = {k: v for k, v in parameters.items() if k != BINARY_SIZE}
        tensors.append(from_json({**item, "data": data, "parameters": rest}, where))
    if offset != len(binary):
        raise ServingError(
            400,
            f"the body has {len(binary) - offset} bytes of binary data that no input's "
            f"binary_data_size accounts for (they add up to {offset} of {len(binary)})",
        )
    return body, tensors


def encode_answer(result: InferResult, request: InferRequest) -> tuple[bytes, int | None]:
    """The REST answer's body, and the JSON part's length when outputs go in binary form."""
    if not request.wants_binary():
        return orjson.dumps(result.as_json()), None
    answer = result.as_json()
    chunks = []
    outputs = []
    for index, output in enumerate(answer.get("outputs") or []):
        if isinstance(output, dict) and request.binary_for(output.get("name")):
            data = encode_raw(from_json(output, f"{result.name} output {index}"))
            parameters = {**(output.get("parameters") or {}), BINARY_SIZE: len(data)}
            output = {k: v for k, v in output.items() if k != "data"} | {"parameters": parameters}
            chunks.append(data)
        outputs.append(output)
    header = orjson.dumps({**answer, "outputs": outputs})
    return header + b"".join(chunks), len(header)
