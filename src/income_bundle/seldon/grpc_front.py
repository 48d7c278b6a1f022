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
from income_bundle.seldon import traced
from income_bundle.seldon.gateway import INTERNAL_ERROR_MESSAGE, SELDON_MODEL_HEADER, Gateway
from income_bundle.seldon.protocol import (
    LARGE_BODY_BYTES,
    LARGE_VALUES,
    MAX_MESSAGE_BYTES,
    InferRequest,
    check_rows,
    off_loop,
    values_in,
)
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
    @traced.grpc_infer
    async def ModelInfer(self, request, context):  # noqa: N802
        header_id = check_request_id(
            _header(context, REQUEST_ID_HEADER), f"the '{REQUEST_ID_HEADER}' metadata"
        )
        shapes = [(tensor.name, list(tensor.shape)) for tensor in request.inputs]
        check_rows(shapes, self.gateway.max_rows(_header(context)))
        # Decoding a large message (raw bytes to values) is done on a worker thread.
        large = request.ByteSize() > LARGE_BODY_BYTES
        tensors, parameters = await off_loop(large, from_grpc_request, request)
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
        # A pipeline, as the pipeline gateway answers: the Kafka key replaces the output
        # message's x-request-id (grpcserver.go ModelInfer). A model, as the agent answers: the
        # id in a trailer (agent/rproxy_grpc.go setTrailer), Envoy's route in the headers.
        metadata = [(k, v) for k, v in result.headers if k != REQUEST_ID_HEADER]
        if result.header_id and result.kind == "model":
            context.set_trailing_metadata(((REQUEST_ID_HEADER, result.header_id),))
        elif result.header_id:
            metadata.insert(0, (REQUEST_ID_HEADER, result.header_id))
        if metadata:
            await context.send_initial_metadata(tuple(metadata))
        raw = bool(request.raw_input_contents)
        return await off_loop(
            values_in(result.outputs) > LARGE_VALUES,
            functools.partial(to_grpc_response, raw=raw, model_version=result.model_version or ""),
            service_pb2,
            result.answered_name,
            result.id or "",
            result.outputs or [],
        )


def build_grpc_server(gateway: Gateway, address: str) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Servicer(gateway), server)
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot bind the gRPC port {address}")
    return server
