"""uvicorn's httptools protocol with a bound on how long a request may stall while it arrives.

uvicorn 0.54 has no such bound: it arms its keep-alive timer only after a response and cancels it
on the first byte of the next request, so a client that connects and sends nothing, stops
partway through its headers, or declares a body and stops sending holds the connection (and, once
the headers are in, a task) for as long as it likes. Here every request must make progress: the
connection is closed when `stall_timeout_s` pass without a byte while a request is incomplete
(from the connection's start, or the next request's first byte, to the end of its body).
Reading paused by uvicorn's own flow control (the application is slow to take the body) is not
the client's stall and is not counted. A stall before the headers ended is answered 408 first.

Both HTTP servers of the bundle use it: the gateway's REST front and the monitor.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["STALL_TIMEOUT_S", "stall_bounded_protocol"]

STALL_TIMEOUT_S = 30.0
_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


def stall_bounded_protocol(stall_timeout_s: float = STALL_TIMEOUT_S) -> type[HttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` bounding request stalls."""

    class StallBoundedProtocol(HttpToolsProtocol):
        _stall: asyncio.TimerHandle | None = None
        _message_done = False
        _headers_done = False

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # a client that connects and sends nothing

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._message_done:
                self._arm()  # progress: the bound starts again
            super().data_received(data)

        def on_message_begin(self) -> None:
            self._message_done = self._headers_done = False
            self._arm()
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._headers_done = True
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._message_done = True
            self._disarm()
            super().on_message_complete()

        def _arm(self) -> None:
            self._disarm()
            self._stall = self.loop.call_later(stall_timeout_s, self._stalled)

        def _disarm(self) -> None:
            if self._stall is not None:
                self._stall.cancel()
                self._stall = None

        def _stalled(self) -> None:
            self._stall = None
            if self.transport.is_closing():
                return
            if self.flow is not None and self.flow.read_paused:
                self._arm()  # waiting for the application, not for the client
                return
            if not self._headers_done:
                body = b'{"error": "the request stopped arriving (nothing for %g s)"}' % (
                    stall_timeout_s
                )
                self.transport.write(_TIMEOUT_ANSWER % (len(body), body))
            self.transport.close()

    return StallBoundedProtocol
