"""The gateway's spans and body sizes, as decorators the fronts, the engine and the forwarder wear.

- `rest_infer` / `grpc_infer`: one span per inference request ("gateway infer", kind SERVER),
  continuing the client's `traceparent` (HTTP header or gRPC metadata), with the request's and the
  answer's body sizes, which also go to the body-size histograms (`GatewayMetrics`);
  `describe_request` adds what the gateway decided: target, request id, rows in and out.
- `step_span`: one span per pipeline step call ("step <name>").
- `forward_span`: one span per call to MLServer ("mlserver infer <model>", kind CLIENT), whose
  `traceparent` the forwarder sends, so MLServer's own spans are its children.

With tracing off (`income_bundle.tracing.enabled()` False) each costs one check, and the fronts
still observe the body sizes.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import trace

from income_bundle import tracing

if TYPE_CHECKING:
    from income_bundle.seldon.protocol import InferRequest, InferResult
    from income_bundle.v2.tensors import Tensor

__all__ = [
    "describe_request",
    "forward_span",
    "grpc_infer",
    "name_request",
    "rest_infer",
    "step_span",
]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

REQUEST_SPAN = "gateway infer"


def _rows(tensors: list[Tensor] | None) -> int:
    return tensors[0].rows if tensors else 0


def describe_request(request: InferRequest, result: InferResult) -> None:
    """Put the routed target and the rows (where the gateway decoded the tensors: a model
    request passed through unchanged has none) on the current request span."""
    if not tracing.enabled():
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute(f"seldon.{result.kind}", result.name)
    if request.inputs:
        span.set_attribute("seldon.rows_in", _rows(request.inputs))
    if result.outputs:
        span.set_attribute("seldon.rows_out", _rows(result.outputs))


def name_request(request_id: str) -> None:
    """Put the pipeline request's id (the one the monitor records it under) on the current span."""
    if tracing.enabled():
        trace.get_current_span().set_attribute("seldon.request_id", request_id)


def _finish(span: trace.Span | None, protocol: str, size_in: int, size_out: int) -> None:
    if span is not None:
        span.set_attributes(
            {
                "http.response.status_code": 200,
                "seldon.protocol": protocol,
                "seldon.bytes_in": size_in,
                "seldon.bytes_out": size_out,
            }
        )


def rest_infer(handler: F) -> F:
    """For the REST front's `_infer(self, request, target) -> Response`."""

    @functools.wraps(handler)
    async def wrapped(front: Any, request: Any, *args: Any) -> Any:
        declared = request.headers.get("content-length", "")
        size_in = int(declared) if declared.isdigit() else 0
        if not tracing.enabled():
            response = await handler(front, request, *args)
            front.gateway.metrics.observe_body_sizes("rest", size_in, len(response.body))
            return response
        parent = tracing.context_from(request.headers)
        with tracing.span(REQUEST_SPAN, parent=parent, kind=trace.SpanKind.SERVER) as span:
            response = await handler(front, request, *args)
            front.gateway.metrics.observe_body_sizes("rest", size_in, len(response.body))
            _finish(span, "rest", size_in, len(response.body))
            return response

    return wrapped  # type: ignore[return-value]


def grpc_infer(handler: F) -> F:
    """For the gRPC front's `ModelInfer(self, request, context) -> ModelInferResponse`."""

    @functools.wraps(handler)
    async def wrapped(servicer: Any, request: Any, context: Any) -> Any:
        if not tracing.enabled():
            response = await handler(servicer, request, context)
            metrics = servicer.gateway.metrics
            metrics.observe_body_sizes("grpc", request.ByteSize(), response.ByteSize())
            return response
        metadata = {k.lower(): v for k, v in context.invocation_metadata() or ()}
        parent = tracing.context_from(metadata)
        with tracing.span(REQUEST_SPAN, parent=parent, kind=trace.SpanKind.SERVER) as span:
            response = await handler(servicer, request, context)
            size_in, size_out = request.ByteSize(), response.ByteSize()
            servicer.gateway.metrics.observe_body_sizes("grpc", size_in, size_out)
            _finish(span, "grpc", size_in, size_out)
            return response

    return wrapped  # type: ignore[return-value]


def step_span(call: F) -> F:
    """For the engine's `_call(self, step, tensors) -> outputs`."""

    @functools.wraps(call)
    async def wrapped(engine: Any, step: Any, tensors: list[Tensor]) -> list[Tensor]:
        if not tracing.enabled():
            return await call(engine, step, tensors)
        attributes = {
            "seldon.pipeline": engine.pipeline.name,
            "seldon.step": step.name,
            "seldon.rows_in": _rows(tensors),
        }
        with tracing.span(f"step {step.name}", attributes) as span:
            outputs = await call(engine, step, tensors)
            if span is not None:
                span.set_attribute("seldon.rows_out", _rows(outputs))
            return outputs

    return wrapped  # type: ignore[return-value]


def forward_span(call: F) -> F:
    """For the forwarder's `infer_bytes(self, model, body) -> answer`: the span is current while
    the request is sent, so the forwarder's `tracing.inject` names it as MLServer's parent."""

    @functools.wraps(call)
    async def wrapped(forwarder: Any, model: str, body: bytes) -> bytes:
        if not tracing.enabled():
            return await call(forwarder, model, body)
        attributes = {
            "seldon.model": model,
            "server.address": forwarder.base_url,
            "seldon.bytes_in": len(body),
        }
        name = f"mlserver infer {model}"
        with tracing.span(name, attributes, kind=trace.SpanKind.CLIENT) as span:
            answer = await call(forwarder, model, body)
            if span is not None:
                span.set_attributes(
                    {"http.response.status_code": 200, "seldon.bytes_out": len(answer)}
                )
            return answer

    return wrapped  # type: ignore[return-value]
