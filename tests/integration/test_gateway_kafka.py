"""The cluster's data path on one machine: the local gateway writes Seldon's topics to a real Kafka
broker, and the monitor's Kafka source reads them into the records the local source makes.

2,000 pipeline requests from 8 clients go through a gateway that both hands them to its own
monitor (the local source) and writes them to Kafka; a second monitor, its own process, reads
the topics and is killed with SIGKILL in the middle of the load, then restarted. At the end both
stores hold the same requests and drift batches, both labelling datasets the same rows, and, once
every request's true labels are sent to both, both count accuracy exactly as the clients do:
nothing lost, nothing twice, whichever source.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.request

import numpy as np
import pytest

from income_bundle.client import inspect
from income_bundle.monitoring.service import TOKEN_FILE, feedback_token, wait_until_written
from income_bundle.monitoring.store import SqliteStore
from income_bundle.seldon.local import STORE_FILE, LocalSeldon, ServeSettings
from income_bundle_dev.kafka_broker import KafkaBroker, missing_tools
from tests.integration.test_kafka_monitor import free_port, kafka_lag, start_monitor, wait_for

PIPELINE = "income-production"
NAMESPACE = "seldon-mesh"
REQUESTS, CLIENTS = 2000, 8
DRIFT_OUTPUTS = f"{PIPELINE}.income-drift.outputs.is_drift"


@pytest.fixture(scope="module")
def kafka():
    if problem := missing_tools():
        pytest.skip(problem)
    with KafkaBroker() as broker:
        yield broker


def infer(url: str, X: np.ndarray) -> dict:
    body = {"inputs": [{"name": "predict", "datatype": "FP32", "shape": list(X.shape),
                        "data": X.ravel().tolist()}]}  # fmt: skip
    request = urllib.request.Request(
        f"{url}/v2/models/{PIPELINE}/infer",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "seldon-model": f"{PIPELINE}.pipeline"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
        # The pipeline gateway answers x-request-id twice: its Kafka key `0.<pipeline>.<id>`,
        # then the id itself, which the topics' x-request-id header carries.
        key, request_id = response.headers.get_all("x-request-id")
        assert key == f"0.{PIPELINE}.{request_id}"
        return {**answer, "id": request_id}


def records(store: SqliteStore) -> tuple[dict, list]:
    """What a store holds of the pipeline, independent of the source's clock and arrival order."""
    requests = {
        r.request_id: (
            np.float32(r.rows).tolist() if r.rows is not None else None,
            r.predicted,
            r.outlier_flags,
            None if r.outlier_scores is None else np.float32(r.outlier_scores).tolist(),
        )
        for r in store.requests(PIPELINE)
    }
    batches = sorted(
        (b.batch_id, np.float32(b.rows).tolist(), b.is_drift, b.p_values)
        for b in store.drift_batches(PIPELINE)
    )
    return requests, batches


def labelling(url: str) -> list[dict]:
    """The monitor's labelling rows without their timestamps (each source has its own clock)."""
    with urllib.request.urlopen(
        f"{url}/v2/pipelines/{PIPELINE}/labelling?format=jsonl", timeout=60
    ) as response:
        rows = [json.loads(line) for line in response.read().splitlines()]
    for row in rows:
        row.pop("timestamp")
    return sorted(rows, key=lambda r: (r["reason"], r["request_id"], r["row"]))


def send_feedback(url: str, token: str, ids: list[str], truth: dict, errors: list[str]) -> None:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    for request_id in ids:
        body = json.dumps({"id": request_id, "truth": truth[request_id][0]}).encode()
        request = urllib.request.Request(f"{url}/v2/pipelines/{PIPELINE}/feedback", body, headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                if json.loads(response.read())["duplicate"]:
                    errors.append(f"{url}: {request_id} counted as a duplicate")
        except OSError as e:
            errors.append(f"{url}: {request_id}: {e}")


def feedback_totals(url: str) -> tuple[float, float]:
    """(labelled rows, rows predicted right) as the monitor counts them."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("pipeline") == PIPELINE
    }
    return samples["income_feedback_rows_total"], samples["income_feedback_correct_total"]


@pytest.mark.slow
def test_gateway_topics_read_by_the_kafka_monitor_match_the_local_monitor(
    kafka, scenario, tmp_path
):
    config = ServeSettings(
        state_dir=tmp_path / "local", kafka_bootstrap=kafka.bootstrap, kafka_namespace=NAMESPACE
    )
    store_path = tmp_path / "kafka-monitor.sqlite"
    port = free_port()
    answered: dict[str, int] = {}
    truth: dict[str, tuple[list[int], int]] = {}  # id -> (true labels, rows predicted right)
    errors: list[str] = []
    lock = threading.Lock()
    rng = np.random.default_rng(11)
    names = ["reference", "low-education", "outliers"]
    plan = [(names[rng.integers(3)], int(rng.integers(1, 8))) for _ in range(REQUESTS)]

    with LocalSeldon(config) as seldon:
        monitor = start_monitor(kafka, store_path, port)

        def client(share, seed: int) -> None:
            local = np.random.default_rng(seed)
            for name, rows in share:
                X = scenario[name].X
                start = int(local.integers(0, len(X) - rows))
                try:
                    answer = infer(seldon.http_url, X[start : start + rows])
                except OSError as e:
                    errors.append(str(e))
                    continue
                labels = scenario[name].y[start : start + rows].astype(int).tolist()
                predicted = next(o for o in answer["outputs"] if o["name"] == "predict")["data"]
                right = sum(int(p) == t for p, t in zip(predicted, labels, strict=True))
                with lock:
                    answered[answer["id"]] = rows
                    truth[answer["id"]] = (labels, right)

        threads = [
            threading.Thread(target=client, args=(plan[i::CLIENTS], i)) for i in range(CLIENTS)
        ]
        try:
            for thread in threads:
                thread.start()
            # SIGKILL the Kafka monitor once it has stored part of the stream, mid-load.
            wait_for(store_path.exists)
            reader = SqliteStore(store_path)
            wait_for(lambda: len(reader.requests(PIPELINE)) > 100)
            os.killpg(monitor.pid, signal.SIGKILL)
            monitor.wait()
            killed_at = len(answered)
            monitor = start_monitor(kafka, store_path, port)
            for thread in threads:
                thread.join()
            assert not errors and len(answered) == REQUESTS
            assert killed_at < REQUESTS, "the kill came after the load: it tested nothing"

            # Drain: the engine's queued drift runs, then the local writer, then the topics.
            for _ in range(12):  # each waits up to 5 s for the engine to go idle
                inspect(seldon.http_url.removeprefix("http://"), DRIFT_OUTPUTS, wait_s=5)
            wait_until_written(seldon.monitor_url)
            local = SqliteStore(config.state_dir / STORE_FILE)
            wait_for(lambda: records(reader) == records(local), timeout_s=180)
            wait_for(lambda: len(kafka_lag(port)) == 5 and set(kafka_lag(port).values()) == {0})
            local_rows = labelling(seldon.monitor_url)
            kafka_rows = labelling(f"http://127.0.0.1:{port}")
            # Ground truth for every request, from 8 clients, to both monitors.
            # Each monitor's token: serve's in its state dir, the process's beside its store.
            tokens = {
                seldon.monitor_url: seldon.feedback_token,
                f"http://127.0.0.1:{port}": feedback_token(store_path.parent / TOKEN_FILE),
            }
            monitors = list(tokens)
            ids = sorted(truth)
            feedback_threads = [
                threading.Thread(
                    target=send_feedback, args=(url, tokens[url], ids[i::CLIENTS], truth, errors)
                )
                for url in monitors
                for i in range(CLIENTS)
            ]
            for thread in feedback_threads:
                thread.start()
            for thread in feedback_threads:
                thread.join()
            assert not errors
            accuracy = [feedback_totals(url) for url in monitors]
        finally:
            os.killpg(monitor.pid, signal.SIGTERM)
            monitor.wait(30)

    requests, batches = records(reader)
    assert set(answered) <= set(requests)
    assert all(requests[i][0] is not None and len(requests[i][0]) == answered[i] for i in answered)
    assert batches and any(is_drift for _, _, is_drift, _ in batches)
    assert kafka_rows == local_rows and any(r["reason"] == "drift" for r in local_rows)
    assert all(r["request_id"] for r in local_rows), "a drifted row matched no request"
    # Accuracy exactly as the clients count it, in both monitors.
    rows = sum(answered.values())
    right = sum(r for _, r in truth.values())
    assert accuracy[0] == accuracy[1] == (rows, right)
    local.close()
    reader.close()
