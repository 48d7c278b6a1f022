"""Seldon Core v2's Kafka dataflow, as v2.10.2 writes it: topic names, keys, headers, values.

Everything here is a fact of SeldonIO/seldon-core at tag v2.10.2; the source of each sits beside it.
What the monitor relies on:
- Topics `<prefix>.<namespace>.model.<model>.inputs|outputs` and
  `<prefix>.<namespace>.pipeline.<pipeline>.inputs|outputs` (scheduler/pkg/kafka/topics.go,
  `TopicNamer`; prefix "seldon" unless the SeldonConfig sets one; an empty namespace is "default").
- `.inputs` values are serialised V2 `ModelInferRequest`s and `.outputs` values
  `ModelInferResponse`s (scheduler/pkg/kafka/gateway/worker.go unmarshals inputs as requests and
  marshals responses to outputs; the dataflow engine, scheduler/data-flow Chainer.kt, converts
  between them when it chains steps).
- The request id is the `x-request-id` header (scheduler/pkg/util/ids.go `RequestIdHeader`); the
  pipeline gateway adds it when the caller sent none (scheduler/pkg/kafka/pipeline/utils.go
  `addRequestIdToKafkaHeadersIfMissing`) and every later topic carries the headers on.
- The pipeline gateway's key is `<partition>.<pipeline>.<request id>`
  (scheduler/pkg/kafka/pipeline/kafkamanager.go, `getCompositeKey` in utils.go). The key's format
  changed in 2.10, so the monitor never parses it: the id comes from the header.
- The `pipeline` header names the pipeline (scheduler/pkg/util/constants.go
  `SeldonPipelineHeader`); the dataflow engine adds `x-pipeline-version`
  (scheduler/data-flow .../kafka/headers/SeldonHeaders.kt).
- A batched step's input is one request whose rows are the batch and whose id is that of the last
  request in it (scheduler/data-flow .../kafka/BatchProcessor.kt, `merge`); the step's output
  carries the same key and headers (gateway/worker.go `produce` copies `job.msg.Key` and headers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

# The V2 dataplane messages as the gateway's gRPC front has them. Seldon's v2_dataplane.proto,
# MLServer's and Triton's grpc_service.proto share package `inference` and field numbers, so the
# bytes are the same; one process can load only one of them into protobuf's default pool.
from tritonclient.grpc import service_pb2

from income_bundle.v2.tensors import Tensor, from_grpc_request, from_grpc_response

__all__ = [
    "PIPELINE_HEADER",
    "PIPELINE_VERSION_HEADER",
    "REQUEST_ID_HEADER",
    "SeldonMessage",
    "TopicName",
    "TopicNamer",
    "decode_request",
    "decode_response",
    "pipeline_key",
]

DEFAULT_TOPIC_PREFIX = "seldon"  # topics.go: defaultSeldonTopicPrefix
REQUEST_ID_HEADER = "x-request-id"  # util/ids.go: RequestIdHeader
PIPELINE_HEADER = "pipeline"  # util/constants.go: SeldonPipelineHeader
PIPELINE_VERSION_HEADER = "x-pipeline-version"  # data-flow SeldonHeaders.kt: PIPELINE_VERSION
ERROR_HEADER = "seldon-pipeline-errors"  # topics.go: TopicErrorHeader
# topics.go: isValidPrefix; topic names may only hold these characters.
_VALID_PART = re.compile(r"^[A-Za-z0-9._-]+$")

Kind = Literal["model", "pipeline"]
Direction = Literal["inputs", "outputs"]


@dataclass(frozen=True)
class TopicName:
    kind: Kind
    name: str
    direction: Direction


@dataclass(frozen=True)
class TopicNamer:
    """Seldon's topic names for one namespace (topics.go `TopicNamer`)."""

    namespace: str = "default"
    prefix: str = DEFAULT_TOPIC_PREFIX

    def __post_init__(self) -> None:
        for part in (self.namespace, self.prefix):
            if not _VALID_PART.match(part):
                raise ValueError(
                    f"{part!r} cannot be part of a Kafka topic name: use only a-z, A-Z, 0-9, '.', "
                    "'_' and '-'"
                )

    def topic(self, kind: Kind, name: str, direction: Direction) -> str:
        return ".".join((self.prefix, self.namespace, kind, name, direction))

    def parse(self, topic: str) -> TopicName | None:
        """The kind, name and direction of one of this namespace's topics; None for others."""
        head = f"{self.prefix}.{self.namespace}."
        if not topic.startswith(head):
            return None
        kind, _, rest = topic[len(head) :].partition(".")
        name, _, direction = rest.rpartition(".")
        if kind not in ("model", "pipeline") or direction not in ("inputs", "outputs") or not name:
            return None
        return TopicName(kind, name, direction)  # type: ignore[arg-type]


def pipeline_key(partition: int, pipeline: str, request_id: str) -> bytes:
    """The key the pipeline gateway writes (kafkamanager.go, `getCompositeKey`)."""
    return f"{partition}.{pipeline}.{request_id}".encode()


@dataclass(frozen=True)
class SeldonMessage:
    """One record of a Seldon topic, as a Kafka client hands it over."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]]
    timestamp_ms: int
    partition: int = 0
    offset: int = 0

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode(errors="replace")
        return None

    @property
    def request_id(self) -> str | None:
        return self.header(REQUEST_ID_HEADER)

    @property
    def pipeline(self) -> str | None:
        return self.header(PIPELINE_HEADER)


def decode_request(value: bytes) -> list[Tensor]:
    """The input tensors of a serialised V2 `ModelInferRequest`."""
    message = service_pb2.ModelInferRequest()
    message.ParseFromString(value)
    return from_grpc_request(message)[0]


def decode_response(value: bytes) -> list[Tensor]:
    """The output tensors of a serialised V2 `ModelInferResponse`."""
    message = service_pb2.ModelInferResponse()
    message.ParseFromString(value)
    return from_grpc_response(message)


def seldon_headers(
    request_id: str, pipeline: str, extra: Iterable[tuple[str, str]] = ()
) -> list[tuple[str, bytes]]:
    """The headers the pipeline gateway writes: the caller's `x-` headers, then `pipeline` and
    `x-request-id` (kafkamanager.go `Infer`; utils.go `convertHttpHeadersToKafkaHeaders`)."""
    headers = [(k.lower(), v.encode()) for k, v in extra if k.lower().startswith("x-")]
    headers.append((PIPELINE_HEADER, pipeline.encode()))
    if not any(k == REQUEST_ID_HEADER for k, _ in headers):
        headers.append((REQUEST_ID_HEADER, request_id.encode()))
    return headers
