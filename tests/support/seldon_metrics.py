"""What Seldon's own components export, from Seldon's source (SeldonIO/seldon-core v2.10.2), cited
by file: the agent beside each MLServer Server and the pipeline gateway, their metric names and
label names, histogram buckets, and the pods and ports their PodMonitors select."""

from __future__ import annotations


def _histogram(name: str, labels: set[str]) -> dict[str, frozenset[str]]:
    return {
        f"{name}_bucket": frozenset(labels | {"le"}),
        f"{name}_count": frozenset(labels),
        f"{name}_sum": frozenset(labels),
    }


_AGENT_REPLICA = {"server", "server_replica"}
_AGENT_CALL = _AGENT_REPLICA | {"model", "model_internal", "method_type", "code"}
_AGENT_AGGREGATE = _AGENT_REPLICA | {"method_type"}
# scheduler/pkg/metrics/agent.go: the model histogram, infer counters and their aggregates
# (createModelHistogram, createModelInferCounter, ...: names and label names).
SELDON_AGENT_REQUEST_SERIES = {
    **_histogram("seldon_model_infer_api_seconds", _AGENT_REPLICA | {"method", "code"}),
    "seldon_model_infer_total": frozenset(_AGENT_CALL),
    "seldon_model_infer_seconds_total": frozenset(_AGENT_CALL),
    "seldon_model_aggregate_infer_total": frozenset(_AGENT_AGGREGATE),
    "seldon_model_aggregate_infer_seconds_total": frozenset(_AGENT_AGGREGATE),
}
# agent.go, the agent's other series (Go counters keep their names: no _total is added).
SELDON_AGENT_SERIES = {
    **SELDON_AGENT_REQUEST_SERIES,
    **{
        name: frozenset(_AGENT_REPLICA)
        for name in (
            "seldon_cache_evict_count",
            "seldon_cache_miss_count",
            "seldon_load_model_counter",
            "seldon_unload_model_counter",
            "seldon_server_replica_memory_capacity_bytes_gauge",
            "seldon_server_replica_memory_capacity_overcommit_bytes_gauge",
        )
    },
    **{
        name: frozenset(_AGENT_REPLICA | {"model_internal"})
        for name in (
            "seldon_loaded_model_gauge",
            "seldon_loaded_model_memory_bytes_gauge",
            "seldon_evicted_model_memory_bytes_gauge",
        )
    },
}
_PIPELINE_CALL = {"server", "pipeline", "method_type", "code"}
# scheduler/pkg/metrics/gateway.go (createPipelineHistogram, createPipelineInferCounter, ...).
SELDON_PIPELINE_GATEWAY_SERIES = {
    **_histogram("seldon_pipeline_infer_api_seconds", {"server", "pipeline", "method", "code"}),
    "seldon_pipeline_infer_total": frozenset(_PIPELINE_CALL),
    "seldon_pipeline_infer_seconds_total": frozenset(_PIPELINE_CALL),
    "seldon_pipeline_aggregate_infer_total": frozenset({"server", "method_type"}),
    "seldon_pipeline_aggregate_infer_seconds_total": frozenset({"server", "method_type"}),
}
# agent.go DefaultHistogramBuckets, for both histograms.
SELDON_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# k8s/helm-charts/seldon-core-v2-setup/templates/_components-statefulsets.tpl: the mlserver
# ServerConfig's agent container names its metrics port so (9006; MLServer's is server-metrics).
SELDON_AGENT_METRICS_PORT = "metrics"
# operator/controllers/reconcilers/seldon/deployment_reconciler.go and statefulset_reconciler.go
# label a SeldonRuntime component's pods app.kubernetes.io/name=<component>; the same chart
# template names the component seldon-pipelinegateway and its metrics port (9006) so.
SELDON_PIPELINE_GATEWAY_POD_LABELS = {"app.kubernetes.io/name": "seldon-pipelinegateway"}
SELDON_PIPELINE_GATEWAY_METRICS_PORT = "metrics"
