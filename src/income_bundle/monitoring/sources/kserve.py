"""The monitor's KServe source: CloudEvents delivered by Knative Triggers.

Four kinds of event arrive at the monitor's `POST /cloudevents`, read with the `cloudevents` SDK
in binary or structured mode:
- KServe's payload logger, request and response of each inference (kserve/kserve v0.20.0
  `pkg/logger/worker.go`: types `org.kubeflow.serving.inference.request|response`, one `ce-id`
  shared by a request and its response, the extension `inferenceservicename`); the body is the
  V2 JSON request or response;
- the drift and outlier detectors' results (`income_bundle.runtime.cloudevents`, the
  `kserve/README.md` contract): `io.income-bundle.drift` when a batch drifted,
  `io.income-bundle.outlier` when a request had outlier rows, each naming the logged request in
  `requestid`.
The InferenceService's name stands where the Seldon source has the pipeline's. Only flagged
requests produce detector events, so outlier scores are known for those requests only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from income_bundle import tracing
from income_bundle.errors import ServingError
from income_bundle.monitoring.records import (
    DriftReading,
    PipelineTaps,
    RequestReading,
    store_write,
)
from income_bundle.monitoring.store import StoreWrite

__all__ = ["EVENT_TYPES", "SOURCE", "read_event", "translate_event"]

SOURCE = "kserve-cloudevents"
REQUEST_EVENT_TYPE = "org.kubeflow.serving.inference.request"  # pkg/logger/worker.go
RESPONSE_EVENT_TYPE = "org.kubeflow.serving.inference.response"
DRIFT_EVENT_TYPE = "io.income-bundle.drift"  # income_bundle.runtime.cloudevents
OUTLIER_EVENT_TYPE = "io.income-bundle.outlier"
EVENT_TYPES = (REQUEST_EVENT_TYPE, RESPONSE_EVENT_TYPE, DRIFT_EVENT_TYPE, OUTLIER_EVENT_TYPE)
_FORMAT = JSONFormat()


def read_event(headers: Mapping[str, str], body: bytes) -> BaseCloudEvent:
    """One CloudEvent from an HTTP request, binary or structured mode; a 4xx ServingError
    otherwise."""
    headers = {k.lower(): v for k, v in headers.items()}
    content_type = headers.get("content-type", "").lower()
    if content_type.startswith("application/cloudevents-batch"):
        raise ServingError(415, "monitor: a batch of CloudEvents; expected one event per request")
    if not content_type.startswith("application/cloudevents") and not any(
        name.startswith(ce_http.CE_PREFIX) for name in headers
    ):
        raise ServingError(
            400, "monitor: no ce-* headers and no structured Content-Type: not a CloudEvent"
        )

    def received(attributes: dict[str, Any], data: Any) -> BaseCloudEvent:
        # The SDK's constructor makes up a missing id; the id is the record's key, so refuse.
        for name in ("id", "type", "source", "specversion"):
            if not attributes.get(name):
                raise ServingError(400, f"monitor: the CloudEvent has no {name!r}")
        return CloudEvent(attributes, data)

    try:
        event = ce_http.from_http(ce_http.HTTPMessage(headers, body), _FORMAT, received)
    except (BaseCloudEventException, ValueError, TypeError, AttributeError) as e:
        raise ServingError(400, f"monitor: the CloudEvent cannot be read ({e})") from e
    if event.get_type() not in EVENT_TYPES:
        raise ServingError(
            400, f"monitor: ce-type {event.get_type()!r} is not one of {', '.join(EVENT_TYPES)}"
        )
    return event


def _data(event: BaseCloudEvent) -> dict[str, Any]:
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ServingError(
                400, f"monitor: event {event.get_id()}: data is not JSON ({e})"
            ) from e
    if not isinstance(data, dict):
        raise ServingError(400, f"monitor: event {event.get_id()}: data is not a JSON object")
    return data


def _tensors(tensors: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named tensors of a V2 JSON body's `inputs` or `outputs`, each in its shape."""
    found = {}
    for tensor in tensors or []:
        if isinstance(tensor, dict) and tensor.get("name") in names:
            name = tensor["name"]
            try:
                found[name] = np.asarray(tensor["data"], dtype=float).reshape(tensor["shape"])
            except (KeyError, TypeError, ValueError) as e:
                raise ServingError(400, f"monitor: tensor {name!r} is malformed ({e})") from e
    return found


def _fields(event: BaseCloudEvent, data: dict[str, Any], names: Sequence[str]) -> dict:
    """A detector's result fields (the detector's output tensors, as lists), those given."""
    found = {}
    for name in names:
        value = data.get(name)
        if value is None or value == []:
            continue
        try:
            found[name] = np.asarray(value, dtype=float)
        except (TypeError, ValueError) as e:
            raise ServingError(
                400, f"monitor: event {event.get_id()}: {name!r} is not numbers ({e})"
            ) from e
    return found


def event_traceparent(event: BaseCloudEvent) -> str | None:
    """The event's `traceparent`: CloudEvents' distributed tracing extension, or else the request's
    `Traceparent` header as KServe v0.20.0's payload logger carries it. That logger sends no trace
    context of its own (pkg/logger/worker.go); with `logger.metadataHeaders: [Traceparent]` (the
    kserve_income role sets it when tracing is on) it copies the header into its `metadata`
    extension, a JSON object of header name -> values."""
    value = event.get_extension(tracing.TRACEPARENT)
    if isinstance(value, str):
        return value
    metadata = event.get_extension("metadata")
    if not isinstance(metadata, str):
        return None
    try:
        headers = json.loads(metadata)
    except ValueError:
        return None  # the metadata is the logger's, not ours to refuse: no trace id then
    if not isinstance(headers, dict):
        return None
    for name, values in headers.items():
        if str(name).lower() == tracing.TRACEPARENT and isinstance(values, list) and values:
            return values[0] if isinstance(values[0], str) else None
    return None


def translate_event(event: BaseCloudEvent, taps: PipelineTaps | None = None) -> StoreWrite:
    """The record parts one event carries (see the module's docstring)."""
    taps = taps or PipelineTaps()
    service = event.get_extension("inferenceservicename")
    if not service:
        raise ServingError(400, f"monitor: event {event.get_id()} has no ce-inferenceservicename")
    data = _data(event)
    occurred = event.get_time()
    when = occurred.timestamp() if occurred else None
    kind = event.get_type()
    # CloudEvents' distributed tracing extension (`ce-traceparent` in binary mode).
    trace_id = tracing.parse_traceparent(event_traceparent(event))
    if kind == REQUEST_EVENT_TYPE:
        inputs = _tensors(data.get("inputs"), [taps.features])
        reading = RequestReading(
            event.get_id(), service, inputs, source=SOURCE, time=when, trace_id=trace_id
        )
    elif kind == RESPONSE_EVENT_TYPE:
        outputs = _tensors(data.get("outputs"), [taps.prediction])
        reading = RequestReading(event.get_id(), service, outputs=outputs, trace_id=trace_id)
    else:
        request_id = data.get("requestid")
        if not isinstance(request_id, str) or not request_id:
            raise ServingError(400, f"monitor: event {event.get_id()}: no 'requestid' in its data")
        if kind == OUTLIER_EVENT_TYPE:
            outputs = _fields(event, data, [taps.outlier_flag, taps.outlier_score])
            reading = RequestReading(request_id, service, outputs=outputs)
        else:
            verdict = [taps.drift_verdict, taps.drift_p_values, taps.drift_threshold]
            outputs = _fields(event, data, verdict)
            reading = DriftReading(
                request_id, service, outputs=outputs, time=when, row_count=data.get("batch_rows")
            )
    return store_write(taps, [reading])
