"""The gateway's HTTP client for MLServer, against a real uvicorn (what MLServer runs) and, for the
answers uvicorn never gives (garbage, a cut answer, silence), a scripted socket server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from income_bundle.seldon.upstream import UpstreamClient, UpstreamError


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
    """A real uvicorn with a 1 s keep-alive, so idle connections go stale quickly."""
    app = Starlette(
        routes=[
            Route("/echo/{rest:path}", _echo, methods=["GET", "POST"]),
            Route("/chunked", _chunked),
            Route("/closing", _closing),
        ]
    )
    port = _free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, timeout_keep_alive=1, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


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


def test_idle_connection_the_server_closed_is_replaced_transparently(uvicorn_url):
    async def main():
        client = UpstreamClient(uvicorn_url)
        first = await client.request("GET", "/echo/a")
        await asyncio.sleep(1.6)  # past uvicorn's 1 s keep-alive: it closed the connection
        second = await client.request("GET", "/echo/b")
        await client.close()
        return first, second

    first, second = run(main())
    assert second.status == 200
    assert first.headers["x-peer-port"] != second.headers["x-peer-port"]


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


def test_unreachable_server_is_an_upstream_error_at_once():
    async def main():
        client = UpstreamClient(f"http://127.0.0.1:{_free_port()}")
        started = time.perf_counter()
        with pytest.raises(UpstreamError, match="cannot connect"):
            await client.request("GET", "/")
        return time.perf_counter() - started

    assert run(main()) < 1


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
        (b"garbage\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "not a number"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 70_000, "too long"),
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


@pytest.mark.parametrize("url", ["127.0.0.1:9", "https://127.0.0.1:9", "http://"])
def test_only_plain_http_origins(url):
    with pytest.raises(ValueError, match="http://host:port"):
        UpstreamClient(url)
