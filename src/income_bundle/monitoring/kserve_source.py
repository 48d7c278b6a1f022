"""The monitor's KServe source: CloudEvents delivered by Knative Triggers.

Four kinds of event arrive at the monitor's `POST /cloudevents`, read with the `cloudevents` SDK
in binary or structured mode:
- KServe's payload logger, request and response of each inference (kserve/kserve v0.20.0
  `pkg/logger/worker.go`: types `org.kubeflow.serving.inference.request|response`, one `ce-id`
  shared by a request and its response, the extension `inferenceservicename`); the body is the
  V2 JSON request or response;
- the drift and outlier detectors' results (`income_bundle.kserve.runtime`, the `kserve/README.md`
  contract): `io.income-bundle.drift` when a batch drifted, `io.income-bundle.outlier` when a
  request had outlier rows, each naming the logged request in `requestid`.
The InferenceService's name stands where the Seldon source has the pipeline's. Only flagged
requests produce detector events, so outlier scores are known for those requests only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from income_bundle.monitoring.kafka_source import PipelineTaps
from income_bundle.monitoring.store import DriftBatch, RequestRecord, StoreWrite

__all__ = ["EVENT_TYPES", "EventError", "read_event", "translate_event"]

REQUEST_EVENT_TYPE = "org.kubeflow.serving.inference.request"  # pkg/logger/worker.go
RESPONSE_EVENT_TYPE = "org.kubeflow.serving.inference.response"
DRIFT_EVENT_TYPE = "io.income-bundle.drift"  # income_bundle.kserve.runtime
OUTLIER_EVENT_TYPE = "io.income-bundle.outlier"
EVENT_TYPES = (REQUEST_EVENT_TYPE, RESPONSE_EVENT_TYPE, DRIFT_EVENT_TYPE, OUTLIER_EVENT_TYPE)
_FORMAT = JSONFormat()


class EventError(Exception):
    """An event the monitor will not take: HTTP status and a message for the sender."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def read_event(headers: Mapping[str, str], body: bytes) -> BaseCloudEvent:
    """One CloudEvent from an HTTP request, binary or structured mode; EventError otherwise."""
    headers = {k.lower(): v for k, v in headers.items()}
    content_type = headers.get("content-type", "").lower()
    if content_type.startswith("application/cloudevents-batch"):
        raise EventError(415, "monitor: a batch of CloudEvents; expected one event per request")
    if not content_type.startswith("application/cloudevents") and not any(
        name.startswith(ce_http.CE_PREFIX) for name in headers
    ):
        raise EventError(
            400, "monitor: no ce-* headers and no structured Content-Type: not a CloudEvent"
        )

    def received(attributes: dict[str, Any], data: Any) -> BaseCloudEvent:
        # The SDK's constructor makes up a missing id; the id is the record's key, so refuse.
        for name in ("id", "type", "source", "specversion"):
            if not attributes.get(name):
                raise EventError(400, f"monitor: the CloudEvent has no {name!r}")
        return CloudEvent(attributes, data)

    try:
        event = ce_http.from_http(ce_http.HTTPMessage(headers, body), _FORMAT, received)
    except (BaseCloudEventException, ValueError, TypeError, AttributeError) as e:
        raise EventError(400, f"monitor: the CloudEvent cannot be read ({e})") from e
    if event.get_type() not in EVENT_TYPES:
        raise EventError(
            400, f"monitor: ce-type {event.get_type()!r} is not one of {', '.join(EVENT_TYPES)}"
        )
    return event


def _data(event: BaseCloudEvent) -> dict[str, Any]:
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EventError(400, f"monitor: event {event.get_id()}: data is not JSON ({e})") from e
    if not isinstance(data, dict):
        raise EventError(400, f"monitor: event {event.get_id()}: data is not a JSON object")
    return data


def _tensor(tensors: Any, name: str) -> np.ndarray | None:
    for tensor in tensors or []:
        if isinstance(tensor, dict) and tensor.get("name") == name:
            try:
                return np.asarray(tensor["data"], dtype=float).reshape(tensor["shape"])
            except (KeyError, TypeError, ValueError) as e:
                raise EventError(400, f"monitor: tensor {name!r} is malformed ({e})") from e
    return None


def translate_event(event: BaseCloudEvent, taps: PipelineTaps | None = None) -> StoreWrite:
    """The record parts one event carries (see the module's docstring)."""
    taps = taps or PipelineTaps()
    change = StoreWrite()
    service = event.get_extension("inferenceservicename")
    if not service:
        raise EventError(400, f"monitor: event {event.get_id()} has no ce-inferenceservicename")
    data = _data(event)
    occurred = event.get_time()
    when = occurred.timestamp() if occurred else None
    kind = event.get_type()
    if kind == REQUEST_EVENT_TYPE:
        rows = _tensor(data.get("inputs"), taps.features)
        if rows is not None:
            change.requests.append(
                RequestRecord(
                    event.get_id(),
                    service,
                    source="kserve-cloudevents",
                    time=when,
                    rows=rows.reshape(rows.shape[0], -1).tolist(),
                )
            )
    elif kind == RESPONSE_EVENT_TYPE:
        predicted = _tensor(data.get("outputs"), taps.prediction)
        if predicted is not None:
            change.requests.append(
                RequestRecord(
                    event.get_id(), service, predicted=predicted.astype(int).ravel().tolist()
                )
            )
    else:
        request_id = data.get("requestid")
        if not isinstance(request_id, str) or not request_id:
            raise EventError(400, f"monitor: event {event.get_id()}: no 'requestid' in its data")
        if kind == OUTLIER_EVENT_TYPE:
            change.requests.append(
                RequestRecord(
                    request_id,
                    service,
                    outlier_flags=[int(v) for v in data.get("is_outlier") or []] or None,
                    outlier_scores=[float(v) for v in data.get("instance_score") or []] or None,
                )
            )
        else:
            change.drift_batches.append(
                DriftBatch(
                    request_id,
                    service,
                    time=when,
                    is_drift=bool(data.get("is_drift")),
                    p_values=[float(v) for v in data.get("p_val") or []] or None,
                    threshold=data.get("threshold"),
                    row_count=data.get("batch_rows"),
                )
            )
    return change
