"""The monitor's local source: the gateway's pipeline engines hand it each request's data.

The engines call `request_done` and `async_done` on their event loop (see
`income_bundle.seldon.engine.PipelineObserver`); this source only queues what they hand over, and
one writer thread turns it into the same records the other sources make
(`income_bundle.monitoring.records`) and writes them to the store. No request waits for the
store: a request's answer never depends on the monitor.

What a crash can lose: the hand-overs still queued (at most `max_pending`, and in practice the
last few milliseconds of traffic). Everything the writer committed survives, whole: one
hand-over's parts are one transaction. A full queue drops the hand-over and counts it rather than
slow the gateway down (`income_monitor_dropped_writes_total{reason="queue_full"}`, with the
store's other drops: see `income_bundle.monitoring.store.StoreMetrics`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
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
from income_bundle.v2.tensors import Tensor

if TYPE_CHECKING:
    from opentelemetry.context import Context

__all__ = ["SOURCE", "GatewaySource", "StepOutcome", "translate_async", "translate_request"]

log = logging.getLogger(__name__)

SOURCE = "local-gateway"
DEFAULT_MAX_PENDING = 10_000
_WRITE_BATCH = 256  # hand-overs per transaction at most: one fsync for many requests


class StepOutcome(Protocol):
    """What the monitor reads of one run of a pipeline step; the gateway's step results are
    handed over as they are."""

    inputs: list[Tensor]
    outputs: list[Tensor]
    error: str | None  # the step failed: nothing of it is recorded
    members: list[tuple[str, int]]  # a batched step: (request id, rows) of every request held


@dataclass(frozen=True)
class _HandOver:
    pipeline: str
    request_id: str
    time: float
    inputs: list[Tensor] | None  # None: the asynchronous steps' results
    results: Mapping[str, StepOutcome]
    # The request's trace (its span current when the engine handed over); None untraced.
    context: Context | None = None


def translate_request(
    taps: PipelineTaps,
    request_id: str,
    at: float,
    inputs: Sequence[Tensor],
    results: Mapping[str, StepOutcome],
    trace_id: str | None = None,
) -> StoreWrite:
    """A pipeline request's record: its feature rows, the classifier's classes, the outlier
    detector's flags and scores (the parts Seldon writes to the pipeline's and the outlier
    model's topics)."""
    outputs: dict[str, np.ndarray] = {}
    for step in (taps.classifier_model, taps.outlier_model):
        result = results.get(step)
        if result is not None and result.error is None:
            outputs.update(arrays(result.outputs))
    reading = RequestReading(
        request_id,
        taps.pipeline,
        arrays(inputs),
        outputs,
        source=SOURCE,
        time=at,
        trace_id=trace_id,
    )
    return store_write(taps, [reading])


def translate_async(
    taps: PipelineTaps, request_id: str, at: float, results: Mapping[str, StepOutcome]
) -> StoreWrite:
    """A drift detector run: the rows it judged and its verdict."""
    drift = results.get(taps.drift_model)
    if drift is None or drift.error is not None or not drift.outputs:
        return StoreWrite()
    batch_id = drift.members[-1][0] if drift.members else request_id
    reading = DriftReading(
        batch_id, taps.pipeline, arrays(drift.inputs), arrays(drift.outputs), time=at
    )
    return store_write(taps, [reading])


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
        results: Mapping[str, StepOutcome],
        outputs: list[Tensor],
    ) -> None:
        if pipeline in self.taps:
            context = tracing.capture()  # on the event loop, inside the request's span
            self._put(_HandOver(pipeline, request_id, time.time(), inputs, results, context))

    def async_done(
        self, pipeline: str, request_id: str, results: Mapping[str, StepOutcome]
    ) -> None:
        if pipeline in self.taps:
            context = tracing.capture()
            self._put(_HandOver(pipeline, request_id, time.time(), None, results, context))

    def _put(self, item: _HandOver) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.store.count_dropped("queue_full")
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
        attributes = {"seldon.pipeline": item.pipeline, "seldon.request_id": item.request_id}
        # The monitor's part of the request's trace: from the hand-over to the record.
        with tracing.span("monitor ingest", attributes, parent=item.context):
            if item.inputs is None:
                return translate_async(taps, item.request_id, item.time, item.results)
            trace_id = tracing.trace_id_of(item.context)
            return translate_request(
                taps, item.request_id, item.time, item.inputs, item.results, trace_id
            )

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
                # One transaction for many requests: one span, in the first request's trace
                # and linked to the others'.
                contexts = [item.context for item in handed]
                with tracing.span(
                    "monitor store write",
                    {"monitor.records": len(change.requests) + len(change.drift_batches)},
                    parent=contexts[0] if contexts else None,
                    links=contexts[1:],
                ):
                    self.store.write(change)  # retried; what it still refuses raises
            except Exception:  # nothing asks again for a local hand-over: count it, write on
                log.exception("monitor: store write of %d hand-overs failed", len(handed))
                self.store.count_dropped(
                    "write_failed", len(change.requests) + len(change.drift_batches)
                )
            self.messages.labels(SOURCE).inc(len(handed))
            self.pending.dec(len(handed))
            with self._progress:
                self._written += len(handed)
                self._progress.notify_all()

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued, then stop the writer."""
        self._queue.put(None)
        self._writer.join(timeout_s)
