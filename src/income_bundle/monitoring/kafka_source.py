"""The monitor's Seldon source: a Kafka consumer group over the topics Seldon writes.

It reads the monitored pipeline's input and output topics and the outlier and drift detectors'
topics (see `seldon_kafka` for the format), turns each message into the part of a record it
carries, writes those to the store and only then commits the offsets. A crash between the two
re-reads the uncommitted messages, and the store's upserts make the second delivery a no-op:
nothing is lost and nothing counted twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from income_bundle.monitoring.store import DriftBatch, RecordStore, RequestRecord, StoreWrite
from income_bundle.v2.seldon_kafka import (
    ERROR_HEADER,
    PIPELINE_VERSION_HEADER,
    SeldonMessage,
    TopicNamer,
    decode_request,
    decode_response,
)
from income_bundle.v2.tensors import Tensor

__all__ = ["KafkaSource", "PipelineTaps", "translate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineTaps:
    """Which topics and tensors of a pipeline the monitor reads (Seldon's income pipeline)."""

    pipeline: str = "income-production"
    features: str = "predict"  # the pipeline's input tensor: one row of 12 features per row
    prediction: str = "predict"  # the classifier's output class per row
    classifier_model: str = "income"  # read locally; Seldon's pipeline outputs carry its classes
    outlier_flag: str = "is_outlier"
    outlier_model: str = "income-outlier"
    outlier_score: str = "instance_score"
    drift_model: str = "income-drift"
    drift_verdict: str = "is_drift"
    drift_p_values: str = "p_val"
    drift_threshold: str = "threshold"

    def topics(self, namer: TopicNamer) -> list[str]:
        return [
            namer.topic("pipeline", self.pipeline, "inputs"),
            namer.topic("pipeline", self.pipeline, "outputs"),
            namer.topic("model", self.outlier_model, "outputs"),
            namer.topic("model", self.drift_model, "inputs"),
            namer.topic("model", self.drift_model, "outputs"),
        ]


def _tensors(tensors: Sequence[Tensor]) -> dict[str, np.ndarray]:
    return {t.name: np.asarray(t.data).reshape(t.shape) for t in tensors}


def _rows(array: np.ndarray) -> list[list[float]]:
    return np.asarray(array, dtype=float).reshape(array.shape[0], -1).tolist()


def _flat(array: np.ndarray) -> list:
    return np.asarray(array).reshape(-1).tolist()


def read_verdict(batch: DriftBatch, outputs: dict[str, np.ndarray], taps: PipelineTaps) -> None:
    """The drift detector's verdict, p-values and threshold, from its output tensors."""
    if taps.drift_verdict in outputs:
        batch.is_drift = bool(_flat(outputs[taps.drift_verdict])[0])
    if taps.drift_p_values in outputs:
        batch.p_values = [float(v) for v in _flat(outputs[taps.drift_p_values])]
    if taps.drift_threshold in outputs:
        batch.threshold = float(_flat(outputs[taps.drift_threshold])[0])


def translate(message: SeldonMessage, namer: TopicNamer, taps: PipelineTaps) -> StoreWrite:
    """The record parts one Seldon message carries; empty for messages the monitor ignores."""
    change = StoreWrite()
    topic = namer.parse(message.topic)
    request_id = message.request_id
    if topic is None or not request_id or message.header(ERROR_HEADER) is not None:
        return change
    pipeline = taps.pipeline if topic.kind == "pipeline" else message.pipeline
    if pipeline != taps.pipeline:
        return change
    time = message.timestamp_ms / 1000
    version = message.header(PIPELINE_VERSION_HEADER)
    if topic.kind == "pipeline" and topic.direction == "inputs":
        inputs = _tensors(decode_request(message.value))
        if taps.features in inputs:
            change.requests.append(
                RequestRecord(
                    request_id,
                    pipeline,
                    source="seldon-kafka",
                    time=time,
                    pipeline_version=version,
                    rows=_rows(inputs[taps.features]),
                )
            )
    elif topic.kind == "pipeline":
        outputs = _tensors(decode_response(message.value))
        record = RequestRecord(request_id, pipeline, pipeline_version=version)
        if taps.prediction in outputs:
            record.predicted = [int(v) for v in _flat(outputs[taps.prediction])]
        if taps.outlier_flag in outputs:
            record.outlier_flags = [int(v) for v in _flat(outputs[taps.outlier_flag])]
        change.requests.append(record)
    elif topic.name == taps.outlier_model and topic.direction == "outputs":
        outputs = _tensors(decode_response(message.value))
        record = RequestRecord(request_id, pipeline)
        if taps.outlier_score in outputs:
            record.outlier_scores = [float(v) for v in _flat(outputs[taps.outlier_score])]
        if taps.outlier_flag in outputs:
            record.outlier_flags = [int(v) for v in _flat(outputs[taps.outlier_flag])]
        change.requests.append(record)
    elif topic.name == taps.drift_model and topic.direction == "inputs":
        inputs = _tensors(decode_request(message.value))
        if taps.features in inputs:
            rows = _rows(inputs[taps.features])
            change.drift_batches.append(DriftBatch(request_id, pipeline, time=time, rows=rows))
    elif topic.name == taps.drift_model:
        outputs = _tensors(decode_response(message.value))
        batch = DriftBatch(request_id, pipeline, time=time)
        read_verdict(batch, outputs, taps)
        change.drift_batches.append(batch)
    return change


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
            *self.taps.topics(self.namer),
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
                for records in batches.values():
                    for record in records:
                        part = translate(self._message(record), self.namer, self.taps)
                        change.requests.extend(part.requests)
                        change.drift_batches.extend(part.drift_batches)
                # The store's commit first: what is acknowledged to Kafka is on disk.
                await asyncio.to_thread(self.store.write, change)
                await consumer.commit(
                    {tp: records[-1].offset + 1 for tp, records in batches.items()}
                )
                read = sum(len(records) for records in batches.values())
                self.messages += read
                self.records.labels("seldon-kafka").inc(read)
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
