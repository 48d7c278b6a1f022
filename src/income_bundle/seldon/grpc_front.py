"""The gateway's gRPC front: the V2 `GRPCInferenceService`, routed by `seldon-model` metadata.

Uses tritonclient's generated protobuf modules (the same wire format as MLServer's), so that
one process can be a gRPC server here and a tritonclient gRPC client in tests and tools.
"""

from __future__ import annotations

import uuid

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from income_bundle.seldon.engine import GatewayError
from income_bundle.seldon.gateway import PIPELINE_SUFFIX, SELDON_MODEL_HEADER, Gateway
from income_bundle.seldon.tensors import TensorError, from_grpc_request, to_grpc_response

__all__ = ["GRPC_STATUS", "build_grpc_server"]

GRPC_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def _header(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == SELDON_MODEL_HEADER:
            return value
    return None


async def _abort(context: grpc.aio.ServicerContext, error: GatewayError):
    await context.abort(GRPC_STATUS.get(error.status, grpc.StatusCode.UNKNOWN), error.message)


class _Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    async def ServerLive(self, request, context):  # noqa: N802 - protobuf method names
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=await self.gateway.ready())

    async def ModelReady(self, request, context):  # noqa: N802
        try:
            ready = await self.gateway.ready(_header(context) or request.name)
        except GatewayError as e:
            await _abort(context, e)
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request, context):  # noqa: N802
        return service_pb2.ServerMetadataResponse(name="income-bundle-gateway", version="1")

    async def ModelMetadata(self, request, context):  # noqa: N802
        try:
            kind, name = self.gateway.resolve(_header(context) or request.name)
        except GatewayError as e:
            await _abort(context, e)
        if kind == "pipeline":
            return service_pb2.ModelMetadataResponse(
                name=f"{name}{PIPELINE_SUFFIX}", platform="seldon-pipeline"
            )
        contract = self.gateway.contracts.get(name)
        response = service_pb2.ModelMetadataResponse(name=name, platform="mlserver")
        for item in contract.declared if contract else []:
            response.inputs.add(name=item["name"], datatype=item["datatype"], shape=item["shape"])
        return response

    async def ModelInfer(self, request, context):  # noqa: N802
        request_id = request.id or str(uuid.uuid4())
        try:
            try:
                tensors, parameters = from_grpc_request(request)
            except TensorError as e:
                raise GatewayError(400, str(e)) from e
            if not tensors:
                raise GatewayError(400, "the request needs at least one input tensor")
            extra: dict = {"parameters": parameters} if parameters else {}
            if request.outputs:
                extra["outputs"] = [{"name": o.name} for o in request.outputs]
            name, outputs = await self.gateway.infer(
                _header(context), tensors, extra, "grpc", request_id
            )
        except GatewayError as e:
            await _abort(context, e)
        return to_grpc_response(
            service_pb2, name, request_id, outputs, raw=bool(request.raw_input_contents)
        )


def build_grpc_server(gateway: Gateway, address: str) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Servicer(gateway), server)
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot bind the gRPC port {address}")
    return server
