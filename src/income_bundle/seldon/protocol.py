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

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Sequence
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
    "MAX_MESSAGE_BYTES",
    "MAX_REQUEST_VALUES",
    "InferRequest",
    "InferResult",
    "check_rows",
    "declared_shapes",
    "decode_binary_body",
    "derived_max_rows",
    "encode_answer",
    "is_large",
    "off_loop",
    "parse_json",
    "values_in",
    "versioned_answer",
]

BINARY_HEADER = "inference-header-content-length"

# The largest request body (REST) or message (gRPC) either front takes.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# The values one request may carry. 1.2 M is 100 000 rows of the income model's 12 features
# (about 5 MB as FP32), a batch MLServer answers in seconds; the 64 MiB body limit alone let
# 1.3 M such rows through, which kept the workers busy past the step timeout and every request
# behind it waiting.
MAX_REQUEST_VALUES = 1_200_000
# A target that declares no input shapes gets this (the income model's share of the budget).
DEFAULT_MAX_REQUEST_ROWS = 100_000
# Requests and answers past these sizes are parsed, checked, decoded and encoded on a worker
# thread: 90 000 rows of 12 values took 0.1 to 0.5 s per step on the event loop, where every
# other request waited. Below them a step takes a few milliseconds, less than a thread hop costs.
LARGE_BODY_BYTES = 1 << 20
LARGE_VALUES = 50_000
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
    through) or the output tensors, the response id, and the x-request-id to send back.

    `model_name` and `model_version` are what the answer says, as seldon-mesh answers them
    (`income_1`, "1" for a model; "" and none for a pipeline); `headers` are the response headers
    (gRPC metadata) seldon-mesh adds, in order, a name repeated for each of its values."""

    kind: str  # "model" or "pipeline"
    name: str  # the target: the model or pipeline the request went to
    id: str | None
    header_id: str | None
    outputs: list[Tensor] | None = None
    raw: bytes | None = None
    model_name: str | None = None  # None: `name`
    model_version: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def answered_name(self) -> str:
        return self.name if self.model_name is None else self.model_name

    def as_json(self) -> dict[str, Any]:
        """The JSON answer as the pipeline gateway writes it (kafka/pipeline/v2.go
        `InferenceResponse`: model_version, id and parameters are left out when empty)."""
        if self.raw is not None:
            return orjson.loads(self.raw)
        answer: dict[str, Any] = {"model_name": self.answered_name}
        if self.model_version:
            answer["model_version"] = self.model_version
        if self.id:
            answer["id"] = self.id
        answer["outputs"] = [to_json(t) for t in self.outputs or []]
        return answer


_ANSWER_HEAD = re.compile(
    rb'\{"model_name":("(?:[^"\\]|\\.)*")(?:,"model_version":"(?:[^"\\]|\\.)*")?'
)


def versioned_answer(raw: bytes, model_name: str, model_version: str) -> bytes:
    """MLServer's JSON answer with the name and version seldon-mesh's agent gives the model
    (it loads `income` as `income_1`, version "1", so MLServer answers with those). MLServer
    writes `model_name` first and `model_version` next (mlserver/types/dataplane.py
    `InferenceResponse`), so only the head is rewritten; any other layout is re-encoded."""
    name = orjson.dumps(model_name)
    head = b'{"model_name":' + name + b',"model_version":' + orjson.dumps(model_version)
    found = _ANSWER_HEAD.match(raw)
    if found is not None:
        rest = raw[found.end() :]
        if rest[:1] in (b",", b"}"):
            return head + rest
    answer = orjson.loads(memoryview(raw))  # `raw` may be a bytes subclass, which orjson refuses
    if not isinstance(answer, dict):
        return raw
    answer.pop("model_name", None)
    answer.pop("model_version", None)
    return orjson.dumps({"model_name": model_name, "model_version": model_version, **answer})


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


def values_in(tensors: Iterable[Tensor] | None) -> int:
    return sum(len(t.data) for t in tensors or ())


def is_large(request: InferRequest) -> bool:
    """Whether checking and decoding this request belongs on a worker thread."""
    if request.raw is not None:
        return len(request.raw) > LARGE_BODY_BYTES
    return values_in(request.inputs) > LARGE_VALUES


async def off_loop(large: bool, call: Callable[..., Any], *args: Any) -> Any:
    """`call(*args)`: on a worker thread when `large`, else here."""
    if large:
        return await asyncio.to_thread(call, *args)
    return call(*args)


def derived_max_rows(declared: Iterable[dict[str, Any]]) -> int:
    """The rows a request for a target with these declared inputs may carry: for each input, no
    more than MAX_REQUEST_VALUES values, nor more rows than fit in MAX_MESSAGE_BYTES at the
    datatype's own size (its tightest encoding, raw bytes; a BYTES element takes at least its
    4-byte length), whatever encoding the request uses; the least over the inputs.
    DEFAULT_MAX_REQUEST_ROWS when nothing is declared."""
    limits = []
    for item in declared:
        shape = item.get("shape") or []
        columns = 1
        for dimension in shape[1:]:
            if isinstance(dimension, int) and dimension > 0:
                columns *= dimension
        kind = DATATYPES.get(item.get("datatype", ""))
        itemsize = kind.dtype.itemsize if kind is not None and kind.dtype is not None else 4
        limits.append(min(MAX_REQUEST_VALUES // columns, MAX_MESSAGE_BYTES // (columns * itemsize)))
    return max(1, min(limits)) if limits else DEFAULT_MAX_REQUEST_ROWS


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
                f"input {name!r} has {rows} rows; this target takes at most {max_rows} rows per "
                "request (sized from its declared inputs; income-bundle serve "
                "--max-request-rows sets another): send them in smaller requests",
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
