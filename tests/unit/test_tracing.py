"""income_bundle.tracing and the gateway's spans, in process: the SDK's in-memory exporter stands
for the collector (tests/integration/test_tracing.py sends to a real Jaeger)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from income_bundle import tracing
from income_bundle.errors import ServingError
from income_bundle.seldon.rest import RestFront
from tests.support.gateway_stubs import asgi_call, stub_gateway
from tests.support.v2_bodies import ROW, tensor

PIPELINE = "income-production.pipeline"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def spans():
    """Tracing on, into memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    tracing.configure(None, processor=SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        tracing.shutdown()


def test_off_costs_nothing_and_adds_nothing():
    assert not tracing.enabled()
    with tracing.span("anything") as span:
        assert span is None
        assert tracing.trace_id() is None and tracing.exemplar() is None
        assert tracing.capture() is None
    assert tracing.inject({}) == {}
    assert tracing.context_from({"traceparent": CLIENT_TRACEPARENT}) is None
    assert not tracing.configure(None)  # no endpoint: nothing configured


def test_spans_nest_and_a_serving_error_records_its_status(spans):
    with pytest.raises(ServingError), tracing.span("outer") as outer:
        assert outer is not None
        with tracing.span("inner"):
            raise ServingError(503, "model income is unavailable")
    inner, outer = spans.get_finished_spans()
    assert inner.parent.span_id == outer.context.span_id
    assert inner.context.trace_id == outer.context.trace_id
    for span in (inner, outer):
        assert span.attributes["http.response.status_code"] == 503
        assert span.status.status_code is StatusCode.ERROR


def test_a_client_error_is_not_a_failed_span(spans):
    with pytest.raises(ServingError), tracing.span("request"):
        raise ServingError(400, "bad input")
    (span,) = spans.get_finished_spans()
    assert span.attributes["http.response.status_code"] == 400
    assert span.status.status_code is not StatusCode.ERROR


def test_traceparent_round_trips_and_a_malformed_one_starts_a_new_trace(spans):
    parent = tracing.context_from({"traceparent": CLIENT_TRACEPARENT})
    assert tracing.trace_id_of(parent) == CLIENT_TRACE
    with tracing.span("continued", parent=parent):
        headers = tracing.inject({})
        assert tracing.trace_id() == CLIENT_TRACE
        assert tracing.exemplar() == {"trace_id": CLIENT_TRACE}
    assert headers["traceparent"].split("-")[1] == CLIENT_TRACE
    broken = tracing.context_from({"traceparent": "00-not-a-trace-01"})
    with tracing.span("fresh", parent=broken):
        assert tracing.trace_id() not in (None, CLIENT_TRACE)


def test_a_sampled_parent_is_kept_whatever_the_ratio():
    exporter = InMemorySpanExporter()
    tracing.configure(None, ratio=0.0, processor=SimpleSpanProcessor(exporter))
    try:
        with tracing.span("new trace"):
            assert tracing.exemplar() is None  # not sampled: no exemplar names it
        with tracing.span("continued", parent=tracing.context_from_traceparent(CLIENT_TRACEPARENT)):
            pass
    finally:
        tracing.shutdown()
    assert [s.name for s in exporter.get_finished_spans()] == ["continued"]


def test_a_ratio_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="within"):
        tracing.configure("http://127.0.0.1:4317", ratio=1.5)
    assert not tracing.enabled()


def test_log_records_carry_the_ids(spans):
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "message", None, None)
    log_filter = tracing.TraceLogFilter()
    log_filter.filter(record)
    assert (record.trace_id, record.span_id) == ("-", "-")
    with tracing.span("request"):
        log_filter.filter(record)
        assert record.trace_id == tracing.trace_id() and record.span_id == tracing.span_id()
    assert f"trace_id={record.trace_id}" in logging.Formatter(tracing.LOG_FORMAT).format(record)


async def _pipeline_call(front, headers, accept="application/openmetrics-text"):
    body = json.dumps({"inputs": [tensor(ROW, [1, 12])]}).encode()
    await front.gateway.start()
    try:
        answer = await asgi_call(
            front, "POST", "/v2/models/m/infer", body, {"seldon-model": PIPELINE, **headers}
        )
        await front.gateway.engines["income-production"].wait_idle(5)
        metrics = await asgi_call(
            front, "GET", "/metrics", headers={"accept": accept} if accept else {}
        )
        return answer, metrics
    finally:
        await front.gateway.close()


def test_a_pipeline_request_is_one_trace_with_a_span_per_step(spans):
    """The client's traceparent is continued: the request span is its child, each step's span
    the request span's child, and the pipeline's latency exemplar names the trace. (The drift
    step holds one row of its batch of 20: it calls no model, so it has no span yet.)"""
    front = RestFront(stub_gateway())
    (status, _, _), (_, headers, metrics) = asyncio.run(
        _pipeline_call(front, {"traceparent": CLIENT_TRACEPARENT, "x-request-id": "r-1"})
    )
    assert status == 200
    finished = {s.name: s for s in spans.get_finished_spans()}
    request = finished["gateway infer"]
    assert request.kind is SpanKind.SERVER
    assert request.parent.span_id == int(CLIENT_TRACEPARENT.split("-")[2], 16)
    assert request.attributes["seldon.pipeline"] == "income-production"
    assert request.attributes["seldon.request_id"] == "r-1"
    assert request.attributes["seldon.rows_in"] == request.attributes["seldon.rows_out"] == 1
    assert request.attributes["seldon.bytes_in"] > 0 and request.attributes["seldon.bytes_out"] > 0
    assert "step income-drift" not in finished
    steps = {"income", "income-preprocess", "income-outlier"}
    for step in steps:
        span = finished[f"step {step}"]
        assert span.context.trace_id == int(CLIENT_TRACE, 16)
        assert span.parent.span_id == request.context.span_id
    assert headers["content-type"].startswith("application/openmetrics-text")
    text = metrics.decode()
    assert f'trace_id="{CLIENT_TRACE}"' in text
    exemplar_lines = [line for line in text.splitlines() if "trace_id=" in line]
    assert any(
        line.startswith("seldon_pipeline_infer_api_seconds_bucket") for line in exemplar_lines
    )
    assert "income_gateway_request_body_bytes_count" in text


def test_a_scrape_without_accept_gets_the_text_format_without_exemplars(spans):
    front = RestFront(stub_gateway())
    _, (_, headers, metrics) = asyncio.run(_pipeline_call(front, {}, accept=None))
    assert headers["content-type"].startswith("text/plain")
    assert b"seldon_pipeline_infer_api_seconds_bucket" in metrics
    assert b"trace_id" not in metrics


def test_a_grpc_request_continues_the_traceparent_of_its_metadata(spans):
    """The gRPC front reads `traceparent` from the call's metadata, as the REST front reads the
    header; the body sizes are the messages' serialized sizes."""
    from tritonclient.grpc import service_pb2

    from tests.unit.test_gateway_units import _grpc_calls

    request = service_pb2.ModelInferRequest()
    request.inputs.add(
        name="predict", datatype="FP32", shape=[1, 12]
    ).contents.fp32_contents.extend(ROW)
    metadata = [("seldon-model", PIPELINE), ("traceparent", CLIENT_TRACEPARENT)]
    ((response, _),) = asyncio.run(_grpc_calls(stub_gateway(), [("ModelInfer", request, metadata)]))
    assert [o.name for o in response.outputs] == ["predict", "is_outlier"]
    (server,) = [s for s in spans.get_finished_spans() if s.name == "gateway infer"]
    assert format(server.context.trace_id, "032x") == CLIENT_TRACE
    assert server.attributes["seldon.protocol"] == "grpc"
    assert server.attributes["seldon.bytes_in"] == request.ByteSize()
    assert server.attributes["seldon.bytes_out"] == response.ByteSize()


def test_the_kafka_publisher_carries_the_trace_the_monitor_reads_back(spans):
    """With tracing on, the pipeline's Kafka messages carry the request's `traceparent` (the
    dataflow engine carries headers on), and the monitor's Kafka source records its trace id."""
    from income_bundle.monitoring.records import PipelineTaps
    from income_bundle.monitoring.sources import kafka
    from income_bundle.seldon.engine import StepResult
    from income_bundle.seldon.kafka_publisher import SeldonTopicPublisher
    from income_bundle.v2.seldon_kafka import SeldonMessage, TopicNamer
    from income_bundle.v2.tensors import Tensor

    features = [Tensor("predict", "FP32", [1, 12], [0.0] * 12)]
    predict = Tensor("predict", "INT64", [1, 1], [1])

    async def publish():
        publisher = SeldonTopicPublisher("unused:9092", pipelines=stub_gateway().bundle.pipelines)
        publisher._pump = asyncio.get_running_loop().create_future()  # queue, do not send
        with tracing.span(
            "gateway infer", parent=tracing.context_from_traceparent(CLIENT_TRACEPARENT)
        ):
            publisher.request_done(
                "income-production",
                "r-kafka",
                features,
                {"income": StepResult(features, [predict])},
                [predict],
            )
        return publisher._queue.get_nowait()

    messages = [SeldonMessage(t, k, v, h, 0) for t, k, v, h in asyncio.run(publish())]
    by_topic = {m.topic.removeprefix("seldon.seldon-mesh."): m for m in messages}
    for topic in ("pipeline.income-production.inputs", "pipeline.income-production.outputs"):
        assert by_topic[topic].header("traceparent").split("-")[1] == CLIENT_TRACE
    change = kafka.translate(
        by_topic["pipeline.income-production.inputs"], TopicNamer("seldon-mesh"), PipelineTaps()
    )
    assert [record.trace_id for record in change.requests] == [CLIENT_TRACE]
