"""The monitor in local mode: the gateway hands it every pipeline request; ground-truth feedback,
the traffic window and the labelling dataset through its API, over real MLServer."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet
import pytest
from prometheus_client.parser import text_string_to_metric_families

from income_bundle.client import inspect
from income_bundle.monitoring.service import wait_until_written

PIPELINE = "income-production"
CLASSES = ["<=50K", ">50K"]


@pytest.fixture(scope="module")
def monitored(training_report, tmp_path_factory):
    """A gateway of its own, over the shipped manifests, so no other test's traffic mixes in."""
    from income_bundle.seldon.local import LocalSeldon, ServeSettings

    state = tmp_path_factory.mktemp("monitored-state")
    with LocalSeldon(ServeSettings(state_dir=state)) as gateway:
        yield gateway


def state_dir(seldon) -> Path:
    return seldon.config.state_dir


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def post(url: str, body, headers: dict | None = None) -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data, {"Content-Type": "application/json", **(headers or {})}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def infer(seldon, X: np.ndarray) -> tuple[str, dict[str, np.ndarray]]:
    body = {"inputs": [{"name": "predict", "datatype": "FP32", "shape": list(X.shape)}]}
    body["inputs"][0]["data"] = X.ravel().tolist()
    status, answer, headers = post(
        f"{seldon.http_url}/v2/models/{PIPELINE}/infer",
        body,
        {"seldon-model": f"{PIPELINE}.pipeline"},
    )
    assert status == 200, answer
    outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}
    # The pipeline gateway answers x-request-id twice, its Kafka key `0.<pipeline>.<id>` then
    # the id; `dict(headers)` kept the first.
    key = headers["x-request-id"]
    assert key.startswith(f"0.{PIPELINE}.") and "id" not in answer
    return key.removeprefix(f"0.{PIPELINE}."), outputs


def feedback(seldon, body, pipeline: str = PIPELINE) -> tuple[int, dict]:
    """Feedback with the token serve wrote into its state dir."""
    status, answer, _ = post(
        f"{seldon.monitor_url}/v2/pipelines/{pipeline}/feedback",
        body,
        {"Authorization": f"Bearer {seldon.feedback_token}"},
    )
    return status, answer


def metrics(url: str) -> dict[tuple[str, tuple], float]:
    """The samples at a /metrics endpoint (the monitor's, or the gateway's)."""
    text = get(f"{url}/metrics").decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labelled(seldon, request_id: str | None = None) -> list[dict[str, str]]:
    """The monitor's labelling dataset as CSV rows, once it has written what it was handed."""
    wait_until_written(seldon.monitor_url)
    text = get(f"{seldon.monitor_url}/v2/pipelines/{PIPELINE}/labelling").decode()
    rows = list(csv.DictReader(text.splitlines()))
    return [r for r in rows if request_id is None or r["request_id"] == request_id]


def wait_for_drift(seldon) -> tuple[int, int]:
    """Once the asynchronous steps ran: the last drift verdict and the rows the batch holds."""
    result = inspect(
        seldon.http_url.removeprefix("http://"),
        f"{PIPELINE}.income-drift.outputs.is_drift",
        wait_s=20,
    )
    verdict = result["tensors"][0]["data"][0] if result["tensors"] else -1
    return verdict, result["batches"]["income-drift"]


def empty_drift_batch(seldon, scenario) -> None:
    """Complete whatever the drift batch holds, so the next request starts a batch."""
    _, held = wait_for_drift(seldon)
    if held:
        infer(seldon, scenario["reference"].X[-(20 - held) :])
        assert wait_for_drift(seldon)[1] == 0


def test_every_pipeline_request_is_in_the_traffic_window_with_its_rows(monitored, scenario):
    X = scenario["reference"].X[:7]
    request_id, _ = infer(monitored, X)
    wait_until_written(monitored.monitor_url)
    lines = get(f"{monitored.monitor_url}/v2/pipelines/{PIPELINE}/traffic").splitlines()
    logged = [json.loads(line) for line in lines if request_id.encode() in line]
    assert len(logged) == 1
    assert logged[0]["pipeline"] == PIPELINE
    assert np.allclose(logged[0]["rows"], X)


def test_flagged_outlier_rows_are_appended_decoded_with_scores(monitored, scenario):
    X = scenario["outliers"].X[:20]
    request_id, outputs = infer(monitored, X)
    flagged = np.flatnonzero(outputs["is_outlier"].ravel())
    assert len(flagged) > 0
    rows = [r for r in labelled(monitored, request_id) if r["reason"] == "outlier"]
    assert sorted(int(r["row"]) for r in rows) == flagged.tolist()
    for row in rows:
        index = int(row["row"])
        assert row["prediction"] == CLASSES[int(outputs["predict"][index, 0])]
        assert float(row["outlier_score"]) > 0.45  # above the detector's threshold
        assert row["is_outlier"] == "1"
        assert row["Sex"] in ("Male", "Female")  # categories decoded, not codes
        assert float(row["Age"]) == X[index, 0]


def test_rows_of_a_drifted_batch_are_appended_with_the_drifting_features(monitored, scenario):
    empty_drift_batch(monitored, scenario)
    # Two requests (13 + 7 rows) fill one 20-row drift batch: both requests' rows are labelled.
    X = scenario["low-education"].X[:20]
    first, _ = infer(monitored, X[:13])
    second, _ = infer(monitored, X[13:])
    assert wait_for_drift(monitored) == (1, 0)
    for request_id, count in ((first, 13), (second, 7)):
        rows = [r for r in labelled(monitored, request_id) if r["reason"] == "drift"]
        assert sorted(int(r["row"]) for r in rows) == list(range(count))
        assert len({r["drift_batch"] for r in rows}) == 1
        assert "Education" in rows[0]["drifting_features"].split(";")
        assert {r["Education"] for r in rows} <= {"Dropout", "High School grad"}
    batches = {r["drift_batch"] for r in labelled(monitored) if r["request_id"] in (first, second)}
    assert len(batches) == 1


def test_reference_traffic_adds_nothing_to_the_dataset(monitored, scenario):
    empty_drift_batch(monitored, scenario)
    before = len(labelled(monitored))
    request_id, outputs = infer(monitored, scenario["reference"].X[:20])
    assert wait_for_drift(monitored) == (0, 0)
    assert outputs["is_outlier"].sum() == 0
    assert len(labelled(monitored)) == before
    assert not labelled(monitored, request_id)


def test_feedback_updates_accuracy_and_is_idempotent(monitored, scenario):
    reference = scenario["reference"]
    request_id, outputs = infer(monitored, reference.X[100:120])
    truth = reference.y[100:120].astype(int).tolist()
    wait_until_written(monitored.monitor_url)
    before = metrics(monitored.monitor_url)
    status, answer = feedback(monitored, {"id": request_id, "truth": truth})
    assert status == 200, answer
    correct = int(np.sum(outputs["predict"].ravel() == np.asarray(truth)))
    assert answer["correct"] == correct and answer["duplicate"] is False
    after = metrics(monitored.monitor_url)
    key = (("pipeline", PIPELINE),)
    assert (
        after[("income_feedback_rows_total", key)]
        - before.get(("income_feedback_rows_total", key), 0)
        == 20
    )
    assert (
        after[("income_feedback_correct_total", key)]
        - before.get(("income_feedback_correct_total", key), 0)
        == correct
    )
    assert 0 <= after[("income_feedback_accuracy", key)] <= 1

    # The same labels again: accepted, counted once. Class names work as labels too.
    names = [CLASSES[t] for t in truth]
    status, again = feedback(monitored, {"id": request_id, "truth": names})
    assert status == 200 and again["duplicate"] is True
    assert (
        metrics(monitored.monitor_url)[("income_feedback_rows_total", key)]
        == after[("income_feedback_rows_total", key)]
    )
    # Different labels for the same request: a conflict, nothing changes.
    status, conflict = feedback(monitored, {"id": request_id, "truth": [1 - t for t in truth]})
    assert status == 409 and request_id in conflict["error"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"id": "no-such-request", "truth": [0]}, 404, ["no-such-request", PIPELINE]),
        ({"truth": [0]}, 400, ["id: Field required", "x-request-id"]),
        ({"id": "{request}", "truth": [0, 1]}, 400, ["2 labels", "20 rows"]),
        ({"id": "{request}", "truth": [2] * 20}, 400, ["truth[0]", "<=50K"]),
        ({"id": "{request}", "truth": ["rich"] * 20}, 400, ["truth[0]", "'rich'"]),
        ({"id": "{request}", "truth": []}, 400, ["truth: List should have", "one label per row"]),
        ({"id": "{request}", "truth": "0"}, 400, ["truth='0': Input should be a valid list"]),
        ([1, 2], 400, ["Input should be a valid dictionary"]),
        (b"{not json", 400, ["not JSON"]),
    ],
)
def test_bad_feedback_is_a_clear_4xx(monitored, scenario, body, status, words):
    request_id, _ = infer(monitored, scenario["reference"].X[200:220])
    wait_until_written(monitored.monitor_url)
    if isinstance(body, dict) and body.get("id") == "{request}":
        body = {**body, "id": request_id}
    got, answer = feedback(monitored, body)
    assert got == status, answer
    for word in words:
        assert word in answer["error"]
    # Nothing was recorded: the right labels are still accepted afterwards.
    got, answer = feedback(monitored, {"id": request_id, "truth": [0] * 20})
    assert got == 200 and answer["duplicate"] is False


def test_feedback_for_an_unknown_pipeline_is_404(monitored):
    status, answer = feedback(monitored, {"id": "x", "truth": [0]}, pipeline="nope")
    assert status == 404 and "nope" in answer["error"] and PIPELINE in answer["error"]


def test_low_education_labels_show_target_drift_and_lower_accuracy(monitored, scenario):
    key = (("pipeline", PIPELINE),)
    low = scenario["low-education"]
    for start in range(0, 500, 20):  # fill the 500-row window with low-education feedback
        request_id, _ = infer(monitored, low.X[start : start + 20])
        wait_until_written(monitored.monitor_url)
        status, _ = feedback(
            monitored, {"id": request_id, "truth": low.y[start : start + 20].astype(int).tolist()}
        )
        assert status == 200
    after = metrics(monitored.monitor_url)
    assert after[("income_feedback_window_rows", key)] == 500
    # Few low-education people earn >50K: the label mix moved far from the validation data's.
    assert after[("income_target_drift_p_value", key)] < 1e-6
    share = after[("income_feedback_label_share", (("class", ">50K"), ("pipeline", PIPELINE)))]
    assert share == pytest.approx(float(np.mean(low.y[:500])))


def same_value(value) -> object:
    """A CSV cell or a typed value, compared as a number where it is one."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def test_cli_feedback_and_labelling_export(monitored, scenario, tmp_path):
    cli = str(Path(sys.executable).with_name("income-bundle"))
    infer(monitored, scenario["outliers"].X[:20])  # flagged rows of its own to export
    request_id, _ = infer(monitored, scenario["reference"].X[300:303])
    wait_until_written(monitored.monitor_url)
    url = monitored.monitor_url
    token_file = str(state_dir(monitored) / "feedback-token")
    send = [cli, "feedback", "--url", url, "--token-file", token_file]
    done = subprocess.run(
        [*send, "--id", request_id, "--truth", "0,>50K,0"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == 3
    unknown = subprocess.run(
        [*send, "--id", "nope", "--truth", "0"],
        capture_output=True,
        text=True,
    )
    assert unknown.returncode == 1 and "nope" in unknown.stderr

    def export_outliers(out: Path) -> Path:
        """From the store the serving process keeps, read offline (SQLite's WAL allows it)."""
        done = subprocess.run(
            [cli, "labelling", "--state-dir", str(state_dir(monitored)), "--out", str(out),
             "--reason", "outlier"],
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return out

    out = export_outliers(tmp_path / "flagged.csv")
    with open(out, newline="") as handle:
        exported = list(csv.DictReader(handle))
    expected = [r for r in labelled(monitored) if r["reason"] == "outlier"]
    assert exported == expected and exported
    table = pyarrow.parquet.read_table(export_outliers(tmp_path / "flagged.parquet"))
    assert table.column_names == list(expected[0])
    # Parquet keeps the types (a column of whole and fractional numbers is a double column).
    assert [{k: same_value(v) for k, v in row.items()} for row in table.to_pylist()] == [
        {k: same_value(v) for k, v in row.items()} for row in expected
    ]
    missing = subprocess.run(
        [cli, "labelling", "--state-dir", str(tmp_path / "none"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and "monitor.sqlite" in missing.stderr
    assert not (tmp_path / "none").exists()  # a missing store is not created empty


def test_concurrent_traffic_loses_and_duplicates_nothing(monitored, scenario):
    """2,000 requests from 8 clients: every flagged row and drifted batch is in the dataset once."""
    empty_drift_batch(monitored, scenario)
    before_rows = {(r["request_id"], r["row"], r["reason"]) for r in labelled(monitored)}
    rng = np.random.default_rng(7)
    names = ["reference", "low-education", "outliers"]
    plan = [(names[rng.integers(3)], int(rng.integers(1, 8))) for _ in range(2000)]
    responses: dict[str, tuple[int, np.ndarray]] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def client(share: list[tuple[str, int]], seed: int) -> None:
        local = np.random.default_rng(seed)
        for name, rows in share:
            X = scenario[name].X
            start = int(local.integers(0, len(X) - rows))
            try:
                request_id, outputs = infer(monitored, X[start : start + rows])
            except AssertionError as e:
                errors.append(str(e))
                continue
            with lock:
                responses[request_id] = (rows, outputs["is_outlier"].ravel())

    threads = [threading.Thread(target=client, args=(plan[i::8], i)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(responses) == 2000
    wait_for_drift(monitored)

    rows = [
        r
        for r in labelled(monitored)
        if (r["request_id"], r["row"], r["reason"]) not in before_rows
    ]
    keys = [(r["request_id"], int(r["row"]), r["reason"]) for r in rows]
    assert len(keys) == len(set(keys)), "a row was appended twice"
    # Outliers: exactly the rows the responses flagged.
    expected_outliers = {
        (request_id, int(i), "outlier")
        for request_id, (_, flags) in responses.items()
        for i in np.flatnonzero(flags)
    }
    assert {k for k in keys if k[2] == "outlier"} == expected_outliers
    # Drift: whole requests, each in one batch; batches at least 20 rows.
    drift_rows = [r for r in rows if r["reason"] == "drift"]
    by_request = Counter(r["request_id"] for r in drift_rows)
    for request_id, count in by_request.items():
        assert count == responses[request_id][0], "a drifted request was labelled in part"
    batch_sizes = Counter(r["drift_batch"] for r in drift_rows)
    assert batch_sizes and min(batch_sizes.values()) >= 20
    # Every drifted row was matched to its request, nothing was dropped on the way, and the
    # monitor's counters agree with its export.
    assert all(r["request_id"] for r in drift_rows)
    gateway = metrics(monitored.http_url)
    assert gateway.get(("income_gateway_async_dropped_total", (("pipeline", PIPELINE),)), 0) == 0
    after = metrics(monitored.monitor_url)
    assert not any(
        v for (name, _), v in after.items() if name == "income_monitor_dropped_writes_total"
    )
    counted = {
        reason: after[("income_labelling_rows_total", (("pipeline", PIPELINE), ("reason", reason)))]
        for reason in ("outlier", "drift")
    }
    on_file = Counter(r["reason"] for r in labelled(monitored))
    assert counted == {reason: on_file[reason] for reason in counted}
