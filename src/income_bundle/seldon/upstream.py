"""A small keep-alive HTTP/1.1 client for the gateway's one upstream, MLServer.

Answers are parsed by llhttp (httptools' `HttpResponseParser`, the parser uvicorn serves MLServer
with), in its strict mode: it decides where an answer ends, so sizes like `+10`, `0x2` or `1_0`, a
missing CRLF after chunk data, or both framings at once are protocol errors, not guesses.
Around it, this module keeps what made it faster than aiohttp's client on this project's 2-core
machine (0.3-0.55 ms a call, against a 1 ms budget per gateway hop): one pool of keep-alive
connections, one request at a time per connection, idle connections reused newest first, and a
request that meets a connection the server closed while it sat idle is sent once more on a new one.

What it refuses, so one request can never be read as two:
- a method, path or header that would change the request's framing (CR, LF, NUL, other control
  characters, spaces in the path, non-tokens as names) is refused before anything is sent;
- a connection that received a byte past the end of its answer is closed, never reused;
- an answer whose head passes `MAX_HEAD_BYTES` or whose body passes `max_body_bytes` fails and its
  connection is closed.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import httptools

from income_bundle.errors import ServingError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEAD_BYTES",
    "RequestRefusedError",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamResponse",
]

MAX_HEAD_BYTES = 64 * 1024
# The same bound as the REST front puts on requests (rest.MAX_BODY_BYTES).
MAX_BODY_BYTES = 64 * 1024 * 1024

# RFC 9110 5.6.2 token (methods and field names); field values: visible ASCII, space and tab
# (RFC 9110 5.5, without obs-text); the request target: visible ASCII only (RFC 9112 3.2). Nothing
# else is sent, so CR, LF and NUL can never reach the wire.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")
_TARGET = re.compile(r"/[\x21-\x7e]*")
# Answers to these carry no body whatever their headers say; llhttp cannot be told (httptools
# has no "skip body" hook), so the client does not send them.
_UNSUPPORTED_METHODS = {"HEAD", "CONNECT"}
_EXPECTED = {
    "method": "an HTTP token",
    "path": "visible ASCII starting with '/' (no spaces or control characters)",
    "header name": "an HTTP token",
    "header value": "visible ASCII, spaces and tabs (no CR, LF, NUL or other control characters)",
}


class UpstreamError(ServingError):
    """The upstream could not be reached or closed the connection (503 Service Unavailable);
    the message has the details, for the log."""

    STATUS = 503

    def __init__(self, message: str):
        super().__init__(self.STATUS, message)


class UpstreamProtocolError(UpstreamError):
    """The upstream answered something that is not a well-formed HTTP/1.1 answer within bounds
    (502 Bad Gateway)."""

    STATUS = 502


class RequestRefusedError(ServingError):
    """The request itself cannot be sent as given: it would not be one well-formed request (400)."""

    def __init__(self, message: str):
        super().__init__(400, message)


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


class _StaleConnectionError(UpstreamError):
    """A reused connection closed before any byte of the answer: safe to send again."""


class _BytesPastTheAnswerError(Exception):
    """A byte came after the answer ended: stop parsing, the connection is not trustworthy."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; llhttp parses the answer to the request in flight."""

    def __init__(self, max_body_bytes: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self._max_body_bytes = max_body_bytes
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[UpstreamResponse] | None = None
        self._received = False
        self._head_bytes = 0  # raw bytes fed while the head is incomplete
        self._header_bytes = 0  # names and values llhttp handed over
        self._headers_done = False
        self._until_close = False
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_bytes = 0

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._received = True
        if self._answer is None:  # bytes nobody asked for
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, _BytesPastTheAnswerError):
                self.close()  # the answer before them was whole and has been delivered
                return
            self._fail(cause if isinstance(cause, UpstreamError) else self._malformed(e))
            return
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            self._fail(self._malformed(e))
            return
        if not self._headers_done and self._answer is not None:
            # llhttp bounds nothing itself; until the head ends, every byte fed belongs to it.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(self._head_too_long())

    def eof_received(self) -> bool:
        if self._answer is not None and self._headers_done and self._until_close:
            self._finish()  # a body delimited by the end of the connection (RFC 9112 6.3)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._answer is not None and not self._answer.done():
            kind = UpstreamError if self._received else _StaleConnectionError
            self._fail(kind(f"the server closed the connection ({exc or 'end of stream'})"))

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._answer is None:
            raise _BytesPastTheAnswerError
        self._head_bytes = self._header_bytes = 0
        self._headers_done = False
        self._headers = {}
        self._body = []
        self._body_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted here too: a whole head can arrive in one read, before data_received counts.
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEAD_BYTES:
            raise self._head_too_long()
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        length = self._headers.get("content-length")
        # llhttp has checked it is digits only, and that it is not combined with chunked.
        if length is not None and int(length) > self._max_body_bytes:
            raise self._too_large()
        self._until_close = length is None and "transfer-encoding" not in self._headers

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body_bytes:
            raise self._too_large()
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (RFC 9110 15.2): the final one follows
        if not self._parser.should_keep_alive():
            self.reusable = False
        self._finish()

    # -- requests ----------------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[UpstreamResponse]:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._received = False
        self._headers_done = False
        self._head_bytes = self._header_bytes = 0
        self.transport.write(request)
        return self._answer

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(error)
        self.close()

    def _finish(self) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            status = self._parser.get_status_code()
            answer.set_result(UpstreamResponse(status, self._headers, b"".join(self._body)))

    @staticmethod
    def _head_too_long() -> UpstreamProtocolError:
        return UpstreamProtocolError(f"the answer's header is longer than {MAX_HEAD_BYTES} bytes")

    def _too_large(self) -> UpstreamProtocolError:
        return UpstreamProtocolError(
            f"the answer's body is larger than {self._max_body_bytes} bytes"
        )

    @staticmethod
    def _malformed(error: Exception) -> UpstreamProtocolError:
        return UpstreamProtocolError(f"malformed answer ({type(error).__name__}: {error})")


def _refused(kind: str, value: str) -> RequestRefusedError:
    return RequestRefusedError(
        f"refused to send {kind} {value[:80]!r}: it must be {_EXPECTED[kind]}"
    )


class UpstreamClient:
    """Requests to one `http://host:port` origin over a pool of keep-alive connections."""

    def __init__(self, base_url: str, limit: int = 64, max_body_bytes: int = MAX_BODY_BYTES):
        scheme, _, rest = base_url.partition("://")
        if scheme != "http" or not rest:
            raise ValueError(f"expected http://host:port, got {base_url!r}")
        hostport = rest.split("/", 1)[0]
        if _TARGET.fullmatch("/" + hostport) is None:
            raise ValueError(f"expected http://host:port, got {base_url!r}")
        host, _, port = hostport.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port) if port.isdigit() else 80
        self.max_body_bytes = max_body_bytes
        self._host = hostport  # the Host header
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)
        self._closed = False

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> UpstreamResponse:
        """Send one request; UpstreamError when the server is unreachable or answers garbage,
        RequestRefusedError (before anything is sent) when the request is not well-formed.
        Cancelling (a timeout) closes the connection, since its answer may still come."""
        if self._closed:
            raise UpstreamError("the client is closed")
        request = self._serialize(method, path, body, headers)
        async with self._slots:
            for _ in range(2):
                connection, reused = await self._connection()
                try:
                    response = await connection.send(request)
                except _StaleConnectionError:
                    connection.close()
                    if reused:
                        continue
                    raise
                except BaseException:
                    connection.close()
                    raise
                if connection.reusable and not self._closed:
                    self._idle.append(connection)
                else:
                    connection.close()
                return response
        raise UpstreamError("the server closed the connection twice before answering")

    def _serialize(
        self, method: str, path: str, body: bytes, headers: dict[str, str] | None
    ) -> bytes:
        if _TOKEN.fullmatch(method) is None:
            raise _refused("method", method)
        if method in _UNSUPPORTED_METHODS:
            raise RequestRefusedError(f"refused to send method {method}: its answer has no body")
        if _TARGET.fullmatch(path) is None:
            raise _refused("path", path)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\nContent-Length: {len(body)}\r\n"
        for name, value in (headers or {}).items():
            if _TOKEN.fullmatch(name) is None:
                raise _refused("header name", name)
            if _FIELD_VALUE.fullmatch(value) is None:
                raise _refused("header value", value)
            head += f"{name}: {value}\r\n"
        return (head + "\r\n").encode("ascii") + body

    async def _connection(self) -> tuple[_Connection, bool]:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and connection.reusable:
                return connection, True
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self.max_body_bytes), self.host, self.port
            )
        except OSError as e:
            raise UpstreamError(f"cannot connect to {self.host}:{self.port} ({e})") from e
        return connection, False

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
