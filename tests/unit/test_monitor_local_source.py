"""The monitor's local source in process: engine hand-overs become the same records the Kafka
source makes, written off the caller's thread, in order, and flushed on demand."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
from prometheus_client import CollectorRegistry

from income_bundle.monitoring.labelling import LabellingSchema, labelling_rows
from income_bundle.monitoring.records import PipelineTaps
from income_bundle.monitoring.sources.local import SOURCE, GatewaySource
from income_bundle.monitoring.store import SqliteStore, StoreMetrics
from income_bundle.seldon.engine import StepResult
from income_bundle.v2.tensors import Tensor

TAPS = PipelineTaps(pipeline="income-production", classifier_model="income")
SCHEMA = LabellingSchema([f"f{i}" for i in range(12)], {}, ["<=50K", ">50K"])


def tensor(name: str, array) -> Tensor:
    array = np.asarray(array)
    datatype = "FP32" if array.dtype.kind == "f" else "INT64"
    return Tensor(name, datatype, list(array.shape), array.ravel().tolist())


def hand_over(source: GatewaySource, request_id: str, rows: np.ndarray, flags: list[int]):
    """What the engine hands over once a request of `rows` was answered."""
    results = {
        "income": StepResult([], [tensor("predict", np.ones((len(rows), 1), dtype=int))]),
        "income-outlier": StepResult(
            [],
            [
                tensor("is_outlier", np.asarray(flags).reshape(1, -1)),
                tensor("instance_score", np.linspace(0.1, 0.9, len(rows)).reshape(1, -1)),
            ],
        ),
    }
    source.request_done(TAPS.pipeline, request_id, [tensor("predict", rows)], results, [])


def drift_done(source: GatewaySource, members: list[tuple[str, np.ndarray]], is_drift: int):
    rows = np.vstack([r for _, r in members])
    p_values = [0.001 if i == 3 else 0.5 for i in range(12)]
    result = StepResult(
        [tensor("predict", rows)],
        [
            tensor("is_drift", [[is_drift]]),
            tensor("p_val", [p_values]),
            tensor("threshold", [[0.004]]),
        ],
        members=[(request_id, len(r)) for request_id, r in members],
    )
    source.async_done(TAPS.pipeline, members[-1][0], {"income-drift": result})


def test_requests_and_drift_batches_become_records_and_labelling_rows(tmp_path):
    store = SqliteStore(tmp_path / "monitor.sqlite")
    source = GatewaySource(store, [TAPS])
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, 5, (13, 12)).astype(float), rng.integers(0, 5, (7, 12)) * 1.0
    hand_over(source, "a", first, [0] * 12 + [1])
    hand_over(source, "b", second, [0] * 7)
    drift_done(source, [("a", first), ("b", second)], is_drift=1)
    assert source.flush(10)

    a = store.request("a")
    assert a.source == SOURCE and a.rows == first.tolist() and a.predicted == [1] * 13
    assert a.outlier_flags == [0] * 12 + [1] and len(a.outlier_scores) == 13
    (batch,) = store.drift_batches(TAPS.pipeline)
    assert batch.batch_id == "b" and batch.is_drift and batch.threshold == 0.004
    assert batch.rows == np.vstack([first, second]).tolist()
    rows = labelling_rows(store, TAPS.pipeline, SCHEMA)
    assert [(r["request_id"], r["reason"]) for r in rows if r["reason"] == "outlier"] == [
        ("a", "outlier")
    ]
    drift = [(r["request_id"], r["row"]) for r in rows if r["reason"] == "drift"]
    assert drift == [("a", i) for i in range(13)] + [("b", i) for i in range(7)]
    assert {r["drifting_features"] for r in rows if r["reason"] == "drift"} == {"f3"}
    source.close()
    store.close()


def test_other_pipelines_and_failed_steps_are_not_recorded(tmp_path):
    store = SqliteStore(tmp_path / "monitor.sqlite")
    source = GatewaySource(store, [TAPS])
    rows = np.zeros((2, 12))
    source.request_done("iris-pipeline", "x", [tensor("predict", rows)], {}, [])
    failed = StepResult([], [], error="income-outlier timed out")
    inputs = [tensor("predict", rows)]
    source.request_done(TAPS.pipeline, "y", inputs, {"income-outlier": failed}, [])
    source.async_done(TAPS.pipeline, "y", {"income-drift": StepResult([], [], error="boom")})
    assert source.flush(10)
    assert store.request("x") is None
    y = store.request("y")
    assert y.rows == rows.tolist() and y.outlier_flags is None and y.predicted is None
    assert store.drift_batches(TAPS.pipeline) == []
    source.close()
    store.close()


def test_hand_overs_return_before_the_store_writes(tmp_path):
    """The caller (the gateway's event loop) never waits for SQLite: with the store's lock held,
    hand-overs still return at once, and flush reports the writes still pending."""
    store = SqliteStore(tmp_path / "monitor.sqlite")
    source = GatewaySource(store, [TAPS])
    rows = np.zeros((1, 12))
    with store._lock:  # the store busy (a long export, a slow disk)
        done = threading.Event()

        def hand_overs() -> None:
            for i in range(100):
                hand_over(source, f"r{i}", rows, [0])
            done.set()

        threading.Thread(target=hand_overs).start()
        assert done.wait(10)
        assert source.flush(0.2) is False
    assert source.flush(10)
    assert len(store.requests(TAPS.pipeline)) == 100
    assert [r.request_id for r in store.requests(TAPS.pipeline)] == [f"r{i}" for i in range(100)]
    source.close()
    store.close()


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    store = SqliteStore(tmp_path / "monitor.sqlite")
    registry = CollectorRegistry()
    registry.register(StoreMetrics(store))
    source = GatewaySource(store, [TAPS], max_pending=5, registry=registry)

    def dropped() -> float:
        return registry.get_sample_value(
            "income_monitor_dropped_writes_total", {"reason": "queue_full"}
        )

    rows = np.zeros((1, 12))
    with store._lock:
        for i in range(20):
            hand_over(source, f"r{i}", rows, [0])
        # The writer took at most one batch off the queue before the lock stopped it.
        assert 20 - 5 - 5 <= dropped() <= 20 - 5
    assert source.flush(10)
    kept = len(store.requests(TAPS.pipeline))
    assert kept + dropped() == 20
    source.close()
    store.close()


def test_close_writes_what_is_queued(tmp_path):
    path = tmp_path / "monitor.sqlite"
    store = SqliteStore(path)
    source = GatewaySource(store, [TAPS])
    for i in range(50):
        hand_over(source, f"r{i}", np.zeros((1, 12)), [0])
    source.close()
    store.close()
    reopened = SqliteStore(path)
    assert len(reopened.requests(TAPS.pipeline)) == 50
    reopened.close()


def test_hand_overs_the_store_refuses_are_counted_as_write_failed(tmp_path):
    # Nothing asks again for a local hand-over, so a refused write is counted here, with its
    # reason (the Kafka source and the CloudEvents route let the sender deliver again instead).
    path = tmp_path / "monitor.sqlite"
    store = SqliteStore(path, busy_timeout_s=0.05)
    registry = CollectorRegistry()
    registry.register(StoreMetrics(store))
    source = GatewaySource(store, [TAPS], registry=registry)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another writer holds the database, as a failing disk would
    hand_over(source, "refused", np.zeros((2, 12)), [0, 1])
    assert source.flush(30)
    assert (
        registry.get_sample_value("income_monitor_dropped_writes_total", {"reason": "write_failed"})
        == 1
    )
    assert not store.writable
    other.execute("ROLLBACK")
    other.close()
    hand_over(source, "kept", np.zeros((1, 12)), [0])
    assert source.flush(30)
    assert [r.request_id for r in store.requests(TAPS.pipeline)] == ["kept"]
    source.close()
    store.close()


def test_a_traced_hand_over_records_its_trace_and_continues_it(tmp_path):
    """A hand-over inside the request's span: the record and its labelling rows carry the trace
    id, and the monitor's ingest and store-write spans are in that trace. Untraced, none."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from income_bundle import tracing

    store = SqliteStore(tmp_path / "monitor.sqlite")
    source = GatewaySource(store, [TAPS])
    exporter = InMemorySpanExporter()
    tracing.configure(None, processor=SimpleSpanProcessor(exporter))
    try:
        with tracing.span("gateway infer"):
            trace_id = tracing.trace_id()
            hand_over(source, "traced", np.ones((2, 12)), [1, 0])
        assert source.flush()
        hand_over(source, "untraced", np.ones((1, 12)) * 2, [1])
        assert source.flush()
    finally:
        tracing.shutdown()
        source.close()
    assert store.request("traced").trace_id == trace_id
    assert store.request("untraced").trace_id is None
    rows = labelling_rows(store, TAPS.pipeline, SCHEMA, ["outlier"])
    assert {(row["request_id"], row["trace_id"]) for row in rows} == {
        ("traced", trace_id),
        ("untraced", ""),
    }
    in_trace = [
        s.name
        for s in exporter.get_finished_spans()
        if format(s.context.trace_id, "032x") == trace_id
    ]
    assert sorted(in_trace) == ["gateway infer", "monitor ingest", "monitor store write"]
