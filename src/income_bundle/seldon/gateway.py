"""A seldon-mesh compatible gateway in front of one real MLServer.

REST and gRPC speak the Open Inference Protocol at `/v2/models/<any>/infer`; the `seldon-model`
header (gRPC metadata) picks the target, as in seldon-mesh: `<model>` calls that model,
`<pipeline>.pipeline` runs the pipeline. Requests are checked against the target's declared
inputs before any model sees them; every error has the protocol's `{"error": "..."}` shape.

This module routes, checks and calls; `rest.py` (uvicorn) and `grpc_front.py` (grpc.aio) are its
two fronts, and `upstream.py` its HTTP client for MLServer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

from income_bundle import integrity
from income_bundle.seldon.bundle import Bundle, TensorRef
from income_bundle.seldon.engine import GatewayError, PipelineEngine
from income_bundle.seldon.request_id import check_request_id
from income_bundle.seldon.tensors import Tensor, from_json, range_problem, to_json
from income_bundle.seldon.upstream import UpstreamClient, UpstreamError, UpstreamResponse

if TYPE_CHECKING:
    from income_bundle.monitoring.recorder import PipelineMonitor

__all__ = ["SELDON_MODEL_HEADER", "Gateway", "MLServerForwarder", "ModelContract"]

log = logging.getLogger(__name__)

SELDON_MODEL_HEADER = "seldon-model"
PIPELINE_SUFFIX = ".pipeline"
INTERNAL_ERROR_MESSAGE = "internal error in the gateway; the details are in its log"
JSON_HEADERS = {"Content-Type": "application/json"}
NUMERIC = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
FLOATS = {"FP16", "FP32", "FP64"}


@dataclass
class ModelContract:
    """What a model declares it takes (model-settings.json `inputs`, artifact metadata)."""

    name: str
    declared: list[dict[str, Any]]
    feature_names: list[str] | None = None
    category_sizes: dict[int, int] = field(default_factory=dict)
    _categories: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def from_folder(cls, name: str, folder: Path) -> ModelContract:
        settings = json.loads((folder / "model-settings.json").read_text())
        metadata = json.loads((folder / integrity.METADATA_FILE).read_text())
        features = metadata.get("input_features") or {}
        sizes = {int(k): len(v) for k, v in (features.get("category_map") or {}).items()}
        return cls(name, settings.get("inputs") or [], features.get("names"), sizes)

    def accepts_fast(self, body: dict[str, Any]) -> bool:
        """Whether a parsed JSON request is, beyond doubt, a valid request for this model: one
        flat, finite, numeric [n, width] input with valid category codes, and well-formed extras.
        Checked with numpy on the parsed body, without building tensors. False means "look
        closer" (`check` finds the problem and words it), not "invalid"."""
        if len(self.declared) != 1 or len(self.declared[0].get("shape", [])) != 2:
            return False
        if not body.keys() <= _FAST_BODY_KEYS or not _fast_extras_ok(body):
            return False
        inputs = body.get("inputs")
        if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict:
            return False
        tensor = inputs[0]
        if not tensor.keys() <= _FAST_TENSOR_KEYS or type(tensor.get("parameters", {})) is not dict:
            return False
        name, datatype = tensor.get("name"), tensor.get("datatype")
        shape, data = tensor.get("shape"), tensor.get("data")
        width = int(self.declared[0]["shape"][1])
        if type(name) is not str or not name or datatype not in integrity.NUMERIC_DATATYPES:
            return False
        if type(shape) is not list or len(shape) != 2 or shape[1] != width:
            return False
        if type(shape[0]) is not int or type(shape[1]) is not int or shape[0] < 1:
            return False
        if type(data) is not list or len(data) != shape[0] * width:
            return False
        if not set(map(type, data)) <= _FAST_NUMBERS:
            return False
        X = np.array(data, dtype=np.float64).reshape(shape)
        if not np.isfinite(X).all() or range_problem(datatype, X.ravel()) is not None:
            return False
        if self.category_sizes:
            columns, sizes = self._category_arrays()
            codes = X[:, columns]
            if ((codes != np.round(codes)) | (codes < 0) | (codes >= sizes)).any():
                return False
        return True

    def _category_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._categories is None:
            self._categories = (
                np.fromiter(self.category_sizes, dtype=np.int64),
                np.fromiter(self.category_sizes.values(), dtype=np.float64),
            )
        return self._categories

    def check(self, tensors: list[Tensor]) -> None:
        """Raise GatewayError(400) when the tensors do not fit the declaration."""
        if not (len(self.declared) == 1 and len(self.declared[0].get("shape", [])) == 2):
            for index, tensor in enumerate(tensors):
                _check_tensor(self.name, index, tensor)
        else:
            width = int(self.declared[0]["shape"][1])
            inputs = [integrity.Tensor(t.name, t.datatype, t.shape, t.data) for t in tensors]
            try:
                X = integrity.check_request(
                    self.name, inputs, width, self.feature_names, self.category_sizes
                )
            except integrity.BadRequestError as e:
                raise GatewayError(400, str(e)) from e
            problem = range_problem(inputs[0].datatype, X.ravel())
            if problem is not None:
                index, expected = problem
                row, column = divmod(index, width)
                feature = f" ({self.feature_names[column]!r})" if self.feature_names else ""
                raise GatewayError(
                    400,
                    f"model {self.name}: input {inputs[0].name!r}: row {row}, column {column}"
                    f"{feature} is {X[row, column]:g}; expected {expected}",
                )


_FAST_BODY_KEYS = {"id", "inputs", "parameters", "outputs"}
_FAST_TENSOR_KEYS = {"name", "datatype", "shape", "data", "parameters"}
_FAST_NUMBERS = {int, float}


def _fast_extras_ok(body: dict[str, Any]) -> bool:
    if "id" in body:
        try:
            check_request_id(body["id"], "")
        except GatewayError:
            return False
    if "parameters" in body and type(body["parameters"]) is not dict:
        return False
    outputs = body.get("outputs", [])
    return type(outputs) is list and all(
        type(o) is dict and type(o.get("name")) is str for o in outputs
    )


def _check_tensor(model: str, index: int, tensor: Tensor) -> None:
    expected = 1
    for dimension in tensor.shape:
        expected *= dimension
    where = f"model {model}: input {tensor.name!r}"
    if len(tensor.data) != expected:
        raise GatewayError(
            400,
            f"{where} has shape {tensor.shape}, which needs {expected} values, "
            f"but carries {len(tensor.data)}",
        )
    if tensor.datatype in NUMERIC | FLOATS:
        for position, value in enumerate(tensor.data):
            if type(value) in (int, float):
                continue
            if value is None or isinstance(value, str | bytes | dict | list):
                raise GatewayError(
                    400,
                    f"{where}: value {position} is {value!r}; expected a {tensor.datatype} number",
                )
        values = np.asarray(tensor.data, dtype=np.float64)
        if tensor.datatype != "BOOL" and not np.isfinite(values).all():
            position = int(np.flatnonzero(~np.isfinite(values))[0])
            raise GatewayError(
                400, f"{where}: value {position} is {values[position]}; expected a finite number"
            )
        problem = range_problem(tensor.datatype, values)
        if problem is not None:
            position, expected = problem
            raise GatewayError(
                400, f"{where}: value {position} is {values[position]:g}; expected {expected}"
            )


class MLServerForwarder:
    """Calls models on MLServer over REST; translates its errors to the protocol's shape."""

    def __init__(self, base_url: str, timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._client: UpstreamClient | None = None

    async def start(self) -> None:
        self._client = UpstreamClient(self.base_url, limit=64)

    async def close(self) -> None:
        if self._client:
            await self._client.close()

    async def infer(
        self, model: str, tensors: list[Tensor], extra: dict | None = None
    ) -> list[Tensor]:
        """Call a model with these tensors (and parameters/outputs); return its outputs."""
        body = orjson.dumps({"inputs": [to_json(t) for t in tensors], **(extra or {})})
        payload = orjson.loads(await self.infer_bytes(model, body))
        return [
            from_json(o, f"model {model} output {i}")
            for i, o in enumerate(payload.get("outputs", []))
        ]

    async def infer_bytes(self, model: str, body: bytes) -> bytes:
        """POST a JSON request to the model and return MLServer's answer as it came; errors
        become GatewayErrors in the protocol's shape."""
        try:
            response = await self._request("POST", f"/v2/models/{model}/infer", body)
        except TimeoutError:
            raise GatewayError(
                504, f"model {model} did not answer within {self.timeout_s:g} s"
            ) from None
        except UpstreamError as e:
            log.warning("model %s: MLServer at %s: %s", model, self.base_url, e)
            raise GatewayError(
                503, f"model {model} is unavailable: MLServer at {self.base_url} is not reachable"
            ) from e
        if response.status != 200:
            raise GatewayError(*_translate_error(model, response.status, response.body))
        return response.body

    async def _request(self, method: str, path: str, body: bytes = b"") -> UpstreamResponse:
        assert self._client is not None, "start() the forwarder first"
        async with asyncio.timeout(self.timeout_s):
            return await self._client.request(method, path, body, JSON_HEADERS if body else None)

    async def ready(self, model: str | None = None) -> bool:
        path = f"/v2/models/{model}/ready" if model else "/v2/health/ready"
        try:
            return (await self._request("GET", path)).status == 200
        except (UpstreamError, TimeoutError):
            return False

    async def metadata(self, model: str) -> tuple[int, Any]:
        try:
            response = await self._request("GET", f"/v2/models/{model}")
            return response.status, orjson.loads(response.body)
        except (UpstreamError, TimeoutError, orjson.JSONDecodeError) as e:
            log.warning("model %s: metadata from MLServer at %s: %r", model, self.base_url, e)
            raise GatewayError(
                503, f"model {model} is unavailable: no metadata from MLServer at {self.base_url}"
            ) from e


def _translate_error(model: str, status: int, raw: bytes) -> tuple[int, str]:
    """MLServer answers {"error": ...}, FastAPI's 422 {"detail": ...}, or plain-text 500s. A 5xx
    carries the model's or MLServer's internals (exception text): logged, not passed on."""
    if status >= 500:
        log.warning("model %s: MLServer answered %d: %s", model, status, raw[:2000])
        return (
            status,
            f"model {model} failed on MLServer (HTTP {status}); the gateway log has its answer",
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body["error"]
        # "mlserver.errors.InferenceError: model income: ..." -> "model income: ..."
        if ": " in message and message.split(": ", 1)[0].count(".") >= 1:
            message = message.split(": ", 1)[1]
        if f"model {model}" not in message:
            message = f"model {model}: {message}"
        return 400, message
    if isinstance(body, dict) and "detail" in body:
        details = body["detail"]
        if isinstance(details, list):
            text = "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in details
            )
        else:
            text = str(details)
        return 400, f"model {model} rejected the request: {text}"
    if status == 404:
        return 503, f"model {model} is not loaded on MLServer"
    text = raw.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}"
    return 400, f"model {model} failed: {text}"


LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class GatewayMetrics:
    """Prometheus metrics of one gateway (its own registry, served at /metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "seldon_gateway_requests",
            "Inference requests by target (model or pipeline), protocol and status code.",
            ["target", "kind", "protocol", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "seldon_gateway_request_duration_seconds",
            "Time from request to response, by target.",
            ["target", "kind", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_calls = Counter(
            "seldon_gateway_model_calls",
            "Calls the gateway made to MLServer, by model and outcome (ok or error).",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "seldon_gateway_model_ready",
            "1 if MLServer reported the model ready at the last check, else 0.",
            ["model"],
            registry=self.registry,
        )

    def watch_engines(self, engines: dict[str, PipelineEngine]) -> None:
        """Export the engines' own drop counts at scrape time (they stay the one source)."""
        self.registry.register(_EngineCollector(engines))

    def observe(self, target: str, kind: str, protocol: str, code: int, seconds: float) -> None:
        self.requests.labels(target, kind, protocol, str(code)).inc()
        self.duration.labels(target, kind, protocol).observe(seconds)


class _EngineCollector:
    def __init__(self, engines: dict[str, PipelineEngine]) -> None:
        self.engines = engines

    def collect(self):
        family = CounterMetricFamily(
            "seldon_gateway_async_dropped",
            "Requests whose asynchronous steps were dropped because the queue was full.",
            labels=["pipeline"],
        )
        for name, engine in self.engines.items():
            family.add_metric([name], engine.counters["async_dropped"])
        yield family


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
        monitor: PipelineMonitor | None = None,
        ready_poll_s: float = 5.0,
    ):
        self.bundle = bundle
        self.forwarder = forwarder
        self.contracts = contracts
        self.step_timeout_s = step_timeout_s
        self.metrics = GatewayMetrics()
        self.engines = {
            name: PipelineEngine(
                pipeline,
                self._call_model,
                step_timeout_s=step_timeout_s,
                async_queue_size=async_queue_size,
            )
            for name, pipeline in bundle.pipelines.items()
        }
        self.metrics.watch_engines(self.engines)
        self._entry_contracts: dict[str, list[ModelContract]] = {}
        self.monitor: PipelineMonitor | None = None
        if monitor is not None:
            self.attach_monitor(monitor)
        self.ready_poll_s = ready_poll_s
        self._ready_poller: asyncio.Task | None = None

    async def _call_model(
        self, model: str, tensors: list[Tensor], extra: dict | None = None
    ) -> list[Tensor]:
        try:
            outputs = await self.forwarder.infer(model, tensors, extra)
        except GatewayError:
            self.metrics.model_calls.labels(model, "error").inc()
            raise
        self.metrics.model_calls.labels(model, "ok").inc()
        return outputs

    def attach_monitor(self, monitor: PipelineMonitor) -> None:
        """Let `monitor` observe every pipeline and answer feedback."""
        self.monitor = monitor
        for engine in self.engines.values():
            engine.observers.append(monitor)

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
        if self.monitor is not None:
            self.monitor.close()

    async def _poll_ready(self) -> None:
        """Keep `seldon_gateway_model_ready` current, for the IncomeModelDown alert."""
        while True:
            for model in sorted(self.bundle.models):
                try:
                    ready = await self.forwarder.ready(model)
                except Exception:  # MLServer gone counts as not ready
                    ready = False
                self.metrics.model_ready.labels(model).set(1 if ready else 0)
            await asyncio.sleep(self.ready_poll_s)

    def feedback(self, pipeline: str, body: Any) -> dict[str, Any]:
        """Ground truth for one pipeline request (see income_bundle.monitoring.feedback)."""
        from income_bundle.monitoring.feedback import FeedbackError

        pipeline = pipeline.removesuffix(PIPELINE_SUFFIX)
        if pipeline not in self.engines:
            raise GatewayError(
                404, f"feedback: no pipeline {pipeline!r} (pipelines: {', '.join(self.engines)})"
            )
        if self.monitor is None:
            raise GatewayError(501, "feedback: this gateway runs without monitoring (no state dir)")
        if not isinstance(body, dict):
            raise GatewayError(
                400,
                f"pipeline {pipeline} feedback: the body must be a JSON object "
                '{"id": "<x-request-id>", "truth": [one label per row]}',
            )
        try:
            return self.monitor.feedback(pipeline, body.get("id"), body.get("truth"))
        except FeedbackError as e:
            raise GatewayError(e.status, e.message) from e

    def targets(self) -> list[str]:
        return [
            *sorted(self.bundle.models),
            *(f"{p}{PIPELINE_SUFFIX}" for p in sorted(self.engines)),
        ]

    def resolve(self, header: str | None) -> tuple[str, str]:
        """('model' | 'pipeline', name) for a seldon-model header value."""
        if header is None or not header.strip():
            raise GatewayError(
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
        raise GatewayError(
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
        except GatewayError as e:
            record["code"] = e.status
            raise
        finally:
            if not record.get("counted_elsewhere"):
                elapsed = time.perf_counter() - started
                self.metrics.observe(
                    record["name"], record["kind"], protocol, record["code"], elapsed
                )

    async def infer_model_bytes(
        self, header: str | None, tensors: list[Tensor], body: bytes
    ) -> tuple[str, bytes] | None:
        """A REST request for a model: check it, then pass the body through to MLServer and its
        answer back. None when the target is a pipeline (use `infer`)."""
        with self._observed("rest") as record:
            kind, name = self.resolve(header)
            if kind != "model":
                record["counted_elsewhere"] = True
                return None
            record.update(kind=kind, name=name)
            self._check_model_request(name, tensors)
            return name, await self._forward_bytes(name, body)

    async def infer_model_json(
        self, header: str | None, body: dict[str, Any], raw: bytes
    ) -> tuple[str, bytes] | None:
        """The hot path for model requests: a request its model's contract accepts as it is
        parsed (`ModelContract.accepts_fast`) goes to MLServer unchanged. None when it is not a
        model request or needs a closer look; `infer_model_bytes` then answers."""
        try:
            kind, name = self.resolve(header)
        except GatewayError:
            return None
        contract = self.contracts.get(name)
        if kind != "model" or contract is None or not contract.accepts_fast(body):
            return None
        with self._observed("rest") as record:
            record.update(kind=kind, name=name)
            return name, await self._forward_bytes(name, raw)

    async def _forward_bytes(self, name: str, raw: bytes) -> bytes:
        try:
            answer = await self.forwarder.infer_bytes(name, raw)
        except GatewayError:
            self.metrics.model_calls.labels(name, "error").inc()
            raise
        self.metrics.model_calls.labels(name, "ok").inc()
        return answer

    def _check_model_request(self, name: str, tensors: list[Tensor]) -> None:
        if name in self.contracts:
            self.contracts[name].check(tensors)
        else:
            for index, tensor in enumerate(tensors):
                _check_tensor(name, index, tensor)

    async def infer(
        self,
        header: str | None,
        tensors: list[Tensor],
        extra: dict | None = None,
        protocol: str = "rest",
        request_id: str = "",
    ) -> tuple[str, list[Tensor]]:
        """Route, check and run one request; record it in the metrics whatever happens."""
        with self._observed(protocol) as record:
            kind, name = self.resolve(header)
            record.update(kind=kind, name=name)
            return name, await self._infer(kind, name, tensors, extra, request_id)

    async def _infer(
        self, kind: str, name: str, tensors: list[Tensor], extra: dict | None, request_id: str = ""
    ) -> list[Tensor]:
        if kind == "model":
            self._check_model_request(name, tensors)
            try:
                async with asyncio.timeout(self.step_timeout_s):
                    outputs = await self._call_model(name, tensors, extra)
            except TimeoutError:
                raise GatewayError(
                    504, f"model {name} did not answer within {self.step_timeout_s:g} s"
                ) from None
            return outputs
        for contract in self._pipeline_entry_contracts(name):
            try:
                contract.check(tensors)
            except GatewayError as e:
                raise GatewayError(e.status, f"pipeline {name}: {e.message}") from e
        return await self.engines[name].infer(tensors, request_id)

    async def ready(self, header: str | None = None) -> bool:
        if header is None:
            return await self.forwarder.ready()
        kind, name = self.resolve(header)
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
            raise GatewayError(
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
                raise GatewayError(
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
