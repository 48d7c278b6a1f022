"""The gateway's Prometheus metrics (its own registry, served at /metrics): Seldon's own.

The local gateway plays Seldon's pipeline gateway for pipeline requests and Seldon's agent for
the calls that reach MLServer, so it exports their series with their names, label names and
buckets (SeldonIO/seldon-core v2.10.2 `scheduler/pkg/metrics/gateway.go` and `agent.go`): one
set of alert rules and one dashboard read the local mode and a Seldon cluster alike.

- pipeline requests, as the pipeline gateway counts them: `seldon_pipeline_infer_api_seconds`
  (histogram; labels server, pipeline, method, code), `seldon_pipeline_infer_total` and
  `seldon_pipeline_infer_seconds_total` (server, pipeline, method_type, code), and the
  aggregates `seldon_pipeline_aggregate_infer_total` and `..._seconds_total` (server,
  method_type). `server` is "pipeline-gateway", as Seldon sets it.
- the calls that reach MLServer (model requests and pipeline steps), as the agent in front of
  MLServer counts them:
  `seldon_model_infer_api_seconds` (histogram; server, server_replica, method, code),
  `seldon_model_infer_total` and `seldon_model_infer_seconds_total` (server, server_replica,
  model, model_internal, method_type, code), `seldon_model_aggregate_infer_total` and
  `..._seconds_total` (server, server_replica, method_type).

Label values as Seldon writes them: `method_type` is "rest" or "grpc"; `code` is the HTTP status
("200") for REST and the gRPC code's Go name ("OK", "InvalidArgument", "Internal") for gRPC; the
histograms' `method` is promhttp's lower-case HTTP method ("post") for the agent's REST calls and
"grpc" for gRPC, and the method type for the pipeline gateway (which passes it as `method`);
`model_internal` is Seldon's versioned name, "<model>_1" (one version here).

Two series only the local gateway has, read by local-only rules and panels (Seldon has no
equivalent): `income_gateway_model_ready` (MLServer's readiness of each model, polled) and
`income_gateway_async_dropped_total` (requests whose asynchronous steps the full queue dropped).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

from income_bundle import tracing
from income_bundle.errors import grpc_status
from income_bundle.seldon.engine import PipelineEngine

__all__ = ["PIPELINE_GATEWAY_SERVER", "SELDON_BUCKETS", "GatewayMetrics", "seldon_code"]

# agent.go DefaultHistogramBuckets, which both histograms use.
SELDON_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Body sizes from one 1-row request (hundreds of bytes) to the 64 MiB limit.
BODY_BUCKETS = tuple(float(4**n * 256) for n in range(10))
# gateway.go NewPrometheusPipelineMetrics: serverName.
PIPELINE_GATEWAY_SERVER = "pipeline-gateway"
# The Server Seldon's stock runtime creates for MLServer (the agent labels with the Server name).
DEFAULT_SERVER = "mlserver"

_MODEL_LABELS = ["server", "server_replica", "model", "model_internal", "method_type", "code"]
_PIPELINE_LABELS = ["server", "pipeline", "method_type", "code"]


def seldon_code(method_type: str, status: int) -> str:
    """The `code` label Seldon writes for an answer with this HTTP status: the status for REST,
    the gRPC status code's name as Go's codes.Code.String() spells it for gRPC."""
    if method_type != "grpc":
        return str(status)
    if status == 200:
        return "OK"
    name = grpc_status(status).name
    if name == "CANCELLED":
        return "Canceled"
    return "".join(part.capitalize() for part in name.split("_"))


class GatewayMetrics:
    """Prometheus metrics of one gateway (its own registry, served at /metrics)."""

    def __init__(self, server: str = DEFAULT_SERVER, server_replica: str = "0") -> None:
        self.server = server
        self.server_replica = server_replica
        self.registry = r = CollectorRegistry()
        self.pipeline_seconds = Histogram(
            "seldon_pipeline_infer_api_seconds",
            "A histogram of latencies for pipeline gateway",
            ["server", "pipeline", "method", "code"],
            buckets=SELDON_BUCKETS,
            registry=r,
        )
        self.pipeline_infer = Counter(
            "seldon_pipeline_infer",
            "A count of pipeline gateway calls",
            _PIPELINE_LABELS,
            registry=r,
        )
        self.pipeline_infer_seconds = Counter(
            "seldon_pipeline_infer_seconds",
            "A sum of pipeline gateway call latencies",
            _PIPELINE_LABELS,
            registry=r,
        )
        self.pipeline_aggregate_infer = Counter(
            "seldon_pipeline_aggregate_infer",
            "A count of pipeline gateway calls (aggregate)",
            ["server", "method_type"],
            registry=r,
        )
        self.pipeline_aggregate_infer_seconds = Counter(
            "seldon_pipeline_aggregate_infer_seconds",
            "A sum of pipeline gateway call latencies (aggregate)",
            ["server", "method_type"],
            registry=r,
        )
        self.model_seconds = Histogram(
            "seldon_model_infer_api_seconds",
            "A histogram of latencies for inference server",
            ["server", "server_replica", "method", "code"],
            buckets=SELDON_BUCKETS,
            registry=r,
        )
        self.model_infer = Counter(
            "seldon_model_infer", "A count of server inference calls", _MODEL_LABELS, registry=r
        )
        self.model_infer_seconds = Counter(
            "seldon_model_infer_seconds",
            "A sum of server inference call latencies",
            _MODEL_LABELS,
            registry=r,
        )
        self.model_aggregate_infer = Counter(
            "seldon_model_aggregate_infer",
            "A count of server inference calls (aggregate)",
            ["server", "server_replica", "method_type"],
            registry=r,
        )
        self.model_aggregate_infer_seconds = Counter(
            "seldon_model_aggregate_infer_seconds",
            "A sum of server inference call latencies (aggregate)",
            ["server", "server_replica", "method_type"],
            registry=r,
        )
        self.model_ready = Gauge(
            "income_gateway_model_ready",
            "1 if MLServer reported the model ready at the gateway's last check, else 0.",
            ["model"],
            registry=r,
        )
        # Only the local gateway has these (income_bundle.seldon.traced observes them).
        self.request_bytes = Histogram(
            "income_gateway_request_body_bytes",
            "Size of inference request bodies the gateway answered, by protocol.",
            ["protocol"],
            buckets=BODY_BUCKETS,
            registry=r,
        )
        self.response_bytes = Histogram(
            "income_gateway_response_body_bytes",
            "Size of inference answer bodies, by protocol.",
            ["protocol"],
            buckets=BODY_BUCKETS,
            registry=r,
        )

    def observe_body_sizes(self, protocol: str, request_bytes: int, response_bytes: int) -> None:
        """An answered inference request's body sizes (REST: as sent on the wire; gRPC: the
        messages' serialized sizes)."""
        self.request_bytes.labels(protocol).observe(request_bytes)
        self.response_bytes.labels(protocol).observe(response_bytes)

    def watch_engines(self, engines: dict[str, PipelineEngine]) -> None:
        """Export the engines' own drop counts at scrape time (they stay the one source)."""
        self.registry.register(_EngineCollector(engines))

    def observe(self, target: str, kind: str, protocol: str, code: int, seconds: float) -> None:
        """One request the gateway answered. A pipeline's is counted here, as the pipeline
        gateway counts it; a model's where its call reaches MLServer (`observe_model`), as the
        agent in front of MLServer counts it; one for no known target reaches neither in Seldon
        (seldon-mesh answers it)."""
        if kind == "pipeline":
            self.observe_pipeline(target, protocol, code, seconds)

    def observe_pipeline(
        self, pipeline: str, method_type: str, status: int, seconds: float
    ) -> None:
        """gateway.go AddPipelineInferMetrics."""
        code = seldon_code(method_type, status)
        labels = (PIPELINE_GATEWAY_SERVER, pipeline, method_type, code)
        self.pipeline_infer.labels(*labels).inc()
        self.pipeline_infer_seconds.labels(*labels).inc(seconds)
        self.pipeline_aggregate_infer.labels(PIPELINE_GATEWAY_SERVER, method_type).inc()
        self.pipeline_aggregate_infer_seconds.labels(PIPELINE_GATEWAY_SERVER, method_type).inc(
            seconds
        )
        self.pipeline_seconds.labels(*labels).observe(seconds, tracing.exemplar())

    def observe_model(self, model: str, method_type: str, status: int, seconds: float) -> None:
        """agent.go AddModelInferMetrics, and the histogram its REST handler and gRPC
        interceptor fill (labelled by HTTP method or "grpc", not by model)."""
        code = seldon_code(method_type, status)
        replica = (self.server, self.server_replica)
        labels = (*replica, model, f"{model}_1", method_type, code)
        self.model_infer.labels(*labels).inc()
        self.model_infer_seconds.labels(*labels).inc(seconds)
        self.model_aggregate_infer.labels(*replica, method_type).inc()
        self.model_aggregate_infer_seconds.labels(*replica, method_type).inc(seconds)
        method = "grpc" if method_type == "grpc" else "post"
        self.model_seconds.labels(*replica, method, code).observe(seconds, tracing.exemplar())


class _EngineCollector:
    def __init__(self, engines: dict[str, PipelineEngine]) -> None:
        self.engines = engines

    def collect(self):
        family = CounterMetricFamily(
            "income_gateway_async_dropped",
            "Requests whose asynchronous steps were dropped because the queue was full.",
            labels=["pipeline"],
        )
        for name, engine in self.engines.items():
            family.add_metric([name], engine.counters["async_dropped"])
        yield family
