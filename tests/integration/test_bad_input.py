"""Malformed requests get a 400 naming the model and the problem, and MLServer keeps serving.

Stock MLServer answers some of these with a 500 (wrong shape, empty batch), predicts on a BYTES
tensor, or turns a null into is_drift = 0; the income runtimes reject them all before the model.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import grpc as grpc_lib
import pytest

# tritonclient's protobufs, not MLServer's: both register `inference.*`, and only one may load.
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.support.v2_bodies import ROW, row_with, tensor

RAW_MODELS = ["income", "income-preprocess", "income-drift", "income-explainer"]


# (case id, request body, phrase the message must contain, protocols that can carry it).
# JSON has no NaN or infinity, and gRPC contents are typed (no null, no strings in FP32).
BOTH, REST, GRPC = {"rest", "grpc"}, {"rest"}, {"grpc"}
CASES = [
    ("eleven-columns", {"inputs": [tensor(ROW[:11], [1, 11])]}, "expected [-1, 12]", BOTH),
    ("one-dimensional", {"inputs": [tensor(ROW, [12])]}, "expected [-1, 12]", BOTH),
    ("three-dimensional", {"inputs": [tensor(ROW, [1, 1, 12])]}, "expected [-1, 12]", BOTH),
    (
        "bytes-tensor",
        {"inputs": [tensor([str(v) for v in ROW], [1, 12], "BYTES")]},
        "datatype BYTES",
        BOTH,
    ),
    ("bool-tensor", {"inputs": [tensor([True] * 12, [1, 12], "BOOL")]}, "datatype BOOL", BOTH),
    ("no-inputs", {"inputs": []}, "got 0 inputs", BOTH),
    (
        "two-inputs",
        {"inputs": [tensor(ROW, [1, 12]), tensor(ROW, [1, 12], name="x")]},
        "got 2 inputs",
        BOTH,
    ),
    ("empty-batch", {"inputs": [tensor([], [0, 12])]}, "empty batch", BOTH),
    ("too-few-values", {"inputs": [tensor(ROW * 2, [3, 12])]}, "needs 36 values", BOTH),
    ("too-many-values", {"inputs": [tensor(ROW * 2, [1, 12])]}, "needs 12 values", BOTH),
    ("nan", {"inputs": [tensor(row_with(0, math.nan), [1, 12])]}, "'Age') is nan", GRPC),
    (
        "infinity",
        {"inputs": [tensor(row_with(10, math.inf), [1, 12])]},
        "'Hours per week') is inf",
        GRPC,
    ),
    ("null", {"inputs": [tensor(row_with(11, None), [1, 12])]}, "'Country') is None", REST),
    (
        "string-value",
        {"inputs": [tensor(row_with(0, "forty"), [1, 12])]},
        "'Age') is 'forty'",
        REST,
    ),
    ("unknown-code", {"inputs": [tensor(row_with(1, 99), [1, 12])]}, "'Workclass') is 99", BOTH),
    ("negative-code", {"inputs": [tensor(row_with(7, -1), [1, 12])]}, "'Sex') is -1", BOTH),
    (
        "fractional-code",
        {"inputs": [tensor(row_with(2, 1.5), [1, 12])]},
        "'Education') is 1.5",
        BOTH,
    ),
    ("code-past-end", {"inputs": [tensor(row_with(11, 11), [1, 12])]}, "from 0 to 10", BOTH),
]


def rest_infer(server, model: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{server.http_url}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


CONTENTS_FIELD = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT64": "int64_contents",
    "BOOL": "bool_contents",
    "BYTES": "bytes_contents",
}


def grpc_request(model: str, body: dict) -> service_pb2.ModelInferRequest:
    """The gRPC form of a JSON body: typed contents, as tritonclient or Seldon would send."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for item in body["inputs"]:
        tensor = request.inputs.add(
            name=item["name"], datatype=item["datatype"], shape=item["shape"]
        )
        values = item["data"]
        if item["datatype"] == "BYTES":
            values = [str(v).encode() for v in values]
        getattr(tensor.contents, CONTENTS_FIELD[item["datatype"]]).extend(values)
    return request


def grpc_infer(server, model: str, body: dict) -> tuple[grpc_lib.StatusCode, str]:
    with grpc_lib.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            stub.ModelInfer(grpc_request(model, body), timeout=60)
        except grpc_lib.RpcError as e:
            return e.code(), e.details()
    return grpc_lib.StatusCode.OK, ""


def cases_for(protocol: str):
    chosen = [c for c in CASES if protocol in c[3]]
    return pytest.mark.parametrize(
        ("case", "body", "phrase"), [c[:3] for c in chosen], ids=[c[0] for c in chosen]
    )


@pytest.mark.parametrize("model", RAW_MODELS)
@cases_for("rest")
def test_rest_rejects_with_400_naming_model_and_problem(mlserver, model, case, body, phrase):
    status, answer = rest_infer(mlserver, model, body)
    assert status == 400, answer
    assert f"model {model}" in answer["error"]
    assert phrase in answer["error"]


@pytest.mark.parametrize("model", RAW_MODELS)
@cases_for("grpc")
def test_grpc_rejects_with_invalid_argument(mlserver, model, case, body, phrase):
    code, message = grpc_infer(mlserver, model, body)
    assert code == grpc_lib.StatusCode.INVALID_ARGUMENT, message
    assert f"model {model}" in message and phrase in message


def test_rest_nan_is_invalid_json_and_refused(mlserver):
    # Python's json writes NaN, which is not JSON: MLServer's own parser answers 422.
    status, answer = rest_infer(
        mlserver, "income", {"inputs": [tensor(row_with(0, math.nan), [1, 12])]}
    )
    assert status == 422 and "JSON" in json.dumps(answer)


OUTLIER_CASES = [
    (
        "twelve-columns",
        {"inputs": [tensor(ROW, [1, 12], "FP64", "transform")]},
        "expected [-1, 57]",
    ),
    ("null", {"inputs": [tensor([0.0] * 56 + [None], [1, 57], "FP64", "transform")]}, "is None"),
    ("empty-batch", {"inputs": [tensor([], [0, 57], "FP64", "transform")]}, "empty batch"),
    ("bytes", {"inputs": [tensor(["a"] * 57, [1, 57], "BYTES", "transform")]}, "datatype BYTES"),
]


@pytest.mark.parametrize(
    ("case", "body", "phrase"), OUTLIER_CASES, ids=[c[0] for c in OUTLIER_CASES]
)
def test_outlier_detector_rejects_bad_features(mlserver, case, body, phrase):
    status, answer = rest_infer(mlserver, "income-outlier", body)
    assert status == 400 and "model income-outlier" in answer["error"] and phrase in answer["error"]
    if case != "null":
        code, message = grpc_infer(mlserver, "income-outlier", body)
        assert code == grpc_lib.StatusCode.INVALID_ARGUMENT and phrase in message


def test_grpc_nan_features_are_refused(mlserver):
    body = {"inputs": [tensor([0.0] * 56 + [math.nan], [1, 57], "FP64", "transform")]}
    code, message = grpc_infer(mlserver, "income-outlier", body)
    assert code == grpc_lib.StatusCode.INVALID_ARGUMENT and "is nan" in message


def test_explainer_limits_rows_per_request(mlserver):
    status, answer = rest_infer(
        mlserver, "income-explainer", {"inputs": [tensor(ROW * 11, [11, 12])]}
    )
    assert status == 400 and "at most 10 rows" in answer["error"]


def test_null_never_becomes_a_drift_verdict(mlserver):
    status, answer = rest_infer(
        mlserver, "income-drift", {"inputs": [tensor(row_with(0, None) * 1, [1, 12])]}
    )
    assert status == 400 and "is_drift" not in json.dumps(answer)


def test_server_keeps_serving_after_bad_input(mlserver, rest, scenario):
    for model in RAW_MODELS:
        for _, body, _, protocols in CASES:
            if "rest" in protocols:
                rest_infer(mlserver, model, body)
            if "grpc" in protocols:
                grpc_infer(mlserver, model, body)
    assert mlserver.ready()
    for model in ("income", "income-drift"):
        assert rest.ready(model)
    assert rest.infer("income", scenario["reference"].X[:5])["predict"].shape == (5, 1)
