"""The gateway's REST front: a plain ASGI app on uvicorn with httptools, as MLServer serves.

The Open Inference Protocol's endpoints (routed by the `seldon-model` header), pipeline feedback,
inspect, metrics and the OpenAPI description. Every error is `{"error": "..."}`. No web framework:
on this project's 2-core machine aiohttp's server took about 0.35 ms a request more than uvicorn
with httptools, and Starlette's routing 0.1 ms more than this, out of a 1 ms budget per hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import re
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
import uvicorn
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from income_bundle.errors import BundleError
from income_bundle.seldon.engine import GatewayError
from income_bundle.seldon.gateway import (
    INTERNAL_ERROR_MESSAGE,
    PIPELINE_SUFFIX,
    SELDON_MODEL_HEADER,
    Gateway,
)
from income_bundle.seldon.request_id import REQUEST_ID_HEADER, check_request_id
from income_bundle.seldon.tensors import Tensor, TensorError, from_json, to_json

__all__ = [
    "MAX_BODY_BYTES",
    "OPENAPI_PATH",
    "ListenError",
    "RestFront",
    "RestServer",
    "bind_socket",
    "check_port_free",
    "parse_rest_request",
]

log = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
MAX_BODY_BYTES = 64 * 1024 * 1024
# Envoy's default limit on a request's headers (max_request_headers_kb: 60), which seldon-mesh
# keeps (scheduler/pkg/envoy/xdscache/resource.go, v2.10.2, sets no other): Envoy answers 431.
MAX_HEADER_BYTES = 60 * 1024
_JSON = (b"content-type", b"application/json")


class ListenError(BundleError):
    """The gateway cannot listen where it was told to (most often: the port is taken)."""


class _MethodNotAllowedError(GatewayError):
    def __init__(self, method: str, path: str, allowed: set[str]):
        self.allowed = ",".join(sorted(allowed | ({"HEAD"} if "GET" in allowed else set())))
        super().__init__(405, f"{method} {path}: Method Not Allowed (allowed: {self.allowed})")


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]  # names lower-cased; the first of repeated headers
    query_string: bytes
    receive: Callable[[], Awaitable[dict[str, Any]]]

    def query(self, name: str, default: str) -> str:
        values = parse_qs(self.query_string.decode("latin-1")).get(name)
        return values[0] if values else default

    async def body(self) -> bytes:
        """The whole body; GatewayError(413) past MAX_BODY_BYTES."""
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise _too_large()
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise GatewayError(400, "the client went away before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _too_large()
            parts.append(chunk)
            if not message.get("more_body"):
                return parts[0] if len(parts) == 1 else b"".join(parts)


def _too_large() -> GatewayError:
    return GatewayError(413, f"the request body is larger than {MAX_BODY_BYTES >> 20} MiB")


@dataclass
class Response:
    body: bytes
    status: int = 200
    content_type: bytes = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def json_response(body: Any, status: int = 200, request_id: str | None = None) -> Response:
    headers = [(REQUEST_ID_HEADER.encode(), request_id.encode())] if request_id else []
    return Response(orjson.dumps(body), status, headers=headers)


def error_response(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status)


def parse_json(raw: bytes) -> Any:
    """The JSON document in `raw`; GatewayError(400) when it is not JSON or an object repeats a
    key. Parsers disagree on which of two equal keys wins (first or last), so a repeated key
    could let the gateway check one value while a model reads the other."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise GatewayError(400, f"the request body is not JSON: {e}") from e
    # Every key ends with `"`, optional space, `:`; so when that pattern occurs no more often than
    # the parsed objects hold keys, no key was repeated (the usual case, in one regex scan).
    if len(_KEY_END.findall(raw)) > _count_keys(document):
        try:
            json.loads(raw, object_pairs_hook=_refuse_repeated_keys)
        except RecursionError:
            raise GatewayError(400, "the request body nests too deeply") from None
    return document


_KEY_END = re.compile(rb'"[ \t\r\n]*:')


def _count_keys(document: Any) -> int:
    """Keys of the objects in `document`, not looking into lists that start with a scalar (tensor
    data). Counting too few only sends a body to the slow exact check, never lets a repeat by."""
    count, pending = 0, [document]
    while pending:
        value = pending.pop()
        if type(value) is dict:
            count += len(value)
            pending.extend(value.values())
        elif type(value) is list and value and type(value[0]) in _CONTAINERS:
            pending.extend(value)
    return count


_CONTAINERS = (dict, list)


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise GatewayError(
                400, f"the request body repeats the key {key!r} in one object; send each once"
            )
        found[key] = value
    return found


def parse_rest_request(
    raw: bytes, parsed: Any = None
) -> tuple[list[Tensor], dict[str, Any], str | None]:
    """Tensors, extra fields to forward (parameters, outputs) and the request id. `parsed`: the
    body already parsed from `raw`, if it was."""
    try:
        body = orjson.loads(raw) if parsed is None else parsed
    except orjson.JSONDecodeError as e:
        raise GatewayError(400, f"the request body is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise GatewayError(400, "the request body must be a JSON object with an 'inputs' list")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise GatewayError(400, "the request needs a non-empty 'inputs' list of tensors")
    try:
        tensors = [from_json(item, f"inputs[{i}]") for i, item in enumerate(inputs)]
    except TensorError as e:
        raise GatewayError(400, str(e)) from e
    extra = {}
    if "parameters" in body:
        if not isinstance(body["parameters"], dict):
            raise GatewayError(400, "'parameters' must be an object")
        extra["parameters"] = body["parameters"]
    if "outputs" in body:
        outputs = body["outputs"]
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
        ):
            raise GatewayError(400, "'outputs' must be a list of objects with a 'name'")
        extra["outputs"] = [{"name": o["name"]} for o in outputs]
    return tensors, extra, check_request_id(body.get("id"), "the request's 'id'")


Handler = Callable[[Request], Awaitable[Response]]


class RestFront:
    """The ASGI app: routes by method and path, answers every error as `{"error": ...}`."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        segment = r"([^/]+)"
        table: list[tuple[str, str, tuple[str, ...], Handler]] = [
            ("POST", f"/v2/models/{segment}/infer", ("name",), self.infer),
            ("POST", f"/v2/models/{segment}/versions/{segment}/infer", ("name", "v"), self.infer),
            ("POST", f"/v2/pipelines/{segment}/feedback", ("name",), self.feedback),
            ("GET", "/v2/health/live", (), self.live),
            ("GET", "/v2/health/ready", (), self.ready),
            ("GET", "/v2", (), self.server_metadata),
            ("GET", f"/v2/models/{segment}/ready", ("name",), self.model_ready),
            ("GET", f"/v2/models/{segment}", ("name",), self.model_metadata),
            ("GET", "/metrics", (), self.metrics),
            ("GET", "/openapi.yaml", (), self.openapi),
            ("GET", f"/inspect/{segment}", ("reference",), self.inspect),
        ]
        self._routes = [(m, re.compile(p), names, h) for m, p, names, h in table]

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        try:
            handler, params = self._route(method, path)
            headers: dict[str, str] = {}
            size = 0
            for name, value in scope["headers"]:
                size += len(name) + len(value)
                headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
            if size > MAX_HEADER_BYTES:
                raise GatewayError(
                    431,
                    f"the request headers are {size} bytes; at most {MAX_HEADER_BYTES} "
                    "(Envoy's limit in seldon-mesh)",
                )
            request = Request(method, path, params, headers, scope["query_string"], receive)
            response = await handler(request)
        except GatewayError as e:
            response = error_response(e.status, e.message)
            if isinstance(e, _MethodNotAllowedError):
                response.headers.append((b"allow", e.allowed.encode()))
        except Exception:
            # The exception's text stays in the log: it can carry internals (paths, data).
            log.exception("unhandled error on %s %s", method, path)
            response = error_response(500, INTERNAL_ERROR_MESSAGE)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type),
                    (b"content-length", b"%d" % len(response.body)),
                    *response.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    def _route(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = set()
        for route_method, pattern, names, handler in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if method == route_method or (method == "HEAD" and route_method == "GET"):
                return handler, dict(zip(names, match.groups(), strict=True))
            allowed.add(route_method)
        if allowed:
            raise _MethodNotAllowedError(method, path, allowed)
        raise GatewayError(404, f"{method} {path}: Not Found")

    # -- the Open Inference Protocol -------------------------------------------------------

    async def infer(self, request: Request) -> Response:
        gateway = self.gateway
        request_id = check_request_id(
            request.headers.get(REQUEST_ID_HEADER), f"the '{REQUEST_ID_HEADER}' header"
        )
        raw = await request.body()
        header = request.headers.get(SELDON_MODEL_HEADER)
        body = parse_json(raw)
        passed = None
        if type(body) is dict:
            passed = await gateway.infer_model_json(header, body, raw)
        if passed is None:
            tensors, extra, body_id = parse_rest_request(raw, body)
            request_id = body_id or request_id
            passed = await gateway.infer_model_bytes(header, tensors, raw)
        if passed is not None:
            answer = passed[1]
            answer_id = orjson.loads(answer).get("id") or request_id or str(uuid.uuid4())
            return Response(answer, headers=[(REQUEST_ID_HEADER.encode(), answer_id.encode())])
        request_id = request_id or str(uuid.uuid4())
        name, outputs = await gateway.infer(header, tensors, extra, request_id=request_id)
        answer = {
            "model_name": name,
            "id": request_id,
            "parameters": {},
            "outputs": [to_json(t) for t in outputs],
        }
        return json_response(answer, request_id=request_id)

    async def feedback(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as e:
            raise GatewayError(400, f"feedback: the body is not JSON: {e}") from e
        return json_response(self.gateway.feedback(request.params["name"], body))

    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def ready(self, request: Request) -> Response:
        ok = await self.gateway.ready()
        return json_response({"ready": ok}, status=200 if ok else 503)

    async def server_metadata(self, request: Request) -> Response:
        return json_response(
            {"name": "income-bundle-gateway", "version": "1", "extensions": ["seldon-model header"]}
        )

    async def model_ready(self, request: Request) -> Response:
        header = request.headers.get(SELDON_MODEL_HEADER) or request.params["name"]
        ok = await self.gateway.ready(header)
        return json_response({"name": header, "ready": ok}, status=200 if ok else 503)

    async def model_metadata(self, request: Request) -> Response:
        gateway = self.gateway
        kind, name = gateway.resolve(
            request.headers.get(SELDON_MODEL_HEADER) or request.params["name"]
        )
        if kind == "pipeline":
            pipeline = gateway.bundle.pipelines[name]
            return json_response(
                {
                    "name": f"{name}{PIPELINE_SUFFIX}",
                    "platform": "seldon-pipeline",
                    "steps": [s.name for s in pipeline.steps],
                    "outputs": pipeline.output,
                }
            )
        status, body = await gateway.forwarder.metadata(name)
        if status != 200:
            raise GatewayError(503, f"model {name}: MLServer has no metadata ({status})")
        return json_response(body)

    # -- beyond the protocol ---------------------------------------------------------------

    async def metrics(self, request: Request) -> Response:
        return Response(
            generate_latest(self.gateway.metrics.registry),
            content_type=CONTENT_TYPE_LATEST.encode(),
        )

    async def openapi(self, request: Request) -> Response:
        return Response(OPENAPI_PATH.read_bytes(), content_type=b"application/yaml")

    async def inspect(self, request: Request) -> Response:
        try:
            wait_s = float(request.query("wait", "0"))
        except ValueError:
            raise GatewayError(400, "'wait' must be a number of seconds") from None
        if not wait_s >= 0:  # also NaN
            raise GatewayError(400, "'wait' must be a number of seconds, at least 0")
        return json_response(
            await self.gateway.inspect(request.params["reference"], min(wait_s, 60.0))
        )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the caller's event loop: the caller owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class RestServer:
    """The REST front on a socket from `bind_socket` (bound early, so that a taken port is
    known before MLServer starts)."""

    def __init__(self, gateway: Gateway, listening: socket.socket):
        self._socket = listening
        config = uvicorn.Config(
            RestFront(gateway),
            http="httptools",
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=75,  # as aiohttp's and Envoy's keep-alive: clients reuse connections
            timeout_graceful_shutdown=10,  # in-flight requests get this long on stop
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[self._socket])
        )
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise RuntimeError("the REST server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is None:
            self._socket.close()
            return
        self._server.should_exit = True
        await self._task
        self._task = None


def bind_socket(host: str, port: int, flag: str = "--http-port") -> socket.socket:
    """A listening socket on host:port, or ListenError saying what to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        hint = (
            f"another process listens there; stop it or pick another port with {flag}"
            if e.errno == errno.EADDRINUSE
            else "check --host"
        )
        raise ListenError(f"cannot listen on {host}:{port} ({e.strerror}): {hint}") from e
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def check_port_free(host: str, port: int, flag: str) -> None:
    """ListenError now, rather than a server failing to bind later (MLServer would first spend
    a minute loading models)."""
    if port:
        bind_socket(host, port, flag).close()
