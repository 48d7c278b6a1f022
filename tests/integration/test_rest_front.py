"""The gateway's REST front at the HTTP level: routing, methods, bodies, connections, ports.

Request-content mistakes are in test_gateway_robustness.py; here is what a client can get wrong
(or merely do differently) in HTTP itself, against the real `income-bundle serve`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.v2_bodies import ROW, tensor

BODY = json.dumps({"inputs": [tensor(ROW, [1, 12])]}).encode()


def connect(seldon) -> http.client.HTTPConnection:
    host, port = seldon.http_url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def call(seldon, method, path, body=None, headers=None, connection=None):
    conn = connection or connect(seldon)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    raw = response.read()
    if connection is None:
        conn.close()
    return response, raw


@pytest.mark.parametrize(
    ("method", "path", "status", "phrase"),
    [
        ("GET", "/nope", 404, "GET /nope: Not Found"),
        ("GET", "/v2/", 404, "Not Found"),
        ("GET", "/v2/models/income/infer/extra", 404, "Not Found"),
        ("POST", "/v2/health/live", 405, "allowed: GET,HEAD"),
        ("GET", "/v2/models/income/infer", 405, "allowed: POST"),
        ("DELETE", "/v2/models/income", 405, "allowed: GET,HEAD"),
        ("PUT", "/v2/pipelines/income-production/infer", 405, "allowed: POST"),
        ("POST", "/v2/pipelines/income-production/feedback", 404, "Not Found"),  # the monitor's
        ("GET", "/inspect/income-production.income-drift.outputs?wait=-1", 400, "at least 0"),
        ("GET", "/inspect/income-production.income-drift.outputs?wait=nan", 400, "at least 0"),
        ("GET", "/inspect/income-production.income-drift.outputs?wait=soon", 400, "'wait'"),
        ("GET", "/inspect/nope", 404, "no such pipeline"),
    ],
)
def test_routing_errors_are_json(seldon, method, path, status, phrase):
    response, raw = call(seldon, method, path)
    assert response.status == status, raw
    assert response.getheader("content-type") == "application/json"
    answer = json.loads(raw)
    assert set(answer) == {"error"} and phrase in answer["error"]
    if status == 405:
        assert response.getheader("allow") == phrase.split(": ")[1]


def test_head_answers_headers_only(seldon):
    response, raw = call(seldon, "HEAD", "/v2/health/live")
    assert response.status == 200 and raw == b""
    assert int(response.getheader("content-length")) == len(b'{"live":true}')


def test_percent_encoded_path_and_version_route(seldon):
    headers = {"seldon-model": "income", "content-type": "application/json"}
    for path in ("/v2/models/in%63ome/infer", "/v2/models/income/versions/1/infer"):
        response, raw = call(seldon, "POST", path, BODY, headers)
        assert response.status == 200, raw
        assert json.loads(raw)["model_name"] == "income_1"  # as the agent loads it


def test_many_requests_on_one_keep_alive_connection(seldon):
    conn = connect(seldon)
    headers = {"seldon-model": "income", "content-type": "application/json"}
    for i in range(50):
        response, raw = call(seldon, "POST", "/v2/models/m/infer", BODY, headers, conn)
        assert response.status == 200, raw
        if i == 0:
            sock = conn.sock
    assert conn.sock is sock  # never reconnected
    conn.close()


def test_chunked_and_expect_continue_bodies(seldon):
    conn = connect(seldon)
    conn.request(
        "POST",
        "/v2/models/m/infer",
        body=iter([BODY[:10], BODY[10:]]),
        headers={"seldon-model": "income-v1.pipeline", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert response.status == 200, response.read()
    response.read()
    conn.close()
    with socket.create_connection(seldon.http_url.removeprefix("http://").split(":")) as sock:
        sock.settimeout(10)
        sock.sendall(
            b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nseldon-model: income\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(BODY)
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(BODY)
        answer = b""
        while b'"outputs"' not in answer:
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")


def test_oversized_body_is_refused_before_it_is_read(seldon):
    with socket.create_connection(seldon.http_url.removeprefix("http://").split(":")) as sock:
        sock.settimeout(10)
        sock.sendall(
            b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nseldon-model: income\r\n"
            b"Content-Length: %d\r\n\r\n" % (65 * 1024 * 1024)
        )
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"larger than 64 MiB" in answer


def test_garbage_on_the_wire_leaves_the_gateway_serving(seldon):
    junk = [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET / HTTP/9.9\r\n\r\n", b"\r\n" * 3]
    for data in junk:
        with socket.create_connection(seldon.http_url.removeprefix("http://").split(":")) as sock:
            sock.settimeout(10)
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            try:
                answer = sock.recv(1024)
            except ConnectionResetError:
                answer = b""
            assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:200]
    response, raw = call(seldon, "GET", "/v2/health/ready")
    assert response.status == 200, raw


def test_request_id_is_echoed_or_made(seldon):
    headers = {"seldon-model": "income-production.pipeline", "content-type": "application/json"}
    response, _ = call(
        seldon, "POST", "/v2/models/m/infer", BODY, {**headers, "x-request-id": "abc-1"}
    )
    # The pipeline gateway's Kafka key, then the id (http.client joins repeated headers).
    assert response.getheader("x-request-id") == "0.income-production.abc-1, abc-1"
    response, raw = call(seldon, "POST", "/v2/models/m/infer", BODY, headers)
    key, made = response.getheader("x-request-id").split(", ")
    assert re.fullmatch("[0-9a-v]{20}", made), made  # an xid, as util/ids.go makes
    assert key == f"0.income-production.{made}" and "id" not in json.loads(raw)


def test_no_server_banner(seldon):
    response, _ = call(seldon, "GET", "/v2/health/live")
    assert response.getheader("server") is None


def _serve(*args: str) -> subprocess.Popen:
    cli = str(Path(sys.executable).with_name("income-bundle"))
    return subprocess.Popen(
        [cli, "serve", "--no-state", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("flag", ["--http-port", "--grpc-port", "--mlserver-metrics-port"])
def test_taken_port_is_named_before_mlserver_starts(training_report, flag):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        ports = {"--http-port": "0", "--grpc-port": "0", "--mlserver-metrics-port": "0"}
        ports[flag] = str(port)
        process = _serve(*(item for pair in ports.items() for item in pair))
        output, _ = process.communicate(timeout=120)
    assert process.returncode == 1, output
    assert f"127.0.0.1:{port}" in output and flag in output and "another process" in output
    assert "starting MLServer" not in output  # refused before, not after a minute of loading


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_sigterm_while_mlserver_starts_leaves_nothing_running(training_report):
    process = _serve("--http-port", "0", "--grpc-port", "0", "--mlserver-metrics-port", "0")
    assert process.stdout is not None
    for line in process.stdout:  # gated on serve's own word that MLServer is starting
        if "starting MLServer" in line:
            break
    deadline = time.monotonic() + 120
    children: list[int] = []
    while time.monotonic() < deadline and not children:
        children = _children(process.pid)
        time.sleep(0.2)
    assert children, "MLServer was never started"
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode != 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(c) for c in children):
        time.sleep(0.2)
    leaked = [c for c in children if _alive(c)]
    for pid in leaked:  # leave no stray MLServer behind, even when this fails
        os.killpg(pid, signal.SIGKILL)
    assert not leaked, "MLServer outlived the serve process"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return state != "Z"
