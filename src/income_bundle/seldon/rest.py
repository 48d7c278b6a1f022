"""The gateway's REST front: a plain ASGI app on uvicorn with httptools, as MLServer serves.

The Open Inference Protocol's endpoints (routed by the `seldon-model` header),
inspect, metrics and the OpenAPI description. Every error is `{"error": "..."}`. No web framework:
on this project's 2-core machine aiohttp's server took about 0.35 ms a request more than uvicorn
with httptools, and Starlette's routing 0.1 ms more than this, out of a 1 ms budget per hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
import uvicorn
from prometheus_client.exposition import choose_encoder

from income_bundle.errors import BundleError, ServingError
from income_bundle.http_server import stall_bounded_protocol
from income_bundle.seldon import traced
from income_bundle.seldon.gateway import (
    INTERNAL_ERROR_MESSAGE,
    PIPELINE_SUFFIX,
    SELDON_MODEL_HEADER,
    Gateway,
)
from income_bundle.seldon.protocol import (
    BINARY_HEADER,
    LARGE_VALUES,
    MAX_MESSAGE_BYTES,
    InferRequest,
    check_rows,
    declared_shapes,
    decode_binary_body,
    encode_answer,
    off_loop,
    parse_json,
    values_in,
)
from income_bundle.v2.checks import REQUEST_ID_HEADER, check_request_id
from income_bundle.v2.seldon_mesh import ROUTE_HEADER

__all__ = [
    "BODY_READ_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "OPENAPI_PATH",
    "ListenError",
    "RestFront",
    "RestServer",
    "bind_socket",
    "check_port_free",
]

log = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
MAX_BODY_BYTES = MAX_MESSAGE_BYTES
# A client that declares a body and stops sending holds a connection and a task: 408 after this
# long without a byte (Envoy's stream idle timeout in seldon-mesh is longer; ours is the bound).
BODY_READ_TIMEOUT_S = 30.0
# Bodies past this size are parsed on a worker thread: decoding megabytes of JSON on the event
# loop would delay every other request.
_PARSE_INLINE_BYTES = 1 << 20
# Errors that can leave part of the body on the connection: it is closed after the answer.
_BODY_LEFT_UNREAD = {408, 413}
# Envoy's default limit on a request's headers (max_request_headers_kb: 60), which seldon-mesh
# keeps (scheduler/pkg/envoy/xdscache/resource.go, v2.10.2, sets no other): Envoy answers 431.
MAX_HEADER_BYTES = 60 * 1024
_REQUEST_ID = REQUEST_ID_HEADER.encode()
_BINARY_HEADER = BINARY_HEADER.encode()


class ListenError(BundleError):
    """The gateway cannot listen where it was told to (most often: the port is taken)."""


class _MethodNotAllowedError(ServingError):
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
    body_timeout_s: float = BODY_READ_TIMEOUT_S

    def query(self, name: str, default: str) -> str:
        values = parse_qs(self.query_string.decode("latin-1")).get(name)
        return values[0] if values else default

    async def body(self) -> bytes:
        """The whole body; ServingError(413) past MAX_BODY_BYTES."""
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise _too_large()
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(self.receive(), self.body_timeout_s)
            except TimeoutError:
                raise ServingError(
                    408,
                    f"the body stopped arriving ({size} bytes read, none for "
                    f"{self.body_timeout_s:g} s)",
                ) from None
            if message["type"] == "http.disconnect":
                raise ServingError(400, "the client went away before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _too_large()
            parts.append(chunk)
            if not message.get("more_body"):
                return parts[0] if len(parts) == 1 else b"".join(parts)


async def _off_loop_if_large(raw: bytes, decode: Callable[..., Any], *args: Any) -> Any:
    """`decode(*args)`, on a worker thread when `raw` is large."""
    if len(raw) > _PARSE_INLINE_BYTES:
        return await asyncio.to_thread(decode, *args)
    return decode(*args)


def _too_large() -> ServingError:
    return ServingError(413, f"the request body is larger than {MAX_BODY_BYTES >> 20} MiB")


@dataclass
class Response:
    body: bytes
    status: int = 200
    content_type: bytes = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status)


def error_response(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status)


Handler = Callable[[Request], Awaitable[Response]]


class RestFront:
    """The ASGI app: routes by method and path, answers every error as `{"error": ...}`."""

    def __init__(self, gateway: Gateway, body_timeout_s: float = BODY_READ_TIMEOUT_S):
        self.gateway = gateway
        self.body_timeout_s = body_timeout_s
        segment = r"([^/]+)"
        table: list[tuple[str, str, tuple[str, ...], Handler]] = [
            ("POST", f"/v2/models/{segment}/infer", ("name",), self.infer),
            ("POST", f"/v2/models/{segment}/versions/{segment}/infer", ("name", "v"), self.infer),
            ("POST", f"/v2/pipelines/{segment}/infer", ("name",), self.pipeline_infer),
            ("GET", f"/v2/pipelines/{segment}/ready", ("name",), self.pipeline_ready),
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
                raise ServingError(
                    431,
                    f"the request headers are {size} bytes; at most {MAX_HEADER_BYTES} "
                    "(Envoy's limit in seldon-mesh)",
                )
            request = Request(
                method, path, params, headers, scope["query_string"], receive, self.body_timeout_s
            )
            response = await handler(request)
        except ServingError as e:
            response = error_response(e.status, e.message)
            if e.status in _BODY_LEFT_UNREAD:  # the rest of it would be read as the next request
                response.headers.append((b"connection", b"close"))
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
        raise ServingError(404, f"{method} {path}: Not Found")

    # -- the Open Inference Protocol -------------------------------------------------------

    async def infer(self, request: Request) -> Response:
        """Routed by the `seldon-model` header; without it (and without `x-seldon-route`), by
        the model named in the path, as seldon-mesh's Lua filter adds the header
        (envoy/xdscache/resource.go `createHeaderFilter`)."""
        target = request.headers.get(SELDON_MODEL_HEADER)
        if not target and not request.headers.get(ROUTE_HEADER):
            target = request.params["name"]
        return await self._infer(request, target)

    async def pipeline_infer(self, request: Request) -> Response:
        """Seldon's pipeline gateway path (an explainer with `pipelineRef` calls it): the
        seldon-model header still wins, as there; without one, the path names the pipeline."""
        name = request.params["name"].removesuffix(PIPELINE_SUFFIX)
        target = request.headers.get(SELDON_MODEL_HEADER) or f"{name}{PIPELINE_SUFFIX}"
        return await self._infer(request, target)

    @traced.rest_infer
    async def _infer(self, request: Request, target: str | None) -> Response:
        header_id = check_request_id(
            request.headers.get(REQUEST_ID_HEADER), f"the '{REQUEST_ID_HEADER}' header"
        )
        raw = await request.body()
        binary_length = request.headers.get(BINARY_HEADER)
        max_rows = self.gateway.max_rows(target)
        if binary_length is None:
            body = await _off_loop_if_large(raw, parse_json, raw)
            if isinstance(body, dict):
                check_rows(declared_shapes(body.get("inputs")), max_rows)
            call = InferRequest(target, "rest", header_id, body=body, raw=raw)
        else:  # MLServer cannot take these: decoded here, forwarded as JSON
            body, inputs = await _off_loop_if_large(
                raw, decode_binary_body, raw, binary_length, max_rows
            )
            call = InferRequest(target, "rest", header_id, body=body, inputs=inputs)
        result = await self.gateway.infer(call)
        headers = [(_REQUEST_ID, result.header_id.encode())] if result.header_id else []
        headers += [(k.encode(), v.encode()) for k, v in result.headers]
        if result.raw is not None and not call.wants_binary():
            return Response(result.raw, headers=headers)  # MLServer's answer as it came
        large = values_in(result.outputs) > LARGE_VALUES
        answer, json_length = await off_loop(large, encode_answer, result, call)
        if json_length is None:
            return Response(answer, headers=headers)
        headers.append((_BINARY_HEADER, b"%d" % json_length))
        return Response(answer, content_type=b"application/octet-stream", headers=headers)

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
        target = request.headers.get(SELDON_MODEL_HEADER) or request.params["name"]
        return json_response(await self.gateway.metadata(target))

    async def pipeline_ready(self, request: Request) -> Response:
        """As Seldon's pipeline gateway: 200 ready, 404 unknown, 424 (Failed Dependency) not
        ready; with a JSON body here."""
        name = request.params["name"].removesuffix(PIPELINE_SUFFIX)
        ok = await self.gateway.ready(f"{name}{PIPELINE_SUFFIX}")
        return json_response({"name": name, "ready": ok}, status=200 if ok else 424)

    # -- beyond the protocol ---------------------------------------------------------------

    async def metrics(self, request: Request) -> Response:
        # prometheus_client's own negotiation: OpenMetrics (which carries the latency
        # histograms' trace exemplars) when the scraper asks for it, else the text format.
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(self.gateway.metrics.registry), content_type=content_type.encode())

    async def openapi(self, request: Request) -> Response:
        return Response(OPENAPI_PATH.read_bytes(), content_type=b"application/yaml")

    async def inspect(self, request: Request) -> Response:
        try:
            wait_s = float(request.query("wait", "0"))
        except ValueError:
            raise ServingError(400, "'wait' must be a number of seconds") from None
        if not wait_s >= 0:  # also NaN
            raise ServingError(400, "'wait' must be a number of seconds, at least 0")
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

    def __init__(
        self,
        gateway: Gateway,
        listening: socket.socket,
        body_timeout_s: float = BODY_READ_TIMEOUT_S,
        stall_timeout_s: float | None = None,
    ):
        self._socket = listening
        # httptools, with a bound on stalls from the first byte to the headers' end (and a
        # body's, past the front's own 408: by default a second later): uvicorn has none.
        stall_timeout_s = body_timeout_s + 1.0 if stall_timeout_s is None else stall_timeout_s
        config = uvicorn.Config(
            RestFront(gateway, body_timeout_s),
            http=stall_bounded_protocol(stall_timeout_s),
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
