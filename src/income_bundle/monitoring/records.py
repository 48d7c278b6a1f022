"""What the monitor records of the traffic it reads, whichever source read it.

Each source reads its transport (the local gateway's hand-overs, Seldon's Kafka topics, KServe's
CloudEvents) into readings: the tensors one message carries of one request, or of one run of the
drift detector, by name. `store_write` turns readings into the records the store keeps, the same
way for every source; `PipelineTaps` says which tensor of which step means what.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from income_bundle.monitoring.store import DriftBatch, RequestRecord, StoreWrite
from income_bundle.v2.tensors import Tensor

__all__ = ["DriftReading", "PipelineTaps", "RequestReading", "arrays", "store_write"]


@dataclass(frozen=True)
class PipelineTaps:
    """Which steps and tensors of a pipeline the monitor reads (Seldon's income pipeline)."""

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


@dataclass(frozen=True)
class RequestReading:
    """What one message carries of one request: the pipeline's `inputs` (the feature rows) and
    the `outputs` (classes, outlier flags and scores) of whichever steps it holds. The store
    joins a request's readings by its id; `source`, `time` and `pipeline_version` are given by
    the readings that know them."""

    request_id: str
    pipeline: str
    inputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    outputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    time: float | None = None
    pipeline_version: str | None = None
    trace_id: str | None = None  # the trace the message carried (traceparent), if any


@dataclass(frozen=True)
class DriftReading:
    """What one message carries of one run of the drift detector: the rows it judged (`inputs`)
    and its verdict (`outputs`). The batch is named after its last request, as Seldon's batch
    processor names the message it sends the detector."""

    batch_id: str
    pipeline: str
    inputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    outputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    time: float | None = None
    row_count: int | None = None  # known without the rows where only the verdict arrives (KServe)


def arrays(tensors: Iterable[Tensor]) -> dict[str, np.ndarray]:
    """V2 tensors by name, each in its shape."""
    return {t.name: np.asarray(t.data).reshape(t.shape) for t in tensors}


def store_write(
    taps: PipelineTaps, readings: Iterable[RequestReading | DriftReading]
) -> StoreWrite:
    """The records the readings make, in their order; a reading holding none of the tapped
    tensors makes none."""
    change = StoreWrite()
    for reading in readings:
        if isinstance(reading, RequestReading):
            record = _request_record(taps, reading)
            if any(part is not None for part in _request_parts(record)):
                change.requests.append(record)
        else:
            batch = _drift_batch(taps, reading)
            if any(part is not None for part in _batch_parts(batch)):
                change.drift_batches.append(batch)
    return change


def _request_record(taps: PipelineTaps, reading: RequestReading) -> RequestRecord:
    record = RequestRecord(
        reading.request_id,
        reading.pipeline,
        source=reading.source,
        time=reading.time,
        pipeline_version=reading.pipeline_version,
        rows=_rows(reading.inputs.get(taps.features)),
        trace_id=reading.trace_id,
    )
    outputs = reading.outputs
    if taps.prediction in outputs:
        record.predicted = [int(v) for v in _flat(outputs[taps.prediction])]
    if taps.outlier_flag in outputs:
        record.outlier_flags = [int(v) for v in _flat(outputs[taps.outlier_flag])]
    if taps.outlier_score in outputs:
        record.outlier_scores = [float(v) for v in _flat(outputs[taps.outlier_score])]
    return record


def _drift_batch(taps: PipelineTaps, reading: DriftReading) -> DriftBatch:
    batch = DriftBatch(
        reading.batch_id,
        reading.pipeline,
        time=reading.time,
        rows=_rows(reading.inputs.get(taps.features)),
        row_count=reading.row_count,
    )
    outputs = reading.outputs
    if taps.drift_verdict in outputs:
        batch.is_drift = bool(_flat(outputs[taps.drift_verdict])[0])
    if taps.drift_p_values in outputs:
        batch.p_values = [float(v) for v in _flat(outputs[taps.drift_p_values])]
    if taps.drift_threshold in outputs:
        batch.threshold = float(_flat(outputs[taps.drift_threshold])[0])
    return batch


def _request_parts(record: RequestRecord) -> tuple:
    return record.rows, record.predicted, record.outlier_flags, record.outlier_scores


def _batch_parts(batch: DriftBatch) -> tuple:
    return batch.rows, batch.is_drift, batch.p_values, batch.threshold, batch.row_count


def _rows(features: np.ndarray | None) -> list[list[float]] | None:
    """Feature rows from a (rows, features) tensor; None for anything else."""
    if features is None or features.ndim != 2:
        return None
    return np.asarray(features, dtype=float).tolist()


def _flat(array: np.ndarray) -> list:
    return np.asarray(array).reshape(-1).tolist()
