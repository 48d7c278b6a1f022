"""Tracing end to end: `income-bundle serve` with tracing on exports to a real Jaeger v2 (built
from its Go module, income_bundle_dev.jaeger); one pipeline request is one trace through the
gateway, its steps, MLServer and the monitor, and its trace id is in the monitor's record, the
labelling row and a latency exemplar."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import secrets
import sqlite3
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

from income_bundle.errors import BundleError
from income_bundle.monitoring.service import wait_until_written
from income_bundle.seldon.local import STORE_FILE

PIPELINE = "income-production"
STEPS = ("income", "income-preprocess", "income-outlier")

jaeger_rig = pytest.importorskip("income_bundle_dev.jaeger")
_reason = jaeger_rig.unavailable_reason()
if _reason and not os.environ.get("CI"):
    pytest.skip(_reason, allow_module_level=True)


@pytest.fixture(scope="module")
def kafka():
    """A real Kafka broker, or None where its tools are missing (the Kafka test skips then)."""
    from income_bundle_dev.kafka_broker import KafkaBroker, missing_tools

    if missing_tools():
        yield None
        return
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture(scope="module")
def traced(training_report, tmp_path_factory, kafka):
    """Jaeger, and a gateway of its own tracing to it (so no other test's traffic mixes in),
    also writing Seldon's topics to Kafka when there is a broker."""
    from income_bundle.seldon.local import LocalSeldon, ServeSettings

    with jaeger_rig.Jaeger() as jaeger:
        config = ServeSettings(
            state_dir=tmp_path_factory.mktemp("traced-state"),
            otlp_endpoint=jaeger.otlp_grpc_endpoint,
            kafka_bootstrap=kafka.bootstrap if kafka else None,
        )
        with LocalSeldon(config) as seldon:
            yield jaeger, seldon


def infer(seldon, X: np.ndarray, headers: dict[str, str]) -> dict:
    body = {"inputs": [{"name": "predict", "datatype": "FP32", "shape": list(X.shape)}]}
    body["inputs"][0]["data"] = X.ravel().tolist()
    request = urllib.request.Request(
        f"{seldon.http_url}/v2/models/{PIPELINE}/infer",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "seldon-model": f"{PIPELINE}.pipeline", **headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        return json.loads(response.read())


def tag(span: dict, key: str):
    return next((t["value"] for t in span.get("tags", []) if t["key"] == key), None)


def parent_of(span: dict) -> str | None:
    return next(
        (r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"), None
    )


def complete(spans: list[dict]) -> bool:
    """Every span the test looks at has reached Jaeger: the gateway's (request, steps, calls to
    MLServer), the monitor's, and an MLServer server span per call."""
    ours = {s["operationName"] for s in spans if s["serviceName"] != "mlserver"}
    wanted = {"gateway infer", "monitor ingest", "monitor store write"}
    wanted |= {f"step {step}" for step in STEPS} | {f"mlserver infer {step}" for step in STEPS}
    servers = [
        s for s in spans if s["serviceName"] == "mlserver" and tag(s, "span.kind") == "server"
    ]
    return wanted <= ours and len(servers) >= len(STEPS)


def test_a_pipeline_request_is_one_trace_through_gateway_mlserver_and_monitor(traced, scenario):
    """A client's traceparent is continued: the gateway's request span, one span per step and
    per call to MLServer, MLServer's own server spans as children of those calls, and the
    monitor's ingest and store write, all under the client's trace id; the monitor's record and
    the labelling row carry that id, and so does the pipeline's latency exemplar."""
    jaeger, seldon = traced
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    outliers = scenario["outliers"]
    flagged_rows = outliers.X[:20]  # injected outliers: the detector flags them
    request_id = f"traced-{client_span}"
    headers = {"traceparent": f"00-{trace_id}-{client_span}-01", "x-request-id": request_id}
    infer(seldon, flagged_rows, headers)

    spans = jaeger.wait_for_trace(trace_id, complete, timeout_s=60)
    assert {s["traceID"] for s in spans} == {trace_id}
    by_id = {s["spanID"]: s for s in spans}
    (request,) = [s for s in spans if s["operationName"] == "gateway infer"]
    assert parent_of(request) == client_span
    assert tag(request, "seldon.pipeline") == PIPELINE
    assert tag(request, "seldon.request_id") == request_id
    assert tag(request, "seldon.rows_in") == 20 and tag(request, "seldon.rows_out") == 20
    assert tag(request, "http.response.status_code") == 200
    for step in STEPS:
        (step_span,) = [s for s in spans if s["operationName"] == f"step {step}"]
        assert parent_of(step_span) == request["spanID"]
        (forward,) = [s for s in spans if s["operationName"] == f"mlserver infer {step}"]
        assert parent_of(forward) == step_span["spanID"]
        assert tag(forward, "seldon.bytes_in") > 0 and tag(forward, "seldon.bytes_out") > 0
        # MLServer's server span for this call is the forward span's child.
        children = [
            s for s in spans if s["serviceName"] == "mlserver" and parent_of(s) == forward["spanID"]
        ]
        assert children, f"no MLServer span under the forward to {step}"
        assert any(tag(c, "span.kind") == "server" for c in children)
    for span in spans:
        if span["serviceName"] == "mlserver":
            parent = by_id.get(parent_of(span))
            assert parent is not None, f"MLServer span {span['operationName']} has no parent here"

    # The monitor's record and the labelling rows carry the trace id.
    wait_until_written(seldon.monitor_url)
    store = seldon.config.state_dir / STORE_FILE
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        recorded = db.execute(
            "SELECT trace_id FROM requests WHERE request_id = ?", (request_id,)
        ).fetchall()
    assert recorded == [(trace_id,)]
    with urllib.request.urlopen(
        f"{seldon.monitor_url}/v2/pipelines/{PIPELINE}/labelling?format=csv&reason=outlier",
        timeout=30,
    ) as response:
        rows = list(csv.DictReader(io.StringIO(response.read().decode())))
    ours = [row for row in rows if row["request_id"] == request_id]
    assert ours, f"the outliers of {request_id} are not in the labelling dataset: {rows[:3]}"
    assert {row["trace_id"] for row in ours} == {trace_id}
    (monitor_span,) = [s for s in spans if s["operationName"] == "monitor ingest"]
    assert tag(monitor_span, "seldon.request_id") == request_id

    # The pipeline's latency histogram names the trace in an exemplar (OpenMetrics only).
    metrics = urllib.request.Request(
        f"{seldon.http_url}/metrics", headers={"Accept": "application/openmetrics-text"}
    )
    with urllib.request.urlopen(metrics, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = response.read().decode()
    exemplars = re.findall(
        r'^seldon_pipeline_infer_api_seconds_bucket\{[^}]*pipeline="income-production"[^}]*\}'
        r' \S+ # \{trace_id="([0-9a-f]{32})"\}',
        text,
        re.M,
    )
    assert trace_id in exemplars


def test_a_request_without_traceparent_starts_a_trace_the_record_names(traced, scenario):
    """The gateway starts the trace itself; the monitor's labelling row names it, and Jaeger
    has it under that id (what the demo prints the link of)."""
    jaeger, seldon = traced
    infer(seldon, scenario["outliers"].X[20:40], {})
    wait_until_written(seldon.monitor_url)
    with urllib.request.urlopen(
        f"{seldon.monitor_url}/v2/pipelines/{PIPELINE}/labelling?format=jsonl&reason=outlier",
        timeout=30,
    ) as response:
        rows = [json.loads(line) for line in response.read().decode().splitlines()]
    newest = max(rows, key=lambda row: row["timestamp"])
    assert re.fullmatch(r"[0-9a-f]{32}", newest["trace_id"])
    spans = jaeger.wait_for_trace(newest["trace_id"], complete, timeout_s=60)
    (request,) = [s for s in spans if s["operationName"] == "gateway infer"]
    assert parent_of(request) is None


def test_prometheus_keeps_the_trace_id_exemplar(traced, scenario):
    """The local Prometheus (exemplar storage on) scrapes the gateway in OpenMetrics and keeps
    the latency exemplar naming the request's trace: what the dashboard links from."""
    from income_bundle_dev import monitoring_stack

    if reason := monitoring_stack.missing_binaries():
        pytest.skip(reason)
    _, seldon = traced
    with (
        monitoring_stack.AlertReceiver() as receiver,
        monitoring_stack.MonitoringStack.on_free_ports(
            seldon, receiver.url, scrape_interval="1s"
        ) as stack,
    ):
        trace_id = secrets.token_hex(16)
        started = time.time()
        traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        infer(seldon, scenario["reference"].X[:20], {"traceparent": traceparent})
        deadline = time.monotonic() + 60
        found: list[str] = []
        while time.monotonic() < deadline and trace_id not in found:
            query = urllib.parse.urlencode(
                {
                    "query": "seldon_pipeline_infer_api_seconds_bucket",
                    "start": started - 5,
                    "end": time.time() + 5,
                }
            )
            url = f"{stack.prometheus_url}/api/v1/query_exemplars?{query}"
            with urllib.request.urlopen(url, timeout=10) as response:
                series = json.loads(response.read())["data"]
            found = [
                exemplar["labels"].get("trace_id")
                for item in series
                for exemplar in item["exemplars"]
            ]
            time.sleep(0.5)
        assert trace_id in found, f"Prometheus has exemplars {found}"


def test_the_kafka_monitor_continues_the_trace_of_seldons_topics(traced, kafka, tmp_path):
    """The gateway writes the request's traceparent on Seldon's topics; the monitor reading them
    (its own process, tracing to the same Jaeger) records the trace id and puts its ingest of
    the pipeline's messages in that trace."""
    from income_bundle.process import ServerProcess, http_ok
    from income_bundle.server import free_port
    from tests.support.paths import ROOT

    if kafka is None:
        from income_bundle_dev.kafka_broker import missing_tools

        pytest.skip(missing_tools())
    jaeger, seldon = traced
    store, port = tmp_path / "kafka-monitor.sqlite", free_port()
    monitor = ServerProcess(
        "monitor",
        [
            sys.executable, "-m", "income_bundle.monitoring.service", "--store", str(store),
            "--port", str(port), "--kafka-bootstrap", kafka.bootstrap,
            "--classifier", str(ROOT / "models" / "income"),
            "--otlp-endpoint", jaeger.otlp_grpc_endpoint,
        ],
        tmp_path / "monitor.log",
    )  # fmt: skip
    try:
        monitor.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/ready"), 60, BundleError)
        trace_id, request_id = secrets.token_hex(16), f"kafka-{secrets.token_hex(4)}"
        traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        headers = {"traceparent": traceparent, "x-request-id": request_id}
        infer(seldon, scenario_rows(), headers)

        def monitored(spans: list[dict]) -> bool:
            # (Its store write holds a whole poll of messages: it is in the first traced
            # message's trace, linked to the others'.)
            return any(
                (s["serviceName"], s["operationName"]) == ("income-monitor", "monitor ingest")
                for s in spans
            )

        spans = jaeger.wait_for_trace(trace_id, monitored, timeout_s=60)
        topics = {
            tag(s, "kafka.topic")
            for s in spans
            if s["serviceName"] == "income-monitor" and s["operationName"] == "monitor ingest"
        }
        assert f"seldon.seldon-mesh.pipeline.{PIPELINE}.inputs" in topics
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
            recorded = db.execute(
                "SELECT trace_id FROM requests WHERE request_id = ?", (request_id,)
            ).fetchall()
        assert recorded == [(trace_id,)]
    finally:
        monitor.stop()


def scenario_rows() -> np.ndarray:
    from income_bundle.scenarios import load_scenario

    return load_scenario("reference").X[:20]
