"""A small keep-alive HTTP/1.1 client for the gateway's one upstream, MLServer.

On this project's 2-core machine aiohttp's client cost 0.3-0.55 ms a call more than this one
(pass-through proxies built both ways, alternated), against a 1 ms budget per gateway hop.
It speaks what MLServer's uvicorn answers:
`Content-Length` or chunked bodies, keep-alive unless the server says `Connection: close`.
One request at a time per connection; idle connections are reused newest first, and a request
that meets a connection the server closed while it sat idle is sent once more on a new one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

__all__ = ["UpstreamClient", "UpstreamError", "UpstreamResponse"]

MAX_HEAD_BYTES = 64 * 1024


class UpstreamError(ConnectionError):
    """The upstream could not be reached, closed the connection, or answered garbage."""


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


class _StaleConnectionError(UpstreamError):
    """A reused connection closed before any byte of the answer: safe to send again."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; parses the answer to the request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self._buffer = bytearray()
        self._answer: asyncio.Future[UpstreamResponse] | None = None
        self._received = False
        self._status = 0
        self._headers: dict[str, str] = {}
        self._length: int | None = None  # None: until close; -1: chunked
        self._in_body = False
        self._chunks = bytearray()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._received = True
        self._buffer += data
        if self._answer is None:  # bytes nobody asked for: the connection is not trustworthy
            self.reusable = False
            return
        try:
            self._parse()
        except UpstreamError as e:
            self._fail(e)
            self.close()

    def eof_received(self) -> bool:
        if self._answer is not None and self._in_body and self._length is None:
            self._finish(bytes(self._buffer))  # a body delimited by the end of the connection
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._answer is not None and not self._answer.done():
            kind = UpstreamError if self._received else _StaleConnectionError
            self._fail(kind(f"the server closed the connection ({exc or 'end of stream'})"))

    # -- requests ----------------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[UpstreamResponse]:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._received = False
        self._in_body = False
        self._chunks.clear()
        self.transport.write(request)
        return self._answer

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        self._answer = None

    def _finish(self, body: bytes) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_result(UpstreamResponse(self._status, self._headers, body))

    def _parse(self) -> None:
        if not self._in_body:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise UpstreamError("the answer's header is too long")
                return
            self._read_head(bytes(self._buffer[:end]))
            del self._buffer[: end + 4]
            self._in_body = True
        if self._length is None:
            return  # read until the server closes (eof_received)
        if self._length >= 0:
            if len(self._buffer) >= self._length:
                body = bytes(self._buffer[: self._length])
                del self._buffer[: self._length]
                if self._buffer:
                    self.reusable = False
                self._finish(body)
            return
        self._parse_chunks()

    def _read_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise UpstreamError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
        self._status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise UpstreamError(f"malformed header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        self._headers = headers
        if headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0":
            self.reusable = False
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._length = -1
        elif "content-length" in headers:
            try:
                self._length = int(headers["content-length"])
            except ValueError:
                raise UpstreamError("the answer's Content-Length is not a number") from None
            if self._length < 0:
                raise UpstreamError("the answer's Content-Length is negative")
        elif self._status in (204, 304) or 100 <= self._status < 200:
            self._length = 0
        else:
            self._length = None
            self.reusable = False

    def _parse_chunks(self) -> None:
        while True:
            end = self._buffer.find(b"\r\n")
            if end < 0:
                return
            size_text = bytes(self._buffer[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise UpstreamError(f"malformed chunk size {size_text[:20]!r}") from None
            if size == 0:  # the last chunk, then optional trailers and an empty line
                stop = self._buffer.find(b"\r\n\r\n", end)
                if stop >= 0:
                    del self._buffer[: stop + 4]
                    self._finish(bytes(self._chunks))
                return
            if len(self._buffer) < end + 2 + size + 2:
                return
            self._chunks += self._buffer[end + 2 : end + 2 + size]
            del self._buffer[: end + 2 + size + 2]


class UpstreamClient:
    """Requests to one `http://host:port` origin over a pool of keep-alive connections."""

    def __init__(self, base_url: str, limit: int = 64):
        scheme, _, rest = base_url.partition("://")
        if scheme != "http" or not rest:
            raise ValueError(f"expected http://host:port, got {base_url!r}")
        hostport = rest.split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port) if port.isdigit() else 80
        self._host_header = hostport.encode("latin-1")
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)
        self._closed = False

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> UpstreamResponse:
        """Send one request; UpstreamError when the server is unreachable or answers garbage.
        Cancelling (a timeout) closes the connection, since its answer may still come."""
        if self._closed:
            raise UpstreamError("the client is closed")
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode("latin-1")
        request = (
            b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n"
            % (method.encode(), path.encode(), self._host_header, len(body), extra)
        ) + body
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

    async def _connection(self) -> tuple[_Connection, bool]:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and connection.reusable:
                return connection, True
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(_Connection, self.host, self.port)
        except OSError as e:
            raise UpstreamError(f"cannot connect to {self.host}:{self.port} ({e})") from e
        return connection, False

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
