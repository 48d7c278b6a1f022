"""The income detectors as CloudEvents sinks for KServe's payload logger (through Knative Eventing).

Packaging copies this module into the drift and outlier detector folders with the rest of the
runtime package (`income_mlserver.runtime.cloudevents`, see income_bundle.runtime), so it is
covered by the folder's sha256 list and imports only what the MLServer image has plus the
CloudEvents SDK (Python 3.10: no `datetime.UTC`). Each class is a small subclass of the Seldon
path's runtime that adds one REST route, `POST /cloudevents/<model>`, taking what KServe's
logger posts (a CloudEvent 1.0 whose data is the V2 JSON request, in binary mode; structured mode
is accepted too) and answering with a CloudEvent, in the request's mode, when it has something
to report, and `GET /cloudevents/<model>/state`. Events are read and written by the CloudEvents
SDK (`cloudevents.core`, HTTP binding and JSON format), never by hand.

The contract (also in kserve/README.md):
- `type: org.kubeflow.serving.inference.request` is scored; `.response` events are
  acknowledged with 202 and no reply (the Triggers never route them here, but a broker
  misconfiguration must not poison the batch);
- `specversion` must be 1.0 and `id`, `source` and `type` present (the SDK would make up a missing
  id: refused instead); the data must be a V2 JSON request whose one input passes the model's own
  checks; anything else is a 4xx naming the model, the field and what was expected, and changes
  no state;
- drift: validated rows accumulate until at least `batch_size` are held, then the TabularDrift
  test runs over all of them; a batch that drifts is answered with
  `ce-type: io.income-bundle.drift` carrying is_drift, p_val, distance, threshold and the
  `ce-id` of the request that completed the batch (extension `requestid`);
- outliers: every request is run through the income-preprocess artifact and the outlier
  detector; if any row is an outlier the reply is `ce-type: io.income-bundle.outlier` with
  is_outlier and instance_score per row.

The drift batch is process memory: MLServer must run this model in its main process
(`parallel_workers: 0`, checked at load) on exactly one replica, and a restart starts an empty
batch (see kserve/README.md for why that is the right trade here).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import BaseCloudEventException, CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from mlserver.codecs import NumpyCodec
from mlserver.context import model_context
from mlserver.handlers import custom_handler
from mlserver.settings import ModelSettings
from mlserver.types import InferenceRequest, InferenceResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ArtifactError, ServingError
from .artifact import verify_artifact
from .contract import ModelContract
from .models import (
    ArtifactRefusedError,
    IncomeDriftRuntime,
    IncomeOutlierRuntime,
    request_tensors,
)

__all__ = [
    "DRIFT_EVENT_TYPE",
    "OUTLIER_EVENT_TYPE",
    "REQUEST_EVENT_TYPE",
    "RESPONSE_EVENT_TYPE",
    "DriftEventsRuntime",
    "EventsSettings",
    "OutlierEventsRuntime",
]

# What KServe's logger sends (pkg/logger/worker.go: CEInferenceRequest, CEInferenceResponse).
REQUEST_EVENT_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT_TYPE = "org.kubeflow.serving.inference.response"
# What the detectors answer with.
DRIFT_EVENT_TYPE = "io.income-bundle.drift"
OUTLIER_EVENT_TYPE = "io.income-bundle.outlier"
SPEC_VERSION = "1.0"
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")
# Extensions copied from the logged request onto the reply, so the sink can tell where it came from.
FORWARDED_EXTENSIONS = ("inferenceservicename", "namespace", "component", "endpoint")
# The HTTP binding's rule for telling the modes apart (cloudevents/spec http-protocol-binding.md
# 3.1): structured mode has a Content-Type of application/cloudevents(+format).
STRUCTURED_CONTENT_TYPE = "application/cloudevents"
BATCH_CONTENT_TYPE = "application/cloudevents-batch"
EVENT_FORMAT = JSONFormat()
SETTINGS_KEY = "cloudevents"
ENV_PREFIX = "INCOME_EVENTS_"


class EventsSettings(BaseModel):
    """`parameters.extra.cloudevents` of a KServe detector's model-settings.json.

    Paths are relative to the folder of that model-settings.json. `batch_size` and
    `remembered_ids` may also be set by the environment (INCOME_EVENTS_BATCH_SIZE, ...), which
    wins, so a manifest can change them without touching the artifact.
    """

    model_config = ConfigDict(extra="forbid")

    artifact: str = Field(description="The detector's artifact folder (the Seldon path's).")
    preprocessor: str | None = Field(
        None, description="The income-preprocess artifact folder (outlier detector only)."
    )
    batch_size: int = Field(20, ge=1, description="Rows the drift test needs before it runs.")
    remembered_ids: int = Field(
        10_000, ge=0, description="Recent ce-ids kept to drop redelivered events (at-least-once)."
    )
    source: str | None = Field(None, description="ce-source of the replies (default: the model).")

    @classmethod
    def from_extra(cls, extra: dict[str, Any], model_name: str) -> EventsSettings:
        values = dict(extra)
        for field in ("batch_size", "remembered_ids"):
            if (env := os.environ.get(ENV_PREFIX + field.upper())) is not None:
                values[field] = env
        try:
            return cls(**values)
        except ValidationError as e:
            raise ArtifactRefusedError(
                f"model {model_name}: invalid parameters.extra.{SETTINGS_KEY} "
                f"(or {ENV_PREFIX}* environment): {e}"
            ) from e


def _split_settings(settings: ModelSettings) -> tuple[ModelSettings, dict[str, Any]]:
    """A copy of the settings without our key (the stock runtime forbids unknown extras)."""
    settings = settings.model_copy(deep=True)
    extra = dict((settings.parameters.extra if settings.parameters else None) or {})
    ours = extra.pop(SETTINGS_KEY, None)
    if ours is None:
        raise ArtifactRefusedError(
            f"model {settings.name}: model-settings.json has no parameters.extra.{SETTINGS_KEY}"
        )
    settings.parameters.extra = extra  # type: ignore[union-attr]
    return settings, ours


class _CloudEventsSink:
    """Mixin for a verified income runtime: settings, the event parser, replies, state."""

    name: str
    _settings: ModelSettings
    EVENT_TYPE = ""

    def _init_events(self, ours: dict[str, Any]) -> None:
        self._events = EventsSettings.from_extra(ours, self.name)
        # Serve the artifact as if this settings file lived in its folder: the Seldon path's
        # checks (sha256, library versions) and `uri: ./detector` then apply unchanged.
        here = Path(os.path.realpath(self._settings._source)).parent  # type: ignore[arg-type]
        self._artifact = (here / self._events.artifact).resolve()
        self._settings._source = str(self._artifact / "model-settings.json")
        self._preprocessor_folder = (
            (here / self._events.preprocessor).resolve() if self._events.preprocessor else None
        )
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = asyncio.Lock()
        self._counts = {
            "requests": 0,
            "responses_ignored": 0,
            "duplicates": 0,
            "rejected": 0,
            "replies": 0,
        }

    def _refuse_worker_process(self) -> None:
        if multiprocessing.current_process().name != "MainProcess":
            raise ArtifactRefusedError(
                f"model {self.name}: the CloudEvents route keeps state in one process; start "
                f"MLServer with parallel_workers 0 (MLSERVER_PARALLEL_WORKERS=0)"
            )

    # -- parsing -------------------------------------------------------------------------------

    def _parse(self, headers: dict[str, str], body: bytes) -> tuple[BaseCloudEvent, Any, bool]:
        """The event (parsed by the CloudEvents SDK, binary or structured mode), its data as a
        V2 request (None for a .response event), and whether it came in structured mode."""
        where = f"model {self.name}"
        content_type = headers.get("content-type", "")
        if content_type.lower().startswith(BATCH_CONTENT_TYPE):
            raise ServingError(
                415,
                f"{where}: got a batch of CloudEvents ({content_type}); expected one event per "
                f"request, in binary or structured mode, as KServe's logger sends",
            )
        structured = content_type.lower().startswith(STRUCTURED_CONTENT_TYPE)
        event = self._read_event(ce_http.HTTPMessage(headers, body), structured)
        field = (lambda name: repr(name)) if structured else (lambda name: f"ce-{name}")
        event_type = event.get_type()
        if event_type not in (REQUEST_EVENT_TYPE, RESPONSE_EVENT_TYPE):
            raise ServingError(
                400,
                f"{where}: {field('type')} is {event_type!r}; expected {REQUEST_EVENT_TYPE!r} "
                f"(or {RESPONSE_EVENT_TYPE!r}, which is ignored)",
            )
        if event_type == RESPONSE_EVENT_TYPE:
            return event, None, structured
        data_type = event.get_datacontenttype()
        if data_type and not JSONFormat.JSON_CONTENT_TYPE_PATTERN.match(data_type):
            raise ServingError(
                415,
                f"{where}: the event's {'datacontenttype' if structured else 'Content-Type'} is "
                f"{data_type!r}; expected application/json (a V2 inference request)",
            )
        data = event.get_data()
        if isinstance(data, bytes | str):  # the SDK keeps data it could not read as JSON as is
            try:
                data = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ServingError(
                    400,
                    f"{where}: the event's data is not JSON ({e}); expected a V2 inference request",
                ) from e
        try:
            payload = InferenceRequest.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
                for error in e.errors()[:5]
            )
            raise ServingError(
                400, f"{where}: the event's data is not a V2 inference request: {problems}"
            ) from e
        return event, payload, structured

    def _read_event(self, message: ce_http.HTTPMessage, structured: bool) -> BaseCloudEvent:
        where = f"model {self.name}"
        mode = "structured" if structured else "binary"
        expected = f"expected a {mode}-mode CloudEvent {SPEC_VERSION} of type {REQUEST_EVENT_TYPE}"
        field = (lambda name: repr(name)) if structured else (lambda name: f"ce-{name}")

        def received(attributes: dict[str, Any], data: Any) -> BaseCloudEvent:
            # The SDK's CloudEvent fills in a missing id, specversion and time (it is also the
            # constructor of new events); an event received without them is refused instead.
            for name in REQUIRED_ATTRIBUTES:
                if not attributes.get(name):
                    raise ServingError(
                        400, f"{where}: the CloudEvent has no {field(name)}; {expected}"
                    )
            return CloudEvent(attributes, data)

        try:
            if structured:
                return ce_http.from_structured(message, EVENT_FORMAT, received)
            if not any(name.startswith(ce_http.CE_PREFIX) for name in message.headers):
                raise ServingError(
                    400,
                    f"{where}: the request has no ce-* headers and its Content-Type is "
                    f"{message.headers.get('content-type', '')!r}, not {STRUCTURED_CONTENT_TYPE}"
                    f"+json; {expected.replace(mode + '-mode ', '')} in binary or structured mode",
                )
            return ce_http.from_binary(message, EVENT_FORMAT, received)
        except CloudEventValidationError as e:
            problems = "; ".join(
                f"{field(name)}: {', '.join(str(error) for error in errors)}"
                for name, errors in e.errors.items()
            )
            raise ServingError(400, f"{where}: invalid CloudEvent: {problems}; {expected}") from e
        except json.JSONDecodeError as e:
            raise ServingError(
                400, f"{where}: the structured-mode CloudEvent is not JSON ({e}); {expected}"
            ) from e
        except AttributeError as e:  # the SDK's JSON reader met something other than an object
            raise ServingError(
                400, f"{where}: the structured-mode CloudEvent is not a JSON object; {expected}"
            ) from e
        except (BaseCloudEventException, ValueError, TypeError) as e:
            # What the SDK's readers raise on a time that is not a timestamp.
            raise ServingError(
                400,
                f"{where}: the CloudEvent cannot be read ({type(e).__name__}: {e}); {expected}, "
                f"with {field('time')}, if present, an RFC 3339 timestamp",
            ) from e

    def _checked(self, payload: InferenceRequest) -> np.ndarray:
        """The request's rows, checked as the model's own predict() checks them; ServingError
        (answered to the sender as it is) when they do not fit."""
        return self._table.check(request_tensors(self.name, payload))  # type: ignore[attr-defined]

    # -- replies -------------------------------------------------------------------------------

    def _reply(self, event: BaseCloudEvent, structured: bool, data: dict[str, Any]) -> Response:
        """A CloudEvent in the request's content mode, built and serialized by the SDK."""
        attributes = {
            "type": self.EVENT_TYPE,
            "source": self._events.source or f"income-bundle/kserve/{self.name}",
            "id": f"{event.get_id()}.{self.name}",
            "time": datetime.now(timezone.utc),  # noqa: UP017 (datetime.UTC is 3.11+, the image has 3.10)
            "datacontenttype": "application/json",
            "requestid": event.get_id(),
        }
        received = event.get_attributes()
        attributes.update(
            {name: received[name] for name in FORWARDED_EXTENSIONS if received.get(name)}
        )
        reply = CloudEvent(attributes, data)
        to_http = ce_http.to_structured if structured else ce_http.to_binary
        message = to_http(reply, EVENT_FORMAT)
        self._counts["replies"] += 1
        return Response(message.body, status_code=200, headers=message.headers)

    @staticmethod
    def _accepted(reason: str) -> Response:
        # 202 with no body and no ce-* headers: Knative's broker takes it as "delivered, no reply".
        return Response(status_code=202, headers={"x-income-events": reason})

    def _rejected(self, error: ServingError) -> Response:
        self._counts["rejected"] += 1
        return JSONResponse({"error": error.message}, status_code=error.status)

    def _first_delivery(self, event_id: str) -> bool:
        if event_id in self._seen:
            self._counts["duplicates"] += 1
            return False
        self._seen[event_id] = None
        while len(self._seen) > self._events.remembered_ids:
            self._seen.popitem(last=False)
        return True

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            event, payload, structured = self._parse(headers, body)
            if payload is None:
                self._counts["responses_ignored"] += 1
                return self._accepted("response event ignored")
            X = self._checked(payload)
            # The model context MLServer sets around predict() (the stock runtime logs its
            # seldon_model_drift metric, which needs it).
            async with self._lock:
                if not self._first_delivery(event.get_id()):
                    return self._accepted("duplicate ce-id ignored")
                self._counts["requests"] += 1
                with model_context(self._settings):
                    return await self._score(event, structured, X)
        except ServingError as e:
            return self._rejected(e)

    async def _score(self, event: BaseCloudEvent, structured: bool, X: np.ndarray) -> Response:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        return {"model": self.name, **self._counts}


def _request(name: str, X: np.ndarray) -> InferenceRequest:
    return InferenceRequest(inputs=[NumpyCodec.encode_input(name, X)])


def _outputs(response: InferenceResponse) -> dict[str, np.ndarray]:
    return {output.name: NumpyCodec.decode_output(output) for output in response.outputs}


class DriftEventsRuntime(_CloudEventsSink, IncomeDriftRuntime):
    """The income drift detector, fed rows by KServe's logger; replies when a batch drifts."""

    EVENT_TYPE = DRIFT_EVENT_TYPE

    def __init__(self, settings: ModelSettings):
        settings, ours = _split_settings(settings)
        super().__init__(settings)
        self._init_events(ours)
        self._held: list[np.ndarray] = []
        self._counts.update({"batches": 0, "drift_events": 0})
        self._last_verdict: dict[str, Any] | None = None

    async def load(self) -> bool:
        self._refuse_worker_process()
        return await super().load()

    @property
    def rows_held(self) -> int:
        return sum(len(rows) for rows in self._held)

    async def _score(self, event: BaseCloudEvent, structured: bool, X: np.ndarray) -> Response:
        self._held.append(X)
        if self.rows_held < self._events.batch_size:
            return self._accepted(f"{self.rows_held}/{self._events.batch_size} rows held")
        batch = np.concatenate(self._held)
        self._held = []
        name = self._settings.inputs[0].name  # type: ignore[index]
        result = _outputs(await IncomeDriftRuntime.predict(self, _request(name, batch)))
        self._counts["batches"] += 1
        is_drift = int(np.asarray(result["is_drift"]).ravel()[0])
        p_val = np.asarray(result["p_val"], dtype=float).ravel()
        threshold = float(np.asarray(result["threshold"]).ravel()[0])
        names = self._table.feature_names or [str(i) for i in range(len(p_val))]
        verdict = {
            "model": self.name,
            "is_drift": is_drift,
            "p_val": p_val.tolist(),
            "distance": np.asarray(result["distance"], dtype=float).ravel().tolist(),
            "threshold": threshold,
            "feature_names": list(names),
            "drifting_features": [n for n, p in zip(names, p_val, strict=True) if p < threshold],
            "batch_rows": len(batch),
            "requestid": event.get_id(),
        }
        self._last_verdict = verdict
        if not is_drift:
            return self._accepted(f"batch of {len(batch)} rows tested: no drift")
        self._counts["drift_events"] += 1
        return self._reply(event, structured, verdict)

    @custom_handler(rest_path="/cloudevents/income-drift")
    async def cloudevents(self, request: Request) -> Response:
        return await self._receive(request)

    @custom_handler(rest_path="/cloudevents/income-drift/state", rest_method="GET")
    async def cloudevents_state(self) -> Response:
        return JSONResponse(
            {
                **self._state(),
                "batch_size": self._events.batch_size,
                "rows_held": self.rows_held,
                "last_verdict": self._last_verdict,
            }
        )


class OutlierEventsRuntime(_CloudEventsSink, IncomeOutlierRuntime):
    """The income outlier detector behind the verified income-preprocess artifact.

    KServe's logger logs the classifier's request, the 12 raw features; the detector was fitted
    on the preprocessor's 57 outputs. The preprocessor is loaded here, from its own verified
    folder, rather than called over the network: one process, no second service to keep in step.
    """

    EVENT_TYPE = OUTLIER_EVENT_TYPE
    PREPROCESSOR = "income-preprocess"

    def __init__(self, settings: ModelSettings):
        settings, ours = _split_settings(settings)
        super().__init__(settings)
        self._init_events(ours)
        self._counts.update({"rows": 0, "outlier_rows": 0})

    async def load(self) -> bool:
        import joblib

        self._refuse_worker_process()
        folder = self._preprocessor_folder
        if folder is None:
            raise ArtifactRefusedError(
                f"model {self.name}: parameters.extra.{SETTINGS_KEY}.preprocessor must name the "
                f"{self.PREPROCESSOR} folder"
            )
        try:
            metadata = verify_artifact(folder, self.PREPROCESSOR)
            settings = json.loads((folder / "model-settings.json").read_text())
        except (ArtifactError, OSError, ValueError) as e:
            raise ArtifactRefusedError(
                f"model {self.name}: cannot use {self.PREPROCESSOR} at {folder}: {e}"
            ) from e
        # Requests carry the raw features: checked as the preprocessor's own runtime checks them.
        where = f"{self.name} (features as {self.PREPROCESSOR} takes them)"
        self._raw_table = ModelContract.from_declaration(where, settings, metadata).table
        if self._raw_table is None:
            raise ArtifactRefusedError(
                f"model {self.name}: cannot use {self.PREPROCESSOR} at {folder}: its "
                f"model-settings.json declares no input of shape [-1, <features>]"
            )
        self._preprocessor = joblib.load(folder / "model.joblib")
        return await super().load()

    def _checked(self, payload: InferenceRequest) -> np.ndarray:
        return self._raw_table.check(request_tensors(self.name, payload))

    async def _score(self, event: BaseCloudEvent, structured: bool, X: np.ndarray) -> Response:
        transformed = np.asarray(self._preprocessor.transform(X), dtype=np.float64)
        name = self._settings.inputs[0].name  # type: ignore[index]
        response = await IncomeOutlierRuntime.predict(self, _request(name, transformed))
        result = _outputs(response)
        is_outlier = np.asarray(result["is_outlier"]).ravel().astype(int)
        scores = np.asarray(result["instance_score"], dtype=float).ravel()
        self._counts["rows"] += len(X)
        self._counts["outlier_rows"] += int(is_outlier.sum())
        if not is_outlier.any():
            return self._accepted(f"{len(X)} rows scored: no outlier")
        return self._reply(
            event,
            structured,
            {
                "model": self.name,
                "is_outlier": is_outlier.tolist(),
                "instance_score": scores.tolist(),
                "outlier_rows": np.flatnonzero(is_outlier).tolist(),
                "rows": len(X),
                "requestid": event.get_id(),
            },
        )

    @custom_handler(rest_path="/cloudevents/income-outlier")
    async def cloudevents(self, request: Request) -> Response:
        return await self._receive(request)

    @custom_handler(rest_path="/cloudevents/income-outlier/state", rest_method="GET")
    async def cloudevents_state(self) -> Response:
        return JSONResponse(self._state())
