"""Malformed requests at the gateway: a 4xx in the protocol's error shape, before any model sees
them, and the gateway still ready afterwards. Then a schema-driven fuzz of the REST surface."""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.request

import grpc as grpc_lib
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .v2_bodies import ROW, row_with, tensor

PIPELINE = "income-production.pipeline"


def body(*tensors):
    return json.dumps({"inputs": list(tensors)}).encode()


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
    ("missing-header", None, body(tensor(ROW, [1, 12])), 400, "missing 'seldon-model' header"),
    ("empty-header", "  ", body(tensor(ROW, [1, 12])), 400, "missing 'seldon-model' header"),
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
    with urllib.request.urlopen(f"{seldon.http_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(v)
        for v in re.findall(r"^seldon_gateway_model_calls_total\{[^}]*\} (\S+)$", text, re.M)
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


def test_gateway_still_serves_after_malformed_requests(seldon, scenario):
    from .conftest import routed

    for _, header, raw, _, _ in REST_CASES:
        rest_post(seldon, header, raw)
    with urllib.request.urlopen(f"{seldon.http_url}/v2/health/ready", timeout=10) as response:
        assert response.status == 200
    outputs = routed(seldon, "income-v1.pipeline", "grpc").infer("m", scenario["reference"].X[:3])
    assert outputs["predict"].shape == (3, 1)


def test_mlserver_422_and_plain_500_are_translated():
    from income_bundle.seldon.gateway import _translate_error

    detail = json.dumps(
        {"detail": [{"loc": ["body", "inputs", 0, "datatype"], "msg": "Field required"}]}
    )
    assert _translate_error("income", 422, detail.encode()) == (
        400,
        "model income rejected the request: body.inputs.0.datatype: Field required",
    )
    assert _translate_error("income", 500, b"Internal Server Error") == (
        500,
        "model income failed: Internal Server Error",
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
    from income_bundle.seldon.gateway import ModelContract
    from income_bundle.seldon.rest import parse_rest_request

    contract = ModelContract.from_folder("income", artifact_dir("income"))
    assert contract.accepts_fast(body) is accepted
    if accepted:  # and the full check agrees
        tensors, _, _ = parse_rest_request(json.dumps(body).encode())
        contract.check(tensors)
