"""Malformed requests at the gateway: a 4xx in the protocol's error shape, before any model sees
them, and the gateway still ready afterwards. Then a schema-driven fuzz of the REST surface."""

from __future__ import annotations

import http.client
import json
import math
import re
import urllib.error
import urllib.request

import grpc as grpc_lib
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.support.v2_bodies import ROW, row_with, tensor

PIPELINE = "income-production.pipeline"


def body(*tensors):
    return json.dumps({"inputs": list(tensors)}).encode()


def with_id(request_id) -> bytes:
    return json.dumps({"id": request_id, "inputs": [tensor(ROW, [1, 12])]}).encode()


def deep_body(depth: int) -> bytes:
    data = b"[" * depth + b"1" + b"]" * depth
    return (
        b'{"inputs": [{"name": "predict", "datatype": "FP32", "shape": [1, 12], "data": %s}]}'
        % data
    )


def raw_body(values: list, last: str) -> bytes:
    data = ", ".join([*map(str, values), last])
    return (
        b'{"inputs": [{"name": "predict", "datatype": "FP32", "shape": [1, 12], "data": [%s]}]}'
        % data.encode()
    )


# (id, seldon-model header, raw body, expected status, phrase in the error)
REST_CASES = [
    ("not-json", PIPELINE, b"{inputs: nope", 400, "not JSON"),
    ("json-array", PIPELINE, b"[1, 2]", 400, "must be a JSON object"),
    ("no-inputs-key", PIPELINE, b"{}", 400, "non-empty 'inputs'"),
    ("empty-inputs", PIPELINE, b'{"inputs": []}', 400, "non-empty 'inputs'"),
    ("inputs-not-list", PIPELINE, b'{"inputs": {"a": 1}}', 400, "non-empty 'inputs'"),
    ("tensor-not-object", PIPELINE, b'{"inputs": [3]}', 400, "inputs[0] must be an object"),
    (
        "no-datatype",
        PIPELINE,
        b'{"inputs": [{"name": "p", "shape": [1], "data": [1]}]}',
        400,
        "lacks 'datatype'",
    ),
    (
        "no-shape",
        PIPELINE,
        b'{"inputs": [{"name": "p", "datatype": "FP32", "data": [1]}]}',
        400,
        "lacks 'shape'",
    ),
    (
        "no-data",
        PIPELINE,
        b'{"inputs": [{"name": "p", "datatype": "FP32", "shape": [1]}]}',
        400,
        "lacks 'data'",
    ),
    ("bad-datatype", PIPELINE, body(tensor(ROW, [1, 12], "FLOAT32")), 400, "not a V2 datatype"),
    ("negative-shape", PIPELINE, body(tensor(ROW, [-1, 12])), 400, "non-negative integers"),
    ("shape-not-list", PIPELINE, body(tensor(ROW, "1x12")), 400, "non-negative integers"),
    ("empty-name", PIPELINE, body(tensor(ROW, [1, 12], name="")), 400, "non-empty string"),
    (
        "parameters-not-object",
        PIPELINE,
        b'{"inputs": [{"name": "p", "datatype": "FP32", "shape": [1, 12], "data": [1], "parameters": 3}]}',
        400,
        "parameters must be an object",
    ),
    (
        "outputs-not-list",
        "income",
        json.dumps({"inputs": [tensor(ROW, [1, 12])], "outputs": "predict"}).encode(),
        400,
        "'outputs' must be a list",
    ),
    (
        "request-parameters-not-object",
        "income",
        json.dumps({"inputs": [tensor(ROW, [1, 12])], "parameters": [1]}).encode(),
        400,
        "'parameters' must be an object",
    ),
    ("values-short", PIPELINE, body(tensor(ROW, [2, 12])), 400, "needs 24 values, but carries 12"),
    (
        "values-long",
        "income",
        body(tensor(ROW * 2, [1, 12])),
        400,
        "needs 12 values, but carries 24",
    ),
    (
        "null-value",
        PIPELINE,
        body(tensor(row_with(3, None), [1, 12])),
        400,
        "'Marital Status') is None",
    ),
    ("string-value", "income", body(tensor(row_with(0, "old"), [1, 12])), 400, "'Age') is 'old'"),
    ("eleven-columns", PIPELINE, body(tensor(ROW[:11], [1, 11])), 400, "expected [-1, 12]"),
    ("three-dimensions", "income-drift", body(tensor(ROW, [1, 1, 12])), 400, "expected [-1, 12]"),
    (
        "bytes-tensor",
        PIPELINE,
        body(tensor([str(v) for v in ROW], [1, 12], "BYTES")),
        400,
        "datatype BYTES",
    ),
    ("empty-batch", PIPELINE, body(tensor([], [0, 12])), 400, "empty batch"),
    (
        "unknown-category",
        PIPELINE,
        body(tensor(row_with(1, 42), [1, 12])),
        400,
        "'Workclass') is 42",
    ),
    ("negative-category", "income", body(tensor(row_with(7, -1), [1, 12])), 400, "'Sex') is -1"),
    (
        "fractional-category",
        "income-preprocess",
        body(tensor(row_with(2, 0.5), [1, 12])),
        400,
        "'Education') is 0.5",
    ),
    (
        "two-inputs",
        PIPELINE,
        body(tensor(ROW, [1, 12]), tensor(ROW, [1, 12], name="x")),
        400,
        "got 2 inputs",
    ),
    (
        "outlier-wrong-width",
        "income-outlier",
        body(tensor(ROW, [1, 12], "FP64", "transform")),
        400,
        "expected [-1, 57]",
    ),
    (
        "explainer-too-many-rows",
        "income-explainer",
        body(tensor(ROW * 11, [11, 12])),
        400,
        "at most 10 rows",
    ),
    (
        "unknown-output",
        "income",
        json.dumps({"inputs": [tensor(ROW, [1, 12])], "outputs": [{"name": "nope"}]}).encode(),
        400,
        "model income",
    ),
    # Without the header the path names the target, as seldon-mesh's Lua filter does: here
    # /v2/models/model/infer, and no model is called "model".
    ("missing-header", None, body(tensor(ROW, [1, 12])), 404, "no model or pipeline 'model'"),
    ("empty-header", "  ", body(tensor(ROW, [1, 12])), 404, "no model or pipeline 'model'"),
    ("unknown-model", "income-v9", body(tensor(ROW, [1, 12])), 404, "this gateway serves: income,"),
    (
        "pipeline-without-suffix",
        "income-production",
        body(tensor(ROW, [1, 12])),
        404,
        "income-production.pipeline",
    ),
    (
        "unknown-pipeline",
        "nope.pipeline",
        body(tensor(ROW, [1, 12])),
        404,
        "no model or pipeline 'nope.pipeline'",
    ),
    # Request ids: they are echoed into a response header, so the rule is a header value's.
    ("id-newline", PIPELINE, with_id("a\nb"), 400, "contains '\\n'"),
    ("id-newline-model", "income", with_id("a\r\nb"), 400, "contains '\\r'"),
    ("id-nul", "income", with_id("\u0000x"), 400, "contains '\\x00'"),
    ("id-number", PIPELINE, with_id(5), 400, "'id' must be a string, got int"),
    ("id-object", "income", with_id({"a": 1}), 400, "must be a string, got dict"),
    ("id-100-kb", PIPELINE, with_id("x" * 100_000), 400, "100000 characters long"),
    ("id-100-kb-model", "income", with_id("x" * 100_000), 400, "at most 1024"),
    ("id-trailing-space", "income", with_id("a "), 400, "no leading or trailing space"),
    ("id-non-ascii", "income", with_id("caf\u00e9"), 400, "visible ASCII"),
    # Deep nesting (json parsers allow ~1000 levels; a recursive flatten does not).
    *(
        (f"nested-990-{target}", target, deep_body(990), 400, "nests lists deeper")
        for target in (PIPELINE, "income", "income-drift", "income-explainer", "income-v1.pipeline")
    ),
    ("nested-beyond-shape", "income", body(tensor([[ROW]], [1, 12])), 400, "shape's 2 dimensions"),
    ("nested-too-deep-for-json", "income", deep_body(5000), 400, "not JSON"),
    # Shapes and numbers.
    # Over the row limit: refused from the shape alone, before the data is looked at.
    ("huge-shape-tiny-data", PIPELINE, body(tensor(ROW, [10**12, 12])), 413, "at most 100000"),
    ("huge-shape-model", "income-drift", body(tensor(ROW, [2**62, 12])), 413, "rows per request"),
    ("shape-tiny-data", PIPELINE, body(tensor(ROW, [1000, 12])), 400, "needs 12000"),
    ("shape-tiny-data-model", "income-drift", body(tensor(ROW, [1000, 12])), 400, "but carries 12"),
    ("shape-beyond-int64", "income", body(tensor(ROW, [10**30, 12])), 400, "non-negative integers"),
    ("fp32-overflow", "income", body(tensor(row_with(0, 1e39), [1, 12])), 400, "(FP32)"),
    ("fp16-overflow", PIPELINE, body(tensor(row_with(8, 70000), [1, 12], "FP16")), 400, "FP16"),
    (
        "int32-overflow",
        PIPELINE,
        body(tensor(row_with(8, 2**40), [1, 12], "INT32")),
        400,
        "'Capital Gain') is 1.09951e+12; expected an integer from -2147483648 to 2147483647 (INT32)",
    ),
    ("uint8-negative", "income", body(tensor(row_with(0, -3), [1, 12], "UINT8")), 400, "UINT8"),
    (
        "int-fraction",
        "income",
        body(tensor(row_with(0, 39.5), [1, 12], "INT64")),
        400,
        "is 39.5; expected an integer",
    ),
    ("double-overflow", "income", raw_body(ROW[:11], "1e400"), 400, "not JSON"),
    # A repeated key: parsers differ on which wins, so nobody may pick one.
    (
        "repeated-inputs",
        "income",
        b'{"inputs": [{"name": "predict", "datatype": "FP32", "shape": [1, 12], "data": ["bad"]}],'
        + b'"inputs": '
        + json.dumps([tensor(ROW, [1, 12])]).encode()
        + b"}",
        400,
        "repeats the key 'inputs'",
    ),
    (
        "repeated-shape",
        PIPELINE,
        json.dumps({"inputs": [tensor(ROW, [1, 12])]})
        .encode()
        .replace(b'"shape"', b'"shape": [2, 12], "shape"'),
        400,
        "repeats the key 'shape'",
    ),
    (
        "repeated-key-hidden-by-a-string",  # a string holding `":` makes the quick count unsure
        "income",
        json.dumps({"id": 'x":', "inputs": [tensor(ROW, [1, 12])]})
        .encode()
        .replace(b'"id"', b'"id": "a", "id"'),
        400,
        "repeats the key 'id'",
    ),
]


def rest_post(seldon, header, raw: bytes, path: str = "/v2/models/model/infer"):
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["seldon-model"] = header
    request = urllib.request.Request(seldon.http_url + path, data=raw, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def model_calls(seldon) -> float:
    """Calls that reached MLServer, as the gateway counts them in Seldon's agent series."""
    with urllib.request.urlopen(f"{seldon.http_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(v) for v in re.findall(r"^seldon_model_infer_total\{[^}]*\} (\S+)$", text, re.M)
    )


@pytest.mark.parametrize(
    ("case", "header", "raw", "status", "phrase"), REST_CASES, ids=[c[0] for c in REST_CASES]
)
def test_rest_malformed_request(seldon, case, header, raw, status, phrase):
    before = model_calls(seldon)
    code, answer = rest_post(seldon, header, raw)
    assert code == status, answer
    assert set(answer) == {"error"} and phrase in answer["error"]
    if case not in ("explainer-too-many-rows", "unknown-output"):  # only the model knows these
        assert model_calls(seldon) == before, (
            "a model was called for a request the gateway should reject"
        )


def test_pipeline_errors_name_the_pipeline(seldon):
    _, answer = rest_post(seldon, PIPELINE, body(tensor(ROW[:11], [1, 11])))
    assert answer["error"].startswith("pipeline income-production: model income")


CONTENTS = {
    "FP16": "fp32_contents",
    "INT8": "int_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT64": "int64_contents",
    "BYTES": "bytes_contents",
}


def grpc_request(*tensors, raw: list[bytes] | None = None):
    request = service_pb2.ModelInferRequest(model_name="model")
    for t in tensors:
        item = request.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        if raw is None:
            values = [str(v).encode() for v in t["data"]] if t["datatype"] == "BYTES" else t["data"]
            getattr(item.contents, CONTENTS[t["datatype"]]).extend(values)
    if raw is not None:
        request.raw_input_contents.extend(raw)
    return request


def grpc_with_id(request_id: str):
    request = grpc_request(tensor(ROW, [1, 12]))
    request.id = request_id
    return request


GRPC_CASES = [
    (
        "eleven-columns",
        PIPELINE,
        grpc_request(tensor(ROW[:11], [1, 11])),
        "INVALID_ARGUMENT",
        "expected [-1, 12]",
    ),
    (
        "bytes-tensor",
        PIPELINE,
        grpc_request(tensor([str(v) for v in ROW], [1, 12], "BYTES")),
        "INVALID_ARGUMENT",
        "datatype BYTES",
    ),
    (
        "nan",
        PIPELINE,
        grpc_request(tensor(row_with(0, math.nan), [1, 12])),
        "INVALID_ARGUMENT",
        "'Age') is nan",
    ),
    (
        "infinity",
        "income",
        grpc_request(tensor(row_with(10, math.inf), [1, 12])),
        "INVALID_ARGUMENT",
        "is inf",
    ),
    ("empty-batch", PIPELINE, grpc_request(tensor([], [0, 12])), "INVALID_ARGUMENT", "empty batch"),
    (
        "unknown-category",
        PIPELINE,
        grpc_request(tensor(row_with(11, 11), [1, 12])),
        "INVALID_ARGUMENT",
        "from 0 to 10",
    ),
    (
        "two-inputs",
        "income-drift",
        grpc_request(tensor(ROW, [1, 12]), tensor(ROW, [1, 12], name="x")),
        "INVALID_ARGUMENT",
        "got 2 inputs",
    ),
    ("no-inputs", PIPELINE, grpc_request(), "INVALID_ARGUMENT", "at least one input"),
    (
        "values-short",
        PIPELINE,
        grpc_request(tensor(ROW, [3, 12])),
        "INVALID_ARGUMENT",
        "needs 36 values",
    ),
    (
        "raw-not-whole",
        PIPELINE,
        grpc_request(tensor([], [1, 12]), raw=[b"\0" * 47]),
        "INVALID_ARGUMENT",
        "not a whole number of FP32",
    ),
    (
        "raw-count-mismatch",
        PIPELINE,
        grpc_request(tensor([], [1, 12]), tensor([], [1, 12], name="b"), raw=[b"\0" * 48]),
        "INVALID_ARGUMENT",
        "2 inputs but 1 raw",
    ),
    (
        "bad-datatype",
        PIPELINE,
        service_pb2.ModelInferRequest(
            inputs=[
                service_pb2.ModelInferRequest.InferInputTensor(
                    name="p", datatype="FLOAT", shape=[1]
                )
            ]
        ),
        "INVALID_ARGUMENT",
        "not a V2 datatype",
    ),
    (
        "missing-header",
        None,
        grpc_request(tensor(ROW, [1, 12])),
        "INVALID_ARGUMENT",
        "missing 'seldon-model'",
    ),
    (
        "unknown-model",
        "income-v9",
        grpc_request(tensor(ROW, [1, 12])),
        "NOT_FOUND",
        "this gateway serves",
    ),
    (
        "outlier-wrong-width",
        "income-outlier",
        grpc_request(tensor(ROW, [1, 12], "FP64", "transform")),
        "INVALID_ARGUMENT",
        "expected [-1, 57]",
    ),
    ("id-newline", PIPELINE, grpc_with_id("a\nb"), "INVALID_ARGUMENT", "contains '\\n'"),
    ("id-nul", "income", grpc_with_id("\0"), "INVALID_ARGUMENT", "contains '\\x00'"),
    ("id-100-kb", "income", grpc_with_id("x" * 100_000), "INVALID_ARGUMENT", "at most 1024"),
    (
        "int8-overflow",
        "income",
        grpc_request(tensor(row_with(0, 300), [1, 12], "INT8")),
        "INVALID_ARGUMENT",
        "is 300; expected an integer from -128 to 127 (INT8)",
    ),
    (
        "fp16-overflow",
        PIPELINE,
        grpc_request(tensor(row_with(8, 70000.0), [1, 12], "FP16")),
        "INVALID_ARGUMENT",
        "(FP16)",
    ),
    (
        "huge-shape-tiny-data",
        PIPELINE,
        grpc_request(tensor(ROW, [10**12, 12])),
        "RESOURCE_EXHAUSTED",
        "1000000000000 rows",
    ),
    (
        "shape-tiny-data",
        PIPELINE,
        grpc_request(tensor(ROW, [1000, 12])),
        "INVALID_ARGUMENT",
        "needs 12000 values",
    ),
]


@pytest.mark.parametrize(
    ("case", "header", "request_", "code", "phrase"), GRPC_CASES, ids=[c[0] for c in GRPC_CASES]
)
def test_grpc_malformed_request(seldon, case, header, request_, code, phrase):
    before = model_calls(seldon)
    metadata = [("seldon-model", header)] if header else []
    with grpc_lib.insecure_channel(seldon.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc_lib.RpcError) as error:
            stub.ModelInfer(request_, metadata=metadata, timeout=30)
    assert error.value.code().name == code
    assert phrase in error.value.details()
    assert model_calls(seldon) == before


HEADER_CASES = [
    # httptools (llhttp) itself refuses control characters in a header with a plain 400.
    ("id-control-character", {"x-request-id": "a\x01b"}, 400, None),
    ("id-2000-characters", {"x-request-id": "x" * 2000}, 400, "2000 characters long"),
    ("id-latin-1", {"x-request-id": "caf\xe9"}, 400, "visible ASCII"),
    ("id-100-kb", {"x-request-id": "x" * 100_000}, 431, "request headers are 100"),
    ("header-70-kb", {"x-filler": "y" * 70_000}, 431, "at most 61440"),
]


@pytest.mark.parametrize(
    ("case", "headers", "status", "phrase"), HEADER_CASES, ids=[c[0] for c in HEADER_CASES]
)
@pytest.mark.parametrize("target", ["income", PIPELINE])
def test_rest_malformed_headers(seldon, case, headers, status, phrase, target):
    before = model_calls(seldon)
    host, port = seldon.http_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    all_headers = {"seldon-model": target, "content-type": "application/json", **headers}
    connection.request("POST", "/v2/models/m/infer", body(tensor(ROW, [1, 12])), all_headers)
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    assert response.status == status, raw
    if phrase is not None:
        answer = json.loads(raw)
        assert set(answer) == {"error"} and phrase in answer["error"]
    assert response.getheader("x-request-id") is None
    assert model_calls(seldon) == before
    with urllib.request.urlopen(f"{seldon.http_url}/v2/health/ready", timeout=10) as ready:
        assert ready.status == 200


def test_grpc_request_id_metadata_is_checked(seldon):
    with grpc_lib.insecure_channel(seldon.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for value, phrase in [("x" * 2000, "2000 characters long"), (" a", "leading")]:
            metadata = [("seldon-model", PIPELINE), ("x-request-id", value)]
            with pytest.raises(grpc_lib.RpcError) as error:
                stub.ModelInfer(grpc_request(tensor(ROW, [1, 12])), metadata=metadata, timeout=30)
            assert error.value.code() == grpc_lib.StatusCode.INVALID_ARGUMENT
            assert "'x-request-id' metadata" in error.value.details()
            assert phrase in error.value.details()
        # Metadata beyond gRPC's limit (8 KiB by default) is refused by the transport, with a
        # status, and the server goes on serving.
        metadata = [("seldon-model", PIPELINE), ("x-filler", "y" * 100_000)]
        with pytest.raises(grpc_lib.RpcError) as error:
            stub.ModelInfer(grpc_request(tensor(ROW, [1, 12])), metadata=metadata, timeout=30)
        assert error.value.code() == grpc_lib.StatusCode.RESOURCE_EXHAUSTED, error.value
        ready = stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=30)
        assert ready.ready


def test_gateway_still_serves_after_malformed_requests(seldon, scenario):
    from tests.support.clients import routed

    for _, header, raw, _, _ in REST_CASES:
        rest_post(seldon, header, raw)
    with urllib.request.urlopen(f"{seldon.http_url}/v2/health/ready", timeout=10) as response:
        assert response.status == 200
    outputs = routed(seldon, "income-v1.pipeline", "grpc").infer("m", scenario["reference"].X[:3])
    assert outputs["predict"].shape == (3, 1)


def test_mlserver_422_and_plain_500_are_translated():
    from income_bundle.seldon.forwarding import translate_error as _translate_error

    detail = json.dumps(
        {"detail": [{"loc": ["body", "inputs", 0, "datatype"], "msg": "Field required"}]}
    )
    assert _translate_error("income", 422, detail.encode()) == (
        400,
        "model income rejected the request: body.inputs.0.datatype: Field required",
    )
    # A 5xx carries MLServer's or the model's internals: logged, never passed on.
    for answer in (b"Traceback: /srv/secret.py", b'{"error": "KeyError: /srv/secret.py"}'):
        status, message = _translate_error("income", 500, answer)
        assert status == 500 and "secret" not in message
        assert (
            message == "model income failed on MLServer (HTTP 500); the gateway log has its answer"
        )
    assert _translate_error(
        "income", 400, b'{"error": "mlserver.errors.InferenceError: model income: bad"}'
    ) == (400, "model income: bad")


def _fast_case(**changes) -> dict:
    body = {"inputs": [tensor(ROW * 2, [2, 12])]}
    for key, value in changes.items():
        if key.startswith("tensor_"):
            body["inputs"][0][key.removeprefix("tensor_")] = value
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        (_fast_case(), True),
        (_fast_case(id="abc", parameters={}, outputs=[{"name": "predict"}]), True),
        (_fast_case(tensor_datatype="INT64"), True),
        # Anything else takes the full check, which words the problem.
        (_fast_case(tensor_data=[[39, 7, 1, 1, 1, 1, 4, 1, 2174, 0, 40, 9]] * 2), False),
        (_fast_case(tensor_data=[True] + [1] * 23), False),
        (_fast_case(tensor_data=["39"] + [1] * 23), False),
        (_fast_case(tensor_data=[None] + [1] * 23), False),
        (_fast_case(tensor_data=[1e400] + [1] * 23), False),
        (_fast_case(tensor_data=[1e39] + [1] * 23), False),  # beyond FP32
        (_fast_case(tensor_datatype="FP64", tensor_data=[1e39] + [1] * 23), True),
        (_fast_case(tensor_datatype="INT64", tensor_data=[39.5] + [1] * 23), False),
        (_fast_case(id="a\nb"), False),
        (_fast_case(tensor_data=[39, 99] + [1] * 22), False),  # Workclass code out of range
        (_fast_case(tensor_data=[39, 1.5] + [1] * 22), False),  # not an integer code
        (_fast_case(tensor_data=[39, -1] + [1] * 22), False),
        (_fast_case(tensor_data=[1] * 23), False),
        (_fast_case(tensor_shape=[2, 11]), False),
        (_fast_case(tensor_shape=[0, 12], tensor_data=[]), False),
        (_fast_case(tensor_shape=[2.0, 12]), False),
        (_fast_case(tensor_datatype="BYTES"), False),
        (_fast_case(tensor_name=""), False),
        (_fast_case(tensor_parameters=[]), False),
        (_fast_case(tensor_extra=1), False),
        (_fast_case(id=5), False),
        (_fast_case(parameters=[]), False),
        (_fast_case(outputs=[{"nam": "predict"}]), False),
        (_fast_case(other=1), False),
        ({"inputs": []}, False),
    ],
)
def test_fast_path_accepts_only_what_the_full_check_accepts(training_report, body, accepted):
    from income_bundle.paths import artifact_dir
    from income_bundle.runtime.contract import ModelContract
    from income_bundle.seldon.protocol import InferRequest

    contract = ModelContract.from_folder("income", artifact_dir("income"))
    assert contract.accepts_fast(body) is accepted
    if accepted:  # and the full check agrees
        contract.check(InferRequest("income", "rest", body=body).decode())
