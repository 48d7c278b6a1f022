"""The local gateway's Kafka option: every pipeline step's data on Seldon's topics, as Seldon
Core 2.10.2 writes them, so the cluster's data path (topics -> the monitor's Kafka source) runs
end to end on one machine.

Per answered request of a pipeline (see `income_bundle.v2.seldon_kafka` for the format
and where each fact comes from in Seldon's source):
- `<prefix>.<ns>.pipeline.<p>.inputs`: the request as a V2 `ModelInferRequest`;
- per step that ran, `<prefix>.<ns>.model.<step>.inputs` (`ModelInferRequest` of the tensors the
  step was given) and `.outputs` (its `ModelInferResponse`);
- `<prefix>.<ns>.pipeline.<p>.outputs`: the pipeline's answer as a `ModelInferResponse`.
A batched step writes one input and one output message per batch, under the id of the batch's
last request. Every message carries the pipeline gateway's key and its `x-request-id` and
`pipeline` headers; what the dataflow engine writes also `x-pipeline-version`; a model's outputs
what its call through Envoy answered (`x-seldon-route: :<model>_1:`, a detector's
`x-seldon-alibi-type` and `-method`), which later messages carry on without the alibi ones
(data-flow SeldonHeaders.kt `alibiDiscards`). Values are as Seldon writes them: the pipeline
gateway's request without model name or id (as a REST request becomes), the models' answers named
`<model>_1`, version "1", with MLServer's parameters, each tensor with its parameters
(`content_type`). Failed steps are not written (Seldon marks those with an error header, which
the monitor skips anyway). What is not reproduced: the partition in the key is always 0 (one
partition per topic here); a gRPC request's own model name and id in the pipeline's input message;
and a joined message carries every upstream step's route (Kafka Streams keeps one side's headers).

Sends never hold up a request: messages are queued and one task hands them to aiokafka's
producer in the order the engine told of them (so a topic's order is the order the engine batched
requests in, as Seldon's dataflow batches in topic order); acknowledgements are awaited apart. A
failed send is logged and counted, never raised to the caller.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry, Counter
from tritonclient.grpc import service_pb2

from income_bundle import tracing
from income_bundle.seldon.bundle import Pipeline
from income_bundle.seldon.engine import StepResult
from income_bundle.v2.seldon_kafka import (
    PIPELINE_HEADER,
    PIPELINE_VERSION_HEADER,
    TopicNamer,
    pipeline_key,
    seldon_headers,
)
from income_bundle.v2.seldon_mesh import (
    PINNED_MODEL_VERSION,
    PIPELINE_VERSION,
    ROUTE_HEADER,
    model_route,
    versioned_model_name,
)
from income_bundle.v2.tensors import Tensor, to_grpc_request, to_grpc_response

__all__ = ["SeldonTopicPublisher"]

log = logging.getLogger(__name__)

_Message = tuple[str, bytes, bytes, list[tuple[str, bytes]]]
_Headers = list[tuple[str, bytes]]
# What the dataflow engine drops from the headers it carries on (SeldonHeaders.kt alibiDiscards).
_ALIBI_HEADERS = ("x-seldon-alibi-type", "x-seldon-alibi-method")


class SeldonTopicPublisher:
    """An engine observer producing Seldon's topics to a Kafka cluster."""

    def __init__(
        self,
        bootstrap: str,
        namespace: str = "seldon-mesh",
        *,
        registry: CollectorRegistry | None = None,
        pipelines: dict[str, Pipeline] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        # The pipelines' steps: whose routes each message carries.
        self.pipelines = pipelines or {}
        self.namer = TopicNamer(namespace)
        self._producer = None
        self._queue: asyncio.Queue[list[_Message]] = asyncio.Queue()
        self._pump: asyncio.Task | None = None
        self._acks: set[asyncio.Future] = set()
        registry = registry or CollectorRegistry()
        self.published = Counter(
            "income_gateway_kafka_messages",
            "Messages the gateway wrote to Seldon's topics, by outcome (ok, error).",
            ["outcome"],
            registry=registry,
        )

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        # acks=all: a message the monitor may rely on is on every in-sync replica.
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await self._producer.start()
        self._pump = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Send what is queued, wait for its acknowledgements, then stop the producer."""
        if self._pump is not None:
            await self._queue.join()
            self._pump.cancel()
            self._pump = None
        if self._acks:
            await asyncio.gather(*self._acks, return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    # -- engine observer ---------------------------------------------------------------------

    def request_done(
        self,
        pipeline: str,
        request_id: str,
        inputs: list[Tensor],
        results: dict[str, StepResult],
        outputs: list[Tensor],
    ) -> None:
        key = pipeline_key(0, pipeline, request_id)
        headers = seldon_headers(request_id, pipeline)
        # The request's W3C trace context (called inside its span), carried on as the
        # dataflow engine carries headers: the monitor continues the trace from it.
        headers += [(k, v.encode()) for k, v in tracing.inject({}).items()]
        # The pipeline gateway's message: the REST body as a request, without model name or id
        # (kafka/pipeline/v2.go ConvertRequestToV2Bytes(data, "", "")).
        request = to_grpc_request(service_pb2, "", "", inputs)
        messages: list[_Message] = [
            (self.namer.topic("pipeline", pipeline, "inputs"), key, _bytes(request), headers)
        ]
        messages += self._steps(pipeline, request_id, results)
        # The dataflow engine's output message: no model name, the models' empty id.
        response = to_grpc_response(service_pb2, "", "", outputs)
        topic = self.namer.topic("pipeline", pipeline, "outputs")
        chain = [model_route(s) for s in self._output_chain(pipeline) if s in results]
        out_headers = _dataflow_headers(headers, chain, pipeline)
        messages.append((topic, key, _bytes(response), out_headers))
        self._send(messages)

    def async_done(self, pipeline: str, request_id: str, results: dict[str, StepResult]) -> None:
        self._send(self._steps(pipeline, request_id, results))

    def _steps(
        self, pipeline: str, request_id: str, results: dict[str, StepResult]
    ) -> list[_Message]:
        messages = []
        for step, result in results.items():
            if result.error is not None:
                continue
            # A batch travels under its last request's id (Seldon's BatchProcessor).
            step_id = result.members[-1][0] if result.members else request_id
            key = pipeline_key(0, pipeline, step_id)
            routes = [model_route(s) for s in self._upstream_of(pipeline, step)]
            headers = _dataflow_headers(seldon_headers(step_id, pipeline), routes, pipeline)
            # The dataflow engine chains the upstream message: no model name, its empty id.
            request = to_grpc_request(service_pb2, "", "", result.inputs)
            # MLServer's answer to the model gateway, through the agent: named and versioned as
            # the agent loaded the model, with MLServer's parameters (a detector's metadata).
            response = to_grpc_response(
                service_pb2,
                versioned_model_name(step),
                "",
                result.outputs,
                model_version=PINNED_MODEL_VERSION,
                parameters=getattr(result.outputs, "parameters", None),
            )
            # worker.go produce: the input's headers, then the answer's x- headers not there yet.
            answered = [
                (k, v.encode())
                for k, v in getattr(result.outputs, "headers", [])
                if k != ROUTE_HEADER
            ]
            answered.append((ROUTE_HEADER, model_route(step).encode()))
            out_headers = headers + [h for h in answered if h not in headers]
            messages.append(
                (self.namer.topic("model", step, "inputs"), key, _bytes(request), headers)
            )
            messages.append(
                (self.namer.topic("model", step, "outputs"), key, _bytes(response), out_headers)
            )
        return messages

    def _upstream_of(self, pipeline: str, step: str) -> list[str]:
        found = self.pipelines.get(pipeline)
        return found.upstream(step) if found else []

    def _output_chain(self, pipeline: str) -> list[str]:
        found = self.pipelines.get(pipeline)
        return found.output_chain() if found else []

    def _send(self, messages: list[_Message]) -> None:
        if self._pump is not None and messages:
            self._queue.put_nowait(messages)

    async def _run(self) -> None:
        while True:
            messages = await self._queue.get()
            try:
                for topic, key, value, headers in messages:
                    try:
                        ack = await self._producer.send(topic, value, key=key, headers=headers)
                    except Exception as e:
                        self._count(topic, e)
                        continue
                    self._acks.add(ack)
                    ack.add_done_callback(lambda done, topic=topic: self._acked(topic, done))
            finally:
                self._queue.task_done()

    def _acked(self, topic: str, ack: asyncio.Future) -> None:
        self._acks.discard(ack)
        self._count(topic, asyncio.CancelledError() if ack.cancelled() else ack.exception())

    def _count(self, topic: str, error: BaseException | None) -> None:
        if error is None:
            self.published.labels("ok").inc()
            return
        self.published.labels("error").inc()
        log.warning("Kafka: a message to %s was not written: %s", topic, error)


def _dataflow_headers(gateway_headers: _Headers, routes: list[str], pipeline: str) -> _Headers:
    """The headers of a message the dataflow engine writes: those it read (the pipeline
    gateway's, then each upstream step's route), without the alibi ones, with `pipeline` and
    `x-pipeline-version` set last (StreamTransforms.kt headerAdjust; PipelineHeaderProcessor
    removes, then adds)."""
    dropped = {PIPELINE_HEADER, PIPELINE_VERSION_HEADER, *_ALIBI_HEADERS}
    headers = [(k, v) for k, v in gateway_headers if k not in dropped]
    headers += [(ROUTE_HEADER, route.encode()) for route in routes]
    headers += [
        (PIPELINE_HEADER, pipeline.encode()),
        (PIPELINE_VERSION_HEADER, PIPELINE_VERSION.encode()),
    ]
    return headers


def _bytes(message) -> bytes:
    return message.SerializeToString()
