"""The record store keeps no part it cannot attribute, and counts what it does not keep: a
response without its request is held, then dropped; two requests under one id are refused; a
write the database refuses is retried, counted, and turns the monitor's /ready false."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest
from prometheus_client import CollectorRegistry

from income_bundle.errors import ServingError
from income_bundle.monitoring.service import Monitor, build_app
from income_bundle.monitoring.store import (
    DriftBatch,
    RequestRecord,
    SqliteStore,
    StoreMetrics,
    StoreWrite,
    StoreWriteError,
)

PIPELINE = "income-production"
ROWS = [[1.0] * 12, [2.0] * 12]


def request(request_id: str, rows=ROWS) -> StoreWrite:
    return StoreWrite(requests=[RequestRecord(request_id, PIPELINE, source="test", rows=rows)])


def response(request_id: str, predicted=(1, 0)) -> StoreWrite:
    return StoreWrite(requests=[RequestRecord(request_id, PIPELINE, predicted=list(predicted))])


def outliers(request_id: str) -> StoreWrite:
    record = RequestRecord(request_id, PIPELINE, outlier_flags=[0, 1], outlier_scores=[0.1, 0.9])
    return StoreWrite(requests=[record])


def dropped(store: SqliteStore, reason: str) -> float:
    registry = CollectorRegistry()
    registry.register(StoreMetrics(store))
    return registry.get_sample_value("income_monitor_dropped_writes_total", {"reason": reason})


def test_a_response_without_its_request_makes_no_record(tmp_path):
    store = SqliteStore(tmp_path / "monitor.sqlite")
    store.write(response("lone"))
    store.write(outliers("lone"))
    assert store.request("lone") is None
    assert store.requests(PIPELINE) == []
    assert store.labelled(PIPELINE, 10) == []
    assert not store.set_truth("lone", [1, 0], at=1.0)  # feedback finds nothing to score


def test_parts_held_for_a_request_are_applied_when_it_arrives(tmp_path):
    store = SqliteStore(tmp_path / "monitor.sqlite")
    store.write(response("r1"))  # Kafka and KServe may deliver the response first
    store.write(outliers("r1"))
    store.write(request("r1"))
    record = store.request("r1")
    assert record.rows == ROWS
    assert record.predicted == [1, 0]
    assert record.outlier_flags == [0, 1]
    assert dropped(store, "no_request") == 0


def test_held_parts_are_dropped_and_counted_after_the_hold(tmp_path):
    store = SqliteStore(tmp_path / "monitor.sqlite", hold_s=0.0)
    store.write(response("late"))
    store.write(request("other"))  # every write first drops what outlived the hold
    store.write(request("late"))
    assert store.request("late").predicted is None  # its response was not kept
    assert dropped(store, "no_request") == 1


def drift(batch_id: str, is_drift: bool = True) -> StoreWrite:
    batch = DriftBatch(batch_id, PIPELINE, time=1.0, rows=ROWS, is_drift=is_drift, row_count=2)
    return StoreWrite(drift_batches=[batch])


def test_a_drift_run_waits_for_the_request_that_completed_it(tmp_path):
    store = SqliteStore(tmp_path / "monitor.sqlite")
    store.write(drift("r9"))  # a verdict for traffic that has not come: nothing to label yet
    assert store.drift_batches(PIPELINE) == []
    store.write(request("r9"))
    (batch,) = store.drift_batches(PIPELINE)
    assert (batch.batch_id, batch.is_drift, batch.rows) == ("r9", True, ROWS)
    assert dropped(store, "no_request") == 0


def test_a_drift_run_for_traffic_that_never_came_is_dropped_and_counted(tmp_path):
    store = SqliteStore(tmp_path / "monitor.sqlite", hold_s=0.0)
    store.write(drift("fake"))
    store.write(request("real"))  # every write first drops what outlived the hold
    store.write(request("fake"))
    assert store.drift_batches(PIPELINE) == []
    assert dropped(store, "no_request") == 1


def test_held_parts_are_bounded_in_number(tmp_path):
    store = SqliteStore(tmp_path / "monitor.sqlite", max_held=3)
    for i in range(5):
        store.write(response(f"r{i}"))
    store.write(request("x"))
    assert dropped(store, "no_request") == 2
    for i in range(5):
        store.write(request(f"r{i}"))
    kept = [i for i in range(5) if store.request(f"r{i}").predicted is not None]
    assert len(kept) == 3


def test_a_retry_with_the_same_inputs_stays_one_record(tmp_path):
    store = SqliteStore(tmp_path / "monitor.sqlite")
    for _ in range(2):
        store.write(request("same"))
        store.write(response("same"))
    assert [r.request_id for r in store.requests(PIPELINE)] == ["same"]
    assert store.request("same").predicted == [1, 0]
    assert dropped(store, "conflicting_request_id") == 0


def test_one_id_with_different_inputs_is_refused_not_conflated(tmp_path):
    store = SqliteStore(tmp_path / "monitor.sqlite")
    store.write(request("shared"))
    store.write(response("shared", [1, 1]))
    store.write(request("shared", rows=[[9.0] * 12, [8.0] * 12]))
    store.write(response("shared", [0, 0]))
    with pytest.raises(ServingError) as refused:
        store.request("shared")
    assert refused.value.status == 409
    assert "two requests with different inputs" in str(refused.value)
    assert store.requests(PIPELINE) == []
    # The first request, the second, and the second's response: none is scored.
    assert dropped(store, "conflicting_request_id") == 3


def test_a_fake_request_cannot_pre_claim_an_id(tmp_path):
    store = SqliteStore(tmp_path / "monitor.sqlite")
    store.write(request("victim", rows=[[0.0] * 12, [0.0] * 12]))  # someone else's event
    store.write(request("victim"))  # the real request
    store.write(response("victim"))
    with pytest.raises(ServingError) as refused:
        store.request("victim")
    assert refused.value.status == 409


def test_a_labelled_request_keeps_its_record_when_its_id_is_reused(tmp_path):
    store = SqliteStore(tmp_path / "monitor.sqlite")
    store.write(request("done"))
    store.write(response("done"))
    assert store.set_truth("done", [1, 0], at=1.0)
    store.write(request("done", rows=[[5.0] * 12, [5.0] * 12]))
    assert store.request("done").rows == ROWS
    assert dropped(store, "conflicting_request_id") == 1


async def _get(app, path: str) -> int:
    """The status of a GET through the ASGI app, as uvicorn would call it."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


def test_a_store_that_refuses_writes_counts_them_and_is_not_ready(tmp_path):
    path = tmp_path / "monitor.sqlite"
    store = SqliteStore(path, busy_timeout_s=0.05)
    app = build_app(Monitor(store, {}))
    assert asyncio.run(_get(app, "/ready")) == 200
    # Another writer holds the database: every write of ours fails, as on a full or failing disk.
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreWriteError, match="cannot be written") as refused:
        store.write(request("lost"))
    assert refused.value.status == 503  # the CloudEvents route answers it: the broker redelivers
    assert not store.writable
    assert asyncio.run(_get(app, "/ready")) == 503
    other.execute("ROLLBACK")
    other.close()
    assert asyncio.run(_get(app, "/ready")) == 200
    store.write(request("kept"))
    assert store.request("kept") is not None
    assert store.request("lost") is None


def test_feedback_for_an_ambiguous_id_is_a_409_that_says_why(tmp_path):
    from tests.support.monitor_service import INFO, Served

    store = SqliteStore(tmp_path / "monitor.sqlite")
    store.write(request("shared", rows=[[1.0] * 12]))
    store.write(response("shared", [1]))
    store.write(request("shared", rows=[[2.0] * 12]))
    store.write(response("lone-answer", [1]))
    served = Served(Monitor(store, {PIPELINE: INFO}))
    try:
        url = f"/v2/pipelines/{PIPELINE}/feedback"
        status, answer = served.call("POST", url, {"id": "shared", "truth": [">50K"]})
        assert status == 409, answer
        assert "two requests with different inputs" in json.loads(answer)["error"]
        status, _ = served.call("POST", url, {"id": "lone-answer", "truth": [">50K"]})
        assert status == 404  # a response alone is no record to score
    finally:
        served.stop()


def test_feedback_takes_the_id_as_the_pipeline_answered_it(tmp_path):
    """A gRPC client sees only Seldon's Kafka key `<partition>.<pipeline>.<id>` as its
    x-request-id: feedback by it finds the request; an id stored in that form is still found as
    given, and another pipeline's key is no alias."""
    from tests.support.monitor_service import INFO, Served

    store = SqliteStore(tmp_path / "monitor.sqlite")
    for request_id in ("c9a1", f"0.{PIPELINE}.literal", "other"):
        store.write(request(request_id, rows=[[1.0] * 12]))
        store.write(response(request_id, [1]))
    served = Served(Monitor(store, {PIPELINE: INFO}))
    try:
        url = f"/v2/pipelines/{PIPELINE}/feedback"
        status, answer = served.call("POST", url, {"id": f"0.{PIPELINE}.c9a1", "truth": [">50K"]})
        assert status == 200, answer
        assert json.loads(answer)["id"] == "c9a1"
        assert store.request("c9a1").truth == [1]
        status, answer = served.call(
            "POST", url, {"id": f"0.{PIPELINE}.literal", "truth": [">50K"]}
        )
        assert status == 200 and json.loads(answer)["id"] == f"0.{PIPELINE}.literal", answer
        status, _ = served.call("POST", url, {"id": "0.another-pipeline.other", "truth": [">50K"]})
        assert status == 404
    finally:
        served.stop()


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_record_keeps_its_trace_id_even_when_its_parts_arrive_apart(tmp_path):
    """The trace id comes with whichever part carried a traceparent (here a response part held
    before its request) and stays with the record."""
    store = SqliteStore(tmp_path / "store.db")
    held = RequestRecord("r-1", PIPELINE, predicted=[1, 0], trace_id=TRACE)
    store.write(StoreWrite(requests=[held]))
    store.write(request("r-1"))
    store.write(request("r-2"))
    assert store.request("r-1").trace_id == TRACE
    assert store.request("r-2").trace_id is None


def test_a_store_written_before_trace_ids_opens_readable_and_gains_the_column(tmp_path):
    """A store from before the trace_id column: its records read back (trace id None) and new
    records store theirs."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE requests (request_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, source TEXT,
            time REAL, pipeline_version TEXT, rows TEXT, predicted TEXT, outlier_flags TEXT,
            outlier_scores TEXT, truth TEXT, truth_time REAL, sequence INTEGER);
        CREATE TABLE held_parts (request_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL,
            since REAL NOT NULL, pipeline_version TEXT, predicted TEXT, outlier_flags TEXT,
            outlier_scores TEXT);
        """
    )
    db.execute(
        "INSERT INTO requests (request_id, pipeline, source, rows, predicted, sequence) "
        "VALUES ('old', ?, 'local-gateway', ?, '[1,0]', 0)",
        (PIPELINE, json.dumps(ROWS)),
    )
    db.commit()
    db.close()
    store = SqliteStore(path)
    old = store.request("old")
    assert (old.rows, old.predicted, old.trace_id) == (ROWS, [1, 0], None)
    store.write(
        StoreWrite(requests=[RequestRecord("new", PIPELINE, rows=[[3.0] * 12], trace_id=TRACE)])
    )
    assert store.request("new").trace_id == TRACE
    store.close()
    assert SqliteStore(path).request("new").trace_id == TRACE  # a second open changes nothing
