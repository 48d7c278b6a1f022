"""Memory the Seldon path asks of its one kind node: every pod the charts and role templates
create, directly or through an operator, with its containers' memory requests and limits.

Pods come from the rendered objects as the controllers that run them would make them:
Deployments, StatefulSets and DaemonSets (times replicas); Seldon's runtime components (the
SeldonConfig's podSpecs, one each unless the SeldonRuntime overrides replicas); Servers (their
ServerConfig's containers with the Server's own merged over them by name, as operator v2.10.2
common/patch_utils.go MergeContainers does); Strimzi's KafkaNodePools; prometheus-operator's
Prometheus and Alertmanager (spec.resources)."""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 1024**3
MIB = 1024**2
_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def quantity(text: str | int) -> int:
    """Bytes of a Kubernetes memory quantity (512Mi, 1G, 1073741824)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kMGT]i?|Ki)?", str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a memory quantity")
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


@dataclass(frozen=True)
class Pod:
    """One pod's memory: the effective request and limit (max of the summed containers and any
    one init container, as the scheduler counts them), times its replicas."""

    origin: str
    name: str
    replicas: int
    request: int  # bytes, per replica
    limit: int  # bytes, per replica; a container without a limit counts its request

    @property
    def total_request(self) -> int:
        return self.request * self.replicas

    @property
    def total_limit(self) -> int:
        return self.limit * self.replicas


def _memory(container: dict) -> tuple[int, int]:
    resources = container.get("resources") or {}
    request = (resources.get("requests") or {}).get("memory")
    limit = (resources.get("limits") or {}).get("memory")
    # Kubernetes defaults a missing request to the limit.
    request_bytes = quantity(request) if request else (quantity(limit) if limit else 0)
    return request_bytes, quantity(limit) if limit else request_bytes


def _pod(origin: str, name: str, replicas: int, spec: dict) -> Pod:
    main = [_memory(c) for c in spec.get("containers") or []]
    init = [_memory(c) for c in spec.get("initContainers") or []]
    request = max([sum(r for r, _ in main), *(r for r, _ in init)])
    limit = max([sum(limit for _, limit in main), *(limit for _, limit in init)])
    return Pod(origin, name, replicas, request, limit)


def _merge_containers(base: list[dict], overrides: list[dict]) -> list[dict]:
    """The Server's containers over its ServerConfig's, by name; resources key by key."""
    merged = {c["name"]: dict(c) for c in base}
    for override in overrides:
        current = merged.setdefault(override["name"], {})
        resources = {k: dict(v) for k, v in (current.get("resources") or {}).items()}
        for key, values in (override.get("resources") or {}).items():
            resources.setdefault(key, {}).update(values)
        merged[override["name"]] = {**current, **override, "resources": resources}
    return list(merged.values())


def node_pods(objects: dict[str, list[dict]]) -> list[Pod]:
    """Every pod that `objects` (origin -> rendered documents) put on the node."""
    every = [(origin, d) for origin, docs in objects.items() for d in docs]
    by_kind: dict[str, list[tuple[str, dict]]] = {}
    for origin, doc in every:
        by_kind.setdefault(doc["kind"], []).append((origin, doc))
    pods = []
    for kind in ("Deployment", "StatefulSet", "DaemonSet"):
        for origin, doc in by_kind.get(kind, []):
            replicas = 1 if kind == "DaemonSet" else int(doc["spec"].get("replicas", 1))
            pods.append(
                _pod(origin, doc["metadata"]["name"], replicas, doc["spec"]["template"]["spec"])
            )
    runtime_replicas = {
        override["name"]: override.get("replicas", 1)
        for _, runtime in by_kind.get("SeldonRuntime", [])
        for override in runtime["spec"].get("overrides") or []
        if not override.get("disable")
    }
    for origin, config in by_kind.get("SeldonConfig", []):
        for component in config["spec"]["components"]:
            replicas = int(runtime_replicas.get(component["name"], component.get("replicas", 1)))
            pods.append(_pod(origin, component["name"], replicas, component["podSpec"]))
    server_configs = {doc["metadata"]["name"]: doc for _, doc in by_kind.get("ServerConfig", [])}
    for origin, server in by_kind.get("Server", []):
        config = server_configs[server["spec"]["serverConfig"]]["spec"]["podSpec"]
        own = (server["spec"].get("podSpec") or {}).get("containers") or []
        spec = {**config, "containers": _merge_containers(config["containers"], own)}
        replicas = int(server["spec"].get("replicas", 1))
        pods.append(_pod(origin, f"Server {server['metadata']['name']}", replicas, spec))
    for origin, pool in by_kind.get("KafkaNodePool", []):
        spec = {"containers": [{"resources": pool["spec"].get("resources") or {}}]}
        pods.append(
            _pod(origin, f"Kafka {pool['metadata']['name']}", pool["spec"]["replicas"], spec)
        )
    for kind in ("Prometheus", "Alertmanager"):
        for origin, doc in by_kind.get(kind, []):
            spec = {"containers": [{"resources": doc["spec"].get("resources") or {}}]}
            pods.append(
                _pod(
                    origin,
                    f"{kind} {doc['metadata']['name']}",
                    doc["spec"].get("replicas", 1),
                    spec,
                )
            )
    return [pod for pod in pods if pod.replicas > 0]


def gib(value: int) -> str:
    return f"{value / GIB:.2f} GiB"


def budget_problem(profile: str, pods: list[Pod], budget: int, what: str = "request") -> str:
    """Empty when the pods' summed memory `what` (request or limit) fits the budget, else a
    sentence naming the total and the biggest pods."""
    total = sum(getattr(p, f"total_{what}") for p in pods)
    if total <= budget:
        return ""
    biggest = sorted(pods, key=lambda p: getattr(p, f"total_{what}"), reverse=True)[:5]
    named = ", ".join(
        f"{p.name} {getattr(p, f'total_{what}') // MIB}Mi ({p.origin})" for p in biggest
    )
    return (
        f"profile {profile}: memory {what}s sum to {gib(total)}, over its budget of {gib(budget)} "
        f"by {(total - budget) // MIB}Mi; the biggest: {named}"
    )
