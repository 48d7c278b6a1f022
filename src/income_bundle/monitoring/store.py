"""Where the monitor keeps inference records: an interface, and SQLite behind it by default.

A request's record is filled in piece by piece as its parts arrive (input rows, predictions,
outlier scores, ground truth), in whatever order the sources deliver them; a drift batch's record
holds the rows the detector judged and its verdict. Every write is an idempotent upsert keyed by
the request id (or the batch id), so a source that delivers a message twice, as Kafka does after
a crash before its offsets were committed, changes nothing the second time.

SQLite runs in WAL mode with one writer (the monitor's event loop); each `write` is one
transaction, committed before it returns, so a source may acknowledge what it wrote.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = ["DriftBatch", "RecordStore", "RequestRecord", "SqliteStore", "StoreWrite"]


@dataclass
class RequestRecord:
    """What the monitor knows of one inference request (one or more rows)."""

    request_id: str
    pipeline: str
    source: str = ""
    time: float | None = None
    pipeline_version: str | None = None
    rows: list[list[float]] | None = None
    predicted: list[int] | None = None
    outlier_flags: list[int] | None = None
    outlier_scores: list[float] | None = None
    truth: list[int] | None = None
    truth_time: float | None = None
    sequence: int | None = None  # arrival order of the inputs within the pipeline


@dataclass
class DriftBatch:
    """One run of the drift detector: the rows it judged and its verdict."""

    batch_id: str  # the id of the last request in the batch (Seldon's BatchProcessor)
    pipeline: str
    time: float | None = None
    rows: list[list[float]] | None = None
    is_drift: bool | None = None
    p_values: list[float] | None = None
    threshold: float | None = None
    row_count: int | None = None  # known without the rows where only the verdict arrives (KServe)


@dataclass
class StoreWrite:
    """The parts one message (or one local request) contributes; applied in one transaction."""

    requests: list[RequestRecord] = field(default_factory=list)
    drift_batches: list[DriftBatch] = field(default_factory=list)


class RecordStore(Protocol):
    """What the monitor needs of a store. Writes are idempotent and durable when they return."""

    def write(self, change: StoreWrite) -> None: ...

    def request(self, request_id: str) -> RequestRecord | None: ...

    def requests(self, pipeline: str) -> list[RequestRecord]: ...

    def drift_batches(self, pipeline: str) -> list[DriftBatch]: ...

    def set_truth(self, request_id: str, truth: Sequence[int], at: float) -> bool: ...

    def labelled(self, pipeline: str, limit: int) -> list[RequestRecord]: ...

    def close(self) -> None: ...


_REQUEST_COLUMNS = (
    "pipeline",
    "source",
    "time",
    "pipeline_version",
    "rows",
    "predicted",
    "outlier_flags",
    "outlier_scores",
    "truth",
    "truth_time",
    "sequence",
)
_JSON_COLUMNS = {"rows", "predicted", "outlier_flags", "outlier_scores", "truth", "p_values"}
_BATCH_COLUMNS = ("pipeline", "time", "rows", "is_drift", "p_values", "threshold", "row_count")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    source TEXT,
    time REAL,
    pipeline_version TEXT,
    rows TEXT,
    predicted TEXT,
    outlier_flags TEXT,
    outlier_scores TEXT,
    truth TEXT,
    truth_time REAL,
    sequence INTEGER
);
CREATE INDEX IF NOT EXISTS requests_by_pipeline ON requests (pipeline, sequence);
CREATE TABLE IF NOT EXISTS drift_batches (
    batch_id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    time REAL,
    rows TEXT,
    is_drift INTEGER,
    p_values TEXT,
    threshold REAL,
    row_count INTEGER,
    PRIMARY KEY (pipeline, batch_id)
);
CREATE TABLE IF NOT EXISTS sequences (pipeline TEXT PRIMARY KEY, next INTEGER NOT NULL);
"""


def _to_sql(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in _JSON_COLUMNS:
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return int(value)
    return value


def _from_sql(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in _JSON_COLUMNS:
        return json.loads(value)
    if column == "is_drift":
        return bool(value)
    return value


class SqliteStore:
    """The default store: one SQLite file in WAL mode, one writer."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection, used from one writer at a time; readers (exports) share it under the
        # lock, which keeps every read a consistent snapshot.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed write survives a power cut, not only a process crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def write(self, change: StoreWrite) -> None:
        with self._transaction() as db:
            for record in change.requests:
                self._upsert_request(db, record)
            for batch in change.drift_batches:
                self._upsert_batch(db, batch)

    def _upsert_request(self, db: sqlite3.Connection, record: RequestRecord) -> None:
        values = {c: _to_sql(c, getattr(record, c)) for c in _REQUEST_COLUMNS}
        if record.rows is not None and record.sequence is None:
            # Arrival order of the inputs: what attributes a drift batch's rows to requests.
            existing = db.execute(
                "SELECT sequence FROM requests WHERE request_id = ?", (record.request_id,)
            ).fetchone()
            if existing is None or existing[0] is None:
                values["sequence"] = self._next_sequence(db, record.pipeline)
        # A part already known is kept: re-delivered messages and late duplicates change nothing.
        assignments = ", ".join(f"{c} = COALESCE(requests.{c}, excluded.{c})" for c in values)
        db.execute(
            f"INSERT INTO requests (request_id, {', '.join(values)}) "
            f"VALUES (?, {', '.join('?' for _ in values)}) "
            f"ON CONFLICT (request_id) DO UPDATE SET {assignments}",
            (record.request_id, *values.values()),
        )

    @staticmethod
    def _next_sequence(db: sqlite3.Connection, pipeline: str) -> int:
        row = db.execute(
            "INSERT INTO sequences (pipeline, next) VALUES (?, 1) "
            "ON CONFLICT (pipeline) DO UPDATE SET next = next + 1 RETURNING next",
            (pipeline,),
        ).fetchone()
        return int(row[0])

    def _upsert_batch(self, db: sqlite3.Connection, batch: DriftBatch) -> None:
        values = {c: _to_sql(c, getattr(batch, c)) for c in _BATCH_COLUMNS}
        assignments = ", ".join(
            f"{c} = COALESCE(drift_batches.{c}, excluded.{c})" for c in values if c != "pipeline"
        )
        db.execute(
            f"INSERT INTO drift_batches (batch_id, {', '.join(values)}) "
            f"VALUES (?, {', '.join('?' for _ in values)}) "
            f"ON CONFLICT (pipeline, batch_id) DO UPDATE SET {assignments}",
            (batch.batch_id, *values.values()),
        )

    def set_truth(self, request_id: str, truth: Sequence[int], at: float) -> bool:
        """Ground truth for a request, written once; False when it already had some."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE requests SET truth = ?, truth_time = ? "
                "WHERE request_id = ? AND truth IS NULL",
                (json.dumps(list(truth)), at, request_id),
            )
            return cursor.rowcount == 1

    def labelled(self, pipeline: str, limit: int) -> list[RequestRecord]:
        """The newest `limit` requests with ground truth, oldest first."""
        found = self._read_requests(
            "WHERE pipeline = ? AND truth IS NOT NULL ORDER BY truth_time DESC LIMIT ?",
            (pipeline, limit),
        )
        return found[::-1]

    def _read_requests(self, where: str, args: tuple) -> list[RequestRecord]:
        with self._lock:
            cursor = self._db.execute(
                f"SELECT request_id, {', '.join(_REQUEST_COLUMNS)} FROM requests {where}", args
            )
            rows = cursor.fetchall()
        return [
            RequestRecord(
                row[0],
                **{c: _from_sql(c, v) for c, v in zip(_REQUEST_COLUMNS, row[1:], strict=True)},
            )
            for row in rows
        ]

    def request(self, request_id: str) -> RequestRecord | None:
        found = self._read_requests("WHERE request_id = ?", (request_id,))
        return found[0] if found else None

    def requests(self, pipeline: str) -> list[RequestRecord]:
        """A pipeline's requests in the order their inputs arrived (those without inputs last)."""
        return self._read_requests(
            "WHERE pipeline = ? ORDER BY sequence IS NULL, sequence, request_id", (pipeline,)
        )

    def drift_batches(self, pipeline: str) -> list[DriftBatch]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT batch_id, {', '.join(_BATCH_COLUMNS)} FROM drift_batches "
                "WHERE pipeline = ? ORDER BY time, batch_id",
                (pipeline,),
            ).fetchall()
        return [
            DriftBatch(
                row[0], **{c: _from_sql(c, v) for c, v in zip(_BATCH_COLUMNS, row[1:], strict=True)}
            )
            for row in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()
