"""The KServe path's CloudEvents contract, end to end on real MLServer, without Kubernetes.

Each detector starts as its Knative Service in kserve/detectors.yaml starts it (folder, environment,
worker count; the checkout stands in for the mount). Events are built with the cloudevents SDK's
1.x API (`cloudevents.v1`, a separate implementation from the `cloudevents.core` API the runtime
reads them with) the way KServe's logger builds them (binary mode, its extensions, a request and
its response sharing one ce-id) and replies are parsed with it. The drift detector's batch is one
state for the whole module, so every test starts and ends with an empty batch, and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from cloudevents.v1.http import from_http

import income_bundle
from income_bundle.kserve.manifests import local_detector
from income_bundle.scenarios import v2_request
from income_bundle.server import MLServer
from tests.support.kserve_events import logger_event, structured_event

BATCH = 20
ROWS_PER_REQUEST = 5
# The contract, spelt out here rather than imported (the runtime module imports MLServer, which
# must not share a process with tritonclient): what KServe's logger sends, what we answer.
REQUEST_EVENT_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT_TYPE = "org.kubeflow.serving.inference.response"
DRIFT_EVENT_TYPE = "io.income-bundle.drift"
OUTLIER_EVENT_TYPE = "io.income-bundle.outlier"
_ids = count()


class Detector:
    """One detector's MLServer and its CloudEvents route."""

    def __init__(self, name: str):
        self.name = name
        self.local = local_detector(name)
        self.server = MLServer(
            models={name: self.local.folder},
            parallel_workers=self.local.parallel_workers,
            extra_env=self.local.env,
        )

    @property
    def url(self) -> str:
        return f"{self.server.http_url}/cloudevents/{self.name}"

    def post(self, headers: dict, body: bytes) -> requests.Response:
        return requests.post(self.url, headers=headers, data=body, timeout=60)

    def state(self) -> dict:
        response = requests.get(self.url + "/state", timeout=10)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def detectors(training_report) -> Iterator[dict[str, Detector]]:
    started = {name: Detector(name) for name in ("income-drift", "income-outlier")}
    errors: list[BaseException] = []

    def start(detector: Detector) -> None:
        try:
            detector.server.start()
        except BaseException as e:  # reported below, with the others stopped
            errors.append(e)

    threads = [threading.Thread(target=start, args=(d,)) for d in started.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        if errors:
            raise errors[0]
        yield started
    finally:
        for detector in started.values():
            detector.server.stop()


@pytest.fixture
def drift(detectors) -> Iterator[Detector]:
    detector = detectors["income-drift"]
    assert detector.state()["rows_held"] == 0, "a previous test left rows in the drift batch"
    yield detector
    assert detector.state()["rows_held"] == 0, "this test left rows in the drift batch"


@pytest.fixture
def outlier(detectors) -> Detector:
    return detectors["income-outlier"]


def v2_response(X: np.ndarray) -> dict:
    return {
        "model_name": "income",
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [len(X), 1],
                     "data": [int(v) for v in (X[:, 0] > 40)]}],
    }  # fmt: skip


def replay(
    detector: Detector, X: np.ndarray, rows: int = ROWS_PER_REQUEST, event=logger_event
) -> list[tuple]:
    """Requests of `rows` rows, each followed by its .response twin; (ce-id, reply) per request."""
    replies = []
    for start in range(0, len(X), rows):
        chunk = X[start : start + rows]
        event_id = f"req-{next(_ids)}"
        reply = detector.post(*event(REQUEST_EVENT_TYPE, event_id, v2_request(chunk)))
        ignored = detector.post(*event(RESPONSE_EVENT_TYPE, event_id, v2_response(chunk)))
        assert ignored.status_code == 202 and not ignored.content, ignored.text
        replies.append((event_id, reply))
    return replies


def no_event(reply: requests.Response) -> bool:
    return (
        reply.status_code == 202
        and not reply.content
        and not any(k.lower().startswith("ce-") for k in reply.headers)
    )


def parsed(reply: requests.Response):
    """The reply as a CloudEvent 1.0, parsed by the SDK (which raises if it is not one)."""
    assert reply.status_code == 200, reply.text
    event = from_http(dict(reply.headers), reply.content)
    assert event["specversion"] == "1.0"
    return event, json.loads(reply.content)


def test_detectors_start_as_the_manifests_say(detectors):
    for name, detector in detectors.items():
        assert (
            detector.local.folder.name == name and detector.local.folder.parent.name == "detectors"
        )
        assert detector.local.parallel_workers == 0
        assert detector.local.env["PYTHONPATH"].endswith(f"/detectors/{name}")
    assert detectors["income-drift"].local.env["INCOME_EVENTS_BATCH_SIZE"] == str(BATCH)
    assert detectors["income-drift"].state()["batch_size"] == BATCH


def test_reference_traffic_gives_no_drift_event(drift, scenario):
    before = drift.state()
    replies = replay(drift, scenario["reference"].X[: 2 * BATCH])
    assert all(no_event(reply) for _, reply in replies), [r.text for _, r in replies]
    after = drift.state()
    assert after["batches"] == before["batches"] + 2
    assert after["drift_events"] == before["drift_events"]
    assert after["responses_ignored"] == before["responses_ignored"] + len(replies)
    assert after["last_verdict"]["is_drift"] == 0
    assert after["last_verdict"]["batch_rows"] == BATCH


def test_drift_event_after_20_drifted_rows(drift, scenario):
    replies = replay(drift, scenario["low-education"].X[:BATCH])
    *waiting, (completing_id, completing) = replies
    assert len(waiting) == BATCH // ROWS_PER_REQUEST - 1
    assert all(no_event(reply) for _, reply in waiting)
    assert [r.headers["x-income-events"] for _, r in waiting] == [
        f"{n}/{BATCH} rows held" for n in range(ROWS_PER_REQUEST, BATCH, ROWS_PER_REQUEST)
    ]
    event, data = parsed(completing)
    assert event["type"] == DRIFT_EVENT_TYPE
    assert event["requestid"] == completing_id
    assert event["inferenceservicename"] == "income" and event["namespace"] == "income-kserve"
    assert event["source"] and event["id"] != completing_id
    assert data["is_drift"] == 1 and data["batch_rows"] == BATCH
    assert len(data["p_val"]) == len(data["distance"]) == 12
    assert "Education" in data["drifting_features"]
    assert drift.state()["last_verdict"]["requestid"] == completing_id


def test_outliers_are_flagged_on_the_outlier_rows(outlier, scenario):
    data_set = scenario["outliers"]
    event_id = f"req-{next(_ids)}"
    reply = outlier.post(
        *logger_event(REQUEST_EVENT_TYPE, event_id, v2_request(data_set.X[:BATCH]))
    )
    event, data = parsed(reply)
    assert event["type"] == OUTLIER_EVENT_TYPE and event["requestid"] == event_id
    assert data["is_outlier"] == data_set.is_outlier[:BATCH].astype(int).tolist()
    assert data["outlier_rows"] == np.flatnonzero(data_set.is_outlier[:BATCH]).tolist()
    assert len(data["instance_score"]) == BATCH


def structured_reply(reply: requests.Response):
    """A structured-mode reply: no ce-* headers, the event in the body, parsed by the SDK."""
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/cloudevents+json")
    assert not any(k.lower().startswith("ce-") for k in reply.headers)
    event = from_http(dict(reply.headers), reply.content)
    assert event["specversion"] == "1.0" and event["datacontenttype"] == "application/json"
    return event


def test_structured_mode_events_are_scored_and_answered_in_structured_mode(outlier, scenario):
    data_set = scenario["outliers"]
    event_id = f"req-{next(_ids)}"
    reply = outlier.post(
        *structured_event(REQUEST_EVENT_TYPE, event_id, v2_request(data_set.X[:BATCH]))
    )
    event = structured_reply(reply)
    assert event["type"] == OUTLIER_EVENT_TYPE and event["requestid"] == event_id
    assert event["id"] == f"{event_id}.income-outlier"
    assert (event["component"], event["endpoint"]) == ("predictor", "default")
    assert event.data["is_outlier"] == data_set.is_outlier[:BATCH].astype(int).tolist()


def test_structured_mode_drift_batch(drift, scenario):
    replies = replay(drift, scenario["low-education"].X[:BATCH], event=structured_event)
    *waiting, (completing_id, completing) = replies
    assert all(no_event(reply) for _, reply in waiting)
    event = structured_reply(completing)
    assert event["type"] == DRIFT_EVENT_TYPE and event["requestid"] == completing_id
    assert event.data["is_drift"] == 1 and event.data["batch_rows"] == BATCH


def test_binary_replies_carry_the_attributes_as_headers(outlier, scenario):
    event_id = f"req-{next(_ids)}"
    reply = outlier.post(
        *logger_event(REQUEST_EVENT_TYPE, event_id, v2_request(scenario["outliers"].X[:BATCH]))
    )
    event, data = parsed(reply)
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["ce-id"] == f"{event_id}.income-outlier"
    assert event["time"] and data["requestid"] == event_id


def test_the_kserve_image_has_the_cloudevents_sdk_the_runtime_imports():
    """The runtime runs in the KServe path's MLServer image, which must install the SDK at the
    version requirements.txt pins (the version these tests ran against)."""
    root = Path(income_bundle.__file__).resolve().parents[2]
    source = (root / "src" / "income_bundle" / "runtime" / "cloudevents.py").read_text()
    assert "\nfrom cloudevents.core" in source
    pins = yaml.safe_load(
        (root / "ansible" / "roles" / "kserve_stack" / "defaults" / "main.yaml").read_text()
    )["kserve_stack_mlserver_pins"]
    requirement = next(
        line for line in (root / "requirements.txt").read_text().splitlines()
        if line.startswith("cloudevents==")
    )  # fmt: skip
    assert requirement in pins


# SeldonIO/MLServer 1.7.1 Dockerfile: ARG PYTHON_VERSION=3.10.12 (the image's conda Python).
IMAGE_PYTHON = "3.10"
_STDLIB_NAMES_CHECK = """
import ast, importlib, sys
problems = []
for path in sys.argv[1:]:
    for node in ast.walk(ast.parse(open(path).read(), path)):  # parsed as this Python parses
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in sys.stdlib_module_names:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:  # a submodule (from importlib import metadata)
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            problems.append(f"{path}: from {node.module} import {alias.name}")
print("\\n".join(problems))
sys.exit(1 if problems else 0)
"""


def _image_python() -> str | None:
    """A Python of the image's minor version on this machine (PATH, or pyenv's versions)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [shutil.which(f"python{IMAGE_PYTHON}")]
    candidates += sorted(str(p) for p in pyenv.glob(f"{IMAGE_PYTHON}.*/bin/python{IMAGE_PYTHON}"))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True)  # fmt: skip
        if probe.returncode == 0 and probe.stdout.strip() == str(
            tuple(map(int, IMAGE_PYTHON.split(".")))
        ):
            return candidate
    return None


def test_the_detector_modules_use_only_what_the_images_python_has():
    """The detector folders' modules run on the MLServer image's Python 3.10: every name they
    import from the standard library must exist there (datetime.UTC, for one, is 3.11+)."""
    python = _image_python()
    if python is None:
        pytest.skip(
            f"no Python {IMAGE_PYTHON} here (PATH or pyenv) to check the image's modules with"
        )
    from income_bundle.artifacts import DETECTOR_MODULES, RUNTIME_MODULES

    package = Path(income_bundle.__file__).parent
    modules = [package / module for module in RUNTIME_MODULES + DETECTOR_MODULES]
    result = subprocess.run(
        [python, "-c", _STDLIB_NAMES_CHECK, *map(str, modules)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_reference_rows_give_no_outlier_event(outlier, scenario):
    replies = replay(outlier, scenario["reference"].X[:BATCH])
    assert all(no_event(reply) for _, reply in replies), [r.text for _, r in replies]


def _malformed(scenario) -> dict[str, tuple[dict, bytes, tuple[str, ...]]]:
    """Malformed events, each with the words its rejection must contain."""
    X = scenario["reference"].X[:3]
    good_headers, good_body = logger_event(REQUEST_EVENT_TYPE, "bad-0", v2_request(X))
    without_type = {k: v for k, v in good_headers.items() if k.lower() != "ce-type"}

    def without(header: str) -> dict:
        return {k: v for k, v in good_headers.items() if k.lower() != header}

    def structured(without_attribute: str = "", **changes) -> tuple[dict, bytes]:
        event = {"specversion": "1.0", "type": REQUEST_EVENT_TYPE, "id": "s-bad",
                 "source": "x", "datacontenttype": "application/json", "data": v2_request(X),
                 **changes}  # fmt: skip
        event.pop(without_attribute, None)
        return {"content-type": "application/cloudevents+json"}, json.dumps(event).encode()

    bytes_tensor = {"inputs": [{"name": "predict", "datatype": "BYTES", "shape": [1, 12],
                                "data": ["a"] * 12}]}  # fmt: skip
    wide = v2_request(np.hstack([X, X[:, :1]]))
    two_inputs = {"inputs": v2_request(X)["inputs"] * 2}
    nan = v2_request(X)
    nan["inputs"][0]["data"][5] = "NaN"
    return {
        "no ce-type": (without_type, good_body, ("ce-type",)),
        "non-JSON body": (good_headers, b"rows: 1,2,3", ("not JSON",)),
        "not a V2 request": (good_headers, b'{"instances": [[1, 2]]}', ("V2", "inputs")),
        "wrong tensor shape": (
            *logger_event(REQUEST_EVENT_TYPE, "bad-1", wide), ("shape", "[-1, 12]")),
        "BYTES tensor": (
            *logger_event(REQUEST_EVENT_TYPE, "bad-2", bytes_tensor), ("BYTES", "numeric")),
        "two inputs": (*logger_event(REQUEST_EVENT_TYPE, "bad-3", two_inputs), ("2 inputs",)),
        "not a number": (*logger_event(REQUEST_EVENT_TYPE, "bad-4", nan), ("row 0", "number")),
        "old spec version": (
            {**good_headers, "ce-specversion": "0.3"}, good_body, ("ce-specversion", "1.0")),
        "unknown type": (
            {**good_headers, "ce-type": "com.example.other"}, good_body, ("ce-type", REQUEST_EVENT_TYPE)),
        "no ce-id": (without("ce-id"), good_body, ("ce-id",)),
        "no ce-source": (without("ce-source"), good_body, ("ce-source",)),
        "no ce-specversion": (without("ce-specversion"), good_body, ("ce-specversion",)),
        "empty ce-id": ({**good_headers, "ce-id": ""}, good_body, ("ce-id",)),
        "ce-time not a time": (
            {**good_headers, "ce-time": "yesterday"}, good_body, ("ce-time", "RFC 3339")),
        "extension name not lower-case alphanumeric": (
            {**good_headers, "ce-bad_name": "x"}, good_body, ("ce-bad_name", "lowercase")),
        "non-JSON content type": (
            {**good_headers, "content-type": "text/csv"}, good_body, ("Content-Type", "json")),
        "no ce-* headers at all": (
            {"content-type": "application/json"}, good_body, ("ce-*", "binary or structured")),
        "structured, not JSON": (
            {"content-type": "application/cloudevents+json"}, b"{not json",
            ("structured", "not JSON")),
        "structured, not an object": (
            {"content-type": "application/cloudevents+json"}, b"[1, 2]", ("not a JSON object",)),
        "structured, no id": (
            *structured(without_attribute="id"), ("'id'", "structured")),
        "structured, old spec version": (
            *structured(specversion="0.3"), ("'specversion'", "1.0")),
        "structured, unknown type": (
            *structured(type="com.example.other"), ("'type'", REQUEST_EVENT_TYPE)),
        "structured, data not a V2 request": (
            *structured(data={"instances": [[1, 2]]}), ("V2", "inputs")),
        "a batch of events": (
            {"content-type": "application/cloudevents-batch+json"}, b"[]", ("batch",)),
    }  # fmt: skip


def test_malformed_events_get_a_clear_4xx_and_do_not_poison_the_batch(drift, outlier, scenario):
    cases = _malformed(scenario)
    for detector in (drift, outlier):
        before = detector.state()
        for case, (headers, body, words) in cases.items():
            reply = detector.post(headers, body)
            assert 400 <= reply.status_code < 500, (detector.name, case, reply.status_code)
            assert not any(k.lower().startswith("ce-") for k in reply.headers), case
            message = reply.json()["error"]
            assert detector.name in message, (case, message)
            assert all(word in message for word in words), (detector.name, case, message)
        after = detector.state()
        assert after["rejected"] == before["rejected"] + len(cases)
        assert after["requests"] == before["requests"]
    assert drift.state()["rows_held"] == 0
    # The batch is intact: 20 reference rows complete exactly one batch, without drift.
    batches = drift.state()["batches"]
    replies = replay(drift, scenario["reference"].X[:BATCH])
    assert all(no_event(reply) for _, reply in replies)
    state = drift.state()
    assert state["batches"] == batches + 1 and state["last_verdict"]["batch_rows"] == BATCH
    assert state["last_verdict"]["is_drift"] == 0


def test_a_redelivered_event_counts_once(drift, scenario):
    X = scenario["low-education"].X
    headers, body = logger_event(
        REQUEST_EVENT_TYPE, "redelivered", v2_request(X[:ROWS_PER_REQUEST])
    )
    assert no_event(drift.post(headers, body))
    again = drift.post(headers, body)
    assert no_event(again) and again.headers["x-income-events"] == "duplicate ce-id ignored"
    assert drift.state()["rows_held"] == ROWS_PER_REQUEST
    *_, (_, last) = replay(drift, X[ROWS_PER_REQUEST:BATCH])
    assert parsed(last)[1]["batch_rows"] == BATCH


def test_the_detectors_keep_serving_v2_after_all_that(detectors, scenario):
    for name, detector in detectors.items():
        assert requests.get(f"{detector.server.http_url}/v2/models/{name}/ready", timeout=10).ok


def test_the_cloudevents_runtime_is_part_of_each_detector_artifact(training_report):
    from income_bundle.artifacts import RUNTIME_PACKAGE, read_metadata
    from income_bundle.paths import artifact_dir
    from income_bundle.runtime.artifact import file_sha256

    source = Path(income_bundle.__file__).parent / "runtime" / "cloudevents.py"
    packaged = f"{RUNTIME_PACKAGE}/runtime/cloudevents.py"
    for name in ("income-drift", "income-outlier"):
        folder = artifact_dir(name)
        copy = folder / packaged
        assert copy.read_bytes() == source.read_bytes()
        assert read_metadata(folder)["files"][packaged] == file_sha256(copy)
    assert not (artifact_dir("income") / packaged).exists()
