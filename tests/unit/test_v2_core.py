"""The V2 core on its own: the datatype table, the tensor readers, and the request checks' fast
path held to the full check without trained artifacts (a synthetic table model)."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from income_bundle.errors import ServingError
from income_bundle.v2.checks import TableCheck, check_body
from income_bundle.v2.datatypes import DATATYPES
from income_bundle.v2.tensors import Tensor, find_json


def test_the_datatype_table_holds_numpys_limits_and_grpcs_fields():
    contents = service_pb2.InferTensorContents.DESCRIPTOR.fields_by_name
    for name, datatype in DATATYPES.items():
        assert datatype.name == name and datatype.grpc_field in contents
        if datatype.kind == "bytes":
            assert datatype.dtype is None and datatype.itemsize is None
            continue
        assert datatype.dtype.str[0] in "<|"  # raw contents are little-endian
        if datatype.kind in ("int", "uint"):
            limits = np.iinfo(datatype.dtype)
            assert (datatype.low, datatype.high) == (int(limits.min), int(limits.max))
        elif datatype.kind == "float":
            assert datatype.high == float(np.finfo(datatype.dtype).max) == -datatype.low
    assert DATATYPES["FP16"].itemsize == 2 and DATATYPES["UINT64"].itemsize == 8
    assert [n for n, d in DATATYPES.items() if not d.is_number] == ["BOOL", "BYTES"]


def test_find_json_reads_the_named_tensor_or_says_what_is_malformed():
    items = [
        {"name": "other", "datatype": "BYTES", "shape": [1], "data": ["x"]},
        {"name": "predict", "datatype": "INT64", "shape": [2, 1], "data": [[1], [0]]},
    ]
    tensor = find_json(items, "predict", "outputs")
    assert tensor == Tensor("predict", "INT64", [2, 1], [1, 0])
    assert tensor.to_array().tolist() == [[1], [0]] and tensor.to_array().dtype == np.int64
    assert find_json(items, "missing", "outputs") is None and find_json(None, "x", "o") is None
    with pytest.raises(ServingError, match=r"outputs \[0\] \('x'\): datatype 'FP8'"):
        find_json([{"name": "x", "datatype": "FP8", "shape": [1], "data": [1]}], "x", "outputs")


def test_to_array_refuses_data_that_does_not_fill_the_shape():
    with pytest.raises(ServingError) as error:
        Tensor("rows", "FP32", [2, 3], [1.0] * 5).to_array(float)
    assert error.value.status == 400
    assert (
        error.value.message == "tensor 'rows' has shape [2, 3], which needs 6 values, but carries 5"
    )


TABLE = TableCheck("m", 3, ["age", "sex", "hours"], {1: 2})


def _body(**changes) -> dict:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 0, 2] * 2}]}
    for key, value in changes.items():
        if key.startswith("tensor_"):
            body["inputs"][0][key.removeprefix("tensor_")] = value
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        (_body(), True),
        (_body(id="a", parameters={"k": 1}, outputs=[{"name": "y", "parameters": {}}]), True),
        (_body(tensor_datatype="UINT8"), True),
        (_body(outputs=[{"name": "y", "parameters": []}]), False),
        (_body(tensor_datatype="UINT8", tensor_data=[1, 0, 256] * 2), False),
        (_body(tensor_datatype=["FP32"]), False),
        (_body(tensor_data=[1, 2, 2] * 2), False),  # code 2 of a 2-code column
        (_body(tensor_data=[[1, 0, 2]] * 2), False),  # nested: the full check flattens
        ([_body()], False),
    ],
)
def test_the_fast_path_accepts_only_what_the_full_check_accepts(body, accepted):
    assert TABLE.accepts_fast(body) is accepted
    if accepted:
        assert TABLE.check(check_body(body).inputs).shape == (2, 3)


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ([], "must be a JSON object"),
        ({"inputs": []}, "non-empty 'inputs' list"),
        (_body(parameters=[]), "'parameters' must be an object"),
        (_body(outputs=[{"name": "y", "parameters": []}]), "'outputs' must be a list of objects"),
        (_body(id="a\nb"), "the request's 'id'"),
        (_body(tensor_datatype=["FP32"]), "datatype ['FP32'] is not a V2 datatype"),
    ],
)
def test_the_full_check_words_each_problem_of_a_body(body, phrase):
    with pytest.raises(ServingError) as error:
        check_body(body)
    assert error.value.status == 400 and phrase in error.value.message


@pytest.mark.parametrize(
    ("data", "datatype", "phrase"),
    [
        ([1, 0, 2, 1, 2, 2], "FP32", "row 1, column 1 ('sex') is 2, which is not a category code"),
        ([1, 0, 2, 1, 0, 300], "UINT8", "row 1, column 2 ('hours') is 300; expected an integer"),
        ([1, 0, 2, 1, 0, 1e39], "FP32", "is 1e+39; expected a number from -3.40282e+38"),
        ([1, 0, 2, 1, 0, "2"], "FP32", "row 1, column 2 ('hours') is '2'; expected a finite"),
    ],
)
def test_the_table_check_names_the_row_the_column_and_the_rule(data, datatype, phrase):
    with pytest.raises(ServingError) as error:
        TABLE.check([Tensor("x", datatype, [2, 3], data)])
    assert error.value.message.startswith("model m: input 'x': ") and phrase in error.value.message
