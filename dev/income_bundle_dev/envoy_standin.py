"""A stand-in for Envoy in front of Seldon's data plane (seldon-mesh): Envoy cannot run here.

In a cluster, Seldon's scheduler programs Envoy over xDS with one route per Model and Pipeline
(`scheduler/pkg/envoy/xdscache/resource.go` at v2.10.2). This stand-in routes as those routes do,
asking the scheduler for a Model's version through Seldon's CLI (`seldon model status`) instead:

- `seldon-model: <model>`: `createWeightedModelClusterAction` removes any incoming
  `seldon-internal-model`, adds `seldon-internal-model: <model>_<version>` and sends the call to
  the Server's agent (its reverse proxy, REST or gRPC); the response gets
  `x-seldon-route: :<model>_<version>:`.
- `seldon-model: <pipeline>.pipeline`: `createWeightedPipelineClusterAction` adds
  `seldon-internal-model: <pipeline>.pipeline` and sends the call to the pipelinegateway; the
  response gets `x-seldon-route: :<pipeline>.pipeline:`.
- REST without a `seldon-model` header: the listener's Lua filter (`createHeaderFilter`) takes the
  model from `/v2/models/<model>/...`, or `<pipeline>.pipeline` from `/v2/pipelines/<pipeline>/...`.
- Envoy's defaults that the listener (`makeHTTPListener`) does not change: `server: envoy`
  replaces the upstream's, `x-envoy-upstream-service-time` is added; no request id is generated
  (`GenerateRequestId` false).
- No route (a Model the scheduler does not know, no header): REST 404 with an empty body, gRPC
  UNIMPLEMENTED, as Envoy answers a request no route matches.

What it does not do: traffic splits and mirrors (Experiments: one Model version or one Pipeline
at a time), sticky sessions (a request's `x-seldon-route` is ignored), retries (Envoy retries
5xx and connect failures 5 times), the tap filter that logs payloads, TLS, gRPC streaming calls
(only unary ones, which is all the V2 protocol's infer, ready and metadata calls are), the
per-route timeout, and xDS itself. A Model's version is cached for `VERSION_TTL_S`.

It runs as `SeldonMesh` starts it (inside the data plane's network namespace, reading the
`INCOME_BUNDLE_ENVOY_*` variables of `StandinConfig`); it is a development rig, not product code.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass

__all__ = ["StandinConfig", "serve"]

SELDON_MODEL = "seldon-model"
SELDON_INTERNAL_MODEL = "seldon-internal-model"
SELDON_ROUTE = "x-seldon-route"
PIPELINE_SUFFIX = ".pipeline"
VERSION_TTL_S = 5.0
# RFC 9110 connection-level headers, which a proxy does not forward.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
ENV_PREFIX = "INCOME_BUNDLE_ENVOY_"


@dataclass(frozen=True)
class StandinConfig:
    """Where the stand-in listens and where it routes (all on 127.0.0.1)."""

    http_port: int
    grpc_port: int
    agent_http_port: int
    agent_grpc_port: int
    pipeline_http_port: int
    pipeline_grpc_port: int
    seldon_cli: str
    scheduler: str

    def env(self) -> dict[str, str]:
        return {ENV_PREFIX + key.upper(): str(value) for key, value in vars(self).items()}

    @classmethod
    def from_env(cls) -> StandinConfig:
        values = {}
        for key, field in cls.__dataclass_fields__.items():
            raw = os.environ[ENV_PREFIX + key.upper()]
            values[key] = int(raw) if field.type == "int" else raw
        return cls(**values)


class NoRouteError(Exception):
    """No route matches (Envoy: 404 NR)."""


class Versions:
    """A Model's current version, as the scheduler reports it (`seldon model status <model>`)."""

    def __init__(self, seldon_cli: str, scheduler: str) -> None:
        self.seldon_cli = seldon_cli
        self.scheduler = scheduler
        self._cache: dict[str, tuple[float, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def version(self, model: str) -> int:
        cached = self._cache.get(model)
        if cached and time.monotonic() - cached[0] < VERSION_TTL_S:
            return cached[1]
        async with self._locks.setdefault(model, asyncio.Lock()):
            cached = self._cache.get(model)
            if cached and time.monotonic() - cached[0] < VERSION_TTL_S:
                return cached[1]
            status = await asyncio.create_subprocess_exec(
                self.seldon_cli, "model", "status", model, "--scheduler-host", self.scheduler,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                env={**os.environ, "HOME": os.environ.get("HOME", "/tmp")},
            )  # fmt: skip
            out, _ = await status.communicate()
            try:
                versions = json.loads(out)["versions"]
            except (ValueError, KeyError, TypeError):
                raise NoRouteError(model) from None
            # Envoy's route holds the versions that are available (the scheduler adds a route
            # once a version is loaded on a Server); the newest wins.
            available = [
                v["version"]
                for v in versions
                if v.get("state", {}).get("state") == "ModelAvailable"
            ]
            if not available:
                raise NoRouteError(model)
            version = max(available)
            self._cache[model] = (time.monotonic(), version)
            return version


async def route(headers: dict[str, str], path: str, versions: Versions) -> tuple[str, str, bool]:
    """(seldon-internal-model value, x-seldon-route value, whether to the pipelinegateway)."""
    target = headers.get(SELDON_MODEL, "")
    if not target and not headers.get(SELDON_ROUTE):
        # The listener's Lua filter (createHeaderFilter).
        if path.startswith("/v2/models/"):
            target = path.removeprefix("/v2/models/").split("/", 1)[0]
        elif path.startswith("/v2/pipelines/"):
            rest = path.removeprefix("/v2/pipelines/")
            if "/" in rest:
                target = rest.split("/", 1)[0] + PIPELINE_SUFFIX
    if not target:
        raise NoRouteError("no seldon-model header")
    if target.endswith(PIPELINE_SUFFIX):
        return target, f":{target}:", True
    versioned = f"{target}_{await versions.version(target)}"
    return versioned, f":{versioned}:", False


# -- REST ----------------------------------------------------------------------------------------


async def _rest_app(config: StandinConfig, versions: Versions):
    import aiohttp
    from aiohttp import web

    session = aiohttp.ClientSession(
        # Forward the client's headers only: aiohttp would add its own (a Content-Type of
        # application/octet-stream to a body without one, which MLServer answers with 422).
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
        connector=aiohttp.TCPConnector(limit=0),
    )

    async def proxy(request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not request.path.startswith("/v2"):
            return web.Response(status=404)
        try:
            internal, seldon_route, pipeline = await route(headers, request.path, versions)
        except NoRouteError:
            return web.Response(status=404)
        forwarded = [
            (k, v)
            for k, v in request.headers.items()
            if k.lower() not in HOP_BY_HOP and (pipeline or k.lower() != SELDON_INTERNAL_MODEL)
        ]
        forwarded.append((SELDON_INTERNAL_MODEL, internal))
        port = config.pipeline_http_port if pipeline else config.agent_http_port
        started = time.monotonic()
        async with session.request(
            request.method,
            f"http://127.0.0.1:{port}{request.rel_url}",
            headers=forwarded,
            data=await request.read(),
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            elapsed_ms = int((time.monotonic() - started) * 1000)
            response = web.Response(status=upstream.status, body=body)
            for k, v in upstream.headers.items():
                if k.lower() not in HOP_BY_HOP and k.lower() not in ("server", "date"):
                    response.headers.add(k, v)
        response.headers["server"] = "envoy"
        response.headers["x-envoy-upstream-service-time"] = str(elapsed_ms)
        # The route's response_headers_to_add carry no append_action, so Envoy's default,
        # APPEND_IF_EXISTS_OR_ADD, keeps what the upstream sent (the pipelinegateway's step
        # routes) and adds the route's own, as the gRPC path below does.
        response.headers.add(SELDON_ROUTE, seldon_route)
        return response

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", proxy)

    async def close(_app) -> None:
        await session.close()

    app.on_cleanup.append(close)
    return app


# -- gRPC ----------------------------------------------------------------------------------------


def _grpc_server(config: StandinConfig, versions: Versions):
    import grpc
    from grpc import aio

    unlimited = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    channels = {
        False: aio.insecure_channel(f"127.0.0.1:{config.agent_grpc_port}", options=unlimited),
        True: aio.insecure_channel(f"127.0.0.1:{config.pipeline_grpc_port}", options=unlimited),
    }

    class Proxy(grpc.GenericRpcHandler):
        def service(self, handler_call_details):
            method = handler_call_details.method

            async def unary(request: bytes, context) -> bytes:
                metadata = [
                    (k, v)
                    for k, v in context.invocation_metadata()
                    if k != "user-agent" and not k.startswith("grpc-") and not k.startswith(":")
                ]
                headers = dict(metadata)
                if not method.startswith("/inference.GRPCInferenceService/"):
                    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "")
                try:
                    internal, seldon_route, pipeline = await route(headers, method, versions)
                except NoRouteError:
                    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "")
                if not pipeline:
                    metadata = [(k, v) for k, v in metadata if k != SELDON_INTERNAL_MODEL]
                metadata.append((SELDON_INTERNAL_MODEL, internal))
                call = channels[pipeline].unary_unary(method)(request, metadata=metadata)
                added = ((SELDON_ROUTE, seldon_route),)
                try:
                    response = await call
                except aio.AioRpcError as error:
                    await context.send_initial_metadata(
                        tuple(error.initial_metadata() or ()) + added
                    )
                    context.set_trailing_metadata(tuple(error.trailing_metadata() or ()))
                    await context.abort(error.code(), error.details() or "")
                await context.send_initial_metadata(tuple(await call.initial_metadata()) + added)
                context.set_trailing_metadata(tuple(await call.trailing_metadata()))
                return response

            return grpc.unary_unary_rpc_method_handler(unary)

    server = aio.server(options=unlimited)
    server.add_generic_rpc_handlers((Proxy(),))
    server.add_insecure_port(f"127.0.0.1:{config.grpc_port}")
    return server


async def _serve(config: StandinConfig) -> None:
    from aiohttp import web

    versions = Versions(config.seldon_cli, config.scheduler)
    runner = web.AppRunner(await _rest_app(config, versions), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.http_port).start()
    grpc_server = _grpc_server(config, versions)
    await grpc_server.start()
    print(
        f"Envoy stand-in: REST 127.0.0.1:{config.http_port}, gRPC 127.0.0.1:{config.grpc_port}",
        flush=True,
    )
    try:
        await grpc_server.wait_for_termination()
    finally:
        await runner.cleanup()


def serve() -> None:
    """Run the stand-in until it is killed, configured by `StandinConfig.env()`'s variables."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(_serve(StandinConfig.from_env()))
