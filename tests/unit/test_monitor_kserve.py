"""The monitor's KServe source: the logger's and the detectors' CloudEvents, as KServe v0.20.0 and
income_bundle.runtime.cloudevents send them, posted to the monitor on a real uvicorn."""

from __future__ import annotations

import ast
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from cloudevents.v1.conversion import to_binary
from cloudevents.v1.http import CloudEvent

import income_bundle
from income_bundle.monitoring.service import Monitor
from income_bundle.monitoring.sources import kserve
from income_bundle.monitoring.store import SqliteStore
from tests.support.kserve_events import logger_event, structured_event
from tests.support.monitor_service import INFO, Served

SERVICE = "income"


def test_event_types_are_the_detectors_and_kserves():
    # Read from the runtime's source: importing it loads MLServer's protobufs, which clash with
    # tritonclient's in one process.
    source = Path(income_bundle.__file__).parent / "runtime" / "cloudevents.py"
    constants = {
        node.targets[0].id: node.value.value
        for node in ast.parse(source.read_text()).body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }
    for name in (
        "REQUEST_EVENT_TYPE",
        "RESPONSE_EVENT_TYPE",
        "DRIFT_EVENT_TYPE",
        "OUTLIER_EVENT_TYPE",
    ):
        assert getattr(kserve, name) == constants[name]


def detector_event(ce_type: str, request_id: str, source: str, data: dict):
    """A detector's reply as the runtime builds it (kserve/README.md's contract)."""
    attributes = {
        "type": ce_type,
        "source": f"income-bundle/kserve/{source}",
        "id": f"{request_id}.{source}",
        "inferenceservicename": SERVICE,
        "namespace": "income-kserve",
        "component": "predictor",
        "endpoint": "default",
        "datacontenttype": "application/json",
    }
    return to_binary(CloudEvent(attributes, {**data, "requestid": request_id}))


@pytest.fixture
def served(tmp_path):
    store = SqliteStore(tmp_path / "records.sqlite")
    served = Served(Monitor(store, {SERVICE: INFO}))
    yield served
    served.stop()
    store.close()


def post(served: Served, event) -> tuple[int, bytes]:
    headers, body = event
    import urllib.error
    import urllib.request

    request = urllib.request.Request(served.url + "/cloudevents", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_logger_and_detector_events_become_records_feedback_and_labelling(served):
    rng = np.random.default_rng(0)
    requests = {}
    for i in range(6):
        rows = rng.integers(0, 5, size=(5, 12)).astype(float)
        predicted = rng.integers(0, 2, size=5).tolist()
        request_id = f"ce-{i}"
        body = {
            "inputs": [
                {
                    "name": "predict",
                    "datatype": "FP32",
                    "shape": [5, 12],
                    "data": rows.ravel().tolist(),
                }
            ]
        }
        answer = {
            "model_name": "income",
            "outputs": [
                {"name": "predict", "datatype": "INT64", "shape": [5, 1], "data": predicted}
            ],
        }
        make = structured_event if i % 2 else logger_event
        assert post(served, make(kserve.REQUEST_EVENT_TYPE, request_id, body))[0] == 202
        assert post(served, logger_event(kserve.RESPONSE_EVENT_TYPE, request_id, answer))[0] == 202
        requests[request_id] = (rows.tolist(), predicted)
    flags = [0, 1, 0, 0, 1]
    outlier = {
        "is_outlier": flags,
        "instance_score": [0.1, 9.0, 0.2, 0.1, 7.5],
        "outlier_rows": [1, 4],
        "rows": 5,
    }
    assert (
        post(
            served,
            detector_event(kserve.OUTLIER_EVENT_TYPE, "ce-2", "income-outlier", outlier),
        )[0]
        == 202
    )
    # The drift detector tested 20 rows when ce-5 completed them: ce-2..ce-5.
    drift = {"is_drift": 1, "p_val": [0.001] + [0.5] * 11, "threshold": 0.05, "batch_rows": 20}
    assert (
        post(served, detector_event(kserve.DRIFT_EVENT_TYPE, "ce-5", "income-drift", drift))[0]
        == 202
    )

    status, body = served.call(
        "POST", f"/v2/pipelines/{SERVICE}/feedback", {"id": "ce-0", "truth": requests["ce-0"][1]}
    )
    assert status == 200 and json.loads(body)["correct"] == 5
    status, body = served.call("GET", f"/v2/pipelines/{SERVICE}/labelling?format=csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    got = [(r["request_id"], int(r["row"]), r["reason"]) for r in rows]
    outliers = [("ce-2", 1, "outlier"), ("ce-2", 4, "outlier")]
    drifted = [(f"ce-{i}", row, "drift") for i in range(2, 6) for row in range(5)]
    assert got == outliers + drifted
    assert {r["drifting_features"] for r in rows if r["reason"] == "drift"} == {"f0"}
    assert rows[0]["outlier_score"] == "9"
    _, body = served.call("GET", "/metrics")
    assert 'income_monitor_messages_total{source="kserve-cloudevents"} 14.0' in body.decode()


@pytest.mark.parametrize(
    "event, status, message",
    [
        (({"Content-Type": "application/json"}, b"{}"), 400, b"not a CloudEvent"),
        (({"Content-Type": "application/cloudevents-batch+json"}, b"[]"), 415, b"batch"),
        (logger_event("com.example.other", "x", {}), 400, b"is not one of"),
        (
            logger_event(kserve.REQUEST_EVENT_TYPE, "x", {}, inferenceservicename=""),
            400,
            b"inferenceservicename",
        ),
        (
            (
                {
                    "ce-specversion": "1.0",
                    "ce-type": kserve.REQUEST_EVENT_TYPE,
                    "ce-source": "s",
                    "Content-Type": "application/json",
                },
                b"{}",
            ),
            400,
            b"no 'id'",
        ),
        (
            logger_event(
                kserve.REQUEST_EVENT_TYPE,
                "x",
                {"inputs": [{"name": "predict", "shape": [2, 12], "data": [1]}]},
            ),
            400,
            b"shape [2, 12] holds 24 values",
        ),
        (
            detector_event(kserve.OUTLIER_EVENT_TYPE, "", "income-outlier", {}),
            400,
            b"requestid",
        ),
    ],
)
def test_malformed_events_get_a_4xx(served, event, status, message):
    got_status, body = post(served, event)
    assert got_status == status and message in body, body
    assert served.call("GET", "/ready")[0] == 200


def test_an_event_with_a_traceparent_is_recorded_and_traced_in_that_trace(tmp_path):
    """CloudEvents' distributed tracing extension (`ce-traceparent`): the record keeps the trace
    id, and the monitor's ingest and store write continue that trace."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from income_bundle import tracing

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    rows = np.ones((2, 12))
    body = {"inputs": [{"name": "predict", "datatype": "FP32", "shape": [2, 12]}]}
    body["inputs"][0]["data"] = rows.ravel().tolist()
    event = logger_event(
        kserve.REQUEST_EVENT_TYPE,
        "ce-traced",
        body,
        traceparent=f"00-{trace_id}-00f067aa0ba902b7-01",
    )
    store = SqliteStore(tmp_path / "records.sqlite")
    served = Served(Monitor(store, {SERVICE: INFO}))
    exporter = InMemorySpanExporter()
    tracing.configure(None, processor=SimpleSpanProcessor(exporter))
    try:
        status, answer = post(served, event)
        assert status == 202, answer
        assert store.request("ce-traced").trace_id == trace_id
    finally:
        tracing.shutdown()
        served.stop()
        store.close()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    for name in ("monitor ingest", "monitor store write"):
        assert format(spans[name].context.trace_id, "032x") == trace_id
    assert spans["monitor ingest"].attributes["cloudevents.event_id"] == "ce-traced"


@pytest.mark.parametrize(
    ("metadata", "recorded"),
    [
        ('{"Traceparent":["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]}', True),
        ('{"X-Request-Id":["abc"]}', False),
        ("not json", False),
        ('{"Traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}', False),
    ],
)
def test_the_loggers_metadata_header_carries_the_trace_id(tmp_path, metadata, recorded):
    """KServe's logger sends no trace context; with `metadataHeaders: [Traceparent]` the request's
    header arrives in the `metadata` extension, and the record keeps its trace id. Anything else
    there is the logger's business: no trace id, and the event is still taken."""
    body = {
        "inputs": [{"name": "predict", "datatype": "FP32", "shape": [1, 12], "data": [1.0] * 12}]
    }
    event = logger_event(kserve.REQUEST_EVENT_TYPE, "ce-meta", body, metadata=metadata)
    store = SqliteStore(tmp_path / "records.sqlite")
    served = Served(Monitor(store, {SERVICE: INFO}))
    try:
        status, answer = post(served, event)
        assert status == 202, answer
        expected = "4bf92f3577b34da6a3ce929d0e0e4736" if recorded else None
        assert store.request("ce-meta").trace_id == expected
    finally:
        served.stop()
        store.close()
