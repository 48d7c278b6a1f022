"""The labelling dataset, derived from the monitor's store: rows worth a human label.

A row is in it when the outlier detector flagged it, or when it was part of a batch the drift
detector found drifted; each (request, row, reason) once, however often its messages arrived.
A drift batch carries only the id of its last request (Seldon's BatchProcessor; the KServe
detector's `requestid`), so its rows are matched to the requests whose inputs arrived just
before, in order; where the judged rows are known (Seldon) the match is checked row by row.
Rows that match no requests are kept with an empty request id.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from income_bundle.monitoring.store import DriftBatch, RecordStore, RequestRecord

__all__ = ["DRIFT_COLUMNS", "LabellingSchema", "batch_members", "labelling_rows", "write_rows"]

DRIFT_COLUMNS = ("drift_batch", "drifting_features", "drift_min_p_value")
REASONS = ("outlier", "drift")


@dataclass(frozen=True)
class LabellingSchema:
    """How rows are written: feature names, category names per column, class names."""

    feature_names: Sequence[str]
    category_map: dict[int, list[str]]
    class_names: Sequence[str]

    @property
    def columns(self) -> list[str]:
        return [
            "request_id", "trace_id", "row", "timestamp", "pipeline", "reason",
            *self.feature_names,
            "prediction", "outlier_score", "is_outlier", *DRIFT_COLUMNS,
        ]  # fmt: skip

    def decode(self, features: Sequence[float]) -> list[Any]:
        decoded: list[Any] = []
        for column, value in enumerate(features):
            names = self.category_map.get(column)
            if names is not None and float(value).is_integer() and 0 <= int(value) < len(names):
                decoded.append(names[int(value)])
            elif float(value).is_integer():
                decoded.append(int(value))
            else:
                decoded.append(value)
        return decoded + [""] * (len(self.feature_names) - len(decoded))


def batch_members(
    batch: DriftBatch, requests: Sequence[RequestRecord], position: dict[str, int]
) -> list[RequestRecord] | None:
    """The requests whose rows make up `batch`, oldest first; None when they cannot be matched."""
    end = position.get(batch.batch_id)
    count = len(batch.rows) if batch.rows is not None else batch.row_count
    if end is None or not count:
        return None
    members: list[RequestRecord] = []
    rows = 0
    index = end
    while index >= 0 and rows < count:
        record = requests[index]
        if record.rows is None:
            return None
        members.insert(0, record)
        rows += len(record.rows)
        index -= 1
    if rows != count:
        return None
    if batch.rows is not None:  # the rows the detector judged are known: they must be these
        joined = np.asarray([row for record in members for row in record.rows or []], dtype=float)
        if not np.array_equal(joined, np.asarray(batch.rows, dtype=float)):
            return None
    return members


def _stamp(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _row(
    schema: LabellingSchema,
    record: RequestRecord | None,
    index: int,
    features: Sequence[float],
    pipeline: str,
    reason: str,
    drift: dict[str, Any],
) -> dict[str, Any]:
    prediction = score = flag = ""
    if record is not None:
        if record.predicted is not None and index < len(record.predicted):
            label = record.predicted[index]
            prediction = schema.class_names[label] if label < len(schema.class_names) else label
        if record.outlier_scores is not None and index < len(record.outlier_scores):
            value = record.outlier_scores[index]
            score = f"{value:.6g}" if math.isfinite(value) else ""
        if record.outlier_flags is not None and index < len(record.outlier_flags):
            flag = record.outlier_flags[index]
    values = [
        record.request_id if record else "",
        # The request's trace (Jaeger/SigNoz) when it was traced: "" otherwise.
        (record.trace_id or "") if record else "",
        index,
        _stamp(record.time if record else drift.get("time")),
        pipeline,
        reason,
        *schema.decode(features),
        prediction,
        score,
        flag,
        *(drift.get(key, "") for key in DRIFT_COLUMNS),
    ]
    return dict(zip(schema.columns, values, strict=True))


def labelling_rows(
    store: RecordStore,
    pipeline: str,
    schema: LabellingSchema,
    reasons: Iterable[str] = REASONS,
) -> list[dict[str, Any]]:
    """The dataset's rows: outliers in request order, then drifted batches' rows in batch order."""
    reasons = set(reasons)
    requests = store.requests(pipeline)
    rows: list[dict[str, Any]] = []
    if "outlier" in reasons:
        for record in requests:
            for index, flag in enumerate(record.outlier_flags or []):
                if flag and record.rows is not None and index < len(record.rows):
                    rows.append(
                        _row(schema, record, index, record.rows[index], pipeline, "outlier", {})
                    )
    if "drift" in reasons:
        position = {record.request_id: i for i, record in enumerate(requests)}
        for batch in store.drift_batches(pipeline):
            if not batch.is_drift:
                continue
            p_values = batch.p_values or []
            drift = {
                "drift_batch": batch.batch_id,
                "drifting_features": ";".join(
                    name
                    for name, p in zip(schema.feature_names, p_values, strict=False)
                    if batch.threshold is not None and p < batch.threshold
                ),
                "drift_min_p_value": min(p_values) if p_values else "",
                "time": batch.time,
            }
            members = batch_members(batch, requests, position)
            if members is None:
                for index, features in enumerate(batch.rows or []):
                    rows.append(_row(schema, None, index, features, pipeline, "drift", drift))
                continue
            for record in members:
                for index, features in enumerate(record.rows or []):
                    rows.append(_row(schema, record, index, features, pipeline, "drift", drift))
    return rows


FORMATS = ("csv", "jsonl", "parquet")


def _finite(value: Any) -> Any:
    """A NaN or an infinity is written as missing: JSON has no word for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _arrow_column(values: list[Any]):
    """One Parquet column: integers, numbers or text, whichever holds every value given (a
    missing value, "" or None, is null in a column of numbers)."""
    import pyarrow as pa

    given = [v for v in values if v is not None and v != ""]
    if given and all(isinstance(v, int) and -(2**63) <= v < 2**63 for v in given):
        return pa.array([None if v is None or v == "" else int(v) for v in values], pa.int64())
    if given and all(isinstance(v, int | float) for v in given):
        return pa.array([None if v is None or v == "" else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def write_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> bytes:
    """CSV (with a header), JSON Lines, or Parquet (each column integers, numbers or text, as its
    values allow; with no rows, every named column as text). A NaN or an infinity is written as
    missing: empty in CSV, null in JSON Lines and Parquet."""
    names = list(columns) or (list(rows[0]) if rows else [])
    rows = [{name: _finite(row.get(name)) for name in names} for row in rows]
    if fmt == "jsonl":
        return "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows).encode()
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({name: _arrow_column([row[name] for row in rows]) for name in names})
        out = io.BytesIO()
        pq.write_table(table, out)
        return out.getvalue()
    if fmt != "csv":
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    out = io.StringIO()
    writer = csv.DictWriter(out, names)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()
