"""The monitor's Seldon source: a Kafka consumer group over the topics Seldon writes.

It reads the monitored pipeline's input and output topics and the outlier and drift detectors'
topics (see `seldon_kafka` for the format), reads each message into the part of a record it
carries (`income_bundle.monitoring.records`), writes those to the store and only then commits
the offsets. A crash between the two re-reads the uncommitted messages, and the store's upserts
make the second delivery a no-op: nothing is lost and nothing counted twice. A batch the store
still refuses after its retries (StoreWriteError) stops the source with its offsets uncommitted,
so the next consumer reads it again; the monitor's /ready reports the store unwritable meanwhile.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge

from income_bundle import tracing
from income_bundle.monitoring.records import (
    DriftReading,
    PipelineTaps,
    RequestReading,
    arrays,
    store_write,
)
from income_bundle.monitoring.store import RecordStore, StoreWrite
from income_bundle.v2.seldon_kafka import (
    ERROR_HEADER,
    PIPELINE_VERSION_HEADER,
    SeldonMessage,
    TopicName,
    TopicNamer,
    decode_request,
    decode_response,
)

__all__ = ["SOURCE", "KafkaSource", "topics", "translate"]

TRACEPARENT = tracing.TRACEPARENT

SOURCE = "seldon-kafka"


def topics(taps: PipelineTaps, namer: TopicNamer) -> list[str]:
    """The topics of the tapped pipeline and of its outlier and drift detectors."""
    return [
        namer.topic("pipeline", taps.pipeline, "inputs"),
        namer.topic("pipeline", taps.pipeline, "outputs"),
        namer.topic("model", taps.outlier_model, "outputs"),
        namer.topic("model", taps.drift_model, "inputs"),
        namer.topic("model", taps.drift_model, "outputs"),
    ]


def translate(message: SeldonMessage, namer: TopicNamer, taps: PipelineTaps) -> StoreWrite:
    """The record parts one Seldon message carries; empty for messages the monitor ignores."""
    topic = namer.parse(message.topic)
    request_id = message.request_id
    if topic is None or not request_id or message.header(ERROR_HEADER) is not None:
        return StoreWrite()
    pipeline = taps.pipeline if topic.kind == "pipeline" else message.pipeline
    if pipeline != taps.pipeline:
        return StoreWrite()
    reading = _reading(message, topic, request_id, taps)
    return store_write(taps, [reading] if reading is not None else [])


def _reading(
    message: SeldonMessage, topic: TopicName, request_id: str, taps: PipelineTaps
) -> RequestReading | DriftReading | None:
    time = message.timestamp_ms / 1000
    version = message.header(PIPELINE_VERSION_HEADER)
    trace_id = tracing.parse_traceparent(message.header(TRACEPARENT))
    if topic.kind == "pipeline" and topic.direction == "inputs":
        inputs = arrays(decode_request(message.value))
        return RequestReading(
            request_id,
            taps.pipeline,
            inputs=inputs,
            source=SOURCE,
            time=time,
            pipeline_version=version,
            trace_id=trace_id,
        )
    if topic.kind == "pipeline":
        outputs = arrays(decode_response(message.value))
        return RequestReading(
            request_id, taps.pipeline, outputs=outputs, pipeline_version=version, trace_id=trace_id
        )
    if topic.name == taps.outlier_model and topic.direction == "outputs":
        return RequestReading(
            request_id,
            taps.pipeline,
            outputs=arrays(decode_response(message.value)),
            trace_id=trace_id,
        )
    if topic.name == taps.drift_model and topic.direction == "inputs":
        inputs = arrays(decode_request(message.value))
        return DriftReading(request_id, taps.pipeline, inputs=inputs, time=time)
    if topic.name == taps.drift_model:
        outputs = arrays(decode_response(message.value))
        return DriftReading(request_id, taps.pipeline, outputs=outputs, time=time)
    return None


class KafkaSource:
    """Consumes Seldon's topics into a store; offsets are committed after the store commits."""

    def __init__(
        self,
        bootstrap: str,
        store: RecordStore,
        *,
        namespace: str = "seldon-mesh",
        taps: PipelineTaps | None = None,
        group_id: str = "income-monitor",
        max_records: int = 500,
        registry: CollectorRegistry | None = None,
        messages: Counter | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.store = store
        self.namer = TopicNamer(namespace)
        self.taps = taps or PipelineTaps()
        self.group_id = group_id
        self.max_records = max_records
        self.messages = 0
        registry = registry or CollectorRegistry()
        # The monitor passes its own counter, shared with its other sources.
        self.records = messages or Counter(
            "income_monitor_messages",
            "Messages the monitor read, by source.",
            ["source"],
            registry=registry,
        )
        self.lag = Gauge(
            "income_monitor_kafka_lag",
            "Messages of a topic not yet read by the monitor's consumer group.",
            ["topic"],
            registry=registry,
        )

    async def run(self, stop: asyncio.Event) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            *topics(self.taps, self.namer),
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            # A new group reads what Seldon wrote before the monitor started.
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=self.max_records)
                if not batches:
                    continue
                change = StoreWrite()
                contexts = []
                for records in batches.values():
                    for record in records:
                        message = self._message(record)
                        # Continues the trace the message's traceparent names, if any.
                        parent = tracing.context_from_traceparent(message.header(TRACEPARENT))
                        with tracing.span(
                            "monitor ingest", {"kafka.topic": record.topic}, parent=parent
                        ):
                            part = translate(message, self.namer, self.taps)
                        contexts.append(parent)
                        change.requests.extend(part.requests)
                        change.drift_batches.extend(part.drift_batches)
                # The store's commit first: what is acknowledged to Kafka is on disk.
                linked = [c for c in contexts if c is not None]
                with tracing.span(
                    "monitor store write",
                    {"monitor.records": len(change.requests) + len(change.drift_batches)},
                    parent=linked[0] if linked else None,
                    links=linked[1:],
                ):
                    # to_thread copies this context: the write runs inside the span.
                    await asyncio.to_thread(self.store.write, change)
                await consumer.commit(
                    {tp: records[-1].offset + 1 for tp, records in batches.items()}
                )
                read = sum(len(records) for records in batches.values())
                self.messages += read
                self.records.labels(SOURCE).inc(read)
                for tp in batches:
                    highwater = consumer.highwater(tp)
                    if highwater is not None:
                        self.lag.labels(tp.topic).set(highwater - await consumer.position(tp))
        finally:
            await consumer.stop()

    @staticmethod
    def _message(record) -> SeldonMessage:
        return SeldonMessage(
            topic=record.topic,
            key=record.key,
            value=record.value,
            headers=list(record.headers or ()),
            timestamp_ms=record.timestamp,
            partition=record.partition,
            offset=record.offset,
        )
