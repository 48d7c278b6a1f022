"""The monitor: one service over the record store, whatever source fills it.

It answers ground-truth feedback (keyed by the request id Seldon answered with), exports the
labelling dataset, serves the window of traffic the drift report reads, and exports Prometheus
metrics: rolling accuracy, label mix, target drift, labelling rows and records by source. The
metric names are the ones the alert rules and the dashboard read
(monitoring/prometheus/income-rules.yaml).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from income_bundle import tracing
from income_bundle.errors import BundleError, ServingError
from income_bundle.monitoring.feedback import FeedbackMetrics, FeedbackTracker, parse_labels
from income_bundle.monitoring.labelling import REASONS, LabellingSchema, labelling_rows, write_rows
from income_bundle.monitoring.records import RequestRecord
from income_bundle.monitoring.store import RecordStore, SqliteStore, StoreMetrics
from income_bundle.monitoring.validation import (
    CheckedStore,
    DriftEventData,
    FeedbackBody,
    LabellingQuery,
    OutlierEventData,
    TrafficQuery,
    check_logger_data,
    parse_json,
    parse_model,
)
from income_bundle.paths import project_root
from income_bundle.settings_cli import CommandSettings, parse_settings

__all__ = [
    "ClassifierInfo",
    "Monitor",
    "MonitorSettings",
    "build_app",
    "classifier_info",
    "feedback_token",
    "main",
    "open_store",
    "traffic_window",
    "wait_until_written",
]

DEFAULT_WINDOW_ROWS = 500
# Far above a logger event of a few hundred rows; nothing larger is read.
MAX_BODY_BYTES = 4 << 20
# A client that declares a body has this long to send all of it.
BODY_READ_TIMEOUT_S = 10.0
TOKEN_FILE = "feedback-token"  # beside the store, unless --token-file says otherwise
MEDIA_TYPES = {
    "csv": "text/csv",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}


@dataclass(frozen=True)
class ClassifierInfo:
    """What the monitor needs of a pipeline's classifier: its class names and the label mix it
    was validated on, and how to write its rows."""

    class_names: list[str]
    reference_shares: list[float]
    feature_names: list[str]
    category_map: dict[int, list[str]]


def classifier_info(folder: Path) -> ClassifierInfo:
    """A classifier's class names, validation label mix and features, from its model folder."""
    settings = json.loads((folder / "model-settings.json").read_text())
    metadata = json.loads((folder / "metadata.json").read_text())
    class_names = ((settings.get("parameters") or {}).get("extra") or {}).get("class_names")
    positive = (metadata.get("metrics") or {}).get("heldout_positive_rate")
    if not class_names or len(class_names) != 2 or positive is None:
        raise ValueError(
            f"{folder}: the monitor needs a binary classifier whose settings name its classes "
            "(parameters.extra.class_names) and whose metadata records heldout_positive_rate"
        )
    features = metadata.get("input_features") or {}
    return ClassifierInfo(
        list(class_names),
        [1.0 - positive, positive],
        list(features.get("names") or []),
        {int(k): v for k, v in (features.get("category_map") or {}).items()},
    )


class Monitor:
    """Feedback, labelling and metrics over one store, for the pipelines it knows."""

    def __init__(
        self,
        store: RecordStore,
        pipelines: dict[str, ClassifierInfo],
        registry: CollectorRegistry | None = None,
        window_rows: int = DEFAULT_WINDOW_ROWS,
        settle: Callable[[float], object] | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.store = store
        # What is read back is validated: a bad row is set aside, never served or aggregated.
        self.checked = CheckedStore(store)
        self.registry.register(StoreMetrics(store))  # dropped writes by reason, writability
        # Waits until a source's pending writes are in the store (the local source's `flush`).
        self.settle = settle
        self.pipelines = pipelines
        self.trackers: dict[str, FeedbackTracker] = {}
        self._window_lock = threading.Lock()
        for pipeline, info in pipelines.items():
            tracker = FeedbackTracker(info.class_names, info.reference_shares, window_rows)
            # The window survives a restart: it is the newest labelled rows in the store.
            for record in self.checked.labelled(pipeline, window_rows):
                if record.truth and record.predicted:
                    tracker.add(record.truth, record.predicted)
            self.trackers[pipeline] = tracker
        self._metrics()
        for pipeline in pipelines:
            self._publish(pipeline)

    def _metrics(self) -> None:
        r = self.registry
        self.feedback_metrics = FeedbackMetrics(r)
        self.messages = Counter(
            "income_monitor_messages",
            "Messages the monitor read, by source.",
            ["source"],
            registry=r,
        )
        r.register(_LabellingCollector(self))
        r.register(self.checked)  # after the collector that reads every row at scrape time

    def _publish(self, pipeline: str) -> None:
        self.feedback_metrics.publish(pipeline, self.trackers[pipeline].stats())

    def feedback(
        self, pipeline: str, request_id: str, truth: Sequence[int | str]
    ) -> dict[str, Any]:
        """Record the true labels of one request's rows; idempotent for the same labels."""
        where = f"pipeline {pipeline} feedback"
        info = self.pipelines.get(pipeline)
        if info is None:
            known = ", ".join(sorted(self.pipelines)) or "none"
            raise ServingError(404, f"{where}: this monitor watches no such pipeline ({known})")
        record = self._request_by_answered_id(pipeline, request_id)
        if record is None and self.settle is not None:
            self.settle(5.0)  # a request answered a moment ago may still be on its way
            record = self._request_by_answered_id(pipeline, request_id)
        if record is not None:
            request_id = record.request_id
        if record is None or record.pipeline != pipeline:
            raise ServingError(
                404,
                f"{where}: no request {request_id!r} in the monitor's store (unknown, or not "
                "recorded yet: from Kafka the monitor reads a request a moment after its answer)",
            )
        if record.predicted is None:
            raise ServingError(
                400, f"{where}: request {request_id!r} has no classifier prediction to compare"
            )
        labels = parse_labels(where, truth, info.class_names)
        if len(labels) != len(record.predicted):
            raise ServingError(
                400,
                f"{where}: 'truth' has {len(labels)} labels; request {request_id!r} had "
                f"{len(record.predicted)} rows (one label per row)",
            )
        if record.truth is not None or not self.store.set_truth(request_id, labels, time.time()):
            # Labelled before (or a moment ago by a concurrent call): the same labels are a no-op.
            stored = record.truth if record.truth is not None else self._truth(request_id)
            if stored != labels:
                raise ServingError(
                    409,
                    f"{where}: request {request_id!r} already has different labels; "
                    "feedback is recorded once per request",
                )
            return {"id": request_id, "rows": len(labels), "duplicate": True}
        correct = sum(t == p for t, p in zip(labels, record.predicted, strict=True))
        tracker = self.trackers[pipeline]
        # Feedback calls run on several threads; the window and its gauges are updated by one
        # at a time.
        with self._window_lock:
            tracker.add(labels, record.predicted)
            self.feedback_metrics.labelled(pipeline, labels, correct, info.class_names)
            self._publish(pipeline)
            stats = tracker.stats()
        return {
            "id": request_id,
            "rows": len(labels),
            "correct": correct,
            "duplicate": False,
            "window": dataclasses.asdict(stats),
        }

    def _request_by_answered_id(self, pipeline: str, request_id: str) -> RequestRecord | None:
        """The request's record by its id, or by the id a pipeline answer carries first: Seldon's
        Kafka key `<partition>.<pipeline>.<id>` (scheduler/pkg/kafka/pipeline, getCompositeKey),
        which a gRPC client sees as its only `x-request-id`. The id as given wins."""
        record = self.checked.request(request_id)
        if record is None:
            keyed = re.fullmatch(rf"\d+\.{re.escape(pipeline)}\.(.+)", request_id)
            if keyed is not None:
                record = self.checked.request(keyed[1])
        return record

    def _truth(self, request_id: str) -> list[int] | None:
        record = self.checked.request(request_id)
        return record.truth if record else None

    def schema(self, pipeline: str) -> LabellingSchema:
        info = self.pipelines[pipeline]
        return LabellingSchema(info.feature_names, info.category_map, info.class_names)

    def labelling(
        self, pipeline: str, reasons: Sequence[str] = REASONS
    ) -> tuple[list[str], list[dict[str, Any]]]:
        schema = self.schema(pipeline)
        return schema.columns, labelling_rows(self.checked, pipeline, schema, reasons)

    def traffic(
        self, pipeline: str, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        return traffic_window(self.checked, pipeline, since, until)


def traffic_window(
    store: RecordStore, pipeline: str, since: float | None = None, until: float | None = None
) -> list[dict[str, Any]]:
    """The pipeline's input rows per request in arrival order, as the drift report reads them."""
    return [
        {"request_id": r.request_id, "timestamp": r.time, "pipeline": pipeline, "rows": r.rows}
        for r in store.requests(pipeline)
        if r.rows is not None
        and r.time is not None
        and (since is None or r.time >= since)
        and (until is None or r.time < until)
    ]


def wait_until_written(url: str, timeout_s: float = 30.0) -> None:
    """Block until the monitor at `url` has written everything handed to it (its
    income_monitor_pending_writes is 0); BundleError on timeout. For the local source, whose
    writes trail the answers by design."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=10) as response:
            text = response.read().decode()
        pending = [
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "income_monitor_pending_writes"
        ]
        if pending and pending[0] == 0:
            return
        if time.monotonic() > deadline:
            raise BundleError(f"the monitor at {url} still has writes pending after {timeout_s} s")
        time.sleep(0.05)


def open_store(path: Path) -> SqliteStore:
    """An existing store file (a monitor's --store, or `income-bundle serve`'s
    <state dir>/monitor.sqlite); BundleError naming how to get one if there is none."""
    if not Path(path).is_file():
        raise BundleError(
            f"{path}: no monitor store here; serve pipeline traffic first "
            "('income-bundle serve' keeps it in <state dir>/monitor.sqlite), or give a running "
            "monitor's URL"
        )
    return SqliteStore(path)


class _LabellingCollector:
    """Labelling rows by reason, counted from the store at scrape time: restarts keep the count."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self):
        family = CounterMetricFamily(
            "income_labelling_rows",
            "Rows in the labelling dataset, by pipeline and reason (outlier, drift).",
            labels=["pipeline", "reason"],
        )
        for pipeline in self.monitor.pipelines:
            _, rows = self.monitor.labelling(pipeline)
            counts = Tally(row["reason"] for row in rows)
            for reason in REASONS:
                family.add_metric([pipeline, reason], counts.get(reason, 0))
        yield family


async def _answer_error(_: Request, error: ServingError) -> Response:
    """Every refusal of the monitor's API, in one place, as the gateway answers its own."""
    headers = {}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="income-monitor"'
    if error.status in (408, 413):  # the rest of the body is not read: the connection cannot go on
        headers["Connection"] = "close"
    return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)


class _BoundedBodies:
    """At most `max_bytes` of body, all of it within `read_timeout_s`: a declared Content-Length
    over the limit is a 413 before anything is read, a chunked body is cut off at the limit
    (413), and a client that stops sending is answered 408. Raised as ServingError from
    `receive`, so the app's one error handler answers."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float) -> None:
        self.app, self.max_bytes, self.read_timeout_s = app, max_bytes, read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            error = (
                ServingError(400, f"Content-Length {declared.decode('latin-1')!r} is not a size")
                if not declared.isdigit()
                else self._too_large()
            )
            response = await _answer_error(Request(scope), error)
            await response(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout_s
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise ServingError(
                    408, f"the request body did not arrive within {self.read_timeout_s:g} s"
                ) from None
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self._too_large()
            return message

        await self.app(scope, bounded_receive, send)

    def _too_large(self) -> ServingError:
        return ServingError(413, f"the request body is larger than {self.max_bytes} bytes")


def feedback_token(path: Path) -> str:
    """The bearer token feedback must carry: read from `path`, or generated into it (mode 0600)
    when there is none yet."""
    path = Path(path)
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process wrote it first: that one is the token
            return path.read_text().strip()
        with os.fdopen(descriptor, "w") as out:
            out.write(token + "\n")
        return token
    if not token:
        raise BundleError(f"{path}: the feedback token file is empty")
    return token


def _query(request: Request) -> dict[str, Any]:
    """The query string as a dict: repeated names as lists (only `reason` may repeat)."""
    query: dict[str, Any] = {}
    for name, value in request.query_params.multi_items():
        if name == "reason":
            query.setdefault(name, []).append(value)
        else:
            query[name] = value
    return query


def build_app(
    monitor: Monitor,
    feedback_token: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    read_timeout_s: float = BODY_READ_TIMEOUT_S,
) -> Starlette:
    """The monitor's HTTP API (docs/monitoring.md; its OpenAPI document at /openapi.json).

    Feedback changes what monitoring reports, so it needs `Authorization: Bearer
    <feedback_token>` (without a token, feedback is refused: 403). The CloudEvents ingress is
    guarded by where it listens instead (loopback locally; in the clusters a NetworkPolicy that
    admits only the Knative broker), as Knative's delivery carries no credentials of ours."""
    expected = f"Bearer {feedback_token}".encode() if feedback_token else None

    def pipeline_of(request: Request) -> str:
        pipeline = request.path_params["pipeline"]
        if pipeline not in monitor.pipelines:
            known = ", ".join(sorted(monitor.pipelines)) or "none"
            raise ServingError(404, f"pipeline {pipeline!r}: not watched by this monitor ({known})")
        return pipeline

    async def feedback(request: Request) -> Response:
        pipeline = request.path_params["pipeline"]
        where = f"pipeline {pipeline} feedback"
        if expected is None:
            raise ServingError(403, f"{where}: this monitor was started without a feedback token")
        given = request.headers.get("authorization", "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, expected):
            raise ServingError(
                401,
                f"{where}: needs 'Authorization: Bearer <token>' with the monitor's feedback "
                "token ('income-bundle feedback' reads it from the state dir)",
            )
        body = parse_model(
            where,
            FeedbackBody,
            parse_json(where, await request.body()),
            'expected {"id": "<x-request-id of the answer>", "truth": [one label per row]}',
        )
        answer = await asyncio.to_thread(monitor.feedback, pipeline, body.id, body.truth)
        return JSONResponse(answer)

    async def labelling(request: Request) -> Response:
        pipeline = pipeline_of(request)
        query = parse_model("labelling: the query", LabellingQuery, _query(request))
        reasons = query.reason or list(REASONS)
        columns, rows = await asyncio.to_thread(monitor.labelling, pipeline, reasons)
        return Response(
            write_rows(rows, columns, query.format), media_type=MEDIA_TYPES[query.format]
        )

    async def traffic(request: Request) -> Response:
        pipeline = pipeline_of(request)
        query = parse_model("traffic: the query", TrafficQuery, _query(request))
        lines = await asyncio.to_thread(monitor.traffic, pipeline, query.since, query.until)
        return Response(write_rows(lines, [], "jsonl"), media_type=MEDIA_TYPES["jsonl"])

    async def cloudevents(request: Request) -> Response:
        """KServe's logger and the detectors' results, through Knative Triggers."""
        from income_bundle.monitoring.records import PipelineTaps
        from income_bundle.monitoring.sources.kserve import (
            DRIFT_EVENT_TYPE,
            OUTLIER_EVENT_TYPE,
            REQUEST_EVENT_TYPE,
            SOURCE,
            event_traceparent,
            read_event,
            translate_event,
        )

        body = await request.body()
        if body:
            parse_json("monitor: the CloudEvent", body)  # bounded nesting before the SDK reads it
        event = read_event(dict(request.headers), body)
        where = f"monitor: event {event.get_id()} ({event.get_type()})"
        data = event.get_data()
        if isinstance(data, bytes | str):
            data = parse_json(where, data.encode() if isinstance(data, str) else data)
        taps = PipelineTaps()
        kind = event.get_type()
        if kind == DRIFT_EVENT_TYPE:
            parse_model(where, DriftEventData, data)
        elif kind == OUTLIER_EVENT_TYPE:
            parse_model(where, OutlierEventData, data)
        elif kind == REQUEST_EVENT_TYPE:
            check_logger_data(where, data, "inputs", taps.features)
        else:
            check_logger_data(where, data, "outputs", taps.prediction)
        # The trace the event continues: its traceparent extension, else the HTTP header.
        parent = tracing.context_from_traceparent(
            event_traceparent(event) or request.headers.get(tracing.TRACEPARENT)
        )
        attributes = {"cloudevents.event_id": event.get_id(), "cloudevents.event_type": kind}
        with tracing.span("monitor ingest", attributes, parent=parent):
            change = translate_event(event, taps)
            with tracing.span("monitor store write"):
                await asyncio.to_thread(monitor.store.write, change)
        monitor.messages.labels(SOURCE).inc()
        # Knative: 202 with no body is "delivered, no reply".
        return Response(status_code=202)

    async def metrics(_: Request) -> Response:
        body = await asyncio.to_thread(generate_latest, monitor.registry)
        return Response(body, media_type="text/plain; version=0.0.4")

    async def ready(_: Request) -> Response:
        writable = monitor.store.writable  # False while the store refuses writes
        return JSONResponse({"ready": writable}, status_code=200 if writable else 503)

    async def openapi(_: Request) -> Response:
        return JSONResponse(openapi_document())

    return Starlette(
        routes=[
            Route("/v2/pipelines/{pipeline}/feedback", feedback, methods=["POST"]),
            Route("/v2/pipelines/{pipeline}/labelling", labelling, methods=["GET"]),
            Route("/v2/pipelines/{pipeline}/traffic", traffic, methods=["GET"]),
            Route("/cloudevents", cloudevents, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        middleware=[
            Middleware(_BoundedBodies, max_bytes=max_body_bytes, read_timeout_s=read_timeout_s)
        ],
        exception_handlers={ServingError: _answer_error, 404: _not_found, 405: _not_allowed},
    )


async def _not_found(request: Request, _: Exception) -> Response:
    return await _answer_error(request, ServingError(404, f"no route {request.url.path}"))


async def _not_allowed(request: Request, _: Exception) -> Response:
    return await _answer_error(
        request, ServingError(405, f"{request.method} is not allowed on {request.url.path}")
    )


def openapi_document() -> dict[str, Any]:
    """The monitor's API as OpenAPI 3.1, its bodies' and queries' schemas from the models that
    validate them."""

    def schema(model: type) -> dict[str, Any]:
        return model.model_json_schema(ref_template="#/components/schemas/{model}")

    components: dict[str, Any] = {}
    for model in (FeedbackBody, LabellingQuery, TrafficQuery, DriftEventData, OutlierEventData):
        found = schema(model)
        components.update(found.pop("$defs", {}))
        components[model.__name__] = found
    components["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    }
    error = {
        "description": "refused; the message names the field and what was expected",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    pipeline = {"name": "pipeline", "in": "path", "required": True, "schema": {"type": "string"}}

    def query_parameters(model: type) -> list[dict[str, Any]]:
        found = schema(model)
        return [
            {"name": name, "in": "query", "required": False, "schema": spec}
            | ({"style": "form", "explode": True} if spec.get("type") == "array" else {})
            for name, spec in found["properties"].items()
        ]

    def answers(ok: dict[str, Any], *refusals: int) -> dict[str, Any]:
        return {**ok, **{str(status): error for status in refusals}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "income-bundle monitor", "version": "1"},
        "paths": {
            "/v2/pipelines/{pipeline}/feedback": {
                "post": {
                    "operationId": "feedback",
                    "summary": "A request's true labels, one per row (needs the bearer token)",
                    "parameters": [pipeline],
                    "security": [{"feedbackToken": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/FeedbackBody"}
                            }
                        },
                    },
                    "responses": answers(
                        {"200": {"description": "recorded (or the same labels again)"}},
                        400,
                        401,
                        403,
                        404,
                        408,
                        409,
                        413,
                    ),
                }
            },
            "/v2/pipelines/{pipeline}/labelling": {
                "get": {
                    "operationId": "labelling",
                    "summary": "The labelling dataset (CSV, JSON Lines or Parquet)",
                    "parameters": [pipeline, *query_parameters(LabellingQuery)],
                    "responses": answers({"200": {"description": "the rows"}}, 400, 404),
                }
            },
            "/v2/pipelines/{pipeline}/traffic": {
                "get": {
                    "operationId": "traffic",
                    "summary": "The input rows per request, as the drift report reads them",
                    "parameters": [pipeline, *query_parameters(TrafficQuery)],
                    "responses": answers({"200": {"description": "JSON Lines"}}, 400, 404),
                }
            },
            "/cloudevents": {
                "post": {
                    "operationId": "cloudevents",
                    "summary": "KServe's logger events and the detectors' results (one CloudEvent)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/cloudevents+json": {"schema": {"type": "object"}},
                            "application/json": {
                                "schema": {
                                    "anyOf": [
                                        {"$ref": "#/components/schemas/DriftEventData"},
                                        {"$ref": "#/components/schemas/OutlierEventData"},
                                        {"type": "object"},
                                    ]
                                }
                            },
                        },
                    },
                    "responses": answers({"202": {"description": "stored"}}, 400, 408, 413, 415),
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "responses": {"200": {"description": "Prometheus text format"}},
                }
            },
            "/ready": {
                "get": {
                    "operationId": "ready",
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "the store refuses writes"},
                    },
                }
            },
            "/openapi.json": {
                "get": {"operationId": "openapi", "responses": {"200": {"description": "this"}}}
            },
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"feedbackToken": {"type": "http", "scheme": "bearer"}},
        },
    }


class MonitorSettings(CommandSettings):
    """Settings of the monitor process (`python -m income_bundle.monitoring.service`): its flags
    (`--store`, ...), else `INCOME_MONITOR_<FIELD>` environment variables, else these defaults."""

    model_config = SettingsConfigDict(env_prefix="INCOME_MONITOR_")

    store: Path = Field(description="SQLite file of the records")
    host: str = Field("127.0.0.1", description="address of the HTTP API")
    port: int = Field(9010, ge=0, le=65535, description="port of the HTTP API")
    pipeline: str = Field("income-production", description="the pipeline watched")
    classifier: Path = Field(
        project_root() / "models" / "income",
        description="model folder of the pipeline's classifier (class names, label mix, features)",
    )
    kafka_bootstrap: str | None = Field(
        None, description="read Seldon's topics from this Kafka (host:port)"
    )
    namespace: str = Field("seldon-mesh", description="Seldon's namespace in the topic names")
    group: str = Field("income-monitor", description="Kafka consumer group")
    token_file: Path | None = Field(
        None,
        description="the bearer token feedback must carry (generated, mode 0600, when the file "
        f"does not exist; default: {TOKEN_FILE} beside --store)",
    )
    otlp_endpoint: str | None = Field(
        None,
        description="continue the traces of the messages it reads (Kafka headers, CloudEvents' "
        "traceparent), exporting OTLP/gRPC spans to this collector (else "
        "$OTEL_EXPORTER_OTLP_ENDPOINT; unset: no tracing)",
    )
    trace_sampling_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="share of new traces kept (a sampled traceparent wins)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the monitor until SIGTERM: its HTTP API and, with --kafka-bootstrap, Seldon's topics."""
    from income_bundle.monitoring.records import PipelineTaps
    from income_bundle.monitoring.sources.kafka import KafkaSource

    settings = parse_settings(
        MonitorSettings, argv, prog="income-monitor", description=main.__doc__
    )
    logging.basicConfig(level=logging.INFO)
    endpoint = settings.otlp_endpoint or os.environ.get(tracing.ENDPOINT_ENV)
    if tracing.configure(endpoint, ratio=settings.trace_sampling_ratio, service="income-monitor"):
        tracing.install_log_filter()
    store = SqliteStore(settings.store)
    monitor = Monitor(store, {settings.pipeline: classifier_info(settings.classifier)})
    token = feedback_token(settings.token_file or settings.store.parent / TOKEN_FILE)
    listening = socket.create_server((settings.host, settings.port))

    async def serve() -> None:
        import uvicorn

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        from income_bundle.http_server import stall_bounded_protocol

        config = uvicorn.Config(
            build_app(monitor, token),
            log_level="warning",
            lifespan="off",
            # A request that stalls is cut off (the app's own 408 covers a body, a second earlier).
            http=stall_bounded_protocol(BODY_READ_TIMEOUT_S + 1.0),
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        tasks = [asyncio.create_task(server.serve(sockets=[listening]))]
        if settings.kafka_bootstrap:
            source = KafkaSource(
                settings.kafka_bootstrap,
                store,
                namespace=settings.namespace,
                taps=PipelineTaps(pipeline=settings.pipeline),
                group_id=settings.group,
                registry=monitor.registry,
                messages=monitor.messages,
            )
            tasks.append(asyncio.create_task(source.run(stop)))
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task is not stopped and task.exception():
                raise task.exception()

    try:
        asyncio.run(serve())
    finally:
        store.close()
        tracing.shutdown()


if __name__ == "__main__":
    main()
