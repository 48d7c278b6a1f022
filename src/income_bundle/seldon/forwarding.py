"""Forwarding to MLServer: the gateway's calls to models over REST, and MLServer's errors in
the protocol's shape."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from income_bundle import tracing
from income_bundle.errors import ServingError
from income_bundle.seldon import traced
from income_bundle.seldon.protocol import LARGE_BODY_BYTES, LARGE_VALUES, off_loop, values_in
from income_bundle.seldon.upstream import (
    RequestRefusedError,
    UpstreamClient,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResponse,
)
from income_bundle.v2.tensors import Tensor, from_json, to_json

__all__ = ["MLServerForwarder", "ModelOutputs", "translate_error"]

log = logging.getLogger(__name__)

JSON_HEADERS = {"Content-Type": "application/json"}


def _request_body(tensors: list[Tensor], extra: dict | None) -> bytes:
    return orjson.dumps({"inputs": [to_json(t) for t in tensors], **(extra or {})})


def _outputs(model: str, answer: bytes) -> ModelOutputs:
    payload = orjson.loads(memoryview(answer))  # orjson refuses bytes subclasses
    parameters = payload.get("parameters")
    return ModelOutputs(
        (
            from_json(o, f"model {model} output {i}")
            for i, o in enumerate(payload.get("outputs", []))
        ),
        parameters=parameters if isinstance(parameters, dict) else {},
        headers=getattr(answer, "headers", []),
    )


class ModelOutputs(list):
    """A model's output tensors, with what else MLServer answered: the response's `parameters`
    and its `x-` headers (the alibi-detect runtime's `x-seldon-alibi-type` and `-method`), which
    Seldon's model gateway writes to the model's Kafka topic (kafka/gateway/worker.go
    `produce`, `extractHeadersHttp`)."""

    def __init__(self, tensors=(), *, parameters=None, headers=None):
        super().__init__(tensors)
        self.parameters: dict[str, Any] = parameters or {}
        self.headers: list[tuple[str, str]] = headers or []


class _HeadedAnswer(bytes):
    """MLServer's answer with its `x-` headers (a few answers have any: the detectors')."""

    headers: list[tuple[str, str]]

    def __new__(cls, body: bytes, headers: list[tuple[str, str]]):
        answer = super().__new__(cls, body)
        answer.headers = headers
        return answer


class MLServerForwarder:
    """Calls models on MLServer over REST; translates its errors to the protocol's shape."""

    def __init__(self, base_url: str, timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._client: UpstreamClient | None = None

    async def start(self) -> None:
        self._client = UpstreamClient(self.base_url, limit=64)

    async def close(self) -> None:
        if self._client:
            await self._client.close()

    async def infer(
        self, model: str, tensors: list[Tensor], extra: dict | None = None
    ) -> list[Tensor]:
        """Call a model with these tensors (and parameters/outputs); return its outputs."""
        large = values_in(tensors) > LARGE_VALUES
        body = await off_loop(large, _request_body, tensors, extra)
        answer = await self.infer_bytes(model, body)
        return await off_loop(len(answer) > LARGE_BODY_BYTES, _outputs, model, answer)

    @traced.forward_span
    async def infer_bytes(self, model: str, body: bytes) -> bytes:
        """POST a JSON request to the model and return MLServer's answer as it came; errors are
        ServingErrors naming the model, with the upstream client's status."""
        try:
            response = await self._request("POST", f"/v2/models/{model}/infer", body)
        except TimeoutError:
            raise ServingError(
                504, f"model {model} did not answer within {self.timeout_s:g} s"
            ) from None
        except UpstreamError as e:
            # The client's message has the connection's details: for the log, not the client.
            log.warning("model %s: MLServer at %s: %s", model, self.base_url, e)
            raise ServingError(e.status, self._upstream_failed(model, e)) from e
        except RequestRefusedError as e:  # a model name that cannot be put in a request line
            raise ServingError(e.status, f"model {model!r}: {e.message}") from e
        if response.status != 200:
            raise ServingError(*translate_error(model, response.status, response.body))
        extra = [(k, v) for k, v in response.headers.items() if k.startswith("x-")]
        if extra:  # the detectors' x-seldon-alibi-* headers, which Seldon writes to Kafka
            return _HeadedAnswer(response.body, extra)
        return response.body

    def _upstream_failed(self, model: str, error: UpstreamError) -> str:
        if isinstance(error, UpstreamProtocolError):
            return (
                f"model {model}: MLServer at {self.base_url} answered with malformed HTTP; "
                "the gateway log has the details"
            )
        return f"model {model} is unavailable: MLServer at {self.base_url} is not reachable"

    async def _request(self, method: str, path: str, body: bytes = b"") -> UpstreamResponse:
        assert self._client is not None, "start() the forwarder first"
        headers = JSON_HEADERS if body else None
        if tracing.enabled():  # MLServer's spans become children of the current (forward) span
            headers = tracing.inject(dict(headers or {}))
        async with asyncio.timeout(self.timeout_s):
            return await self._client.request(method, path, body, headers)

    async def ready(self, model: str | None = None) -> bool:
        path = f"/v2/models/{model}/ready" if model else "/v2/health/ready"
        try:
            return (await self._request("GET", path)).status == 200
        except (ServingError, TimeoutError):  # the upstream client's errors are ServingErrors
            return False

    async def metadata(self, model: str) -> tuple[int, Any]:
        try:
            response = await self._request("GET", f"/v2/models/{model}")
            return response.status, orjson.loads(response.body)
        except RequestRefusedError as e:
            raise ServingError(e.status, f"model {model!r}: {e.message}") from e
        except (UpstreamError, TimeoutError, orjson.JSONDecodeError) as e:
            log.warning("model %s: metadata from MLServer at %s: %r", model, self.base_url, e)
            raise ServingError(
                503, f"model {model} is unavailable: no metadata from MLServer at {self.base_url}"
            ) from e


def translate_error(model: str, status: int, raw: bytes) -> tuple[int, str]:
    """MLServer answers {"error": ...}, FastAPI's 422 {"detail": ...}, or plain-text 500s. A 5xx
    carries the model's or MLServer's internals (exception text): logged, not passed on."""
    if status >= 500:
        log.warning("model %s: MLServer answered %d: %s", model, status, raw[:2000])
        return (
            status,
            f"model {model} failed on MLServer (HTTP {status}); the gateway log has its answer",
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body["error"]
        # "mlserver.errors.InferenceError: model income: ..." -> "model income: ..."
        if ": " in message and message.split(": ", 1)[0].count(".") >= 1:
            message = message.split(": ", 1)[1]
        if f"model {model}" not in message:
            message = f"model {model}: {message}"
        return 400, message
    if isinstance(body, dict) and "detail" in body:
        details = body["detail"]
        if isinstance(details, list):
            text = "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in details
            )
        else:
            text = str(details)
        return 400, f"model {model} rejected the request: {text}"
    if status == 404:
        return 503, f"model {model} is not loaded on MLServer"
    text = raw.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}"
    return 400, f"model {model} failed: {text}"
