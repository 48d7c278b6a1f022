"""The monitor's three sources make the same records of the same tensors: one request and one
drift detector run, handed over by the local gateway, written to Seldon's Kafka topics and posted
as KServe's CloudEvents, each into its own store."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cloudevents.v1.conversion import to_binary
from cloudevents.v1.http import CloudEvent
from tritonclient.grpc import service_pb2

from income_bundle.monitoring.records import PipelineTaps
from income_bundle.monitoring.sources import kafka, kserve, local
from income_bundle.monitoring.store import SqliteStore, StoreWrite
from income_bundle.seldon.engine import StepResult
from income_bundle.v2.seldon_kafka import SeldonMessage, TopicNamer
from income_bundle.v2.tensors import Tensor

PIPELINE = "income-production"
TAPS = PipelineTaps(pipeline=PIPELINE)
NAMER = TopicNamer("seldon-mesh")
REQUEST_ID = "r-1"
AT = 1_700_000_000.0  # 2023-11-14T22:13:20Z
# Values float32 holds exactly: Seldon's topics carry FP32 where KServe's JSON carries doubles.
ROWS = np.arange(36, dtype=float).reshape(3, 12)
PREDICTED = [0, 1, 1]
FLAGS = [0, 1, 0]
SCORES = [0.25, 7.5, 0.5]
P_VALUES = [0.5] * 11 + [0.0078125]
THRESHOLD = 0.0625
# The request's W3C trace context, as each transport carries it.
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def tensor(name: str, datatype: str, values) -> Tensor:
    array = np.asarray(values)
    return Tensor(name, datatype, list(array.shape), array.ravel().tolist())


FEATURES = tensor("predict", "FP32", ROWS)
CLASSES = tensor("predict", "INT64", np.reshape(PREDICTED, (3, 1)))
OUTLIER = [tensor("is_outlier", "INT64", [FLAGS]), tensor("instance_score", "FP32", [SCORES])]
VERDICT = [
    tensor("is_drift", "INT64", [[1]]),
    tensor("p_val", "FP32", [P_VALUES]),
    tensor("threshold", "FP64", [[THRESHOLD]]),
]


def local_writes() -> list[StoreWrite]:
    results = {"income": StepResult([], [CLASSES]), "income-outlier": StepResult([], OUTLIER)}
    drift = StepResult([FEATURES], VERDICT, members=[(REQUEST_ID, 3)])
    return [
        local.translate_request(TAPS, REQUEST_ID, AT, [FEATURES], results, TRACE_ID),
        local.translate_async(TAPS, REQUEST_ID, AT, {"income-drift": drift}),
    ]


def encoded(kind: str, model: str, tensors: list[Tensor]) -> bytes:
    """A V2 request's inputs or a response's outputs, as Seldon writes them to its topics."""
    fields = {"INT64": "int64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents"}
    if kind == "inputs":
        message = service_pb2.ModelInferRequest(model_name=model)
        items = message.inputs
    else:
        message = service_pb2.ModelInferResponse(model_name=model)
        items = message.outputs
    for t in tensors:
        item = items.add(name=t.name, datatype=t.datatype, shape=t.shape)
        getattr(item.contents, fields[t.datatype]).extend(t.data)
    return message.SerializeToString()


def kafka_writes() -> list[StoreWrite]:
    headers = [("pipeline", PIPELINE.encode()), ("x-request-id", REQUEST_ID.encode())]
    headers.append(("traceparent", TRACEPARENT.encode()))
    messages = [
        ("pipeline", PIPELINE, "inputs", [FEATURES]),
        ("pipeline", PIPELINE, "outputs", [CLASSES, OUTLIER[0]]),
        ("model", "income-outlier", "outputs", OUTLIER),
        ("model", "income-drift", "inputs", [FEATURES]),
        ("model", "income-drift", "outputs", VERDICT),
    ]
    return [
        kafka.translate(
            SeldonMessage(
                NAMER.topic(kind, name, direction),
                b"key",
                encoded(direction, name, tensors),
                headers,
                timestamp_ms=int(AT * 1000),
            ),
            NAMER,
            TAPS,
        )
        for kind, name, direction, tensors in messages
    ]


def event(ce_type: str, event_id: str, data: dict) -> StoreWrite:
    attributes = {
        "type": ce_type,
        "source": "income-predictor",
        "id": event_id,
        "time": "2023-11-14T22:13:20Z",
        "inferenceservicename": PIPELINE,
        "datacontenttype": "application/json",
        "traceparent": TRACEPARENT,  # CloudEvents' distributed tracing extension
    }
    headers, body = to_binary(CloudEvent(attributes, data))
    return kserve.translate_event(kserve.read_event(headers, body), TAPS)


def json_tensor(t: Tensor) -> dict:
    return {"name": t.name, "datatype": t.datatype, "shape": t.shape, "data": t.data}


def kserve_writes() -> list[StoreWrite]:
    flagged = {"requestid": REQUEST_ID, "is_outlier": FLAGS, "instance_score": SCORES}
    drifted = {"requestid": REQUEST_ID, "is_drift": 1, "p_val": P_VALUES}
    drifted |= {"threshold": THRESHOLD, "batch_rows": 3}
    return [
        event(kserve.REQUEST_EVENT_TYPE, REQUEST_ID, {"inputs": [json_tensor(FEATURES)]}),
        event(kserve.RESPONSE_EVENT_TYPE, REQUEST_ID, {"outputs": [json_tensor(CLASSES)]}),
        event(kserve.OUTLIER_EVENT_TYPE, f"{REQUEST_ID}.income-outlier", flagged),
        event(kserve.DRIFT_EVENT_TYPE, f"{REQUEST_ID}.income-drift", drifted),
    ]


@pytest.fixture
def stores(tmp_path):
    """Each source's records, written to a store of its own."""
    stores = {}
    for source, writes in (
        (local.SOURCE, local_writes()),
        (kafka.SOURCE, kafka_writes()),
        (kserve.SOURCE, kserve_writes()),
    ):
        stores[source] = SqliteStore(tmp_path / f"{source}.sqlite")
        for change in writes:
            stores[source].write(change)
    yield stores
    for store in stores.values():
        store.close()


def test_the_three_sources_make_the_same_request_record(stores):
    records = {source: store.request(REQUEST_ID) for source, store in stores.items()}
    assert {source: record.source for source, record in records.items()} == {
        source: source for source in stores
    }
    expected = dataclasses.replace(
        records[local.SOURCE],
        rows=ROWS.tolist(),
        predicted=PREDICTED,
        outlier_flags=FLAGS,
        outlier_scores=SCORES,
        time=AT,
        sequence=1,
        trace_id=TRACE_ID,
    )
    for record in records.values():
        assert dataclasses.replace(record, source=expected.source) == expected


def test_the_three_sources_make_the_same_drift_verdict(stores):
    batches = {source: store.drift_batches(PIPELINE) for source, store in stores.items()}
    verdicts = {
        source: [(b.batch_id, b.time, b.is_drift, b.p_values, b.threshold) for b in found]
        for source, found in batches.items()
    }
    expected = [(REQUEST_ID, AT, True, P_VALUES, THRESHOLD)]
    assert verdicts == {source: expected for source in stores}
    # The rows the detector judged travel with Seldon's and the local gateway's runs; KServe's
    # event says how many there were.
    judged = {source: [(b.rows, b.row_count) for b in found] for source, found in batches.items()}
    assert judged == {
        local.SOURCE: [(ROWS.tolist(), None)],
        kafka.SOURCE: [(ROWS.tolist(), None)],
        kserve.SOURCE: [(None, 3)],
    }
