"""The monitor's local source: the gateway's pipeline engines hand it each request's data.

The engines call `request_done` and `async_done` on their event loop (see
`income_bundle.seldon.engine.PipelineObserver`); this source only queues what they hand over, and
one writer thread turns it into the same record parts the Kafka source reads from Seldon's topics
(`PipelineTaps` names the tensors in both) and writes them to the store. No request waits for the
store: a request's answer never depends on the monitor.

What a crash can lose: the hand-overs still queued (at most `max_pending`, and in practice the
last few milliseconds of traffic). Everything the writer committed survives, whole: one
hand-over's parts are one transaction. A full queue drops the hand-over and counts it rather than
slow the gateway down.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

# The same tensor readings as the Kafka source's, so both make the same records.
from income_bundle.monitoring.kafka_source import PipelineTaps, _flat, _rows, read_verdict
from income_bundle.monitoring.kafka_source import _tensors as _named
from income_bundle.monitoring.store import DriftBatch, RecordStore, RequestRecord, StoreWrite
from income_bundle.seldon.engine import StepResult
from income_bundle.v2.tensors import Tensor

__all__ = ["SOURCE", "GatewaySource", "translate_async", "translate_request"]

log = logging.getLogger(__name__)

SOURCE = "local-gateway"
DEFAULT_MAX_PENDING = 10_000
_WRITE_BATCH = 256  # hand-overs per transaction at most: one fsync for many requests


@dataclass(frozen=True)
class _HandOver:
    pipeline: str
    request_id: str
    time: float
    inputs: list[Tensor] | None  # None: the asynchronous steps' results
    results: dict[str, StepResult]


def translate_request(
    taps: PipelineTaps,
    request_id: str,
    at: float,
    inputs: Sequence[Tensor],
    results: dict[str, StepResult],
) -> StoreWrite:
    """A pipeline request's record: its feature rows, the classifier's classes, the outlier
    detector's flags and scores (the parts Seldon writes to the pipeline's and the outlier
    model's topics)."""
    record = RequestRecord(request_id, taps.pipeline, source=SOURCE, time=at)
    features = _named(inputs).get(taps.features)
    if features is not None and features.ndim == 2:
        record.rows = _rows(features)
    classifier = results.get(taps.classifier_model)
    if classifier is not None and classifier.error is None:
        outputs = _named(classifier.outputs)
        if taps.prediction in outputs:
            record.predicted = [int(v) for v in _flat(outputs[taps.prediction])]
    outlier = results.get(taps.outlier_model)
    if outlier is not None and outlier.error is None:
        outputs = _named(outlier.outputs)
        if taps.outlier_flag in outputs:
            record.outlier_flags = [int(v) for v in _flat(outputs[taps.outlier_flag])]
        if taps.outlier_score in outputs:
            record.outlier_scores = [float(v) for v in _flat(outputs[taps.outlier_score])]
    return StoreWrite(requests=[record])


def translate_async(
    taps: PipelineTaps, request_id: str, at: float, results: dict[str, StepResult]
) -> StoreWrite:
    """A drift detector run: the rows it judged and its verdict. The batch is named after its
    last request, as Seldon's batch processor names the message it sends the detector."""
    change = StoreWrite()
    drift = results.get(taps.drift_model)
    if drift is None or drift.error is not None or not drift.outputs:
        return change
    batch_id = drift.members[-1][0] if drift.members else request_id
    batch = DriftBatch(batch_id, taps.pipeline, time=at)
    features = _named(drift.inputs).get(taps.features)
    if features is not None:
        batch.rows = _rows(features)
    read_verdict(batch, _named(drift.outputs), taps)
    change.drift_batches.append(batch)
    return change


class GatewaySource:
    """An engine observer that records the monitored pipelines' traffic, off the event loop."""

    def __init__(
        self,
        store: RecordStore,
        taps: Sequence[PipelineTaps],
        *,
        registry: CollectorRegistry | None = None,
        messages: Counter | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.store = store
        self.taps = {t.pipeline: t for t in taps}
        self._queue: queue.Queue[_HandOver | None] = queue.Queue(maxsize=max_pending)
        registry = registry or CollectorRegistry()
        self.messages = messages or Counter(
            "income_monitor_messages",
            "Messages the monitor read, by source.",
            ["source"],
            registry=registry,
        )
        self.pending = Gauge(
            "income_monitor_pending_writes",
            "Hand-overs from the local gateway queued for the store (lost if the process dies).",
            registry=registry,
        )
        self.dropped = Counter(
            "income_monitor_dropped_writes",
            "Hand-overs from the local gateway dropped because the store fell behind.",
            registry=registry,
        )
        # Hand-overs queued and written so far: what `flush` waits on.
        self._handed = self._written = 0
        self._progress = threading.Condition()
        self._writer = threading.Thread(target=self._write_loop, name="monitor-writer", daemon=True)
        self._writer.start()

    # -- engine observer (called on the gateway's event loop: queue and return) ------------------

    def request_done(
        self,
        pipeline: str,
        request_id: str,
        inputs: list[Tensor],
        results: dict[str, StepResult],
        outputs: list[Tensor],
    ) -> None:
        if pipeline in self.taps:
            self._put(_HandOver(pipeline, request_id, time.time(), inputs, results))

    def async_done(self, pipeline: str, request_id: str, results: dict[str, StepResult]) -> None:
        if pipeline in self.taps:
            self._put(_HandOver(pipeline, request_id, time.time(), None, results))

    def _put(self, item: _HandOver) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped.inc()
            log.warning("monitor: store behind, %s of %s dropped", item.request_id, item.pipeline)
            return
        with self._progress:
            self._handed += 1
        self.pending.inc()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything handed over before this call is in the store; False on timeout.
        The monitor calls it before answering that it does not know a request: feedback sent
        right after an answer finds its request."""
        with self._progress:
            target = self._handed
            return self._progress.wait_for(lambda: self._written >= target, timeout_s)

    # -- the writer ------------------------------------------------------------------------------

    def _translate(self, item: _HandOver) -> StoreWrite:
        taps = self.taps[item.pipeline]
        if item.inputs is None:
            return translate_async(taps, item.request_id, item.time, item.results)
        return translate_request(taps, item.request_id, item.time, item.inputs, item.results)

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            items = [self._queue.get()]
            while len(items) < _WRITE_BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = items[-1] is None
            handed = [item for item in items if item is not None]
            change = StoreWrite()
            for item in handed:
                try:
                    part = self._translate(item)
                except Exception:  # a malformed result must not stop the writer
                    log.exception("monitor: cannot record %s of %s", item.request_id, item.pipeline)
                    continue
                change.requests.extend(part.requests)
                change.drift_batches.extend(part.drift_batches)
            try:
                self.store.write(change)
            except Exception:
                log.exception("monitor: store write of %d hand-overs failed", len(handed))
            self.messages.labels(SOURCE).inc(len(handed))
            self.pending.dec(len(handed))
            with self._progress:
                self._written += len(handed)
                self._progress.notify_all()

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued, then stop the writer."""
        self._queue.put(None)
        self._writer.join(timeout_s)
