"""What the local gateway keeps of pipeline traffic: a traffic log, feedback, a labelling dataset.

`PipelineMonitor` observes the pipeline engines (see `income_bundle.seldon.engine`):
- every request's input rows go to `traffic.jsonl` (the pipeline's input stream, as Seldon keeps it
  in Kafka); `income-bundle report` reads it;
- its predictions are kept (bounded, newest first) so labels arriving later can be matched by
  request id: rolling accuracy, label mix and target drift (`feedback.py`);
- rows the outlier detector flags, and every row of a batch the drift detector found drifted, are
  appended to `labelling.csv`, features decoded to readable categories, with the reason.

Everything runs on the gateway's event loop, so appends never interleave; each file line is
written whole and flushed before the call returns.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter

from income_bundle.monitoring.feedback import (
    FeedbackError,
    FeedbackMetrics,
    FeedbackTracker,
    parse_labels,
)
from income_bundle.monitoring.labelling import DRIFT_COLUMNS, LabellingSchema, write_rows
from income_bundle.seldon.engine import StepResult
from income_bundle.seldon.tensors import Tensor

__all__ = [
    "LABELLING_FILE",
    "TRAFFIC_FILE",
    "ClassifierInfo",
    "PipelineMonitor",
    "export_labelling",
    "read_labelling",
]

log = logging.getLogger(__name__)

TRAFFIC_FILE = "traffic.jsonl"
LABELLING_FILE = "labelling.csv"
FEEDBACK_FILE = "feedback.jsonl"
DEFAULT_MAX_REQUESTS = 100_000
FEATURES_WIDTH = 12


@dataclass(frozen=True)
class ClassifierInfo:
    """What the monitor needs of a classifier model: its class names and reference label mix."""

    class_names: list[str]
    reference_shares: list[float]


@dataclass
class _Request:
    pipeline: str
    timestamp: float
    rows: list[list[Any]]
    predicted: list[int] | None = None
    outlier_flags: list[int] | None = None
    outlier_scores: list[float] | None = None
    truth: list[int] | None = None


@dataclass
class _PipelineState:
    tracker: FeedbackTracker | None = None
    class_names: list[str] = field(default_factory=list)


class PipelineMonitor:
    """An engine observer; also answers feedback. One per gateway."""

    def __init__(
        self,
        state_dir: Path,
        *,
        feature_names: Sequence[str],
        category_map: dict[int, list[str]],
        classifiers: dict[str, ClassifierInfo],
        registry: CollectorRegistry,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        window_rows: int = 500,
    ):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.feature_names = list(feature_names)
        self.category_map = category_map
        self.classifiers = classifiers
        self.max_requests = max_requests
        self.window_rows = window_rows
        self._requests: OrderedDict[str, _Request] = OrderedDict()
        self._pipelines: dict[str, _PipelineState] = {}
        self._traffic = open(self.state_dir / TRAFFIC_FILE, "ab")  # noqa: SIM115 (held open)
        self._feedback_log = open(self.state_dir / FEEDBACK_FILE, "ab")  # noqa: SIM115
        labelling = self.state_dir / LABELLING_FILE
        new = not labelling.exists() or labelling.stat().st_size == 0
        self._labelling = open(labelling, "a", newline="")  # noqa: SIM115
        self._labelling_csv = csv.writer(self._labelling)
        if new:
            self._labelling_csv.writerow(LabellingSchema(self.feature_names, {}, ()).columns)
            self._labelling.flush()
        self._metrics(registry)

    def _metrics(self, registry: CollectorRegistry) -> None:
        self.labelled_rows = Counter(
            "income_labelling_rows",
            "Rows appended to the labelling dataset, by pipeline and reason (outlier, drift).",
            ["pipeline", "reason"],
            registry=registry,
        )
        self.unmatched_rows = Counter(
            "income_labelling_unmatched_rows",
            "Rows of a drifted batch whose request was no longer kept (not in the dataset).",
            ["pipeline"],
            registry=registry,
        )
        self.feedback_metrics = FeedbackMetrics(registry)

    def close(self) -> None:
        for handle in (self._traffic, self._feedback_log, self._labelling):
            handle.close()

    # -- engine observer ---------------------------------------------------------------------

    def request_done(
        self, pipeline: str, request_id: str, inputs: list[Tensor], results: dict[str, StepResult]
    ) -> None:
        now = time.time()
        rows = _feature_rows(inputs)
        record = _Request(pipeline, now, rows)
        for step, result in results.items():
            outputs = {t.name: t for t in result.outputs}
            if step in self.classifiers and "predict" in outputs:
                record.predicted = [int(v) for v in outputs["predict"].data]
                self._pipeline(pipeline, self.classifiers[step])
            if "is_outlier" in outputs:
                record.outlier_flags = [int(v) for v in outputs["is_outlier"].data]
                if "instance_score" in outputs:
                    record.outlier_scores = [float(v) for v in outputs["instance_score"].data]
        self._keep(request_id, record)
        line = {"request_id": request_id, "timestamp": now, "pipeline": pipeline, "rows": rows}
        self._traffic.write(orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        self._traffic.flush()
        if record.outlier_flags:
            flagged = [i for i, flag in enumerate(record.outlier_flags) if flag]
            self._append(request_id, record, flagged, "outlier")

    def async_done(self, pipeline: str, request_id: str, results: dict[str, StepResult]) -> None:
        for result in results.values():
            outputs = {t.name: t for t in result.outputs}
            if "is_drift" not in outputs or not any(outputs["is_drift"].data):
                continue
            batch = uuid.uuid4().hex[:16]
            p_values = [float(v) for v in outputs["p_val"].data] if "p_val" in outputs else []
            threshold = float(outputs["threshold"].data[0]) if "threshold" in outputs else None
            drifting = [
                name
                for name, p in zip(self.feature_names, p_values, strict=False)
                if threshold is not None and p < threshold
            ]
            drift = {
                "drift_batch": batch,
                "drifting_features": ";".join(drifting),
                "drift_min_p_value": min(p_values) if p_values else "",
            }
            for member_id, member_rows in result.members or [(request_id, 0)]:
                record = self._requests.get(member_id)
                if record is None:
                    self.unmatched_rows.labels(pipeline).inc(member_rows)
                    log.warning("drifted batch %s: request %s no longer kept", batch, member_id)
                    continue
                self._append(member_id, record, range(len(record.rows)), "drift", drift)

    # -- feedback ----------------------------------------------------------------------------

    def feedback(self, pipeline: str, request_id: object, truth: object) -> dict[str, Any]:
        """Record the true labels of one request's rows; idempotent for the same labels."""
        where = f"pipeline {pipeline} feedback"
        if not isinstance(request_id, str) or not request_id:
            raise FeedbackError(
                400, f"{where}: 'id' must be the request id (the x-request-id of the response)"
            )
        record = self._requests.get(request_id)
        if record is None or record.pipeline != pipeline:
            raise FeedbackError(
                404,
                f"{where}: no request {request_id!r} (unknown to this gateway, or older than the "
                f"newest {self.max_requests} requests it keeps)",
            )
        state = self._pipelines.get(pipeline)
        if state is None or state.tracker is None or record.predicted is None:
            raise FeedbackError(
                400, f"{where}: request {request_id!r} has no classifier prediction to compare"
            )
        labels = parse_labels(where, truth, state.class_names)
        if len(labels) != len(record.predicted):
            raise FeedbackError(
                400,
                f"{where}: 'truth' has {len(labels)} labels; request {request_id!r} had "
                f"{len(record.predicted)} rows (one label per row)",
            )
        if record.truth is not None:
            if record.truth != labels:
                raise FeedbackError(
                    409,
                    f"{where}: request {request_id!r} already has different labels; "
                    f"feedback is recorded once per request",
                )
            return {"id": request_id, "rows": len(labels), "duplicate": True}
        record.truth = labels
        correct = sum(t == p for t, p in zip(labels, record.predicted, strict=True))
        state.tracker.add(labels, record.predicted)
        self.feedback_metrics.labelled(pipeline, labels, correct, state.class_names)
        stats = state.tracker.stats()
        self.feedback_metrics.publish(pipeline, stats)
        line = {"request_id": request_id, "timestamp": time.time(), "truth": labels}
        self._feedback_log.write(orjson.dumps(line) + b"\n")
        self._feedback_log.flush()
        return {
            "id": request_id,
            "rows": len(labels),
            "correct": correct,
            "duplicate": False,
            "window": dataclasses.asdict(stats),
        }

    # -- helpers -----------------------------------------------------------------------------

    def _pipeline(self, pipeline: str, classifier: ClassifierInfo) -> None:
        if pipeline not in self._pipelines:
            self._pipelines[pipeline] = _PipelineState(
                FeedbackTracker(
                    classifier.class_names, classifier.reference_shares, self.window_rows
                ),
                list(classifier.class_names),
            )

    def _keep(self, request_id: str, record: _Request) -> None:
        self._requests[request_id] = record
        self._requests.move_to_end(request_id)
        while len(self._requests) > self.max_requests:
            self._requests.popitem(last=False)

    def _append(
        self,
        request_id: str,
        record: _Request,
        rows: Sequence[int] | range,
        reason: str,
        drift: dict[str, Any] | None = None,
    ) -> None:
        rows = list(rows)
        if not rows:
            return
        stamp = datetime.fromtimestamp(record.timestamp, UTC).isoformat(timespec="milliseconds")
        class_names = (self._pipelines.get(record.pipeline) or _PipelineState()).class_names
        for row in rows:
            features = record.rows[row] if row < len(record.rows) else []
            prediction = ""
            if record.predicted is not None and row < len(record.predicted):
                index = record.predicted[row]
                prediction = class_names[index] if index < len(class_names) else str(index)
            score = flag = ""
            if record.outlier_scores is not None and row < len(record.outlier_scores):
                score = f"{record.outlier_scores[row]:.6g}"
            if record.outlier_flags is not None and row < len(record.outlier_flags):
                flag = record.outlier_flags[row]
            drift = drift or {}
            line = [request_id, row, stamp, record.pipeline, reason, *self._decode(features)]
            line += [prediction, score, flag]
            line += [drift.get(key, "") for key in DRIFT_COLUMNS]
            self._labelling_csv.writerow(line)
        self._labelling.flush()
        self.labelled_rows.labels(record.pipeline, reason).inc(len(rows))

    def _decode(self, features: Sequence[Any]) -> list[Any]:
        return LabellingSchema(self.feature_names, self.category_map, ()).decode(features)


def _feature_rows(inputs: list[Tensor]) -> list[list[Any]]:
    """The first input as rows (its 2-D shape), or nothing if it is not a feature matrix."""
    if not inputs:
        return []
    tensor = inputs[0]
    if len(tensor.shape) != 2 or tensor.shape[1] <= 0:
        return []
    width = tensor.shape[1]
    data = tensor.data
    return [list(data[i : i + width]) for i in range(0, len(data), width)]


def read_labelling(state_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The dataset's columns and rows; FileNotFoundError naming the file if there is none."""
    path = Path(state_dir) / LABELLING_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: serve pipeline traffic first "
            f"('income-bundle serve --state-dir {state_dir}')"
        )
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def export_labelling(state_dir: Path, out: Path, reasons: Sequence[str] | None = None) -> int:
    """Write the labelling dataset (optionally some reasons only) to CSV, JSON Lines or Parquet
    by suffix;
    each (request, row, reason) once. Returns the rows written."""
    columns, rows = read_labelling(state_dir)
    seen: set[tuple[str, str, str]] = set()
    selected = []
    for row in rows:
        key = (row["request_id"], row["row"], row["reason"])
        if key in seen or (reasons and row["reason"] not in reasons):
            continue
        seen.add(key)
        selected.append(row)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = out.suffix.lstrip(".") if out.suffix in (".jsonl", ".parquet") else "csv"
    out.write_bytes(write_rows(selected, columns, fmt))
    return len(selected)
