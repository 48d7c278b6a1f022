"""The gateway's gRPC front: the V2 `GRPCInferenceService`, routed by `seldon-model` metadata.

Uses tritonclient's generated protobuf modules (the same wire format as MLServer's), so that
one process can be a gRPC server here and a tritonclient gRPC client in tests and tools.
"""

from __future__ import annotations

import functools
import logging

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from income_bundle.errors import ServingError, grpc_status
from income_bundle.seldon.gateway import INTERNAL_ERROR_MESSAGE, SELDON_MODEL_HEADER, Gateway
from income_bundle.seldon.protocol import InferRequest, check_rows
from income_bundle.v2.checks import REQUEST_ID_HEADER, check_request_id
from income_bundle.v2.tensors import from_grpc_request, to_grpc_response

log = logging.getLogger(__name__)

__all__ = ["build_grpc_server"]


def _header(context: grpc.aio.ServicerContext, name: str = SELDON_MODEL_HEADER) -> str | None:
    """The last value of metadata `name`, as Seldon's pipeline gateway reads it (grpcserver.go's
    extractHeader, v2.10.2: "assuming that was added last")."""
    found = None
    for key, value in context.invocation_metadata() or ():
        if key.lower() == name:
            found = value
    return found


def _guarded(method):
    """Every error answered with a status and a message: ServingErrors with theirs, anything
    else as INTERNAL with a plain message (its text stays in the log: it can carry internals)."""

    @functools.wraps(method)
    async def guarded(self, request, context):
        try:
            return await method(self, request, context)
        except ServingError as e:
            code = grpc_status(e.status)
            await context.abort(code, e.message)
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR_MESSAGE)

    return guarded


class _Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    async def ServerLive(self, request, context):  # noqa: N802 - protobuf method names
        return service_pb2.ServerLiveResponse(live=True)

    @_guarded
    async def ServerReady(self, request, context):  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=await self.gateway.ready())

    @_guarded
    async def ModelReady(self, request, context):  # noqa: N802
        ready = await self.gateway.ready(_header(context) or request.name)
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request, context):  # noqa: N802
        return service_pb2.ServerMetadataResponse(name="income-bundle-gateway", version="1")

    @_guarded
    async def ModelMetadata(self, request, context):  # noqa: N802
        """The same metadata REST answers (MLServer's for a model, derived for a pipeline)."""
        metadata = await self.gateway.metadata(_header(context) or request.name)
        response = service_pb2.ModelMetadataResponse(
            name=metadata.get("name", ""),
            versions=metadata.get("versions") or [],
            platform=metadata.get("platform", ""),
        )
        for kind in ("inputs", "outputs"):
            for item in metadata.get(kind) or []:
                getattr(response, kind).add(
                    name=item["name"], datatype=item["datatype"], shape=item["shape"]
                )
        return response

    @_guarded
    async def ModelInfer(self, request, context):  # noqa: N802
        header_id = check_request_id(
            _header(context, REQUEST_ID_HEADER), f"the '{REQUEST_ID_HEADER}' metadata"
        )
        shapes = [(tensor.name, list(tensor.shape)) for tensor in request.inputs]
        check_rows(shapes, self.gateway.max_request_rows)
        tensors, parameters = from_grpc_request(request)
        if not tensors:
            raise ServingError(400, "the request needs at least one input tensor")
        call = InferRequest(
            _header(context),
            "grpc",
            header_id,
            inputs=tensors,
            parameters=parameters,
            outputs=[{"name": o.name} for o in request.outputs],
            id=check_request_id(request.id, "the request's 'id'"),
        )
        result = await self.gateway.infer(call)
        if result.header_id:
            await context.send_initial_metadata(((REQUEST_ID_HEADER, result.header_id),))
        raw = bool(request.raw_input_contents)
        return to_grpc_response(
            service_pb2, result.name, result.id or "", result.outputs or [], raw=raw
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
