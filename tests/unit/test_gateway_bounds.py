"""The gateway bounds what one client can take: a request over the row limit is refused from its
tensor headers (413 on REST, RESOURCE_EXHAUSTED on gRPC) while a normal request sent with it is
answered promptly, and a body that stops arriving is a 408, not a connection held forever.
The fronts are real, on loopback sockets; MLServer is the stub forwarder."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import numpy as np

from income_bundle.seldon.rest import RestFront, RestServer, bind_socket
from tests.support.gateway_stubs import StubForwarder, asgi_call, stub_gateway
from tests.support.v2_bodies import ROW, tensor

MAX_ROWS = 1000
HUGE_ROWS = 50_000  # a ~2 MB JSON body: parsed off the event loop, then refused


async def _post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, float]:
    """One HTTP/1.1 POST on its own connection: status, body, seconds taken."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n"
        f"{head}connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2], time.monotonic() - started


async def _rest(calls, **server_options):
    gateway = stub_gateway(StubForwarder())
    gateway.max_request_rows = MAX_ROWS
    await gateway.start()
    listening = bind_socket("127.0.0.1", 0)
    server = RestServer(gateway, listening, **server_options)
    await server.start()
    try:
        return await calls(listening.getsockname()[1])
    finally:
        await server.stop()
        await gateway.close()


def _json_body(rows: int) -> bytes:
    data = np.tile(np.asarray(ROW, dtype=float), rows).tolist()
    return json.dumps({"inputs": [tensor(data, [rows, 12])]}).encode()


def test_a_rest_request_over_the_row_limit_is_refused_and_delays_no_one():
    huge, normal = _json_body(HUGE_ROWS), _json_body(2)
    headers = {"seldon-model": "income", "content-type": "application/json"}

    async def calls(port):
        return await asyncio.gather(_post(port, huge, headers), _post(port, normal, headers))

    (status, answer, huge_s), (normal_status, _, normal_s) = asyncio.run(_rest(calls))
    assert status == 413, answer
    error = json.loads(answer)["error"]
    assert f"{HUGE_ROWS} rows" in error and f"at most {MAX_ROWS}" in error
    assert normal_status == 200
    assert huge_s < 5 and normal_s < 2


def test_a_binary_rest_request_over_the_row_limit_is_refused_from_its_json_header():
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "predict",
                    "datatype": "FP32",
                    "shape": [HUGE_ROWS, 12],
                    "parameters": {"binary_data_size": HUGE_ROWS * 12 * 4},
                }
            ]
        }
    ).encode()
    body = header + np.zeros((HUGE_ROWS, 12), dtype=np.float32).tobytes()
    headers = {"seldon-model": "income", "inference-header-content-length": str(len(header))}

    async def calls(port):
        return await _post(port, body, headers)

    status, answer, _ = asyncio.run(_rest(calls))
    assert status == 413, answer
    assert f"{HUGE_ROWS} rows" in json.loads(answer)["error"]


def test_a_body_that_stops_arriving_is_a_408():
    async def calls(port):
        def stall() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(
                    b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\nseldon-model: income\r\n"
                    b"content-length: 1000\r\n\r\n" + b'{"inputs": ['
                )
                answer = b""
                while chunk := client.recv(65536):  # the server answers, then closes
                    answer += chunk
                return answer

        return await asyncio.to_thread(stall)

    started = time.monotonic()
    answer = asyncio.run(_rest(calls, body_timeout_s=0.5))
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"the body stopped arriving" in answer
    assert time.monotonic() - started < 8


def test_a_grpc_request_over_the_row_limit_is_resource_exhausted_and_delays_no_one():
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    from income_bundle.seldon.grpc_front import build_grpc_server

    def request(rows: int) -> service_pb2.ModelInferRequest:
        message = service_pb2.ModelInferRequest(model_name="income")
        message.inputs.add(name="predict", datatype="FP32", shape=[rows, 12])
        message.raw_input_contents.append(np.zeros((rows, 12), dtype=np.float32).tobytes())
        return message

    async def run():
        gateway = stub_gateway(StubForwarder())
        gateway.max_request_rows = MAX_ROWS
        await gateway.start()
        server = build_grpc_server(gateway, "127.0.0.1:0")
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)]
            ) as channel:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

                async def timed(message):
                    started = time.monotonic()
                    try:
                        answer = await stub.ModelInfer(
                            message, metadata=[("seldon-model", "income")], timeout=30
                        )
                    except grpc.aio.AioRpcError as e:
                        answer = e
                    return answer, time.monotonic() - started

                return await asyncio.gather(timed(request(1_250_000)), timed(request(2)))
        finally:
            await server.stop(grace=None)
            await gateway.close()

    (huge, huge_s), (normal, normal_s) = asyncio.run(run())
    assert isinstance(huge, grpc.aio.AioRpcError), huge
    assert huge.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1250000 rows" in huge.details() and f"at most {MAX_ROWS}" in huge.details()
    assert not isinstance(normal, grpc.aio.AioRpcError), normal
    assert huge_s < 10 and normal_s < 5


NEAR_LIMIT_ROWS = 99_000  # the income pipeline takes 100 000 rows per request


def test_a_large_allowed_request_delays_no_one():
    """A request just under the row limit is parsed, checked, forwarded and its answer encoded
    on worker threads: small requests sent while it is in flight are answered in between."""
    huge, small = _json_body(NEAR_LIMIT_ROWS), _json_body(2)
    headers = {"seldon-model": "income-production.pipeline", "content-type": "application/json"}

    async def calls(port):
        big = asyncio.ensure_future(_post(port, huge, headers))
        smalls = []
        while not big.done():  # one small request after another, for as long as the big one runs
            smalls.append(await _post(port, small, headers))
        return await big, smalls

    async def run(port):
        await _post(port, small, headers)  # warm: the first request builds the engines' state
        return await calls(port)

    gateway = stub_gateway(StubForwarder())

    async def serve():
        await gateway.start()
        listening = bind_socket("127.0.0.1", 0)
        server = RestServer(gateway, listening)
        await server.start()
        try:
            return await run(listening.getsockname()[1])
        finally:
            await server.stop()
            await gateway.close()

    (status, answer, big_s), smalls = asyncio.run(serve())
    assert gateway.max_rows("income-production.pipeline") > NEAR_LIMIT_ROWS
    assert status == 200, answer[:300]
    assert all(s == 200 for s, _, _ in smalls)
    latencies = sorted(s for _, _, s in smalls)
    # Answered while the big one ran, none waiting for a large share of it.
    assert len(smalls) >= 5, (big_s, latencies)
    assert latencies[-1] < big_s / 3, (big_s, latencies)


def _closed_within(port: int, sent: bytes, deadline_s: float) -> tuple[bytes, float]:
    """Send `sent` and stall; read until the server closes. (what came back, seconds taken);
    AssertionError if the connection is still open at the deadline."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=deadline_s) as client:
        client.sendall(sent)
        answer = b""
        try:
            while chunk := client.recv(65536):  # b"" once the server closed
                answer += chunk
        except TimeoutError:
            raise AssertionError(f"still open after {deadline_s} s; got {answer!r}") from None
    return answer, time.monotonic() - started


def test_a_client_that_stalls_before_its_headers_end_is_cut_off():
    """uvicorn alone never times out a request that is still arriving: the front does."""
    stalls = [
        b"",  # connects and sends nothing
        b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\nseldon-model: inc",  # headers partway
        b"POST /v2/models/m/infer HTT",  # the request line partway
    ]

    async def calls(port):
        return await asyncio.gather(
            *(asyncio.to_thread(_closed_within, port, sent, 10) for sent in stalls)
        )

    for answer, seconds in asyncio.run(_rest(calls, body_timeout_s=0.2, stall_timeout_s=0.5)):
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"the request stopped arriving" in answer
        assert 0.45 < seconds < 8


def test_a_slow_but_steady_client_is_not_cut_off():
    """The bound is on stalls, not on the whole request: bytes arriving every 0.25 s keep it."""
    body = _json_body(1)
    head = (
        b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\nseldon-model: income\r\n"
        b"content-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )

    async def calls(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = head + body
        for start in range(0, len(sent), 40):  # longer than the stall bound in all
            await asyncio.sleep(0.25)  # the client's pace, not a wait for the server
            writer.write(sent[start : start + 40])
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return answer

    started = time.monotonic()
    answer = asyncio.run(_rest(calls, body_timeout_s=0.6, stall_timeout_s=0.6))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert time.monotonic() - started > 1.2  # twice the stall bound


def test_a_large_allowed_grpc_request_delays_no_one():
    """The same over gRPC: the message is decoded and the answer encoded on worker threads."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    from income_bundle.seldon.grpc_front import build_grpc_server

    def request(rows: int) -> service_pb2.ModelInferRequest:
        message = service_pb2.ModelInferRequest()
        message.inputs.add(name="predict", datatype="FP32", shape=[rows, 12])
        rows_data = np.tile(np.asarray(ROW, dtype=np.float32), (rows, 1))
        message.raw_input_contents.append(rows_data.tobytes())
        return message

    metadata = [("seldon-model", "income-production.pipeline")]

    async def run():
        gateway = stub_gateway(StubForwarder())
        await gateway.start()
        server = build_grpc_server(gateway, "127.0.0.1:0")
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)]
            ) as channel:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

                async def timed(message):
                    started = time.monotonic()
                    await stub.ModelInfer(message, metadata=metadata, timeout=60)
                    return time.monotonic() - started

                await timed(request(2))  # warm
                big = asyncio.ensure_future(timed(request(NEAR_LIMIT_ROWS)))
                smalls = []
                while not big.done():
                    smalls.append(await timed(request(2)))
                return await big, smalls
        finally:
            await server.stop(grace=None)
            await gateway.close()

    big_s, smalls = asyncio.run(run())
    assert len(smalls) >= 5, (big_s, sorted(smalls))
    assert max(smalls) < big_s / 3, (big_s, sorted(smalls))


def test_the_row_limit_is_sized_from_each_targets_declared_inputs():
    """Without --max-request-rows, a target takes at most MAX_REQUEST_VALUES values per input and
    what fits in the 64 MiB message at its datatype's size; the header alone decides."""
    from income_bundle.seldon.protocol import (
        MAX_MESSAGE_BYTES,
        MAX_REQUEST_VALUES,
        derived_max_rows,
    )

    gateway = stub_gateway()
    assert gateway.max_rows("income") == MAX_REQUEST_VALUES // 12 == 100_000
    assert gateway.max_rows("income-outlier") == MAX_REQUEST_VALUES // 57
    assert gateway.max_rows("income-production.pipeline") == gateway.max_rows("income")
    wide = [{"name": "x", "datatype": "FP64", "shape": [-1, 100_000]}]
    assert derived_max_rows(wide) == min(MAX_REQUEST_VALUES, MAX_MESSAGE_BYTES // 8) // 100_000
    gateway.max_request_rows = 7  # the override wins everywhere
    assert {gateway.max_rows(t) for t in ("income", "income-outlier", "nope")} == {7}

    rows = MAX_REQUEST_VALUES // 57 + 1  # over income-outlier's limit, under income's
    front = RestFront(stub_gateway())
    outlier = {"inputs": [tensor([0.0] * 57, [rows, 57], "FP64", "transform")]}
    income = {"inputs": [tensor(ROW, [rows, 12])]}
    calls = [
        ("POST", "/v2/models/m/infer", json.dumps(body).encode(), {"seldon-model": target})
        for target, body in (("income-outlier", outlier), ("income", income))
    ]
    (s1, _, r1), (s2, _, r2) = asyncio.run(_front_calls(front, calls))
    assert s1 == 413 and f"{rows} rows" in json.loads(r1)["error"]
    assert s2 == 400, r2  # past the row check: its data do not fill the shape


async def _front_calls(front, calls):
    await front.gateway.start()
    try:
        return [await asgi_call(front, *call) for call in calls]
    finally:
        await front.gateway.close()
