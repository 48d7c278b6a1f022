"""A seldon-mesh compatible gateway in front of one real MLServer: routing and the operations.

REST and gRPC speak the Open Inference Protocol at `/v2/models/<any>/infer`; the `seldon-model`
header (gRPC metadata) picks the target, as in seldon-mesh: `<model>` calls that model,
`<pipeline>.pipeline` runs the pipeline. Requests are checked against the target's declared
inputs (income_bundle.runtime.contract) before any model sees them; every error has the protocol's
`{"error": "..."}` shape.

One transport-neutral operation per endpoint (`infer`, `metadata`, `ready`, `inspect`), which
the REST front (`rest.py`, uvicorn) and the gRPC front (`grpc_front.py`) each call once per
request; `forwarding.py` calls MLServer, `metrics.py` counts, `engine.py` runs pipelines.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from income_bundle.errors import ServingError
from income_bundle.runtime.contract import ModelContract
from income_bundle.seldon import traced
from income_bundle.seldon.bundle import Bundle, TensorRef
from income_bundle.seldon.engine import PipelineEngine
from income_bundle.seldon.forwarding import MLServerForwarder
from income_bundle.seldon.metrics import GatewayMetrics
from income_bundle.seldon.protocol import (
    DEFAULT_MAX_REQUEST_ROWS,
    InferRequest,
    InferResult,
    derived_max_rows,
    is_large,
    off_loop,
    versioned_answer,
)
from income_bundle.v2.checks import REQUEST_ID_HEADER, new_request_id
from income_bundle.v2.seldon_kafka import PIPELINE_VERSION_HEADER
from income_bundle.v2.seldon_mesh import (
    PINNED_MODEL_VERSION,
    PIPELINE_VERSION,
    ROUTE_HEADER,
    model_route,
    new_xid,
    pipeline_key,
    pipeline_route,
    versioned_model_name,
)
from income_bundle.v2.tensors import Tensor, to_json

if TYPE_CHECKING:
    from income_bundle.seldon.engine import PipelineObserver

__all__ = ["INTERNAL_ERROR_MESSAGE", "PIPELINE_SUFFIX", "SELDON_MODEL_HEADER", "Gateway"]

SELDON_MODEL_HEADER = "seldon-model"
PIPELINE_SUFFIX = ".pipeline"
PIPELINE_PLATFORM = "seldon-pipeline"
INTERNAL_ERROR_MESSAGE = "internal error in the gateway; the details are in its log"


def _tensor_metadata(item: dict[str, Any]) -> dict[str, Any]:
    return {"name": item["name"], "datatype": item["datatype"], "shape": list(item["shape"])}


def _model_headers(model: str, answer: object) -> list[tuple[str, str]]:
    """A model's answer's headers in seldon-mesh: MLServer's own `x-` headers (a detector's
    `x-seldon-alibi-*`), which the forwarder kept on the answer, then the route Envoy adds."""
    return [*getattr(answer, "headers", []), (ROUTE_HEADER, model_route(model))]


class Gateway:
    """Routes V2 requests to models or pipelines; shared by the REST and gRPC fronts."""

    def __init__(
        self,
        bundle: Bundle,
        forwarder: MLServerForwarder,
        contracts: dict[str, ModelContract],
        *,
        step_timeout_s: float = 30.0,
        async_queue_size: int = 1000,
        ready_poll_s: float = 5.0,
        max_request_rows: int | None = None,
    ):
        self.bundle = bundle
        # What the fronts refuse (413 / RESOURCE_EXHAUSTED) from the tensor headers, before
        # decoding: one huge request must not hold the event loop or MLServer's workers. None:
        # sized per target from its declared inputs (max_rows).
        self.max_request_rows = max_request_rows
        self._max_rows: dict[tuple[str, str], int] = {}
        self.forwarder = forwarder
        self.contracts = contracts
        self.step_timeout_s = step_timeout_s
        self.metrics = GatewayMetrics()
        self.engines = {
            name: PipelineEngine(
                pipeline,
                self._call_step,
                step_timeout_s=step_timeout_s,
                async_queue_size=async_queue_size,
            )
            for name, pipeline in bundle.pipelines.items()
        }
        self.metrics.watch_engines(self.engines)
        self._entry_contracts: dict[str, list[ModelContract]] = {}
        self._signatures: dict[str, tuple[list[dict], list[dict], bool]] = {}
        self.ready_poll_s = ready_poll_s
        self._ready_poller: asyncio.Task | None = None

    async def _call_model(
        self, model: str, tensors: list[Tensor], extra: dict | None = None
    ) -> list[Tensor]:
        return await self.forwarder.infer(model, tensors, extra)

    async def _call_step(
        self, model: str, tensors: list[Tensor], extra: dict | None = None
    ) -> list[Tensor]:
        """A pipeline step's call to MLServer (over REST), counted as Seldon's agent counts the
        dataflow engine's calls."""
        with self._agent_counted(model, "rest"):
            return await self._call_model(model, tensors, extra)

    @contextlib.contextmanager
    def _agent_counted(self, model: str, method_type: str):
        """Counts a call that reaches MLServer as Seldon's agent in front of MLServer counts it
        (a request the gateway refused never got there); a call cancelled by a timeout, whose
        answer never came, is not counted."""
        started = time.perf_counter()
        status: int | None = 500
        try:
            yield
            status = 200
        except ServingError as e:
            status = e.status
            raise
        except asyncio.CancelledError:
            status = None
            raise
        finally:
            if status is not None:
                elapsed = time.perf_counter() - started
                self.metrics.observe_model(model, method_type, status, elapsed)

    def observe(self, observer: PipelineObserver) -> None:
        """Hand every pipeline request's data to `observer` (the monitor's local source)."""
        for engine in self.engines.values():
            engine.observers.append(observer)

    async def start(self) -> None:
        await self.forwarder.start()
        for engine in self.engines.values():
            engine.start()
        if self.ready_poll_s > 0:
            self._ready_poller = asyncio.get_running_loop().create_task(self._poll_ready())

    async def close(self) -> None:
        if self._ready_poller:
            self._ready_poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ready_poller
        for engine in self.engines.values():
            await engine.stop()
        await self.forwarder.close()

    async def _poll_ready(self) -> None:
        """Keep `income_gateway_model_ready` current, for the IncomeModelDown alert."""
        while True:
            for model in sorted(self.bundle.models):
                try:
                    ready = await self.forwarder.ready(model)
                except Exception:  # MLServer gone counts as not ready
                    ready = False
                self.metrics.model_ready.labels(model).set(1 if ready else 0)
            await asyncio.sleep(self.ready_poll_s)

    def targets(self) -> list[str]:
        return [
            *sorted(self.bundle.models),
            *(f"{p}{PIPELINE_SUFFIX}" for p in sorted(self.engines)),
        ]

    def max_rows(self, target: str | None) -> int:
        """The rows a request for `target` (a seldon-model header) may carry: the override, or
        protocol.derived_max_rows of the model's declared inputs (a pipeline's: those its entry
        steps declare). A target that does not resolve gets the default; it is refused later."""
        if self.max_request_rows is not None:
            return self.max_request_rows
        try:
            kind, name = self.resolve(target)
        except ServingError:
            return DEFAULT_MAX_REQUEST_ROWS
        if (kind, name) not in self._max_rows:
            if kind == "pipeline":
                declared = self.pipeline_signature(name)[0]
            else:
                contract = self.contracts.get(name)
                declared = contract.declared if contract else []
            self._max_rows[kind, name] = derived_max_rows(declared)
        return self._max_rows[kind, name]

    def resolve(self, header: str | None) -> tuple[str, str]:
        """('model' | 'pipeline', name) for a seldon-model header value."""
        if header is None or not header.strip():
            raise ServingError(
                400,
                f"missing '{SELDON_MODEL_HEADER}' header: name a model or '<pipeline>.pipeline' "
                f"(one of: {', '.join(self.targets())})",
            )
        header = header.strip()
        if (
            header.endswith(PIPELINE_SUFFIX)
            and header.removesuffix(PIPELINE_SUFFIX) in self.engines
        ):
            return "pipeline", header.removesuffix(PIPELINE_SUFFIX)
        if header in self.bundle.models:
            return "model", header
        raise ServingError(
            404,
            f"no model or pipeline {header!r}; this gateway serves: {', '.join(self.targets())}",
        )

    def _pipeline_entry_contracts(self, name: str) -> list[ModelContract]:
        """Contracts of the steps that take the pipeline's inputs unchanged (worked out once)."""
        if name not in self._entry_contracts:
            self._entry_contracts[name] = self._find_entry_contracts(name)
        return self._entry_contracts[name]

    def _find_entry_contracts(self, name: str) -> list[ModelContract]:
        pipeline = self.bundle.pipelines[name]
        entries = []
        for step in pipeline.steps:
            refs = [TensorRef.parse(r, name) for r in step.inputs]
            takes_all = not step.inputs or any(
                r and r.source == name and r.tensor is None for r in refs
            )
            if takes_all and not step.tensor_map and step.name in self.contracts:
                entries.append(self.contracts[step.name])
        return entries

    @contextlib.contextmanager
    def _observed(self, protocol: str):
        """Times a request and counts it by target and status, whatever happens."""
        started = time.perf_counter()
        record = {"kind": "unknown", "name": "unknown", "code": 200}
        try:
            yield record
        except ServingError as e:
            record["code"] = e.status
            raise
        except Exception:
            record["code"] = 500  # answered as an internal error by the front
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe(record["name"], record["kind"], protocol, record["code"], elapsed)

    # -- the operations both fronts call, once per request -----------------------------------

    async def infer(self, request: InferRequest) -> InferResult:
        """Route, check and run one request; record it in the metrics whatever happens."""
        with self._observed(request.protocol) as record:
            kind, name = self.resolve(request.target)
            record.update(kind=kind, name=name)
            if kind == "model":
                result = await self._infer_model(name, request)
            else:
                result = await self._infer_pipeline(name, request)
            traced.describe_request(request, result)  # the fronts' request span
            return result

    async def _infer_model(self, name: str, request: InferRequest) -> InferResult:
        """As seldon-mesh routes a model request straight to MLServer: the body goes through
        unchanged (once checked) and MLServer's answer comes back with its id, named as the
        agent loaded the model. The x-request-id is the agent's: the client's, else a new xid
        (agent/rproxy.go `addRequestIdToResponse`, rproxy_grpc.go, where it is a trailer)."""
        contract = self.contracts.get(name) or ModelContract(name, [])
        await off_loop(is_large(request), contract.validate, request)
        echo = request.header_id or new_xid()
        if request.raw is not None:  # the JSON as the client sent it, checked
            with self._agent_counted(name, "rest"):
                answer = await self._forward_bytes(name, request.raw)
            headers = _model_headers(name, answer)
            answer = versioned_answer(answer, versioned_model_name(name), PINNED_MODEL_VERSION)
            return InferResult("model", name, None, echo, raw=answer, headers=headers)
        tensors = await off_loop(is_large(request), request.decode)
        try:
            async with asyncio.timeout(self.step_timeout_s):
                with self._agent_counted(name, request.protocol):
                    outputs = await self._call_model(name, tensors, request.forwarded_extra())
        except TimeoutError:
            raise ServingError(
                504, f"model {name} did not answer within {self.step_timeout_s:g} s"
            ) from None
        # MLServer answers the request's id, or a UUID of its own when it had none.
        return InferResult(
            "model",
            name,
            request.id or new_request_id(),
            echo,
            outputs=outputs,
            model_name=versioned_model_name(name),
            model_version=PINNED_MODEL_VERSION,
            headers=_model_headers(name, outputs),
        )

    async def _infer_pipeline(self, name: str, request: InferRequest) -> InferResult:
        """As Seldon's pipeline gateway: the request id is the client's x-request-id or a new
        xid (the body's id does not change it); outputs are selected by name. The answer is the
        dataflow engine's output message: no model name or version, and as id the gRPC
        request's own (REST's is dropped: kafka/pipeline/v2.go `inferenceRequestToV2Proto`
        sets none, and MLServer echoes an empty one)."""
        tensors = await off_loop(is_large(request), self._checked_inputs, name, request)
        wanted = [o["name"] for o in request.outputs]
        request_id = request.header_id or new_xid()
        outputs = await self.engines[name].infer(tensors, request_id)
        if wanted:
            by_name = {t.name: t for t in outputs}
            missing = [w for w in wanted if w not in by_name]
            if missing:
                raise ServingError(
                    400,
                    f"pipeline {name}: no output {', '.join(map(repr, missing))} in this answer "
                    f"(it has: {', '.join(by_name) or 'none'})",
                )
            outputs = [by_name[w] for w in wanted]
        # The headers the pipeline gateway copies from the output message (the request id, the
        # dataflow engine's pipeline version, the routes Envoy answered the model gateway with
        # along the output's chain of steps), then the route Envoy adds to the pipeline's answer.
        headers = [(REQUEST_ID_HEADER, request_id), (PIPELINE_VERSION_HEADER, PIPELINE_VERSION)]
        headers += [
            (ROUTE_HEADER, model_route(step)) for step in self.bundle.pipelines[name].output_chain()
        ]
        headers.append((ROUTE_HEADER, pipeline_route(name)))
        return InferResult(
            "pipeline",
            name,
            request.id if request.protocol == "grpc" else None,
            pipeline_key(name, request_id),
            outputs=outputs,
            model_name="",
            headers=headers,
        )

    def _checked_inputs(self, name: str, request: InferRequest) -> list[Tensor]:
        """A pipeline request's inputs, decoded and checked against its entry steps' contracts
        (on a worker thread for a large request)."""
        tensors = request.decode()
        wanted = [o["name"] for o in request.outputs]
        if wanted:
            self._check_wanted_outputs(name, wanted)
        for contract in self._pipeline_entry_contracts(name):
            try:
                contract.check(tensors)
            except ServingError as e:
                raise ServingError(e.status, f"pipeline {name}: {e.message}") from e
        return tensors

    def _check_wanted_outputs(self, name: str, wanted: list[str]) -> None:
        _, outputs, complete = self.pipeline_signature(name)
        known = [o["name"] for o in outputs]
        unknown = [w for w in wanted if w not in known]
        if unknown and complete:
            raise ServingError(
                400,
                f"pipeline {name}: no output {', '.join(map(repr, unknown))}; its outputs are: "
                f"{', '.join(known)}",
            )

    async def _forward_bytes(self, name: str, raw: bytes) -> bytes:
        return await self.forwarder.infer_bytes(name, raw)

    async def metadata(self, target: str | None) -> dict[str, Any]:
        """Model metadata in the protocol's shape: MLServer's for a model; for a pipeline,
        inputs and outputs derived from its steps' declarations."""
        kind, name = self.resolve(target)
        if kind == "pipeline":
            inputs, outputs, _ = self.pipeline_signature(name)
            return {
                "name": f"{name}{PIPELINE_SUFFIX}",
                "versions": [],
                "platform": PIPELINE_PLATFORM,
                "inputs": inputs,
                "outputs": outputs,
            }
        status, body = await self.forwarder.metadata(name)
        if status != 200 or not isinstance(body, dict):
            raise ServingError(503, f"model {name}: MLServer has no metadata ({status})")
        return body

    def pipeline_signature(self, name: str) -> tuple[list[dict], list[dict], bool]:
        """(inputs, outputs, complete) as tensor metadata: the inputs the entry steps declare,
        the outputs the output references select (renamed by the output tensorMap). `complete`
        is False when a referenced step declares nothing, so some outputs are unknown."""
        if name not in self._signatures:
            self._signatures[name] = self._derive_signature(name)
        return self._signatures[name]

    def _derive_signature(self, name: str) -> tuple[list[dict], list[dict], bool]:
        pipeline = self.bundle.pipelines[name]
        inputs: dict[str, dict] = {}
        for step in pipeline.steps:
            contract = self.contracts.get(step.name)
            declared = contract.declared if contract else []
            refs = [TensorRef.parse(r, name) for r in step.inputs] or [None]
            for ref in refs:
                if ref is not None and (ref.source != name or ref.kind != "inputs"):
                    continue
                if ref is None or ref.tensor is None:
                    for item in declared:
                        inputs.setdefault(item["name"], _tensor_metadata(item))
                    continue
                seen_as = step.tensor_map.get(str(ref), ref.tensor)
                match = [d for d in declared if d["name"] == seen_as]
                item = match[0] if match else (declared[0] if len(declared) == 1 else None)
                if item is not None:
                    inputs.setdefault(ref.tensor, {**_tensor_metadata(item), "name": ref.tensor})
        outputs: list[dict] = []
        complete = True
        for text in pipeline.output:
            ref = TensorRef.parse(text, name)
            if ref is None:
                complete = False
                continue
            if ref.source == name:
                candidates = list(inputs.values())
            else:
                contract = self.contracts.get(ref.source)
                candidates = (
                    (contract.declared_outputs if ref.kind == "outputs" else contract.declared)
                    if contract
                    else []
                )
                complete = complete and bool(candidates)
            for item in candidates:
                if ref.tensor is not None and item["name"] != ref.tensor:
                    continue
                key = f"{ref.source}.{ref.kind}.{item['name']}"
                renamed = pipeline.output_tensor_map.get(key, item["name"])
                outputs.append({**_tensor_metadata(item), "name": renamed})
        return list(inputs.values()), outputs, complete

    async def ready(self, target: str | None = None) -> bool:
        if target is None:
            return await self.forwarder.ready()
        kind, name = self.resolve(target)
        if kind == "model":
            return await self.forwarder.ready(name)
        steps = [s.name for s in self.bundle.pipelines[name].steps]
        return all(await asyncio.gather(*(self.forwarder.ready(s) for s in steps)))

    async def inspect(self, reference: str, wait_s: float = 0.0) -> dict[str, Any]:
        """Latest data of `<pipeline>[.<step>].(inputs|outputs)[.<tensor>]`, like `seldon pipeline inspect`."""
        pipeline_name = next(
            (
                p
                for p in sorted(self.engines, key=len, reverse=True)
                if reference.startswith(p + ".") or reference == p
            ),
            None,
        )
        if pipeline_name is None:
            raise ServingError(
                404,
                f"inspect {reference!r}: no such pipeline (pipelines: {', '.join(sorted(self.engines))})",
            )
        engine = self.engines[pipeline_name]
        if wait_s > 0:
            await engine.wait_idle(wait_s)
        rest = reference[len(pipeline_name) :].lstrip(".")
        parts = rest.split(".") if rest else []
        if not parts or parts[0] in ("inputs", "outputs"):
            kind = parts[0] if parts else "outputs"
            tensors = engine.latest_inputs if kind == "inputs" else engine.latest_outputs
            tensor = parts[1] if len(parts) > 1 else None
            source = pipeline_name
        else:
            step, kind = parts[0], (parts[1] if len(parts) > 1 else "outputs")
            tensor = parts[2] if len(parts) > 2 else None
            if step not in engine.steps or kind not in ("inputs", "outputs") or len(parts) > 3:
                raise ServingError(
                    400,
                    f"inspect {reference!r}: expected <pipeline>.<step>.(inputs|outputs)[.<tensor>] "
                    f"with a step of {pipeline_name} ({', '.join(engine.steps)})",
                )
            result = engine.latest.get(step)
            if result is not None and result.error:
                return {"reference": reference, "error": result.error, "tensors": []}
            tensors = (
                [] if result is None else (result.inputs if kind == "inputs" else result.outputs)
            )
            source = f"{pipeline_name}.{step}"
        selected = [to_json(t) for t in tensors if tensor is None or t.name == tensor]
        return {
            "reference": reference,
            "source": source,
            "tensors": selected,
            "counters": dict(engine.counters),
            "batches": engine.held_rows(),
        }
