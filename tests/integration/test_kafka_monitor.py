"""The monitor's Seldon source against a real Apache Kafka broker (KRaft, the version Strimzi runs).

Messages are built field by field the way Seldon Core v2.10.2 writes them (protobuf types from
the V2 dataplane, keys and headers as scheduler/pkg/kafka writes them), so the
test checks the reading side against Seldon's format rather than against our own writer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as dataplane_pb2

from income_bundle.monitoring.records import PipelineTaps
from income_bundle.monitoring.sources.kafka import translate
from income_bundle.monitoring.store import DriftBatch, RequestRecord, SqliteStore, StoreWrite
from income_bundle.v2.seldon_kafka import SeldonMessage, TopicNamer, pipeline_key
from income_bundle_dev.kafka_broker import KafkaBroker, missing_tools

NAMESPACE = "seldon-mesh"
PIPELINE = "income-production"
NAMER = TopicNamer(NAMESPACE)
TAPS = PipelineTaps()


def seldon_request(rows: np.ndarray, name: str = "predict") -> bytes:
    request = dataplane_pb2.ModelInferRequest(model_name=PIPELINE)
    tensor = request.inputs.add(name=name, datatype="FP32", shape=list(rows.shape))
    tensor.contents.fp32_contents.extend(rows.reshape(-1).tolist())
    return request.SerializeToString()


def seldon_response(model: str, tensors: dict[str, tuple[str, list, list]]) -> bytes:
    response = dataplane_pb2.ModelInferResponse(model_name=model, model_version="1")
    for name, (datatype, shape, values) in tensors.items():
        out = response.outputs.add(name=name, datatype=datatype, shape=shape)
        field = {"INT64": "int64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents"}
        getattr(out.contents, field[datatype]).extend(values)
    return response.SerializeToString()


def headers(request_id: str, *, step: bool) -> list[tuple[str, bytes]]:
    """As the pipeline gateway writes them (the caller's x- headers, pipeline, x-request-id); the
    dataflow engine adds x-pipeline-version on the topics it writes."""
    written = [
        ("x-caller", b"test"),
        ("pipeline", PIPELINE.encode()),
        ("x-request-id", request_id.encode()),
    ]
    if step:
        written.append(("x-pipeline-version", b"1"))
    return written


def traffic(n_requests: int, seed: int = 0):
    """(topic, key, value, headers) for a stream of requests and the drift batches they form."""
    rng = np.random.default_rng(seed)
    messages, expected, batch_rows, batch_ids = [], {}, [], []
    for i in range(n_requests):
        request_id = f"req-{i:05d}"
        n = int(rng.integers(1, 6))
        rows = rng.integers(0, 10, size=(n, 12)).astype(np.float32)
        predicted = rng.integers(0, 2, size=n).tolist()
        flags = rng.integers(0, 2, size=n).tolist()
        scores = rng.random(n).astype(np.float32).tolist()
        key = pipeline_key(0, PIPELINE, request_id)
        messages.append(
            (
                NAMER.topic("pipeline", PIPELINE, "inputs"),
                key,
                seldon_request(rows),
                headers(request_id, step=False),
            )
        )
        messages.append(
            (
                NAMER.topic("model", "income-outlier", "outputs"),
                key,
                seldon_response(
                    "income-outlier",
                    {
                        "is_outlier": ("INT64", [1, n], flags),
                        "instance_score": ("FP32", [1, n], scores),
                    },
                ),
                headers(request_id, step=True),
            )
        )
        messages.append(
            (
                NAMER.topic("pipeline", PIPELINE, "outputs"),
                key,
                seldon_response(
                    PIPELINE,
                    {
                        "predict": ("INT64", [n, 1], predicted),
                        "is_outlier": ("INT64", [1, n], flags),
                    },
                ),
                headers(request_id, step=True),
            )
        )
        expected[request_id] = (rows.tolist(), predicted, flags, scores)
        batch_rows.extend(rows.tolist())
        if len(batch_rows) >= 20:  # Seldon's BatchProcessor: the batch takes the last request's id
            batch = np.asarray(batch_rows, dtype=np.float32)
            messages.append(
                (
                    NAMER.topic("model", "income-drift", "inputs"),
                    key,
                    seldon_request(batch),
                    headers(request_id, step=True),
                )
            )
            drift = int(i % 2)
            messages.append(
                (
                    NAMER.topic("model", "income-drift", "outputs"),
                    key,
                    seldon_response(
                        "income-drift",
                        {
                            "is_drift": ("INT64", [1, 1], [drift]),
                            "p_val": ("FP32", [1, 12], [0.5] * 12),
                            "threshold": ("FP64", [1, 1], [0.05]),
                        },
                    ),
                    headers(request_id, step=True),
                )
            )
            batch_ids.append((request_id, batch_rows, bool(drift)))
            batch_rows = []
    return messages, expected, batch_ids


def as_message(topic, key, value, written_headers, offset=0) -> SeldonMessage:
    return SeldonMessage(
        topic, key, value, written_headers, timestamp_ms=1_700_000_000_000, offset=offset
    )


def test_topic_names_are_seldons():
    assert (
        NAMER.topic("pipeline", PIPELINE, "inputs")
        == "seldon.seldon-mesh.pipeline.income-production.inputs"
    )
    assert (
        NAMER.topic("model", "income-drift", "outputs")
        == "seldon.seldon-mesh.model.income-drift.outputs"
    )
    parsed = NAMER.parse("seldon.seldon-mesh.model.income-drift.inputs")
    assert (parsed.kind, parsed.name, parsed.direction) == ("model", "income-drift", "inputs")
    assert NAMER.parse("seldon.default.model.income-drift.inputs") is None
    assert NAMER.parse("seldon.seldon-mesh.errors.errors") is None
    with pytest.raises(ValueError, match="topic name"):
        TopicNamer("bad namespace")


def test_translate_reads_seldon_messages_field_by_field():
    messages, expected, batches = traffic(12)
    store_write = StoreWrite()
    for m in messages:
        part = translate(as_message(*m), NAMER, TAPS)
        store_write.requests.extend(part.requests)
        store_write.drift_batches.extend(part.drift_batches)
    by_id: dict[str, dict] = {}
    for record in store_write.requests:
        merged = by_id.setdefault(record.request_id, {})
        for name in ("rows", "predicted", "outlier_flags", "outlier_scores"):
            if getattr(record, name) is not None:
                merged[name] = getattr(record, name)
    for request_id, (rows, predicted, flags, scores) in expected.items():
        got = by_id[request_id]
        assert got["rows"] == rows
        assert got["predicted"] == predicted
        assert got["outlier_flags"] == flags
        assert got["outlier_scores"] == pytest.approx(scores)
    verdicts = [b for b in store_write.drift_batches if b.is_drift is not None]
    assert [(b.batch_id, b.is_drift, b.threshold) for b in verdicts] == [
        (i, d, 0.05) for i, _, d in batches
    ]
    judged = [b for b in store_write.drift_batches if b.rows is not None]
    assert [b.rows for b in judged] == [rows for _, rows, _ in batches]


def test_translate_ignores_other_pipelines_errors_and_headerless_messages():
    topic = NAMER.topic("model", "income-outlier", "outputs")
    value = seldon_response("income-outlier", {"is_outlier": ("INT64", [1, 1], [1])})
    other = [("pipeline", b"another"), ("x-request-id", b"r1")]
    failed = [*headers("r1", step=True), ("seldon-pipeline-errors", b"income-outlier")]
    for written in (other, failed, [("pipeline", PIPELINE.encode())]):
        change = translate(as_message(topic, b"k", value, written), NAMER, TAPS)
        assert not change.requests and not change.drift_batches


def test_store_upserts_are_idempotent_and_keep_arrival_order(tmp_path):
    store = SqliteStore(tmp_path / "records.sqlite")
    first = StoreWrite(
        requests=[
            RequestRecord("a", PIPELINE, rows=[[1.0] * 12]),
            RequestRecord("b", PIPELINE, predicted=[1]),
        ]
    )
    store.write(first)
    store.write(StoreWrite(requests=[RequestRecord("b", PIPELINE, rows=[[2.0] * 12])]))
    store.write(first)  # delivered again after a crash
    store.write(
        StoreWrite(drift_batches=[DriftBatch("b", PIPELINE, rows=[[1.0] * 12, [2.0] * 12])])
    )
    store.write(
        StoreWrite(drift_batches=[DriftBatch("b", PIPELINE, is_drift=True, p_values=[0.01] * 12)])
    )
    records = store.requests(PIPELINE)
    assert [(r.request_id, r.sequence, r.predicted) for r in records] == [
        ("a", 1, None),
        ("b", 2, [1]),
    ]
    (batch,) = store.drift_batches(PIPELINE)
    assert batch.is_drift is True and batch.rows == [[1.0] * 12, [2.0] * 12]
    assert store.set_truth("a", [1], at=1.0)
    assert not store.set_truth("a", [0], at=2.0)  # the first label stays
    assert store.request("a").truth == [1]
    store.close()
    reopened = SqliteStore(tmp_path / "records.sqlite")
    assert [r.request_id for r in reopened.requests(PIPELINE)] == ["a", "b"]
    reopened.close()


def stored(store: SqliteStore) -> tuple[dict, list]:
    """What the store holds, in the shape `traffic` returns its expectations."""
    requests = {
        r.request_id: (
            r.rows,
            r.predicted,
            r.outlier_flags,
            None if r.outlier_scores is None else np.float32(r.outlier_scores).tolist(),
        )
        for r in store.requests(PIPELINE)
    }
    batches = sorted((b.batch_id, b.rows, b.is_drift) for b in store.drift_batches(PIPELINE))
    return requests, batches


def matches(store: SqliteStore, expected: dict, batches: list) -> bool:
    return stored(store) == (expected, sorted(batches))


@pytest.fixture(scope="module")
def kafka():
    if problem := missing_tools():
        pytest.skip(problem)
    with KafkaBroker() as broker:
        yield broker


async def produce(bootstrap: str, messages) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value, written in messages:
            await producer.send(topic, value, key=key, headers=written)
        await producer.flush()
    finally:
        await producer.stop()


def start_monitor(kafka, store_path: Path, port: int) -> subprocess.Popen:
    """The monitor as its own process (`python -m income_bundle.monitoring.service`)."""
    command = [
        sys.executable, "-m", "income_bundle.monitoring.service", "--store", str(store_path),
        "--port", str(port), "--kafka-bootstrap", kafka.bootstrap, "--namespace", NAMESPACE,
    ]  # fmt: skip
    # Its log beside the store, appended across restarts, for a failure to point at.
    with open(store_path.with_suffix(".log"), "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def monitor_metrics(port: int) -> dict[tuple[str, tuple], float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def kafka_lag(port: int) -> dict[tuple, float]:
    return {k: v for k, v in monitor_metrics(port).items() if k[0] == "income_monitor_kafka_lag"}


def wait_for(condition, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


@pytest.mark.slow
def test_monitor_survives_kill_9_without_loss_or_duplicates(kafka, tmp_path, training_report):
    """kill -9 of the monitor in the middle of the stream, then a restart: every record exactly,
    and its metrics show the whole stream read (no lag)."""
    messages, expected, batches = traffic(400, seed=1)
    store_path = tmp_path / "records.sqlite"
    half = len(messages) // 2
    asyncio.run(produce(kafka.bootstrap, messages[:half]))
    reader = SqliteStore(store_path)
    port = free_port()
    source = start_monitor(kafka, store_path, port)
    try:
        wait_for(lambda: len(reader.requests(PIPELINE)) > 20)
        os.killpg(source.pid, signal.SIGKILL)
        source.wait()
        asyncio.run(produce(kafka.bootstrap, messages[half:]))
        source = start_monitor(kafka, store_path, port)

        wait_for(lambda: matches(reader, expected, batches))
        wait_for(lambda: set(kafka_lag(port).values()) == {0.0} and len(kafka_lag(port)) == 5)
    finally:
        os.killpg(source.pid, signal.SIGTERM)
        source.wait(30)
    assert stored(reader) == (expected, sorted(batches))
    # One sequence number per request, in the order the inputs were produced.
    records = reader.requests(PIPELINE)
    assert [r.request_id for r in records] == sorted(expected)
    assert [r.sequence for r in records] == list(range(1, len(expected) + 1))
    reader.close()


class FailingStore:
    """A named stand-in around the real store: its Nth write fails, as a crash mid-write would."""

    def __init__(self, store: SqliteStore, fail_on_write: int):
        self.store, self.writes, self.fail_on_write = store, 0, fail_on_write

    def write(self, change: StoreWrite) -> None:
        self.writes += 1
        if self.writes == self.fail_on_write:
            raise OSError("disk full")
        self.store.write(change)

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.mark.slow
def test_offsets_are_committed_only_after_the_store_commits(kafka, tmp_path):
    """A write that fails leaves its messages uncommitted: the next consumer reads them again."""
    from income_bundle.monitoring.sources.kafka import KafkaSource

    messages, expected, batches = traffic(60, seed=2)
    namespace = "commit-order"
    namer = TopicNamer(namespace)
    messages = [
        (namer.topic(*NAMER.parse(t).__dict__.values()), k, v, h) for t, k, v, h in messages
    ]
    asyncio.run(produce(kafka.bootstrap, messages))
    store = SqliteStore(tmp_path / "records.sqlite")

    async def consume(target, done) -> None:
        source = KafkaSource(
            kafka.bootstrap, target, namespace=namespace, group_id="commit-order", max_records=25
        )
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(stop))
        deadline = time.monotonic() + 120
        while not task.done() and not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await task

    failing = FailingStore(store, fail_on_write=2)
    with pytest.raises(OSError, match="disk full"):
        asyncio.run(consume(failing, lambda: False))
    # The first write went in before the failure: records, or parts held for their requests.
    with sqlite3.connect(tmp_path / "records.sqlite") as db:
        (held,) = db.execute("SELECT count(*) FROM held_parts").fetchone()
    assert len(store.requests(PIPELINE)) + held > 0
    assert len(store.requests(PIPELINE)) < len(expected)
    asyncio.run(consume(store, lambda: matches(store, expected, batches)))
    assert stored(store) == (expected, sorted(batches))
    store.close()


def test_messages_read_the_same_with_mlservers_dataplane_protobuf():
    """The V2 messages are the same bytes whichever copy of the proto builds them: MLServer's
    dataplane_pb2 (Seldon's v2_dataplane.proto, package inference) parses what the monitor reads.
    In a child process: protobuf's default pool takes only one `inference` package per process."""
    rows = np.arange(24, dtype=np.float32).reshape(2, 12)
    request = seldon_request(rows)
    response = seldon_response("income-outlier", {"instance_score": ("FP64", [1, 2], [0.5, 2.5])})
    script = (
        "import sys\n"
        "from mlserver.grpc import dataplane_pb2 as pb\n"
        "from mlserver.grpc.converters import ModelInferRequestConverter as Q, ModelInferResponseConverter as R\n"
        "from mlserver.codecs import NumpyCodec as C\n"
        "req = pb.ModelInferRequest(); req.ParseFromString(bytes.fromhex(sys.argv[1]))\n"
        "res = pb.ModelInferResponse(); res.ParseFromString(bytes.fromhex(sys.argv[2]))\n"
        "print(C.decode_input(Q.to_types(req).inputs[0]).tolist())\n"
        "print(C.decode_output(R.to_types(res).outputs[0]).tolist())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, request.hex(), response.hex()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    got_rows, got_scores = map(eval, result.stdout.splitlines())
    message = as_message(
        NAMER.topic("pipeline", PIPELINE, "inputs"), b"k", request, headers("r", step=False)
    )
    (record,) = translate(message, NAMER, TAPS).requests
    assert record.rows == got_rows == rows.tolist()
    message = as_message(
        NAMER.topic("model", "income-outlier", "outputs"), b"k", response, headers("r", step=True)
    )
    (record,) = translate(message, NAMER, TAPS).requests
    assert record.outlier_scores == got_scores[0] == [0.5, 2.5]
