"""The gateway's own rules, in process: request ids, JSON bodies, tensor data, error answers.
The fronts and the gateway are real; MLServer is the StubForwarder stand-in (tests/gateway_stubs.py)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from income_bundle.seldon.engine import GatewayError
from income_bundle.seldon.request_id import MAX_REQUEST_ID_LENGTH, check_request_id
from income_bundle.seldon.rest import RestFront, parse_json
from income_bundle.seldon.tensors import TensorError, flatten, range_problem

from .gateway_stubs import StubForwarder, asgi_call, stub_gateway
from .v2_bodies import ROW, tensor

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
    with pytest.raises(GatewayError) as error:
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
    with pytest.raises(TensorError, match="t: data nests lists deeper than its shape's 2"):
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
    with pytest.raises(GatewayError) as error:
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
