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
import json
import logging
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
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from income_bundle.errors import BundleError, ServingError
from income_bundle.monitoring.feedback import FeedbackMetrics, FeedbackTracker, parse_labels
from income_bundle.monitoring.labelling import REASONS, LabellingSchema, labelling_rows, write_rows
from income_bundle.monitoring.store import RecordStore, SqliteStore
from income_bundle.paths import project_root
from income_bundle.settings_cli import CommandSettings, parse_settings

__all__ = [
    "ClassifierInfo",
    "Monitor",
    "MonitorSettings",
    "build_app",
    "classifier_info",
    "main",
    "open_store",
    "traffic_window",
    "wait_until_written",
]

DEFAULT_WINDOW_ROWS = 500
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
        self.store = store
        # Waits until a source's pending writes are in the store (the local source's `flush`).
        self.settle = settle
        self.pipelines = pipelines
        self.registry = registry or CollectorRegistry()
        self.trackers: dict[str, FeedbackTracker] = {}
        self._window_lock = threading.Lock()
        for pipeline, info in pipelines.items():
            tracker = FeedbackTracker(info.class_names, info.reference_shares, window_rows)
            # The window survives a restart: it is the newest labelled rows in the store.
            for record in store.labelled(pipeline, window_rows):
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

    def _publish(self, pipeline: str) -> None:
        self.feedback_metrics.publish(pipeline, self.trackers[pipeline].stats())

    def feedback(self, pipeline: str, request_id: object, truth: object) -> dict[str, Any]:
        """Record the true labels of one request's rows; idempotent for the same labels."""
        where = f"pipeline {pipeline} feedback"
        info = self.pipelines.get(pipeline)
        if info is None:
            known = ", ".join(sorted(self.pipelines)) or "none"
            raise ServingError(404, f"{where}: this monitor watches no such pipeline ({known})")
        if not isinstance(request_id, str) or not request_id:
            raise ServingError(
                400, f"{where}: 'id' must be the request id (the x-request-id of the response)"
            )
        record = self.store.request(request_id)
        if record is None and self.settle is not None:
            self.settle(5.0)  # a request answered a moment ago may still be on its way
            record = self.store.request(request_id)
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

    def _truth(self, request_id: str) -> list[int] | None:
        record = self.store.request(request_id)
        return record.truth if record else None

    def schema(self, pipeline: str) -> LabellingSchema:
        info = self.pipelines[pipeline]
        return LabellingSchema(info.feature_names, info.category_map, info.class_names)

    def labelling(
        self, pipeline: str, reasons: Sequence[str] = REASONS
    ) -> tuple[list[str], list[dict[str, Any]]]:
        schema = self.schema(pipeline)
        return schema.columns, labelling_rows(self.store, pipeline, schema, reasons)

    def traffic(
        self, pipeline: str, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        return traffic_window(self.store, pipeline, since, until)


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
    return JSONResponse({"error": error.message}, status_code=error.status)


def build_app(monitor: Monitor) -> Starlette:
    """The monitor's HTTP API (see the README's monitoring section)."""

    def pipeline_of(request: Request) -> str:
        pipeline = request.path_params["pipeline"]
        if pipeline not in monitor.pipelines:
            known = ", ".join(sorted(monitor.pipelines)) or "none"
            raise ServingError(404, f"pipeline {pipeline!r}: not watched by this monitor ({known})")
        return pipeline

    async def feedback(request: Request) -> Response:
        pipeline = request.path_params["pipeline"]
        try:
            body = await request.json()
        except ValueError as e:
            raise ServingError(
                400, f"pipeline {pipeline} feedback: the body is not JSON ({e})"
            ) from e
        if not isinstance(body, dict):
            raise ServingError(
                400,
                f"pipeline {pipeline} feedback: the body must be a JSON object "
                '{"id": "<x-request-id>", "truth": [one label per row]}',
            )
        answer = await asyncio.to_thread(
            monitor.feedback, pipeline, body.get("id"), body.get("truth")
        )
        return JSONResponse(answer)

    async def labelling(request: Request) -> Response:
        pipeline = pipeline_of(request)
        fmt = request.query_params.get("format", "csv")
        if fmt not in MEDIA_TYPES:
            raise ServingError(
                400, f"labelling: format {fmt!r} is not one of {', '.join(MEDIA_TYPES)}"
            )
        reasons = request.query_params.getlist("reason") or list(REASONS)
        if unknown := sorted(set(reasons) - set(REASONS)):
            raise ServingError(
                400, f"labelling: reason {unknown[0]!r} is not one of {', '.join(REASONS)}"
            )
        columns, rows = await asyncio.to_thread(monitor.labelling, pipeline, reasons)
        return Response(write_rows(rows, columns, fmt), media_type=MEDIA_TYPES[fmt])

    async def traffic(request: Request) -> Response:
        pipeline = pipeline_of(request)
        bounds: dict[str, float | None] = {}
        for name in ("since", "until"):
            text = request.query_params.get(name)
            try:
                bounds[name] = float(text) if text is not None else None
            except ValueError as e:
                raise ServingError(
                    400, f"traffic: {name}={text!r} is not a Unix time in seconds"
                ) from e
        lines = await asyncio.to_thread(monitor.traffic, pipeline, **bounds)
        return Response(write_rows(lines, [], "jsonl"), media_type=MEDIA_TYPES["jsonl"])

    async def cloudevents(request: Request) -> Response:
        """KServe's logger and the detectors' results, through Knative Triggers."""
        from income_bundle.monitoring.sources.kserve import SOURCE, read_event, translate_event

        change = translate_event(read_event(dict(request.headers), await request.body()))
        await asyncio.to_thread(monitor.store.write, change)
        monitor.messages.labels(SOURCE).inc()
        # Knative: 202 with no body is "delivered, no reply".
        return Response(status_code=202)

    async def metrics(_: Request) -> Response:
        body = await asyncio.to_thread(generate_latest, monitor.registry)
        return Response(body, media_type="text/plain; version=0.0.4")

    async def ready(_: Request) -> Response:
        return JSONResponse({"ready": True})

    return Starlette(
        routes=[
            Route("/v2/pipelines/{pipeline}/feedback", feedback, methods=["POST"]),
            Route("/v2/pipelines/{pipeline}/labelling", labelling, methods=["GET"]),
            Route("/v2/pipelines/{pipeline}/traffic", traffic, methods=["GET"]),
            Route("/cloudevents", cloudevents, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
        ],
        exception_handlers={ServingError: _answer_error},
    )


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


def main(argv: Sequence[str] | None = None) -> None:
    """Run the monitor until SIGTERM: its HTTP API and, with --kafka-bootstrap, Seldon's topics."""
    from income_bundle.monitoring.records import PipelineTaps
    from income_bundle.monitoring.sources.kafka import KafkaSource

    settings = parse_settings(
        MonitorSettings, argv, prog="income-monitor", description=main.__doc__
    )
    logging.basicConfig(level=logging.INFO)
    store = SqliteStore(settings.store)
    monitor = Monitor(store, {settings.pipeline: classifier_info(settings.classifier)})
    listening = socket.create_server((settings.host, settings.port))

    async def serve() -> None:
        import uvicorn

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        config = uvicorn.Config(build_app(monitor), log_level="warning", lifespan="off")
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


if __name__ == "__main__":
    main()
