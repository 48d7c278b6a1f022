"""The monitor's API refuses what it cannot trust (docs/monitoring.md, "What the monitor refuses"):
malformed events and feedback are a 4xx naming the field, never stored and never a 5xx; bad rows
already in the store are set aside and counted, never served; feedback needs the bearer token."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import stat

import pyarrow.parquet
import pytest
from cloudevents.v1.conversion import to_binary
from cloudevents.v1.http import CloudEvent
from prometheus_client.parser import text_string_to_metric_families

from income_bundle.monitoring.service import Monitor, feedback_token
from income_bundle.monitoring.store import DriftBatch, RequestRecord, SqliteStore, StoreWrite
from tests.support.monitor_service import INFO, Served

SERVICE = "income"
ROW = [39.0, 7.0, 1.0, 1.0, 1.0, 1.0, 4.0, 1.0, 2174.0, 0.0, 40.0, 9.0]


def event(ce_type: str, data: dict, ce_id: str = "ev-1") -> tuple[dict, bytes]:
    attributes = {
        "type": ce_type,
        "source": "income-bundle/test",
        "id": ce_id,
        "inferenceservicename": SERVICE,
        "datacontenttype": "application/json",
    }
    return to_binary(CloudEvent(attributes, data))


def request_event(tensor: dict, ce_id: str = "r-1") -> tuple[dict, bytes]:
    return event("org.kubeflow.serving.inference.request", {"inputs": [tensor]}, ce_id)


@pytest.fixture
def store(tmp_path):
    store = SqliteStore(tmp_path / "records.sqlite")
    yield store
    store.close()


@pytest.fixture
def served(store):
    served = Served(Monitor(store, {SERVICE: INFO}))
    yield served
    served.stop()


def post_event(served: Served, headers_body: tuple[dict, bytes]) -> tuple[int, dict]:
    headers, body = headers_body
    status, answer = served.call("POST", "/cloudevents", body, headers=headers)
    return status, json.loads(answer) if answer else {}


def metrics(served: Served) -> dict:
    status, body = served.call("GET", "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def stored(store: SqliteStore) -> tuple[int, int]:
    db = sqlite3.connect(store.path)
    try:
        return (
            db.execute("SELECT count(*) FROM requests").fetchone()[0],
            db.execute("SELECT count(*) FROM drift_batches").fetchone()[0],
        )
    finally:
        db.close()


DRIFT = "io.income-bundle.drift"
OUTLIER = "io.income-bundle.outlier"
GOOD_TENSOR = {"name": "predict", "shape": [1, 12], "datatype": "FP64", "data": ROW}


@pytest.mark.parametrize(
    ("ce_type", "data", "field"),
    [
        (DRIFT, {"requestid": "r", "is_drift": [1], "threshold": "abc"}, "threshold"),
        (DRIFT, {"requestid": "r", "is_drift": [1], "p_val": "abc"}, "p_val"),
        (DRIFT, {"requestid": "r", "is_drift": [1], "threshold": {"a": 1}}, "threshold"),
        (DRIFT, {"requestid": "r", "is_drift": [1], "batch_rows": [1]}, "batch_rows"),
        (DRIFT, {"requestid": "r", "is_drift": [5]}, "is_drift"),
        (DRIFT, {"is_drift": [1]}, "requestid"),
        (OUTLIER, {"requestid": "r", "is_outlier": ["x"]}, "is_outlier"),
        (OUTLIER, {"requestid": "r", "is_outlier": 5}, "is_outlier"),
        (OUTLIER, {"requestid": "r", "instance_score": [{}]}, "instance_score"),
        (OUTLIER, {"requestid": "r", "is_outlier": [1, 0], "instance_score": [1.0]}, "one value"),
    ],
)
def test_a_malformed_detector_event_is_a_400_naming_the_field_and_is_not_stored(
    served, store, ce_type, data, field
):
    status, answer = post_event(served, event(ce_type, data))
    assert status == 400, answer
    assert field in answer["error"]
    assert stored(store) == (0, 0)


@pytest.mark.parametrize(
    ("tensor", "words"),
    [
        ({**GOOD_TENSOR, "shape": []}, "shape"),
        ({**GOOD_TENSOR, "shape": [2, 12]}, "holds 24 values"),
        ({**GOOD_TENSOR, "data": ["x"] * 12}, "data"),
        ({**GOOD_TENSOR, "shape": [-1, 12]}, "shape"),
    ],
)
def test_a_malformed_logger_tensor_is_a_400_naming_it(served, store, tensor, words):
    status, answer = post_event(served, request_event(tensor))
    assert status == 400, answer
    assert "inputs" in answer["error"] and words in answer["error"]
    assert stored(store) == (0, 0)


def test_a_good_event_is_stored(served, store):
    assert post_event(served, request_event(GOOD_TENSOR))[0] == 202
    assert stored(store) == (1, 0)


def test_deeply_nested_json_is_a_400_not_a_recursion_error(served, store):
    deep = b"[" * 100_000 + b"]" * 100_000
    status, answer = served.call("POST", f"/v2/pipelines/{SERVICE}/feedback", deep)
    assert status == 400 and "recursion limit" in json.loads(answer)["error"]
    headers, _ = event(DRIFT, {"requestid": "r"})
    status, answer = served.call("POST", "/cloudevents", deep, headers=headers)
    assert status == 400, answer
    assert stored(store) == (0, 0)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"id": "x"}, "truth: Field required"),
        ({"id": 5, "truth": [0]}, "id=5: Input should be a valid string"),
        ({"id": "x", "truth": []}, "truth: List should have at least 1 item"),
        ({"id": "x", "truth": [{}]}, "truth.0"),
        ({"id": "x", "truth": [0], "extra": 1}, "extra=1: Extra inputs are not permitted"),
        ([1, 2], "Input should be a valid dictionary"),
        (b"{", "not JSON"),
        (b'{"id": "x", "truth": [NaN]}', "not JSON"),
    ],
)
def test_malformed_feedback_is_a_400_naming_the_field(served, body, words):
    status, answer = served.call("POST", f"/v2/pipelines/{SERVICE}/feedback", body)
    assert status == 400, answer
    assert words in json.loads(answer)["error"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong"}, 401), ({"Authorization": "Basic eA=="}, 401)],
)
def test_feedback_needs_the_bearer_token(store, served, headers, status):
    store.write(StoreWrite([RequestRecord("q-1", SERVICE, rows=[ROW], predicted=[0])]))
    body = {"id": "q-1", "truth": [1]}
    got, answer = served.call("POST", f"/v2/pipelines/{SERVICE}/feedback", body, headers=headers)
    assert got == status and "Bearer" in json.loads(answer)["error"]
    assert store.request("q-1").truth is None
    assert served.call("POST", f"/v2/pipelines/{SERVICE}/feedback", body)[0] == 200
    assert store.request("q-1").truth == [1]


def test_without_a_token_feedback_is_refused(store):
    served = Served(Monitor(store, {SERVICE: INFO}), token=None)
    try:
        status, _ = served.call(
            "POST", f"/v2/pipelines/{SERVICE}/feedback", {"id": "x", "truth": [0]}
        )
        assert status == 403
    finally:
        served.stop()


def test_the_token_is_generated_once_into_a_private_file(tmp_path):
    path = tmp_path / "state" / "feedback-token"
    token = feedback_token(path)
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert feedback_token(path) == token


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("format=xml", "format='xml': Input should be 'csv', 'jsonl' or 'parquet'"),
        ("reason=nope", "reason.0='nope'"),
        ("limit=3", "limit='3': Extra inputs are not permitted"),
    ],
)
def test_a_bad_labelling_query_is_a_400_naming_it(served, query, words):
    status, answer = served.call("GET", f"/v2/pipelines/{SERVICE}/labelling?{query}")
    assert status == 400 and words in json.loads(answer)["error"]


@pytest.mark.parametrize("query", ["since=abc", "until=nan", "since=inf"])
def test_a_bad_traffic_query_is_a_400(served, query):
    status, answer = served.call("GET", f"/v2/pipelines/{SERVICE}/traffic?{query}")
    assert status == 400 and query.split("=")[0] in json.loads(answer)["error"]


def seed_bad_rows(store: SqliteStore) -> None:
    """Good traffic, then rows only an older version or a hand would write (through sqlite3)."""
    store.write(
        StoreWrite(
            [
                RequestRecord(
                    "good",
                    SERVICE,
                    time=1.0,
                    rows=[ROW],
                    predicted=[0],
                    outlier_flags=[1],
                    outlier_scores=[2.5],
                ),
            ],
            [
                DriftBatch(
                    "good",
                    SERVICE,
                    time=2.0,
                    is_drift=True,
                    p_values=[0.01] * 12,
                    threshold=0.05,
                    row_count=1,
                )
            ],
        )
    )
    db = sqlite3.connect(store.path, isolation_level=None)
    db.execute(
        "INSERT INTO drift_batches (batch_id, pipeline, time, is_drift, p_values, threshold, "
        "row_count) VALUES ('bad-threshold', ?, 3.0, 1, '[0.01]', 'abc', 1)",
        (SERVICE,),
    )
    db.execute(
        "INSERT INTO requests (request_id, pipeline, time, rows, predicted, outlier_flags, "
        "sequence) VALUES ('bad-rows', ?, 4.0, '[[\"x\"]]', '[0]', '[1]', 99)",
        (SERVICE,),
    )
    db.execute(
        "INSERT INTO requests (request_id, pipeline, time, rows, predicted, outlier_flags, truth, "
        "truth_time, sequence) VALUES ('bad-truth', ?, 5.0, ?, '[0]', '[1]', '[\"yes\"]', 6.0, 100)",
        (SERVICE, json.dumps([ROW])),
    )
    db.execute(  # not JSON at all: a damaged file, or a hand
        "INSERT INTO requests (request_id, pipeline, time, rows, predicted, outlier_flags, "
        "sequence) VALUES ('bad-garbled', ?, 7.0, 'garbage', '[0]', '[1]', 101)",
        (SERVICE,),
    )
    db.close()


def test_bad_rows_in_the_store_are_set_aside_and_counted_never_served(store):
    seed_bad_rows(store)
    served = Served(Monitor(store, {SERVICE: INFO}))
    try:
        found = metrics(served)
        assert (
            found[("income_labelling_rows_total", (("pipeline", SERVICE), ("reason", "outlier")))]
            == 1
        )
        assert (
            found[("income_labelling_rows_total", (("pipeline", SERVICE), ("reason", "drift")))]
            == 1
        )
        aside = {
            dict(labels)["field"]: value
            for (name, labels), value in found.items()
            if name == "income_monitor_rows_set_aside"
        }
        assert aside == {"rows": 2, "truth": 1, "threshold": 1}
        for fmt in ("csv", "jsonl", "parquet"):
            status, body = served.call("GET", f"/v2/pipelines/{SERVICE}/labelling?format={fmt}")
            assert status == 200, body
        assert b"bad-" not in served.call("GET", f"/v2/pipelines/{SERVICE}/labelling?format=csv")[1]
        status, body = served.call("GET", f"/v2/pipelines/{SERVICE}/traffic")
        assert status == 200
        assert [json.loads(line)["request_id"] for line in body.splitlines()] == ["good"]
        assert served.call("GET", "/ready")[0] == 200
    finally:
        served.stop()


def test_parquet_holds_both_reasons(store, served):
    seed_bad_rows(store)
    status, body = served.call("GET", f"/v2/pipelines/{SERVICE}/labelling?format=parquet")
    assert status == 200, body
    table = pyarrow.parquet.read_table(io.BytesIO(body))
    assert sorted(table.column("reason").to_pylist()) == ["drift", "outlier"]
    rows = list(csv.DictReader(io.StringIO(served.call(
        "GET", f"/v2/pipelines/{SERVICE}/labelling?format=csv")[1].decode())))  # fmt: skip
    assert len(rows) == table.num_rows


def test_the_openapi_document_describes_every_route(served):
    status, body = served.call("GET", "/openapi.json")
    assert status == 200
    document = json.loads(body)
    assert set(document["paths"]) == {
        "/v2/pipelines/{pipeline}/feedback", "/v2/pipelines/{pipeline}/labelling",
        "/v2/pipelines/{pipeline}/traffic", "/cloudevents", "/metrics", "/ready", "/openapi.json",
    }  # fmt: skip
    feedback = document["paths"]["/v2/pipelines/{pipeline}/feedback"]["post"]
    assert feedback["security"] == [{"feedbackToken": []}]


def test_the_monitor_binds_apart_from_the_gateway():
    from income_bundle.seldon.local import ServeSettings

    settings = ServeSettings(host="0.0.0.0")
    assert settings.monitor_host == "127.0.0.1"  # exposing the gateway does not expose the monitor
    assert ServeSettings(monitor_host="10.0.0.5").host == "127.0.0.1"
