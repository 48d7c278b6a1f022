"""The monitor service over its store, on a real uvicorn on loopback: feedback, the labelling
dataset, the traffic window and the metrics, filled from Seldon-format messages."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet
import pytest
from prometheus_client.parser import text_string_to_metric_families

from income_bundle.monitoring.service import Monitor
from income_bundle.monitoring.sources.kafka import translate
from income_bundle.monitoring.store import DriftBatch, SqliteStore, StoreWrite
from tests.integration.test_kafka_monitor import NAMER, PIPELINE, TAPS, as_message, traffic
from tests.support.monitor_service import INFO, TOKEN, Served


def fill(store: SqliteStore, n_requests: int, seed: int):
    messages, expected, batches = traffic(n_requests, seed=seed)
    for offset, message in enumerate(messages):
        change = translate(as_message(*message, offset=offset), NAMER, TAPS)
        store.write(StoreWrite(change.requests, change.drift_batches))
    return expected, batches


@pytest.fixture
def store(tmp_path):
    store = SqliteStore(tmp_path / "records.sqlite")
    yield store
    store.close()


@pytest.fixture
def served(store):
    served = Served(Monitor(store, {PIPELINE: INFO}))
    yield served
    served.stop()


def metric(served: Served, name: str, **labels) -> float:
    _, body = served.call("GET", "/metrics")
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name} {labels}")


def test_feedback_semantics(store, served):
    expected, _ = fill(store, 10, seed=3)
    request_id, (_, predicted, _, _) = next(iter(expected.items()))
    feedback = f"/v2/pipelines/{PIPELINE}/feedback"
    status, body = served.call("POST", feedback, {"id": request_id, "truth": predicted})
    assert status == 200 and json.loads(body)["correct"] == len(predicted)
    status, body = served.call("POST", feedback, {"id": request_id, "truth": predicted})
    assert status == 200 and json.loads(body)["duplicate"] is True
    flipped = [1 - p for p in predicted]
    status, body = served.call("POST", feedback, {"id": request_id, "truth": flipped})
    assert status == 409 and b"different labels" in body
    cases = [
        ({"id": "nope", "truth": [0]}, 404, b"no request 'nope'"),
        ({"id": request_id, "truth": [*predicted, 0]}, 400, b"one label per row"),
        ({"id": request_id, "truth": ["maybe"] * len(predicted)}, 400, b"truth[0]"),
        ({"truth": [0]}, 400, b"id: Field required"),
        (b"{not json", 400, b"not JSON"),
    ]
    for body, status, message in cases:
        got_status, got_body = served.call("POST", feedback, body)
        assert (got_status, message in got_body) == (status, True), got_body
    status, body = served.call(
        "POST", "/v2/pipelines/other/feedback", {"id": request_id, "truth": [0]}
    )
    assert status == 404 and b"no such pipeline" in body
    assert metric(served, "income_feedback_rows_total", pipeline=PIPELINE) == len(predicted)
    assert metric(served, "income_feedback_accuracy", pipeline=PIPELINE) == 1.0


def test_feedback_window_survives_a_restart(store):
    expected, _ = fill(store, 80, seed=4)
    monitor = Monitor(store, {PIPELINE: INFO})
    for i, (request_id, (_, predicted, _, _)) in enumerate(expected.items()):
        truth = predicted if i % 4 else [1 - p for p in predicted]
        monitor.feedback(PIPELINE, request_id, truth)
    before = monitor.trackers[PIPELINE].stats()
    again = Monitor(store, {PIPELINE: INFO})
    assert again.trackers[PIPELINE].stats() == before
    assert 0.6 < before.accuracy < 0.9 and before.target_drift_p_value is not None


def test_concurrent_feedback_is_counted_exactly(store):
    """Feedback arrives on the server's worker threads at once: every label counted once, the
    window and its gauges consistent (a 500 here was a window updated by two threads)."""
    expected, _ = fill(store, 400, seed=5)
    monitor = Monitor(store, {PIPELINE: INFO}, window_rows=100_000)
    items = list(expected.items())
    failures: list[BaseException] = []
    # Threads switch as often as the interpreter allows: a race shows up in one run, not one in ten.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def send(share) -> None:
        for request_id, (_, predicted, _, _) in share:
            try:
                monitor.feedback(PIPELINE, request_id, predicted)
            except BaseException as e:
                failures.append(e)

    threads = [threading.Thread(target=send, args=(items[i::8],)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch_interval)
    assert failures == []
    rows = sum(len(predicted) for _, (_, predicted, _, _) in items)
    stats = monitor.trackers[PIPELINE].stats()
    assert stats.accuracy == 1.0 and stats.rows == rows


def expected_labelling(expected: dict, batches: list) -> list[tuple[str, int, str]]:
    rows = [
        (request_id, i, "outlier")
        for request_id, (_, _, flags, _) in expected.items()
        for i, flag in enumerate(flags)
        if flag
    ]
    ids = list(expected)
    start = 0
    for batch_id, _, drifted in batches:
        end = ids.index(batch_id) + 1
        if drifted:
            rows += [(m, i, "drift") for m in ids[start:end] for i in range(len(expected[m][0]))]
        start = end
    return rows


def test_labelling_dataset_holds_each_flagged_row_once(store, served):
    expected, batches = fill(store, 120, seed=5)
    fill(store, 120, seed=5)  # every message delivered twice
    status, body = served.call("GET", f"/v2/pipelines/{PIPELINE}/labelling?format=csv")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    got = [(r["request_id"], int(r["row"]), r["reason"]) for r in rows]
    assert got == expected_labelling(expected, batches)
    first = rows[0]
    features = expected[first["request_id"]][0][int(first["row"])]
    assert first["f1"] == f"c{int(features[1])}" and first["f0"] == str(int(features[0]))
    assert first["prediction"] in INFO.class_names
    status, body = served.call(
        "GET", f"/v2/pipelines/{PIPELINE}/labelling?format=jsonl&reason=drift"
    )
    drift = [json.loads(line) for line in body.decode().splitlines()]
    assert [(r["request_id"], r["row"]) for r in drift] == [
        (i, n) for i, n, why in got if why == "drift"
    ]
    assert metric(served, "income_labelling_rows_total", pipeline=PIPELINE, reason="drift") == len(
        drift
    )
    status, body = served.call(
        "GET", f"/v2/pipelines/{PIPELINE}/labelling?format=parquet&reason=drift"
    )
    assert status == 200
    assert pyarrow.parquet.read_table(io.BytesIO(body)).to_pylist() == drift
    for query, message in (("format=xml", b"format='xml'"), ("reason=odd", b"reason.0='odd'")):
        status, body = served.call("GET", f"/v2/pipelines/{PIPELINE}/labelling?{query}")
        assert status == 400 and message in body


def test_unmatched_drift_batch_rows_are_kept_without_a_request(store, served):
    expected, batches = fill(store, 30, seed=6)
    batch_ids = {b[0] for b in batches}
    last = next(i for i in reversed(list(expected)) if i not in batch_ids)
    # Rows that match no run of requests before their batch id (say, another partition's).
    odd = DriftBatch(last, PIPELINE, time=1.0, rows=[[99.0] * 12] * 20, is_drift=True)
    store.write(StoreWrite(drift_batches=[odd]))
    _, body = served.call("GET", f"/v2/pipelines/{PIPELINE}/labelling?format=jsonl&reason=drift")
    rows = [json.loads(line) for line in body.decode().splitlines()]
    unmatched = [r for r in rows if r["drift_batch"] == last]
    assert len(unmatched) == 20 and {r["request_id"] for r in unmatched} == {""}
    assert {r["f0"] for r in unmatched} == {99}


def test_traffic_window(store, served):
    expected, _ = fill(store, 5, seed=7)
    status, body = served.call("GET", f"/v2/pipelines/{PIPELINE}/traffic")
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert [(line["request_id"], line["rows"]) for line in lines] == [
        (i, v[0]) for i, v in expected.items()
    ]
    status, body = served.call("GET", f"/v2/pipelines/{PIPELINE}/traffic?since=2000000000")
    assert status == 200 and body == b""
    status, body = served.call("GET", f"/v2/pipelines/{PIPELINE}/traffic?since=yesterday")
    assert status == 400 and b"since='yesterday'" in body


def test_the_cli_reads_feedback_and_labelling_from_a_running_monitor(store, served, tmp_path):
    expected, batches = fill(store, 60, seed=8)
    cli = str(Path(sys.executable).with_name("income-bundle"))
    request_id = next(iter(expected))
    rows = len(expected[request_id][0])
    done = subprocess.run(
        [cli, "feedback", "--url", served.url, "--pipeline", PIPELINE, "--id", request_id,
         "--truth", ",".join(["0"] * rows), "--token", TOKEN],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == rows

    out = tmp_path / "drift.parquet"
    done = subprocess.run(
        [cli, "labelling", "--url", served.url, "--pipeline", PIPELINE, "--reason", "drift",
         "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = [
        (r["request_id"], r["row"], r["reason"])
        for r in pyarrow.parquet.read_table(out).to_pylist()
    ]
    assert got == [r for r in expected_labelling(expected, batches) if r[2] == "drift"] and got

    unknown = subprocess.run(
        [cli, "labelling", "--url", served.url, "--pipeline", "nope", "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert unknown.returncode == 1 and "'nope'" in unknown.stderr
