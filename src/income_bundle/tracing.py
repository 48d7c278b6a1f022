"""OpenTelemetry tracing for the gateway and the monitor: one switch, W3C trace context, exemplars.

`configure(endpoint, ratio, service)` installs a `TracerProvider` exporting over OTLP/gRPC to
`endpoint` (a collector or Jaeger v2) with a parent-based ratio sampler; until it is called (or
after `shutdown()`) tracing is off and every helper here costs one global check: `span()` yields
None without touching OpenTelemetry, `inject()` adds nothing, `trace_id()` is None.

The helpers:
- `span(name, attributes, parent=...)`: a span made current for the block; a `ServingError`
  leaving it records its HTTP status (`http.response.status_code`) and marks the span failed.
- `inject(headers)` adds `traceparent` (and `tracestate`) for the current span, for MLServer's
  REST calls and Kafka record headers; `context_from(carrier)` reads them back
  (`traceparent` from HTTP headers, gRPC metadata, Kafka headers or a CloudEvent's extension).
- `trace_id()` / `exemplar()`: the current trace id as 32 hex digits, and as a Prometheus
  exemplar label set (`{"trace_id": ...}`) for `Histogram.observe(..., exemplar=...)`.
- `TraceLogFilter`: puts `trace_id` and `span_id` on every log record ("-" outside a span).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from income_bundle.errors import BundleError, ServingError

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ModuleNotFoundError:  # an install without OpenTelemetry (the monitor's image) never traces
    otel_context = trace = TraceContextTextMapPropagator = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

__all__ = [
    "ENDPOINT_ENV",
    "TRACEPARENT",
    "TraceLogFilter",
    "capture",
    "configure",
    "context_from",
    "context_from_traceparent",
    "enabled",
    "exemplar",
    "inject",
    "parse_traceparent",
    "shutdown",
    "span",
    "span_id",
    "trace_id",
    "trace_id_of",
]

# OpenTelemetry's own variable: a process started with it set traces without a flag.
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
INSTRUMENTATION = "income_bundle"

_PROPAGATOR = TraceContextTextMapPropagator() if TraceContextTextMapPropagator else None
_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


def enabled() -> bool:
    """Whether a provider is configured: the one check the hot path pays when tracing is off."""
    return _tracer is not None


def configure(
    endpoint: str | None,
    *,
    ratio: float = 1.0,
    service: str = "income-bundle-gateway",
    processor: SpanProcessor | None = None,
) -> bool:
    """Trace to `endpoint` (OTLP/gRPC, e.g. `http://127.0.0.1:4317`) keeping `ratio` of the new
    traces (a request arriving with a sampled `traceparent` is kept whatever the ratio).
    `processor` replaces the exporter (tests pass the SDK's in-memory one). Without an endpoint
    or a processor nothing is configured and False is returned."""
    global _provider, _tracer
    if not endpoint and processor is None:
        return False
    if trace is None:
        raise BundleError(
            "tracing needs OpenTelemetry (opentelemetry-sdk and opentelemetry-exporter-otlp-proto-"
            "grpc, pinned in requirements.txt), which this install does not have"
        )
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"the sampling ratio must be within [0, 1], not {ratio}")
    # Imported here: a process that never traces never loads the SDK or grpc's exporter.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    shutdown()
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service}),
        sampler=ParentBased(TraceIdRatioBased(ratio)),
    )
    if processor is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        insecure = not endpoint.startswith("https://")  # type: ignore[union-attr]
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=insecure))
    provider.add_span_processor(processor)
    _provider = provider
    _tracer = provider.get_tracer(INSTRUMENTATION)
    return True


def shutdown() -> None:
    """Flush what is buffered and switch tracing off."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def force_flush(timeout_s: float = 5.0) -> bool:
    """Export what is buffered now (tests and the demo, before they ask the backend)."""
    return _provider.force_flush(int(timeout_s * 1000)) if _provider is not None else True


@contextlib.contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    parent: otel_context.Context | None = None,
    kind: trace.SpanKind | None = None,
    links: list[otel_context.Context] | None = None,
) -> Iterator[trace.Span | None]:
    """A span current for the block, or None when tracing is off. `parent` continues a trace
    read from a carrier (`context_from`) or captured (`capture`); otherwise the current span is
    the parent. `links` name other traces the work belongs to (a store write of many requests)."""
    if _tracer is None:
        yield None
        return
    linked = [trace.Link(trace.get_current_span(c).get_span_context()) for c in links or () if c]
    with _tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind or trace.SpanKind.INTERNAL,
        attributes=attributes,
        links=linked,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except ServingError as e:
            current.set_attribute("http.response.status_code", e.status)
            if e.status >= 500 or e.status in (408, 429):
                current.set_status(trace.StatusCode.ERROR, e.message)
            else:
                current.set_attribute("error.type", str(e.status))
            raise
        except BaseException as e:
            current.set_status(trace.StatusCode.ERROR, type(e).__name__)
            current.record_exception(e)
            raise


def context_from(carrier: Mapping[str, str] | None) -> otel_context.Context | None:
    """The trace context a `traceparent` (and `tracestate`) in `carrier` names; None when
    tracing is off or there is none. A malformed traceparent is ignored (a new trace starts),
    as the W3C spec says a receiver must."""
    if _tracer is None or not carrier or not carrier.get(TRACEPARENT):
        return None
    return _PROPAGATOR.extract(carrier)


def context_from_traceparent(traceparent: str | None) -> otel_context.Context | None:
    return context_from({TRACEPARENT: traceparent} if traceparent else None)


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current span's `traceparent` (and `tracestate`) to `headers`; returns them."""
    if _tracer is not None:
        _PROPAGATOR.inject(headers)
    return headers


def _current() -> trace.SpanContext | None:
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def parse_traceparent(value: str | None) -> str | None:
    """The trace id a W3C `traceparent` names (`00-<32 hex>-<16 hex>-<2 hex>`), None when it
    is absent or malformed. Read without OpenTelemetry: the record keeps it with tracing off."""
    parts = (value or "").strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    try:
        int(parts[1], 16)
    except ValueError:
        return None
    return parts[1].lower()


def capture() -> otel_context.Context | None:
    """The current context when a span is current (to continue its trace on another thread or
    later: `span(..., parent=captured)`), else None."""
    return otel_context.get_current() if _current() is not None else None


def trace_id_of(context: otel_context.Context | None) -> str | None:
    """The trace id (32 hex digits) of a captured or extracted context, None without one."""
    if context is None:
        return None
    found = trace.get_current_span(context).get_span_context()
    return format(found.trace_id, "032x") if found.is_valid else None


def trace_id() -> str | None:
    """The current trace's id (32 hex digits), None outside a span or with tracing off."""
    context = _current()
    return format(context.trace_id, "032x") if context else None


def span_id() -> str | None:
    context = _current()
    return format(context.span_id, "016x") if context else None


def exemplar() -> dict[str, str] | None:
    """Labels for a Prometheus exemplar naming the current sampled trace, or None."""
    context = _current()
    if context is None or not context.trace_flags.sampled:
        return None
    return {"trace_id": format(context.trace_id, "032x")}


class TraceLogFilter(logging.Filter):
    """Adds `trace_id` and `span_id` to every record, "-" outside a span, so a format string
    can always name them (`LOG_FORMAT`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current()
        record.trace_id = format(context.trace_id, "032x") if context else "-"
        record.span_id = format(context.span_id, "016x") if context else "-"
        return True


LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s span_id=%(span_id)s] %(message)s"
)


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Give the handlers of `logger` (the root logger by default) the filter and a format that
    prints the ids: a process calls it once at start."""
    target = logger or logging.getLogger()
    if not target.handlers:
        # What Python's last-resort handler would print (warnings and worse, to stderr), with
        # the ids.
        fallback = logging.StreamHandler()
        fallback.setLevel(logging.WARNING)
        target.addHandler(fallback)
    for handler in target.handlers:
        if not any(isinstance(f, TraceLogFilter) for f in handler.filters):
            handler.addFilter(TraceLogFilter())
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
