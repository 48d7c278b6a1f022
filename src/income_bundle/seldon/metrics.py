"""The gateway's Prometheus metrics (its own registry, served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

from income_bundle.seldon.engine import PipelineEngine

__all__ = ["LATENCY_BUCKETS", "GatewayMetrics"]

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
