"""The gateway's HTTP client for MLServer, against a real uvicorn (what MLServer runs) and, for the
answers uvicorn never gives (garbage, a cut answer, silence), a scripted socket server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from income_bundle.seldon.upstream import (
    RequestRefusedError,
    UpstreamClient,
    UpstreamError,
    UpstreamProtocolError,
)
from tests.support.paths import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {"method": request.method, "path": request.url.path, "length": len(body)},
        headers={"x-peer-port": str(request.client.port)},
    )


async def _chunked(request: Request) -> StreamingResponse:
    async def parts():
        for i in range(5):
            yield f"part{i};".encode()

    return StreamingResponse(parts(), media_type="text/plain")


async def _closing(request: Request) -> JSONResponse:
    return JSONResponse({"bye": True}, headers={"connection": "close"})


@pytest.fixture(scope="module")
def uvicorn_url():
    """A real uvicorn (what MLServer runs)."""
    app = Starlette(
        routes=[
            Route("/echo/{rest:path}", _echo, methods=["GET", "POST"]),
            Route("/chunked", _chunked),
            Route("/closing", _closing),
        ]
    )
    # Listening before uvicorn starts: early connections wait in the backlog, nothing polls.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def run(coro):
    return asyncio.run(coro)


def test_requests_reuse_one_keep_alive_connection(uvicorn_url):
    async def main():
        client = UpstreamClient(uvicorn_url)
        ports = set()
        for i in range(30):
            response = await client.request("POST", f"/echo/{i}", b"x" * i, {"a": "b"})
            assert response.status == 200
            assert response.headers["content-type"] == "application/json"
            assert response.body == b'{"method":"POST","path":"/echo/%d","length":%d}' % (i, i)
            ports.add(response.headers["x-peer-port"])
        await client.close()
        return ports

    assert len(run(main())) == 1


def test_large_bodies_both_ways(uvicorn_url):
    async def main():
        client = UpstreamClient(uvicorn_url)
        response = await client.request("POST", "/echo/big", b"y" * 5_000_000)
        await client.close()
        return response

    response = run(main())
    assert response.status == 200 and b'"length":5000000' in response.body


def test_chunked_answer_is_assembled(uvicorn_url):
    async def main():
        client = UpstreamClient(uvicorn_url)
        first = await client.request("GET", "/chunked")
        second = await client.request("GET", "/echo/after")  # the connection is still in step
        await client.close()
        return first, second

    first, second = run(main())
    assert first.headers.get("transfer-encoding") == "chunked"
    assert first.body == b"part0;part1;part2;part3;part4;"
    assert second.status == 200 and b"/echo/after" in second.body


def test_connection_close_answer_is_not_reused(uvicorn_url):
    async def main():
        client = UpstreamClient(uvicorn_url)
        await client.request("GET", "/closing")
        idle_after_close = len(client._idle)
        await client.request("GET", "/echo/x")
        idle_after_keep_alive = len(client._idle)
        await client.close()
        return idle_after_close, idle_after_keep_alive

    assert run(main()) == (0, 1)


def test_concurrency_is_capped_by_the_limit(uvicorn_url):
    async def main():
        client = UpstreamClient(uvicorn_url, limit=3)
        answers = await asyncio.gather(*(client.request("GET", f"/echo/{i}") for i in range(20)))
        await client.close()
        return answers

    answers = run(main())
    assert all(a.status == 200 for a in answers)
    assert len({a.headers["x-peer-port"] for a in answers}) <= 3


def test_unreachable_server_is_an_upstream_error():
    """A refused connection fails the request (no retry loop); the timeout only guards the test."""

    async def main():
        client = UpstreamClient(f"http://127.0.0.1:{_free_port()}")
        with pytest.raises(UpstreamError, match="cannot connect"):
            await asyncio.wait_for(client.request("GET", "/"), 30)

    run(main())


@contextlib.asynccontextmanager
async def scripted_server(answer):
    """A socket server whose `answer(reader, writer)` plays the upstream's part."""
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        try:
            await answer(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", connections


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


@pytest.mark.parametrize(
    "reply, message",
    [
        (b"garbage\r\n\r\n", "malformed answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "malformed answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed answer"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 70_000, "header is longer than"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20_000, "header is longer than"),
        (
            b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000 + b"\r\nContent-Length: 2\r\n\r\nok",
            "header is longer than",
        ),
    ],
)
def test_broken_answers_are_upstream_errors(reply, message):
    async def answer(reader, writer):
        await _read_request(reader)
        writer.write(reply)
        await writer.drain()

    async def main():
        async with scripted_server(answer) as (url, _):
            client = UpstreamClient(url)
            with pytest.raises(UpstreamError, match=message):
                await asyncio.wait_for(client.request("POST", "/x", b"{}"), 5)
            await client.close()

    run(main())


def test_answer_dribbled_byte_by_byte_is_parsed():
    reply = b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\nX-Thing: a:b\r\n\r\nhello world"

    async def answer(reader, writer):
        for _ in range(2):
            await _read_request(reader)
            for byte in reply:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0)

    async def main():
        async with scripted_server(answer) as (url, connections):
            client = UpstreamClient(url)
            answers = [await client.request("POST", "/x", b"{}") for _ in range(2)]
            await client.close()
            return answers, len(connections)

    answers, connections = run(main())
    assert connections == 1
    for response in answers:
        assert response.status == 201 and response.body == b"hello world"
        assert response.headers["x-thing"] == "a:b"


def test_cancelled_request_closes_its_connection():
    """A timeout must not leave a connection open whose late answer nobody reads."""
    closed_by_client = asyncio.Event()

    async def answer(reader, writer):
        request = await _read_request(reader)
        if b"/slow" in request:
            if await reader.read() == b"":  # nothing more comes: the client hung up
                closed_by_client.set()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfast")
        await writer.drain()

    async def main():
        async with scripted_server(answer) as (url, connections):
            client = UpstreamClient(url)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await client.request("POST", "/slow", b"{}")
            await asyncio.wait_for(closed_by_client.wait(), 2)
            response = await client.request("POST", "/fast", b"{}")
            await client.close()
            return response, len(connections)

    response, connections = run(main())
    assert response.body == b"fast" and connections == 2


def test_idle_connection_the_server_closed_is_replaced_transparently():
    """What uvicorn does after its keep-alive timeout: close an idle connection without a word."""
    server_closed = asyncio.Event()

    async def answer(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        server_closed.set()

    async def main():
        async with scripted_server(answer) as (url, connections):
            client = UpstreamClient(url)
            first = await client.request("POST", "/a", b"{}")
            await asyncio.wait_for(server_closed.wait(), 5)
            second = await client.request("POST", "/b", b"{}")
            await client.close()
            return first, second, len(connections)

    first, second, connections = run(main())
    assert first.body == second.body == b"ok" and connections == 2


def test_request_meeting_a_connection_closed_under_it_is_sent_again():
    """The race keep-alive has: the server closes an idle connection just as a request is sent
    on it. Nothing of an answer came, so the request goes once more on a new connection."""
    served = []

    async def answer(reader, writer):
        served.append(await _read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if len(served) == 1:
            await _read_request(reader)  # the second request arrives ... and is dropped
            return
        with contextlib.suppress(asyncio.IncompleteReadError):
            await _read_request(reader)

    async def main():
        async with scripted_server(answer) as (url, connections):
            client = UpstreamClient(url)
            first = await client.request("POST", "/a", b"{}")
            second = await client.request("POST", "/b", b"{}")
            await client.close()
            return first, second, len(connections)

    first, second, connections = run(main())
    assert first.body == second.body == b"ok" and connections == 2
    assert b"POST /b" in served[1]


def test_connection_cut_after_part_of_the_answer_is_not_sent_again():
    requests = []

    async def answer(reader, writer):
        requests.append(await _read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Len")
        await writer.drain()

    async def main():
        async with scripted_server(answer) as (url, _):
            client = UpstreamClient(url)
            with pytest.raises(UpstreamError, match="closed the connection"):
                await client.request("POST", "/x", b"{}")
            await client.close()

    run(main())
    assert len(requests) == 1


def test_closed_client_refuses_requests(uvicorn_url):
    async def main():
        client = UpstreamClient(uvicorn_url)
        await client.request("GET", "/echo/a")
        await client.close()
        with pytest.raises(UpstreamError, match="closed"):
            await client.request("GET", "/echo/b")

    run(main())


@pytest.mark.parametrize(
    "url",
    ["127.0.0.1:9", "https://127.0.0.1:9", "http://", "http://127.0.0.1:9\r\nX: y", "http://é:9"],
)
def test_only_plain_http_origins(url):
    with pytest.raises(ValueError, match="http://host:port"):
        UpstreamClient(url)


def _two_connection_server(first_reply: bytes, served: list[bytes]):
    """Answers the very first request with `first_reply`, every later one with `honest`."""

    async def answer(reader, writer):
        while True:
            try:
                served.append(await _read_request(reader))
            except asyncio.IncompleteReadError:
                return
            reply = (
                first_reply
                if len(served) == 1
                else b"HTTP/1.1 200 OK\r\n" + (b"Content-Length: 6\r\n\r\nhonest")
            )
            writer.write(reply)
            await writer.drain()

    return answer


SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"


@pytest.mark.parametrize(
    "first_reply",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n" + SMUGGLED,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst" + SMUGGLED,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst" + b"garbage",
    ],
    ids=["after a chunked body", "after a Content-Length body", "garbage after a body"],
)
def test_bytes_after_an_answer_never_become_the_next_answer(first_reply):
    """Bytes past the end of an answer mean client and server disagree about where it ended:
    the connection is closed, and the next request goes on a new one."""
    served: list[bytes] = []

    async def main():
        async with scripted_server(_two_connection_server(first_reply, served)) as (url, conns):
            client = UpstreamClient(url)
            first = await client.request("POST", "/a", b"{}")
            second = await client.request("POST", "/b", b"{}")
            await client.close()
            return first, second, len(conns)

    first, second, connections = run(main())
    assert first.body == b"first"
    assert second.body == b"honest"
    assert connections == 2 and len(served) == 2


@pytest.mark.parametrize(
    "reply",
    [
        *(
            b"HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\n0123456789abcdef" % size
            for size in (b"-2", b"0x2", b"1_0", b"+10", b"10 10", b"")
        ),
        *(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\n0123456789abcdef\r\n"
            b"0\r\n\r\n" % size
            for size in (b"-2", b"0x2", b"1_0", b"+10", b"")
        ),
        # The CRLF after chunk data is checked.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
        # Request smuggling's classics: both framings, or two lengths that disagree.
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 4\r\n\r\nokok",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=lambda reply: reply.split(b"\r\n\r\n")[0].decode("latin-1")[9:70],
)
def test_malformed_framing_is_an_upstream_protocol_error(reply):
    """What a hand-written parser took (+10, 1_0, 0x2 as sizes, no CRLF after a chunk) is refused
    as a protocol error, and that connection is never used again."""
    served: list[bytes] = []

    async def main():
        async with scripted_server(_two_connection_server(reply, served)) as (url, conns):
            client = UpstreamClient(url)
            with pytest.raises(UpstreamProtocolError, match="malformed answer"):
                await asyncio.wait_for(client.request("POST", "/x", b"{}"), 5)
            after = await client.request("POST", "/y", b"{}")
            await client.close()
            return after, len(conns)

    after, connections = run(main())
    assert after.body == b"honest" and connections == 2


@pytest.mark.parametrize(
    "path, headers",
    [
        ("/v2/models/m\r\nX-Injected: 1\r\n\r\n/infer", None),
        ("/v2/models/m\n/infer", None),
        ("/v2/models/m\x00/infer", None),
        ("/v2/models/a b/infer", None),
        ("/v2/models/é/infer", None),
        ("/x", {"x-request-id": "abc\r\nX-Injected: 1"}),
        ("/x", {"x-request-id": "abc\ndef"}),
        ("/x", {"x-request-id": "abc\rdef"}),
        ("/x", {"x-request-id": "abc\x00def"}),
        ("/x", {"x-request\r\nid": "abc"}),
        ("/x", {"x request id": "abc"}),
        ("/x", {"": "abc"}),
    ],
)
def test_control_characters_in_what_is_sent_are_refused_before_sending(path, headers):
    """A path or header that would change the request's framing never reaches the wire."""

    async def answer(reader, writer):
        await reader.read()

    async def main():
        async with scripted_server(answer) as (url, connections):
            client = UpstreamClient(url)
            with pytest.raises(RequestRefusedError, match="refused"):
                await client.request("POST", path, b"{}", headers)
            await client.close()
            return len(connections)

    assert run(main()) == 0


def test_refused_method_names():
    async def main():
        client = UpstreamClient("http://127.0.0.1:9")
        for method in ("GE T", "GET\r\n", "", "HEAD"):
            with pytest.raises(RequestRefusedError, match="method"):
                await client.request(method, "/x")

    run(main())


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1001\r\n\r\n" + b"x" * 1001,
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n" + b"x" * 10,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"1f4\r\n"
        + b"x" * 500
        + b"\r\n"
        + b"1f4\r\n"
        + b"x" * 500
        + b"\r\n"
        + b"2\r\nxx\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 1001,
    ],
    ids=["Content-Length", "huge Content-Length", "chunked", "until close"],
)
def test_answers_over_the_size_bound_are_refused_and_their_connection_closed(reply):
    closed_by_client = asyncio.Event()

    async def answer(reader, writer):
        await _read_request(reader)
        writer.write(reply)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        if await reader.read() == b"":
            closed_by_client.set()

    async def main():
        async with scripted_server(answer) as (url, _):
            client = UpstreamClient(url, max_body_bytes=1000)
            with pytest.raises(UpstreamProtocolError, match="larger than 1000 bytes"):
                await asyncio.wait_for(client.request("POST", "/x", b"{}"), 5)
            await asyncio.wait_for(closed_by_client.wait(), 5)
            await client.close()

    run(main())


def test_an_answer_at_the_size_bound_is_taken():
    async def answer(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000)
        await writer.drain()

    async def main():
        async with scripted_server(answer) as (url, _):
            client = UpstreamClient(url, max_body_bytes=1000)
            response = await client.request("POST", "/x", b"{}")
            await client.close()
            return response

    assert run(main()).body == b"x" * 1000


def test_the_default_answer_bound_is_the_rest_fronts_request_bound():
    from income_bundle.seldon.rest import MAX_BODY_BYTES as REST_FRONT_LIMIT

    assert UpstreamClient("http://127.0.0.1:9").max_body_bytes == REST_FRONT_LIMIT


def test_interim_answers_are_skipped():
    async def answer(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async def main():
        async with scripted_server(answer) as (url, _):
            client = UpstreamClient(url)
            response = await client.request("POST", "/x", b"{}")
            await client.close()
            return response

    response = run(main())
    assert response.status == 200 and response.body == b"ok"


def test_the_client_benchmark_runs_and_reports_every_client():
    """The tool behind the README's client figures (scripts/benchmark_upstream.py), run tiny:
    it must work, not be fast."""
    root = ROOT
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "benchmark_upstream.py"),
         "--calls", "20", "--block", "10", "--baseline-rev", "HEAD"],
        capture_output=True, text=True, timeout=300, cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split("  ")[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {"llhttp (current)", "hand-written (HEAD)", "aiohttp"}
    assert all(row[-5] == "20" for row in rows.values()), result.stdout  # calls per client


@pytest.mark.parametrize(
    "reply, name, status, words",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n{}", "income", 502, ("malformed HTTP",)),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", "in\ncome", 400, ("refused", "path")),
    ],
    ids=["malformed answer", "model name that cannot be sent"],
)
def test_the_gateways_forwarder_maps_client_errors_to_clear_statuses(reply, name, status, words):
    """A malformed answer from MLServer is a 502 naming the model (not a 503 'not reachable'),
    a request the client refuses to send a 400; a scripted server stands in for MLServer."""
    from income_bundle.errors import ServingError
    from income_bundle.seldon.forwarding import MLServerForwarder

    async def answer(reader, writer):
        await _read_request(reader)
        writer.write(reply)
        await writer.drain()

    async def main():
        async with scripted_server(answer) as (url, _):
            forwarder = MLServerForwarder(url)
            await forwarder.start()
            with pytest.raises(ServingError) as caught:
                await forwarder.infer_bytes(name, b"{}")
            await forwarder.close()
            return caught.value

    error = run(main())
    assert error.status == status, error.message
    assert f"model {name}:" in error.message or f"model {name!r}:" in error.message
    assert all(word in error.message for word in words), error.message


def test_the_forwarders_ready_and_metadata_refuse_a_name_that_cannot_be_sent():
    from income_bundle.errors import ServingError
    from income_bundle.seldon.forwarding import MLServerForwarder

    async def main():
        forwarder = MLServerForwarder("http://127.0.0.1:9")  # nothing is sent
        await forwarder.start()
        ready = await forwarder.ready("in\r\ncome")
        with pytest.raises(ServingError) as caught:
            await forwarder.metadata("in\r\ncome")
        await forwarder.close()
        return ready, caught.value

    ready, error = run(main())
    assert ready is False
    assert error.status == 400 and "refused" in error.message


def test_a_502_is_documented_for_inference_and_unavailable_over_grpc():
    import grpc
    import yaml

    from income_bundle.errors import GRPC_STATUS

    openapi = ROOT / "src/income_bundle/seldon/openapi.yaml"
    paths = yaml.safe_load(openapi.read_text())["paths"]
    for path in ("/v2/models/{model_name}/infer", "/v2/pipelines/{pipeline_name}/infer"):
        assert "502" in paths[path]["post"]["responses"], path
    assert GRPC_STATUS[502] == grpc.StatusCode.UNAVAILABLE


def test_a_head_under_the_bound_is_taken_however_it_is_split():
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"y" * 40_000 + b"\r\nContent-Length: 2\r\n\r\n"
    reply = head + b"ok"

    async def answer(reader, writer):
        await _read_request(reader)
        for start in range(0, len(reply), 4096):
            writer.write(reply[start : start + 4096])
            await writer.drain()
            for _ in range(3):  # let the client read this piece on its own
                await asyncio.sleep(0)

    async def main():
        async with scripted_server(answer) as (url, _):
            client = UpstreamClient(url)
            response = await client.request("POST", "/x", b"{}")
            await client.close()
            return response

    response = run(main())
    assert response.body == b"ok" and len(response.headers["x-long"]) == 40_000
