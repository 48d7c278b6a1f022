"""Property: over a store with any mix of outlier and drift rows, missing parts and NaNs, every
export format is written, and CSV, JSON Lines and Parquet hold the same rows."""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from pathlib import Path

import pyarrow.parquet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from income_bundle.monitoring.labelling import write_rows
from income_bundle.monitoring.service import Monitor
from income_bundle.monitoring.store import DriftBatch, RequestRecord, SqliteStore, StoreWrite
from tests.support.monitor_service import INFO

SERVICE = "income"
number = st.floats(allow_nan=True, allow_infinity=True, width=32)
feature = st.one_of(number, st.integers(-3, 12).map(float))


@st.composite
def stores(draw) -> StoreWrite:
    requests, batches = [], []
    for index in range(draw(st.integers(0, 6))):
        n = draw(st.integers(1, 3))
        maybe = lambda values: draw(st.none() | st.just(values))  # noqa: E731
        requests.append(
            RequestRecord(
                f"r{index}",
                SERVICE,
                time=draw(st.none() | st.floats(0, 2e9)),
                rows=maybe([draw(st.lists(feature, min_size=12, max_size=12)) for _ in range(n)]),
                predicted=maybe(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))),
                outlier_flags=maybe(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))),
                outlier_scores=maybe(draw(st.lists(number, min_size=n, max_size=n))),
            )
        )
    for index in range(draw(st.integers(0, 3))):
        batches.append(
            DriftBatch(
                draw(st.sampled_from([f"r{i}" for i in range(6)] + ["unknown"])) + f"-{index}"
                if draw(st.booleans())
                else f"r{index}",
                SERVICE,
                time=draw(st.none() | st.floats(0, 2e9)),
                rows=draw(
                    st.none() | st.lists(st.lists(feature, min_size=12, max_size=12), max_size=3)
                ),
                is_drift=draw(st.none() | st.booleans()),
                p_values=draw(st.none() | st.lists(number, max_size=12)),
                threshold=draw(st.none() | number),
                row_count=draw(st.none() | st.integers(1, 4)),
            )
        )
    return StoreWrite(requests, batches)


def normal(value):
    """One cell as every format can say it: missing, a number or text."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except ValueError:
        return value


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(change=stores(), reasons=st.sampled_from([["outlier"], ["drift"], ["outlier", "drift"]]))
def test_every_format_is_written_and_holds_the_same_rows(change, reasons):
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(Path(folder) / "records.sqlite")
        try:
            store.write(change)
            columns, rows = Monitor(store, {SERVICE: INFO}).labelling(SERVICE, reasons)
        finally:
            store.close()
    written = {fmt: write_rows(rows, columns, fmt) for fmt in ("csv", "jsonl", "parquet")}
    from_csv = [
        [normal(row[name]) for name in columns]
        for row in csv.DictReader(io.StringIO(written["csv"].decode()))
    ]
    from_jsonl = [
        [normal(json.loads(line)[name]) for name in columns]
        for line in written["jsonl"].decode().splitlines()
    ]
    table = pyarrow.parquet.read_table(io.BytesIO(written["parquet"]))
    assert table.column_names == columns
    from_parquet = [[normal(row[name]) for name in columns] for row in table.to_pylist()]
    assert len(from_csv) == len(rows)
    assert from_csv == from_jsonl == from_parquet
    for row in from_jsonl:  # a NaN or an infinity is written as missing, never as a number
        assert all(not isinstance(v, float) or math.isfinite(v) for v in row)
