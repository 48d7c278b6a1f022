"""The gateway's own rules, in process: request ids, JSON bodies, tensor data, error answers.
The fronts and the gateway are real; MLServer is the StubForwarder stand-in (tests/support/gateway_stubs.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import re

import numpy as np
import pytest

from income_bundle.errors import ServingError
from income_bundle.seldon.rest import RestFront, parse_json
from income_bundle.v2.checks import MAX_REQUEST_ID_LENGTH, check_request_id, range_problem
from income_bundle.v2.tensors import flatten
from tests.support.gateway_stubs import StubForwarder, asgi_call, stub_gateway
from tests.support.v2_bodies import ROW, tensor

PIPELINE = "income-production.pipeline"


@pytest.mark.parametrize(
    "value", ["abc-1", "0b6f8c1e-9c7d-4a53-8e1b-2f0c3d4e5f60", "a b", "x" * MAX_REQUEST_ID_LENGTH]
)
def test_valid_request_ids_pass_unchanged(value):
    assert check_request_id(value, "id") == value


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        ("a\nb", "contains '\\n'"),
        ("a\rb", "contains '\\r'"),
        ("\x00", "contains '\\x00'"),
        ("a\tb", "contains '\\t'"),
        ("\x7f", "contains '\\x7f'"),
        ("café", "contains 'é'"),
        (" a", "no leading or trailing space"),
        ("a ", "no leading or trailing space"),
        ("x" * (MAX_REQUEST_ID_LENGTH + 1), f"{MAX_REQUEST_ID_LENGTH + 1} characters long"),
        (5, "must be a string, got int"),
        (True, "must be a string, got bool"),
        (["a"], "must be a string, got list"),
    ],
)
def test_invalid_request_ids_are_a_400_naming_the_source(value, phrase):
    with pytest.raises(ServingError) as error:
        check_request_id(value, "the 'x-request-id' header")
    assert error.value.status == 400
    assert error.value.message.startswith("the 'x-request-id' header")
    assert phrase in error.value.message


@pytest.mark.parametrize("value", [None, ""])
def test_absent_request_id_is_none(value):
    assert check_request_id(value, "id") is None


def test_flatten_is_row_major_and_bounded_by_the_rank():
    assert flatten([[1, 2], [3, 4]], 2, "t") == [1, 2, 3, 4]
    assert flatten([1, 2, 3], 2, "t") == [1, 2, 3]
    assert flatten([[[1], [2]], [[3], [4]]], 3, "t") == [1, 2, 3, 4]
    assert flatten(7, 1, "t") == [7]
    deep: list = [1]
    for _ in range(5000):  # far beyond Python's recursion limit
        deep = [deep]
    with pytest.raises(ServingError, match="t: data nests lists deeper than its shape's 2"):
        flatten(deep, 2, "t")


def test_range_problem_names_the_first_value_a_datatype_cannot_hold():
    assert range_problem("FP32", np.array([1.0, 3e38])) is None
    assert range_problem("FP32", np.array([1.0, 3.5e38])) == (
        1,
        "a number from -3.40282e+38 to 3.40282e+38 (FP32)",
    )
    assert range_problem("FP16", np.array([-65504.0])) is None
    assert range_problem("FP16", np.array([0.0, -70000.0]))[0] == 1
    assert range_problem("INT8", np.array([127.0, -128.0])) is None
    assert range_problem("INT8", np.array([1.0, 128.0])) == (
        1,
        "an integer from -128 to 127 (INT8)",
    )
    assert range_problem("UINT8", np.array([-1.0]))[0] == 0
    assert range_problem("INT64", np.array([1.5]))[0] == 0
    assert range_problem("FP64", np.array([1e300])) is None
    assert range_problem("BOOL", np.array([1.0])) is None


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        (b'{"a": 1, "a": 2}', "repeats the key 'a'"),
        (b'{"a": {"b": 1, "b": 1}}', "repeats the key 'b'"),
        (b'{"s": "x\\": ", "s": 1}', "repeats the key 's'"),  # the quick count is unsure here
        (b'[1, {"k": 1, "k" : 2}]', "repeats the key 'k'"),  # behind a list of scalars
        (b"{nope", "not JSON"),
        (b"[1e400]", "not JSON"),
    ],
)
def test_parse_json_refuses_repeated_keys_and_non_json(raw, phrase):
    with pytest.raises(ServingError) as error:
        parse_json(raw)
    assert error.value.status == 400 and phrase in error.value.message


def test_parse_json_keeps_strings_that_look_like_keys():
    assert parse_json(b'{"s": "x\\": ", "t": ["\\":"]}') == {"s": 'x": ', "t": ['":']}


def _infer(front, target, body, headers=None):
    all_headers = {"seldon-model": target, "content-type": "application/json", **(headers or {})}
    return asyncio.run(_calls(front, [("POST", "/v2/models/m/infer", body, all_headers)]))[0]


async def _calls(front, requests):
    """The requests in order, in one event loop, with the gateway started around them."""
    await front.gateway.start()
    try:
        return [await asgi_call(front, *request) for request in requests]
    finally:
        await front.gateway.close()


@pytest.mark.parametrize("target", ["income", PIPELINE])
def test_an_internal_error_is_a_plain_500_and_logged(target, caplog):
    forwarder = StubForwarder()
    forwarder.fail_with = RuntimeError("secret detail /srv/model.py")
    front = RestFront(stub_gateway(forwarder))
    body = json.dumps({"inputs": [tensor(ROW, [1, 12])]}).encode()
    status, _, raw = _infer(front, target, body)
    assert status == 500
    assert json.loads(raw) == {"error": "internal error in the gateway; the details are in its log"}
    assert "secret detail /srv/model.py" in caplog.text


def test_a_rejected_request_id_never_reaches_a_model_or_a_header():
    forwarder = StubForwarder()
    front = RestFront(stub_gateway(forwarder))
    body = json.dumps({"id": "a\nb", "inputs": [tensor(ROW, [1, 12])]}).encode()
    requests = [
        ("POST", "/v2/models/m/infer", body, {"seldon-model": target})
        for target in ("income", PIPELINE)
    ]
    for status, headers, raw in asyncio.run(_calls(front, requests)):
        assert status == 400, raw
        assert "x-request-id" not in headers
        assert "contains '\\n'" in json.loads(raw)["error"]
    assert forwarder.calls == []


# -- the protocol as independent clients speak it (tritonclient builds and reads the bodies) ----

JSON_HEADERS = {"content-type": "application/json"}


def _triton_body(rows: np.ndarray, binary_in=True, outputs=None):
    """A request body as tritonclient's HTTP client sends it (binary tensors by default)."""
    import tritonclient.http as triton

    tensor_in = triton.InferInput("predict", list(rows.shape), "FP32")
    tensor_in.set_data_from_numpy(rows.astype(np.float32), binary_data=binary_in)
    requested = [triton.InferRequestedOutput(name, binary_data=b) for name, b in outputs or []]
    body, json_size = triton.InferenceServerClient.generate_request_body(
        [tensor_in], outputs=requested or None
    )
    headers = {} if json_size is None else {"Inference-Header-Content-Length": str(json_size)}
    return body, headers


def _triton_result(raw: bytes, headers: dict[str, str]):
    import tritonclient.http as triton

    length = headers.get("inference-header-content-length")
    return triton.InferenceServerClient.parse_response_body(
        raw, header_length=int(length) if length else None
    )


ROWS = np.array([ROW, ROW], dtype=np.float32)


@pytest.mark.parametrize("target", ["income", PIPELINE])
def test_binary_request_and_answer_as_tritonclient_sends_them(target):
    forwarder = StubForwarder()
    front = RestFront(stub_gateway(forwarder))
    body, headers = _triton_body(ROWS)
    status, answer_headers, raw = asyncio.run(
        _calls(front, [("POST", "/v2/models/m/infer", body, {"seldon-model": target, **headers})])
    )[0]
    assert status == 200, raw
    # MLServer got JSON with the decoded values, not the binary body it cannot read.
    _, forwarded = next(c for c in forwarder.calls if c[0] == "income")
    if target == "income":
        assert forwarded["inputs"][0]["shape"] == [2, 12]
        assert "binary_data_output" not in forwarded.get("parameters", {})
    # No outputs named: tritonclient asks for every output in binary form, and reads them.
    assert answer_headers["content-type"] == "application/octet-stream"
    result = _triton_result(raw, answer_headers)
    assert result.as_numpy("predict").shape == (2, 1)


def test_binary_output_only_where_asked():
    front = RestFront(stub_gateway(StubForwarder()))
    body, headers = _triton_body(ROWS, outputs=[("predict", False), ("is_outlier", True)])
    status, answer_headers, raw = asyncio.run(
        _calls(front, [("POST", "/v2/models/m/infer", body, {"seldon-model": PIPELINE, **headers})])
    )[0]
    assert status == 200, raw
    result = _triton_result(raw, answer_headers)
    outputs = {o["name"]: o for o in result.get_response()["outputs"]}
    assert "data" in outputs["predict"]
    assert "data" not in outputs["is_outlier"] and outputs["is_outlier"]["parameters"]
    assert result.as_numpy("is_outlier") is not None


def test_binary_outputs_of_a_json_model_request():
    """JSON inputs (the fast path forwards them unparsed) with outputs asked for in binary form."""
    front = RestFront(stub_gateway(StubForwarder()))
    body, headers = _triton_body(ROWS, binary_in=False, outputs=[("predict", True)])
    assert not headers  # JSON inputs: no binary header, the model request goes through as is
    status, answer_headers, raw = asyncio.run(
        _calls(
            front,
            [("POST", "/v2/models/m/infer", body, {"seldon-model": "income", **JSON_HEADERS})],
        )
    )[0]
    assert status == 200, raw
    assert answer_headers["content-type"] == "application/octet-stream"
    result = _triton_result(raw, answer_headers)
    (output,) = result.get_response()["outputs"]
    assert "data" not in output and output["parameters"]["binary_data_size"] > 0
    assert result.as_numpy("predict").shape == (2, 1)


def _binary(json_part: dict, data: bytes, length: int | None = None):
    header = json.dumps(json_part).encode()
    return header + data, {
        "Inference-Header-Content-Length": str(len(header) if length is None else length)
    }


FP32_ROW = np.array([ROW], dtype=np.float32).tobytes()  # 48 bytes


def _binary_input(size, datatype="FP32", shape=(1, 12), **extra):
    return {
        "inputs": [
            {
                "name": "predict",
                "datatype": datatype,
                "shape": list(shape),
                "parameters": {"binary_data_size": size},
                **extra,
            }
        ]
    }


@pytest.mark.parametrize(
    ("body", "headers", "phrase"),
    [
        (b"{}", {"Inference-Header-Content-Length": "ten"}, "expected the JSON part's length"),
        (b"{}", {"Inference-Header-Content-Length": "-2"}, "expected the JSON part's length"),
        (b"{}", {"Inference-Header-Content-Length": "0x2"}, "expected the JSON part's length"),
        (
            b"{}",
            {"Inference-Header-Content-Length": "99"},
            "says the JSON part is 99 bytes, but the whole body is 2",
        ),
        (*_binary(_binary_input(48), FP32_ROW[:40]), "says 48 bytes, but only 40"),
        (*_binary(_binary_input(40), FP32_ROW), "8 bytes of binary data that no input"),
        (*_binary(_binary_input(-1), FP32_ROW), "binary_data_size is -1"),
        (*_binary(_binary_input("48"), FP32_ROW), "binary_data_size is '48'"),
        (*_binary(_binary_input(48, data=[1]), FP32_ROW), "both 'data' and binary_data_size"),
        (*_binary(_binary_input(47), FP32_ROW[:47]), "not a whole number of FP32"),
        (*_binary(_binary_input(48, datatype="FLOAT"), FP32_ROW), "not a V2 datatype"),
        (*_binary(_binary_input(48, shape=(2, 12)), FP32_ROW), "needs 24 values, but carries 12"),
        (
            *_binary(_binary_input(8, "BYTES", (1, 1)), b"\x40\0\0\0abcd"),
            "says it has 64 bytes, but only 4",
        ),
        (*_binary({"inputs": "x"}, b""), "must be an object with an 'inputs' list"),
        (*_binary(_binary_input(48), FP32_ROW, length=5), "not JSON"),
    ],
)
@pytest.mark.parametrize("target", ["income", PIPELINE])
def test_binary_bodies_that_lie_about_lengths_are_a_400(body, headers, phrase, target):
    forwarder = StubForwarder()
    front = RestFront(stub_gateway(forwarder))
    request = ("POST", "/v2/models/m/infer", body, {"seldon-model": target, **headers})
    status, _, raw = asyncio.run(_calls(front, [request]))[0]
    assert status == 400, raw
    assert phrase in json.loads(raw)["error"]
    assert forwarder.calls == []


def _json_call(target, body, headers=None, path="/v2/models/m/infer"):
    return (
        "POST",
        path,
        json.dumps(body).encode(),
        {"seldon-model": target, **JSON_HEADERS, **(headers or {})},
    )


def test_pipeline_outputs_are_selected_and_unknown_names_refused():
    forwarder = StubForwarder()
    front = RestFront(stub_gateway(forwarder))
    one = {"inputs": [tensor(ROW, [1, 12])], "outputs": [{"name": "is_outlier"}]}
    unknown = {"inputs": [tensor(ROW, [1, 12])], "outputs": [{"name": "nope"}]}
    everything = {"inputs": [tensor(ROW, [1, 12])]}
    answers = asyncio.run(
        _calls(
            front,
            [
                _json_call(PIPELINE, one),
                _json_call(PIPELINE, unknown),
                _json_call(PIPELINE, everything),
            ],
        )
    )
    status, _, raw = answers[0]
    assert status == 200 and [o["name"] for o in json.loads(raw)["outputs"]] == ["is_outlier"]
    status, _, raw = answers[1]
    assert status == 400
    assert json.loads(raw)["error"] == (
        "pipeline income-production: no output 'nope'; its outputs are: predict, is_outlier"
    )
    status, _, raw = answers[2]
    assert [o["name"] for o in json.loads(raw)["outputs"]] == ["predict", "is_outlier"]


def test_pipeline_metadata_is_tensor_metadata_derived_from_the_steps():
    front = RestFront(stub_gateway(StubForwarder()))
    status, _, raw = asyncio.run(
        _calls(front, [("GET", "/v2/models/m", b"", {"seldon-model": PIPELINE})])
    )[0]
    assert status == 200
    metadata = json.loads(raw)
    income, outlier = declared_settings("income"), declared_settings("income-outlier")
    assert metadata["name"] == PIPELINE and metadata["platform"] == "seldon-pipeline"
    assert metadata["inputs"] == [
        {k: v for k, v in item.items() if k in ("name", "datatype", "shape")}
        for item in income["inputs"]
    ]
    is_outlier = next(o for o in outlier["outputs"] if o["name"] == "is_outlier")
    assert metadata["outputs"] == [
        *(
            {"name": o["name"], "datatype": o["datatype"], "shape": o["shape"]}
            for o in income["outputs"]
        ),
        {"name": "is_outlier", "datatype": is_outlier["datatype"], "shape": is_outlier["shape"]},
    ]


def declared_settings(model):
    from tests.support.gateway_stubs import declared

    return declared(model)


def test_xids_are_written_as_rs_xid_writes_them():
    from income_bundle.v2.seldon_mesh import encode_xid, new_xid

    # github.com/rs/xid v1.6.0 id_test.go: TestIDString.
    assert encode_xid(bytes.fromhex("4d88e15b60f486e428412dc9")) == "9m4e2mr0ui3e8a215n4g"
    ids = [new_xid(1_800_000_000), new_xid(1_800_000_000), new_xid(1_800_000_001)]
    assert len(set(ids)) == 3 and all(re.fullmatch("[0-9a-v]{20}", i) for i in ids)
    assert ids[2] > ids[0]  # time first: sortable by second
    # The first four bytes are the Unix seconds, big-endian.
    raw = base64.b32hexdecode(ids[0].upper() + "====")
    assert len(raw) == 12 and int.from_bytes(raw[:4], "big") == 1_800_000_000


def test_request_ids_as_seldon():
    """Models: the client's x-request-id, else a new xid, as Seldon's agent answers; MLServer's
    answer keeps its id (the body's). Pipelines: the client's x-request-id, else a new xid; answered as the pipeline
    gateway does, the Kafka key `0.<pipeline>.<id>` then the bare id, and no body id (REST)."""
    forwarder = StubForwarder()
    front = RestFront(stub_gateway(forwarder))
    plain = {"inputs": [tensor(ROW, [1, 12])]}
    with_id = {**plain, "id": "body-1"}
    answers = asyncio.run(
        _calls(
            front,
            [
                _json_call("income", plain, {"x-request-id": "head-1"}),
                _json_call("income", with_id),
                _json_call("income", plain),
                _json_call(PIPELINE, with_id, {"x-request-id": "head-2"}),
                _json_call(PIPELINE, with_id),
            ],
        )
    )
    (_, h1, _), (_, h2, r2), (_, h3, _), (_, h4, r4), (_, h5, r5) = answers
    assert h1["x-request-id"] == "head-1"
    assert re.fullmatch("[0-9a-v]{20}", h2["x-request-id"]) and json.loads(r2)["id"] == "body-1"
    assert re.fullmatch("[0-9a-v]{20}", h3["x-request-id"]) and h3 != h2
    assert h4["x-request-id"] == "0.income-production.head-2, head-2"
    assert "id" not in json.loads(r4)
    key, bare = h5["x-request-id"].split(", ")
    assert re.fullmatch("[0-9a-v]{20}", bare), bare  # rs/xid's form, as util/ids.go makes
    assert key == f"0.income-production.{bare}" and "id" not in json.loads(r5)


def test_answers_are_named_and_routed_as_seldon_mesh_answers():
    """A model answers as MLServer does behind Seldon's agent (`income_1`, version "1") with
    Envoy's `x-seldon-route: :income_1:`; a pipeline as the pipeline gateway does: no model name
    or id in the body, `x-pipeline-version: 1`, each step's route then the pipeline's."""
    front = RestFront(stub_gateway())
    plain = {"inputs": [tensor(ROW, [1, 12])]}
    binary_out = {**plain, "parameters": {"binary_data_output": False}}
    (s1, h1, r1), (s2, h2, r2), (s3, h3, r3) = asyncio.run(
        _calls(
            front,
            [
                _json_call("income", plain),  # MLServer's JSON passed through
                _json_call("income", {**binary_out, "outputs": [{"name": "predict"}]}),
                _json_call("income-v1.pipeline", plain, {"x-request-id": "r-1"}),
            ],
        )
    )
    assert (s1, s2, s3) == (200, 200, 200)
    for headers, raw in ((h1, r1), (h2, r2)):
        answer = json.loads(raw)
        assert (answer["model_name"], answer["model_version"]) == ("income_1", "1")
        assert headers["x-seldon-route"] == ":income_1:"
        assert "x-pipeline-version" not in headers
    answer = json.loads(r3)
    assert answer["model_name"] == "" and set(answer) == {"model_name", "outputs"}
    assert h3["x-request-id"] == "0.income-v1.r-1, r-1"
    assert h3["x-pipeline-version"] == "1"
    assert h3["x-seldon-route"] == ":income_1:, :income-v1.pipeline:"


def test_without_the_header_the_path_names_the_model():
    """seldon-mesh's Lua filter sets `seldon-model` from the path when a request has neither it
    nor `x-seldon-route`; with a route header and no model header nothing is routed."""
    forwarder = StubForwarder()
    front = RestFront(stub_gateway(forwarder))
    body = json.dumps({"inputs": [tensor(ROW, [1, 12])]}).encode()
    (s1, h1, _), (s2, _, r2) = asyncio.run(
        _calls(
            front,
            [
                ("POST", "/v2/models/income/infer", body, JSON_HEADERS),
                ("POST", "/v2/models/income/infer", body, {"x-seldon-route": ":income_1:"}),
            ],
        )
    )
    assert s1 == 200 and h1["x-seldon-route"] == ":income_1:"
    assert s2 == 400 and "missing 'seldon-model' header" in json.loads(r2)["error"]
    assert [model for model, _ in forwarder.calls] == ["income"]


def test_pipeline_paths_as_seldons_pipeline_gateway():
    forwarder = StubForwarder()
    forwarder.ready_models = {"income"}
    front = RestFront(stub_gateway(forwarder))
    body = json.dumps({"inputs": [tensor(ROW, [1, 12])]}).encode()
    answers = asyncio.run(
        _calls(
            front,
            [
                ("POST", "/v2/pipelines/income-production/infer", body, JSON_HEADERS),
                ("GET", "/v2/pipelines/income-v1/ready", b"", {}),
                ("GET", "/v2/pipelines/income-production/ready", b"", {}),  # 3 steps not ready
                ("GET", "/v2/pipelines/nope/ready", b"", {}),
                ("POST", "/v2/pipelines/nope/infer", body, JSON_HEADERS),
            ],
        )
    )
    statuses = [a[0] for a in answers]
    assert statuses == [200, 200, 424, 404, 404], answers
    assert [o["name"] for o in json.loads(answers[0][2])["outputs"]] == ["predict", "is_outlier"]


async def _grpc_calls(gateway, calls):
    """Each `calls` item is (method name, request, metadata); returns (response or RpcError,
    initial metadata) per call, against the real gRPC front on a loopback port."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    from income_bundle.seldon.grpc_front import build_grpc_server

    await gateway.start()
    server = build_grpc_server(gateway, "127.0.0.1:0")
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    results = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            for method, request, metadata in calls:
                call = getattr(stub, method)(request, metadata=metadata, timeout=30)
                try:
                    response = await call
                except grpc.aio.AioRpcError as e:
                    results.append((e, None))
                    continue
                found: dict[str, str] = {}
                metadata = [*await call.initial_metadata(), *await call.trailing_metadata()]
                for k, v in metadata:  # repeated keys joined, as HTTP
                    found[k] = f"{found[k]}, {v}" if k in found else v
                results.append((response, found))
    finally:
        await server.stop(grace=None)
        await gateway.close()
    return results


def test_grpc_metadata_says_what_rest_says():
    from tritonclient.grpc import service_pb2

    forwarder = StubForwarder()
    gateway = stub_gateway(forwarder)
    request = service_pb2.ModelMetadataRequest(name="m")
    calls = [("ModelMetadata", request, [("seldon-model", t)]) for t in ("income", PIPELINE)]
    (model, _), (pipeline, _) = asyncio.run(_grpc_calls(gateway, calls))
    rest_model = asyncio.run(forwarder.metadata("income"))[1]
    assert model.platform == rest_model["platform"]
    assert [(o.name, o.datatype, list(o.shape)) for o in model.outputs] == [
        (o["name"], o["datatype"], o["shape"]) for o in rest_model["outputs"]
    ]
    assert pipeline.platform == "seldon-pipeline"
    assert [o.name for o in pipeline.outputs] == ["predict", "is_outlier"]
    assert [i.name for i in pipeline.inputs] == ["predict"]


def test_grpc_request_id_metadata_is_read_and_sent_back():
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(id="body-1")
    item = request.inputs.add(name="predict", datatype="FP32", shape=[1, 12])
    item.contents.fp32_contents.extend(ROW)
    calls = [
        ("ModelInfer", request, [("seldon-model", PIPELINE), ("x-request-id", "head-1")]),
        ("ModelInfer", request, [("seldon-model", PIPELINE)]),
        ("ModelInfer", request, [("seldon-model", "income"), ("x-request-id", "head-2")]),
    ]
    (r1, m1), (r2, m2), (r3, m3) = asyncio.run(_grpc_calls(stub_gateway(), calls))
    # A pipeline: the key alone as x-request-id (grpcserver.go), the request's own id in the
    # answer, no model name or version; then the output message's headers and Envoy's route.
    assert m1["x-request-id"] == "0.income-production.head-1" and r1.id == "body-1"
    assert (r1.model_name, r1.model_version) == ("", "")
    assert m1["x-pipeline-version"] == "1"
    # The output joins two chains; Kafka Streams keeps the headers of the later one (the
    # outlier detector's, after the preprocessor), as real Seldon answered in the trial.
    assert m1["x-seldon-route"] == (
        ":income-preprocess_1:, :income-outlier_1:, :income-production.pipeline:"
    )
    assert re.fullmatch(r"0\.income-production\.[0-9a-v]{20}", m2["x-request-id"])
    assert r2.id == "body-1"
    # A model: MLServer's answer through the agent (the id in a trailer), and Envoy's route.
    assert m3["x-request-id"] == "head-2" and r3.id == "body-1"
    assert (r3.model_name, r3.model_version) == ("income_1", "1")
    assert m3["x-seldon-route"] == ":income_1:"


@pytest.mark.parametrize("target", ["income", "income-drift", PIPELINE, "income-v1.pipeline"])
def test_deeply_nested_data_is_a_400_for_any_target(target):
    forwarder = StubForwarder()
    front = RestFront(stub_gateway(forwarder))
    data = b"[" * 990 + b"1" + b"]" * 990
    body = b'{"inputs": [{"name": "predict", "datatype": "FP32", "shape": [1, 12], "data": %s}]}'
    request = ("POST", "/v2/models/m/infer", body % data, {"seldon-model": target})
    status, _, raw = asyncio.run(_calls(front, [request]))[0]
    assert status == 400, raw
    assert "data nests lists deeper than its shape's 2 dimensions" in json.loads(raw)["error"]
    assert forwarder.calls == []


def samples(registry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a registry, keyed by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def agent_labels(model: str, method_type: str, code: str) -> tuple[tuple[str, str], ...]:
    """The labels Seldon's agent gives a model call (agent.go addInferCount), as the gateway
    fills them: its one MLServer is replica 0 of Server "mlserver", version 1 of each model."""
    return tuple(
        sorted(
            {
                "server": "mlserver",
                "server_replica": "0",
                "model": model,
                "model_internal": f"{model}_1",
                "method_type": method_type,
                "code": code,
            }.items()
        )
    )


def pipeline_labels(pipeline: str, method_type: str, code: str) -> tuple[tuple[str, str], ...]:
    """gateway.go addInferCount: the pipeline gateway's labels."""
    labels = {"server": "pipeline-gateway", "pipeline": pipeline, "method_type": method_type}
    return tuple(sorted({**labels, "code": code}.items()))


@pytest.mark.parametrize("target", ["income", PIPELINE])
def test_an_internal_error_is_counted_as_a_500(target):
    forwarder = StubForwarder()
    forwarder.fail_with = RuntimeError("boom")
    gateway = stub_gateway(forwarder)
    front = RestFront(gateway)
    body = json.dumps({"inputs": [tensor(ROW, [1, 12])]}).encode()
    status, _, _ = _infer(front, target, body)
    assert status == 500
    counted = samples(gateway.metrics.registry)
    assert counted[("seldon_model_infer_total", agent_labels("income", "rest", "500"))] == 1
    if target == PIPELINE:
        pipeline = PIPELINE.removesuffix(".pipeline")
        assert (
            counted[("seldon_pipeline_infer_total", pipeline_labels(pipeline, "rest", "500"))] == 1
        )


def test_requests_are_counted_under_seldons_names_and_labels():
    """A pipeline request as the pipeline gateway counts it and its steps' calls as the agent
    does; a model request over gRPC with the gRPC code's name; a request the gateway refuses
    never reached MLServer, so the agent's series do not count it."""
    from tritonclient.grpc import service_pb2

    from income_bundle.seldon.metrics import SELDON_BUCKETS

    forwarder = StubForwarder()
    gateway = stub_gateway(forwarder)
    front = RestFront(gateway)
    body = json.dumps({"inputs": [tensor(ROW, [1, 12])]}).encode()
    short = json.dumps({"inputs": [tensor(ROW[:11], [1, 11])]}).encode()
    rest = asyncio.run(
        _calls(
            front,
            [
                ("POST", "/v2/models/m/infer", body, {"seldon-model": PIPELINE}),
                ("POST", "/v2/models/m/infer", short, {"seldon-model": "income"}),
            ],
        )
    )
    assert [status for status, _, _ in rest] == [200, 400]
    request = service_pb2.ModelInferRequest()
    item = request.inputs.add(name="predict", datatype="FP32", shape=[1, 12])
    item.contents.fp32_contents.extend(ROW)
    grpc_gateway = stub_gateway()  # a gateway's engines live in one event loop
    ((answer, _),) = asyncio.run(
        _grpc_calls(grpc_gateway, [("ModelInfer", request, [("seldon-model", "income")])])
    )
    assert (answer.model_name, answer.model_version) == ("income_1", "1")

    counted = samples(gateway.metrics.registry)
    counted_grpc = samples(grpc_gateway.metrics.registry)
    pipeline = PIPELINE.removesuffix(".pipeline")
    assert counted[("seldon_pipeline_infer_total", pipeline_labels(pipeline, "rest", "200"))] == 1
    assert counted[("seldon_pipeline_aggregate_infer_total", (
        ("method_type", "rest"), ("server", "pipeline-gateway")
    ))] == 1  # fmt: skip
    histogram = (("code", "200"), ("method", "rest"), ("pipeline", pipeline))
    histogram += (("server", "pipeline-gateway"),)
    assert counted[("seldon_pipeline_infer_api_seconds_count", histogram)] == 1
    # The income step's call (REST to MLServer) and the gRPC model request; not the refused one.
    assert counted[("seldon_model_infer_total", agent_labels("income", "rest", "200"))] == 1
    assert counted_grpc[("seldon_model_infer_total", agent_labels("income", "grpc", "OK"))] == 1
    assert not [key for key in counted if key[0] == "seldon_model_infer_total" and (
        ("code", "400") in key[1] or ("code", "InvalidArgument") in key[1]
    )]  # fmt: skip
    replica = (("server", "mlserver"), ("server_replica", "0"))
    assert counted_grpc[("seldon_model_infer_api_seconds_count", (
        ("code", "OK"), ("method", "grpc"), *replica
    ))] == 1  # fmt: skip
    buckets = {
        float(dict(labels)["le"])
        for name, labels in counted
        if name == "seldon_model_infer_api_seconds_bucket"
    }
    assert buckets == {*map(float, SELDON_BUCKETS), float("inf")}


@pytest.mark.parametrize(
    ("status", "code"),
    [(200, "OK"), (400, "InvalidArgument"), (404, "NotFound"), (500, "Internal"),
     (503, "Unavailable"), (504, "DeadlineExceeded"), (418, "Unknown")],
)  # fmt: skip
def test_grpc_answers_are_counted_with_gos_code_names(status, code):
    from income_bundle.seldon.metrics import seldon_code

    assert seldon_code("grpc", status) == code
    assert seldon_code("rest", status) == str(status)
