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

from income_bundle.seldon.rest import RestServer, bind_socket
from tests.support.gateway_stubs import StubForwarder, stub_gateway
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
