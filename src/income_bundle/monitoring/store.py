"""Where the monitor keeps inference records: an interface, and SQLite behind it by default.

A request's record is filled in piece by piece as its parts arrive (input rows, predictions,
outlier scores, ground truth), in whatever order the sources deliver them; a drift batch's record
holds the rows the detector judged and its verdict. Every write is an idempotent upsert keyed by
the request id (or the batch id), so a source that delivers a message twice, as Kafka does after
a crash before its offsets were committed, changes nothing the second time.

Only a request (its input rows) creates a record. The other parts of a request not seen yet
(Kafka and KServe may deliver a response first) are held, at most `max_held` of them for
`hold_s` seconds, then dropped and counted: a lone response is never scored. Two requests under
one id with different rows (a client reusing its x-request-id) cannot be told apart: the id is
marked ambiguous, its records dropped and counted, and `request()` answers 409 for it. A write
the database refuses is retried, then dropped and counted, and `writable` is False until a write
succeeds again; every drop is counted by reason in `dropped` (see `StoreMetrics`).

SQLite runs in WAL mode with one writer (the monitor's event loop); each `write` is one
transaction, committed before it returns, so a source may acknowledge what it wrote.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from income_bundle.errors import ServingError

__all__ = [
    "DROP_REASONS",
    "DriftBatch",
    "RecordStore",
    "RequestRecord",
    "SqliteStore",
    "StoreMetrics",
    "StoreWrite",
    "StoreWriteError",
]

log = logging.getLogger(__name__)

# Why a part of a record was not stored: the `reason` of income_monitor_dropped_writes_total.
DROP_REASONS = {
    "queue_full": "the local gateway's hand-over queue was full (the store fell behind)",
    # Only the local source counts these: Kafka and the CloudEvents route can deliver again.
    "write_failed": "the database refused the write after retries (disk full, I/O error, locked)",
    "no_request": "a response, outlier or drift part whose request did not arrive within the hold",
    "conflicting_request_id": "a request id used by two requests with different inputs",
}
DEFAULT_HOLD_S = 600.0
DEFAULT_MAX_HELD = 10_000
WRITE_ATTEMPTS = 3


class StoreWriteError(ServingError):
    """The store refused a write after its retries; the sender may send it again later."""

    def __init__(self, message: str):
        super().__init__(503, message)


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
    trace_id: str | None = None  # the request's W3C trace id (32 hex digits) when it was traced


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

    dropped: Counter[str]  # parts not stored, by reason (DROP_REASONS)

    @property
    def writable(self) -> bool: ...

    def write(self, change: StoreWrite) -> None: ...

    def count_dropped(self, reason: str, count: int = 1) -> None: ...

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
    "trace_id",
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
    sequence INTEGER,
    trace_id TEXT
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
CREATE TABLE IF NOT EXISTS held_parts (
    request_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    since REAL NOT NULL,
    pipeline_version TEXT,
    predicted TEXT,
    outlier_flags TEXT,
    outlier_scores TEXT,
    trace_id TEXT
);
CREATE INDEX IF NOT EXISTS held_parts_by_age ON held_parts (since);
CREATE TABLE IF NOT EXISTS held_batches (
    batch_id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    since REAL NOT NULL,
    time REAL,
    rows TEXT,
    is_drift INTEGER,
    p_values TEXT,
    threshold REAL,
    row_count INTEGER,
    PRIMARY KEY (pipeline, batch_id)
);
CREATE TABLE IF NOT EXISTS ambiguous_ids (request_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL);
"""
# The parts of a request that arrive without its rows, held until the rows come.
_HELD_COLUMNS = ("pipeline_version", "predicted", "outlier_flags", "outlier_scores", "trace_id")
# Columns later versions added: (table, column, type). A store written before them gains them
# when opened (their values NULL), so it stays readable and writable.
_ADDED_COLUMNS = (("requests", "trace_id", "TEXT"), ("held_parts", "trace_id", "TEXT"))


def _migrate(db: sqlite3.Connection) -> None:
    for table, column, kind in _ADDED_COLUMNS:
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


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
        try:
            return json.loads(value)
        except (TypeError, ValueError):
            return value  # not ours (written by hand, or damaged): the reader sets the row aside
    if column == "is_drift":
        return bool(value)
    return value


class SqliteStore:
    """The default store: one SQLite file in WAL mode, one writer."""

    def __init__(
        self,
        path: Path | str,
        *,
        hold_s: float = DEFAULT_HOLD_S,
        max_held: int = DEFAULT_MAX_HELD,
        busy_timeout_s: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.hold_s = hold_s
        self.max_held = max_held
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection, used from one writer at a time; readers (exports) share it under the
        # lock, which keeps every read a consistent snapshot.
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s
        )
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed write survives a power cut, not only a process crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        _migrate(self._db)
        self.dropped: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
        # Its own lock: the gateway's hand-over path counts drops while a write holds the store.
        self._dropped_lock = threading.Lock()
        self._writable = True

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @property
    def writable(self) -> bool:
        """Whether the last write succeeded, or (after a failure) a write could start now."""
        if not self._writable:
            try:
                with self._transaction():
                    pass
            except sqlite3.Error:
                return False
            self._writable = True
        return True

    def count_dropped(self, reason: str, count: int = 1) -> None:
        """Count parts of records that were not stored, and why (one of DROP_REASONS)."""
        if reason not in DROP_REASONS:
            raise ValueError(f"drop reason {reason!r} is not one of {', '.join(DROP_REASONS)}")
        with self._dropped_lock:
            self.dropped[reason] += count

    def write(self, change: StoreWrite) -> None:
        """Apply one change in one transaction, retried a few times; a change the database
        still refuses raises StoreWriteError and `writable` turns False. The caller decides what
        the refusal means: the Kafka source leaves its offsets uncommitted (read again later),
        the CloudEvents route answers 503 (the broker redelivers), the local source, which
        cannot ask again, counts the parts as dropped (`write_failed`)."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            drops: Counter[str] = Counter()
            try:
                with self._transaction() as db:
                    self._expire_held(db, drops)
                    for record in change.requests:
                        self._upsert_request(db, record, drops)
                    for batch in change.drift_batches:
                        self._upsert_batch(db, batch, drops)
            except sqlite3.Error as e:
                error = e
                if attempt < WRITE_ATTEMPTS:
                    time.sleep(0.1 * 3 ** (attempt - 1))  # the disk or a lock holder may recover
                continue
            self._writable = True
            for reason, count in drops.items():
                self.count_dropped(reason, count)
            return
        self._writable = False
        lost = len(change.requests) + len(change.drift_batches)
        log.error("monitor store %s: %d record parts not written: %s", self.path, lost, error)
        raise StoreWriteError(
            f"the monitor's store cannot be written ({error}): {lost} record parts not stored"
        ) from error

    def _expire_held(self, db: sqlite3.Connection, drops: Counter[str]) -> None:
        """Drop held parts older than the hold, and the oldest beyond `max_held`."""
        expired = db.execute(
            "DELETE FROM held_parts WHERE since < ?", (time.time() - self.hold_s,)
        ).rowcount
        over = db.execute(
            "DELETE FROM held_parts WHERE request_id IN (SELECT request_id FROM held_parts "
            "ORDER BY since DESC, request_id LIMIT -1 OFFSET ?)",
            (self.max_held,),
        ).rowcount
        expired += db.execute(
            "DELETE FROM held_batches WHERE since < ?", (time.time() - self.hold_s,)
        ).rowcount
        over += db.execute(
            "DELETE FROM held_batches WHERE rowid IN (SELECT rowid FROM held_batches "
            "ORDER BY since DESC, batch_id LIMIT -1 OFFSET ?)",
            (self.max_held,),
        ).rowcount
        if expired + over:
            drops["no_request"] += expired + over

    def _upsert_request(
        self, db: sqlite3.Connection, record: RequestRecord, drops: Counter[str]
    ) -> None:
        request_id = record.request_id
        if db.execute("SELECT 1 FROM ambiguous_ids WHERE request_id = ?", (request_id,)).fetchone():
            drops["conflicting_request_id"] += 1
            return
        existing = db.execute(
            "SELECT pipeline, rows, truth FROM requests WHERE request_id = ?", (request_id,)
        ).fetchone()
        if record.rows is None:
            if existing is None:
                self._hold(db, record)
                return
        elif existing is not None and (
            existing[0] != record.pipeline
            or (existing[1] is not None and existing[1] != _to_sql("rows", record.rows))
        ):
            self._conflict(db, record, labelled=existing[2] is not None, drops=drops)
            return
        else:
            self._release_held(db, record)
        values = {c: _to_sql(c, getattr(record, c)) for c in _REQUEST_COLUMNS}
        first_rows = existing is None or existing[1] is None
        if record.rows is not None and record.sequence is None and first_rows:
            # Arrival order of the inputs: what attributes a drift batch's rows to requests.
            values["sequence"] = self._next_sequence(db, record.pipeline)
        # A part already known is kept: re-delivered messages and late duplicates change nothing.
        assignments = ", ".join(f"{c} = COALESCE(requests.{c}, excluded.{c})" for c in values)
        db.execute(
            f"INSERT INTO requests (request_id, {', '.join(values)}) "
            f"VALUES (?, {', '.join('?' for _ in values)}) "
            f"ON CONFLICT (request_id) DO UPDATE SET {assignments}",
            (request_id, *values.values()),
        )
        if record.rows is not None:
            self._release_held_batch(db, record)

    def _hold(self, db: sqlite3.Connection, record: RequestRecord) -> None:
        values = {c: _to_sql(c, getattr(record, c)) for c in _HELD_COLUMNS}
        assignments = ", ".join(f"{c} = COALESCE(held_parts.{c}, excluded.{c})" for c in values)
        db.execute(
            f"INSERT INTO held_parts (request_id, pipeline, since, {', '.join(values)}) "
            f"VALUES (?, ?, ?, {', '.join('?' for _ in values)}) "
            f"ON CONFLICT (request_id) DO UPDATE SET {assignments}",
            (record.request_id, record.pipeline, time.time(), *values.values()),
        )

    def _release_held(self, db: sqlite3.Connection, record: RequestRecord) -> None:
        """Fill the request's missing parts from what was held for it (same pipeline only)."""
        held = db.execute(
            f"DELETE FROM held_parts WHERE request_id = ? AND pipeline = ? "
            f"RETURNING {', '.join(_HELD_COLUMNS)}",
            (record.request_id, record.pipeline),
        ).fetchone()
        for column, value in zip(_HELD_COLUMNS, held or (), strict=False):
            if getattr(record, column) is None and value is not None:
                setattr(record, column, _from_sql(column, value))

    def _conflict(
        self, db: sqlite3.Connection, record: RequestRecord, *, labelled: bool, drops: Counter[str]
    ) -> None:
        """A second request under a known id with other inputs. Once labelled, the first stays
        and the newcomer is dropped; before, neither can be told apart from the other's parts,
        so both go and the id is refused from now on."""
        drops["conflicting_request_id"] += 1
        if labelled:
            return
        drops["conflicting_request_id"] += 1
        db.execute("DELETE FROM requests WHERE request_id = ?", (record.request_id,))
        db.execute(
            "INSERT OR IGNORE INTO ambiguous_ids (request_id, pipeline) VALUES (?, ?)",
            (record.request_id, record.pipeline),
        )
        log.warning(
            "monitor: request id %r was used by two requests with different inputs; "
            "neither is recorded",
            record.request_id,
        )

    @staticmethod
    def _next_sequence(db: sqlite3.Connection, pipeline: str) -> int:
        row = db.execute(
            "INSERT INTO sequences (pipeline, next) VALUES (?, 1) "
            "ON CONFLICT (pipeline) DO UPDATE SET next = next + 1 RETURNING next",
            (pipeline,),
        ).fetchone()
        return int(row[0])

    def _upsert_batch(
        self, db: sqlite3.Connection, batch: DriftBatch, drops: Counter[str], table: str = ""
    ) -> None:
        """A drift run is kept once the request that completed it is a record (its id is the
        batch's): before, it is held as a response is, so an event can never attach a verdict,
        or rows to label, to traffic that never came."""
        if not table:
            if db.execute(
                "SELECT 1 FROM ambiguous_ids WHERE request_id = ?", (batch.batch_id,)
            ).fetchone():
                drops["conflicting_request_id"] += 1
                return
            known = db.execute(
                "SELECT 1 FROM requests WHERE request_id = ? AND pipeline = ?",
                (batch.batch_id, batch.pipeline),
            ).fetchone()
            table = "drift_batches" if known else "held_batches"
        values = {c: _to_sql(c, getattr(batch, c)) for c in _BATCH_COLUMNS}
        if table == "held_batches":
            values["since"] = time.time()
        assignments = ", ".join(
            f"{c} = COALESCE({table}.{c}, excluded.{c})"
            for c in values
            if c not in ("pipeline", "since")
        )
        db.execute(
            f"INSERT INTO {table} (batch_id, {', '.join(values)}) "
            f"VALUES (?, {', '.join('?' for _ in values)}) "
            f"ON CONFLICT (pipeline, batch_id) DO UPDATE SET {assignments}",
            (batch.batch_id, *values.values()),
        )

    def _release_held_batch(self, db: sqlite3.Connection, record: RequestRecord) -> None:
        """The drift run held for this request, now that the request is a record."""
        held = db.execute(
            f"DELETE FROM held_batches WHERE batch_id = ? AND pipeline = ? "
            f"RETURNING {', '.join(_BATCH_COLUMNS)}",
            (record.request_id, record.pipeline),
        ).fetchone()
        if held is not None:
            batch = DriftBatch(
                record.request_id,
                **{c: _from_sql(c, v) for c, v in zip(_BATCH_COLUMNS, held, strict=True)},
            )
            self._upsert_batch(db, batch, Counter(), table="drift_batches")

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
        """The request's record; None when unknown (or only its response is known); a 409
        ServingError when two requests with different inputs used the id."""
        with self._lock:
            ambiguous = self._db.execute(
                "SELECT pipeline FROM ambiguous_ids WHERE request_id = ?", (request_id,)
            ).fetchone()
        if ambiguous is not None:
            raise ServingError(
                409,
                f"request id {request_id!r} was used by two requests with different inputs "
                f"(pipeline {ambiguous[0]}); the monitor cannot tell which one the labels are "
                "for, so it recorded neither: send each request its own x-request-id",
            )
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


class StoreMetrics:
    """A Prometheus collector of a store's health: parts dropped by reason, and whether the
    store can be written (what the monitor's /ready reports)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store

    def collect(self) -> Iterable[Metric]:
        dropped = CounterMetricFamily(
            "income_monitor_dropped_writes",
            "Record parts the monitor did not store, by reason.",
            labels=["reason"],
        )
        for reason in DROP_REASONS:
            dropped.add_metric([reason], self.store.dropped[reason])
        yield dropped
        yield GaugeMetricFamily(
            "income_monitor_store_writable",
            "1 while the monitor's store accepts writes, 0 after a write failed.",
            value=1 if self.store.writable else 0,
        )
