"""The monitor's API is bounded: a body over the limit is a 413 (before reading it when its
Content-Length says so, at the limit when it is chunked), and a client that declares a body and
stops sending is answered 408 and cut off, on raw sockets against a real uvicorn."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest

from income_bundle.monitoring.service import Monitor
from income_bundle.monitoring.store import SqliteStore
from tests.support.monitor_service import INFO, TOKEN, Served

SERVICE = "income"
LIMIT = 64 << 10
READ_TIMEOUT_S = 1.0


@pytest.fixture
def served(tmp_path):
    store = SqliteStore(tmp_path / "records.sqlite")
    served = Served(
        Monitor(store, {SERVICE: INFO}), max_body_bytes=LIMIT, read_timeout_s=READ_TIMEOUT_S
    )
    yield served
    served.stop()
    store.close()


def connect(served: Served) -> socket.socket:
    host, port = served.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def answer(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The whole response, read until the server closes the connection."""
    data = b""
    # A server that closes with part of the request unread resets the connection after answering.
    with contextlib.suppress(ConnectionResetError):
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: monitor", f"Authorization: Bearer {TOKEN}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("path", [f"/v2/pipelines/{SERVICE}/feedback", "/cloudevents"])
def test_a_declared_body_over_the_limit_is_413_before_it_is_sent(served, path):
    with connect(served) as connection:
        connection.sendall(
            head(path, "Content-Type: application/json", f"Content-Length: {120 << 20}")
        )
        status, headers, body = answer(connection)  # answered without a byte of the body sent
    assert status == 413 and str(LIMIT) in json.loads(body)["error"]
    assert headers["connection"] == "close"


def test_a_chunked_body_is_cut_off_at_the_limit(served):
    with connect(served) as connection:
        connection.sendall(head(f"/v2/pipelines/{SERVICE}/feedback", "Transfer-Encoding: chunked"))
        chunk = b"x" * (16 << 10)
        for _ in range(LIMIT // len(chunk) + 1):  # one chunk past the limit, never the last
            connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, _, body = answer(connection)
    assert status == 413, body


def test_a_client_that_stops_sending_is_answered_408_within_the_read_timeout(served):
    with connect(served) as connection:
        connection.sendall(
            head(
                f"/v2/pipelines/{SERVICE}/feedback",
                "Content-Type: application/json",
                "Content-Length: 100",
            )
            + b'{"id": '
        )
        started = time.monotonic()
        status, headers, body = answer(connection)
        waited = time.monotonic() - started
    assert status == 408 and "did not arrive" in json.loads(body)["error"]
    assert headers["connection"] == "close"
    assert READ_TIMEOUT_S * 0.9 <= waited < READ_TIMEOUT_S + 5


def test_a_content_length_that_is_not_a_size_is_400(served):
    with connect(served) as connection:
        connection.sendall(head("/cloudevents", "Content-Length: -5"))
        status, _, body = answer(connection)
    assert status == 400, body


def test_a_body_within_the_limit_is_read(served):
    status, body = served.call(
        "POST", f"/v2/pipelines/{SERVICE}/feedback", {"id": "x", "truth": [0]}
    )
    assert status == 404, body  # read and parsed: there is no request x
