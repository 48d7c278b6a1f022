"""CloudEvents as KServe v0.20.0's payload logger sends them, built with the cloudevents SDK's 1.x API
(`cloudevents.v1`, a separate implementation from the `cloudevents.core` API the runtime and the
monitor read them with), for the detector and monitor tests of every tier."""

from __future__ import annotations

from cloudevents.v1.conversion import to_binary, to_structured
from cloudevents.v1.http import CloudEvent

__all__ = ["logger_event", "structured_event"]


def logger_event(
    ce_type: str, event_id: str, body: dict, **overrides: str
) -> tuple[dict[str, str], bytes]:
    """What KServe v0.20.0's logger posts (pkg/logger/worker.go sendHttpCloudEvent): binary mode,
    time and recordedtime as Go writes them (RFC 3339, nanoseconds), its extensions, the V2 JSON
    as data."""
    attributes = {
        "type": ce_type,
        "source": "income-predictor-00001-deployment-7d9f8",  # the pod's name
        "id": event_id,
        "time": "2026-12-02T16:38:18.123456789Z",
        "recordedtime": "2026-12-02T16:38:18.130000001Z",
        "inferenceservicename": "income",
        "namespace": "income-kserve",
        "component": "predictor",
        "endpoint": "default",
        "metadata": '{"X-Request-Id":["abc"]}',
        "annotations": '{"team":"income"}',
        "datacontenttype": "application/json",
        **overrides,
    }
    return to_binary(CloudEvent(attributes, body))


def structured_event(ce_type: str, event_id: str, body: dict) -> tuple[dict[str, str], bytes]:
    """The same event in structured mode (what a broker or another producer may send)."""
    headers, _ = logger_event(ce_type, event_id, body)
    attributes = {k[3:].lower(): v for k, v in headers.items() if k.lower().startswith("ce-")}
    return to_structured(CloudEvent({**attributes, "datacontenttype": "application/json"}, body))
