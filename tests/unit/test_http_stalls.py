"""Every HTTP server of the bundle cuts off a client that stalls: the monitor's API as `serve`
runs it (the gateway's REST front is in test_gateway_bounds.py). uvicorn alone never times out a
request that is still arriving (income_bundle.http_server); raw sockets, polled until the server
closes, with a deadline."""

from __future__ import annotations

import asyncio
import socket
import time

from income_bundle.monitoring.service import Monitor
from income_bundle.monitoring.store import SqliteStore
from income_bundle.seldon.local import _start_monitor_api
from tests.support.monitor_service import INFO, TOKEN

READ_TIMEOUT_S = 0.5  # the connection is cut after 1.5 s without a byte


def _closed_within(port: int, sent: bytes, deadline_s: float) -> tuple[bytes, float]:
    """Send `sent` and stall; read until the server closes: (what came back, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=deadline_s) as client:
        client.sendall(sent)
        answer = b""
        try:
            while chunk := client.recv(65536):
                answer += chunk
        except TimeoutError:
            raise AssertionError(f"still open after {deadline_s} s; got {answer!r}") from None
        except ConnectionResetError:  # closed with part of a request unread
            pass
    return answer, time.monotonic() - started


def _against_the_monitor(tmp_path, stalls: list[bytes]) -> list[tuple[bytes, float]]:
    store = SqliteStore(tmp_path / "records.sqlite")
    monitor = Monitor(store, {"income": INFO})
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]

    async def run():
        server, task = _start_monitor_api(monitor, TOKEN, listening, READ_TIMEOUT_S)
        while not server.started:  # uvicorn sets it once listening
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        try:
            return await asyncio.gather(
                *(asyncio.to_thread(_closed_within, port, sent, 10) for sent in stalls)
            )
        finally:
            server.should_exit = True
            await task

    try:
        return asyncio.run(run())
    finally:
        store.close()


def test_the_monitor_cuts_off_a_request_that_stalls_before_its_headers_end(tmp_path):
    stalls = [
        b"",  # connects and sends nothing
        b"POST /v2/pipelines/income/feedback HTTP/1.1\r\nHost: m\r\nAuthor",  # headers partway
    ]
    for answer, seconds in _against_the_monitor(tmp_path, stalls):
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert 1.4 < seconds < 8


def test_the_monitor_answers_a_body_that_stalls_with_408(tmp_path):
    sent = (
        b"POST /v2/pipelines/income/feedback HTTP/1.1\r\nHost: m\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\ncontent-type: application/json\r\n"
        b'content-length: 100\r\n\r\n{"id": "a'
    )
    ((answer, seconds),) = _against_the_monitor(tmp_path, [sent])
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert seconds < 8
