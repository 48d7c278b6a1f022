"""What tracing costs the gateway: off, on (every request sampled, exported to a real Jaeger), and
against the same run's baseline, direct MLServer calls.

Two measurements:
- `hook_cost_ns`: the gateway's tracing hooks with tracing off, in process: each decorator's
  wrapper around a coroutine that does nothing, against that coroutine unwrapped, and the
  per-request checks (`describe_request`, `name_request`, the latency exemplar, the forwarder's
  and the Kafka publisher's `inject`), times how often one pipeline request meets each. That is
  the difference between tracing off and no tracing code at all.
- `measure_tracing`: `income-bundle serve` twice, tracing off then on (`--otlp-endpoint` to
  Jaeger, sampling 1.0), each paired request by request with direct calls to its own MLServer
  (`gateway.paired_against_mlserver`), so the machine's drift between the
  two runs cancels in the overheads and ratios.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["format_tracing", "hook_cost_ns", "measure_tracing"]

# Measures a running local Seldon against its MLServer: {"paired_hop": ..., "paired_pipeline": ...}
Paired = Callable[[Any], dict[str, Any]]

# How often one income-production request meets each hook (three steps call MLServer; the
# latency histograms are observed for the request and each step's call).
HOOKS_PER_PIPELINE_REQUEST = {
    "rest_infer": 1,
    "step_span": 3,
    "forward_span": 3,
    "inject (forwarder)": 3,
    "describe_request": 1,
    "name_request": 1,
    "exemplar": 4,
    "capture (monitor hand-over)": 1,
}


def _per_call_ns(call: Callable[[], Any], loops: int) -> float:
    best = float("inf")
    for _ in range(5):  # the best of five: the least disturbed by the other processes
        started = time.perf_counter_ns()
        for _ in range(loops):
            call()
        best = min(best, (time.perf_counter_ns() - started) / loops)
    return best


def _coroutine_ns(function: Callable[..., Any], args: tuple, loops: int) -> float:
    """One await of `function(*args)`, driven without an event loop (it never suspends)."""

    def once() -> None:
        with contextlib.suppress(StopIteration):
            function(*args).send(None)

    return _per_call_ns(once, loops)


def hook_cost_ns(loops: int = 20_000) -> dict[str, Any]:
    """Nanoseconds the tracing hooks add to one pipeline request with tracing off (see the
    module's docstring); tracing must be off in this process."""
    from income_bundle import tracing
    from income_bundle.seldon import traced

    if tracing.enabled():
        raise RuntimeError("measure the hooks with tracing off")

    class _Metrics:
        def observe_body_sizes(self, *args: Any) -> None:
            pass

    class _Front:
        class gateway:  # noqa: N801 - stands for the attribute path front.gateway.metrics
            metrics = _Metrics()

    class _Request:
        def __init__(self) -> None:
            self.headers = {"content-length": "1234"}

    class _Response:
        body = b"{}"

    class _Engine:
        class pipeline:  # noqa: N801
            name = "p"

    class _Step:
        name = "s"

    class _Forwarder:
        base_url = "http://127.0.0.1:1"

    async def handler(*args: Any) -> Any:
        return _Response()

    async def step_call(*args: Any) -> Any:
        return []

    async def forward_call(*args: Any) -> Any:
        return b"{}"

    wrappers = {
        "rest_infer": (traced.rest_infer(handler), handler, (_Front(), _Request())),
        "step_span": (traced.step_span(step_call), step_call, (_Engine(), _Step(), [])),
        "forward_span": (traced.forward_span(forward_call), forward_call, (_Forwarder(), "m", b"")),
    }
    per_hook: dict[str, float] = {}
    for name, (wrapped, bare, args) in wrappers.items():
        with_hook = _coroutine_ns(wrapped, args, loops)
        without = _coroutine_ns(bare, args, loops)
        per_hook[name] = max(0.0, with_hook - without)
    headers = {"Content-Type": "application/json"}
    per_hook["inject (forwarder)"] = _per_call_ns(
        lambda: tracing.inject(dict(headers)) if tracing.enabled() else headers, loops
    )
    per_hook["describe_request"] = _per_call_ns(lambda: traced.describe_request(None, None), loops)
    per_hook["name_request"] = _per_call_ns(lambda: traced.name_request("r"), loops)
    per_hook["exemplar"] = _per_call_ns(tracing.exemplar, loops)
    per_hook["capture (monitor hand-over)"] = _per_call_ns(tracing.capture, loops)
    total = sum(per_hook[name] * count for name, count in HOOKS_PER_PIPELINE_REQUEST.items())
    return {"per_hook_ns": per_hook, "per_pipeline_request_ns": total}


def _mode(label: str, endpoint: str | None, paired: Paired) -> dict[str, Any]:
    from income_bundle.seldon.local import LocalSeldon, ServeSettings

    with (
        tempfile.TemporaryDirectory(prefix="income-benchmark-tracing-") as state,
        LocalSeldon(ServeSettings(state_dir=Path(state), otlp_endpoint=endpoint)) as seldon,
    ):
        result = paired(seldon)
    hop, pipeline = result["paired_hop"], result["paired_pipeline"]
    print(
        f"[tracing {label}] hop {hop['overhead_p50_ms']:.3f} ms, pipeline {pipeline['ratio']:.3f}"
    )
    return result


def measure_tracing(paired: Paired) -> dict[str, Any]:
    """Tracing off, then on to a real Jaeger, each against its own run's direct MLServer calls:
    `paired(seldon)` measures a running local Seldon (`gateway.paired_against_mlserver`)."""
    from income_bundle.training import train
    from income_bundle_dev.jaeger import Jaeger

    train()
    results: dict[str, Any] = {"hooks_off": hook_cost_ns()}
    with Jaeger() as jaeger:
        results["off"] = _mode("off", None, paired)
        results["on"] = _mode("on", jaeger.otlp_grpc_endpoint, paired)
        results["jaeger_rss_mib"] = jaeger.rss_bytes() / 2**20
    return results


def format_tracing(results: dict[str, Any]) -> str:
    hooks = results["hooks_off"]
    lines = [
        "tracing (paired against direct MLServer calls in each run):",
        f"{'':8s} {'hop overhead p50 ms':>20s} {'pipeline p50 ms':>16s} "
        f"{'pipeline / formula':>19s}",
    ]
    for mode in ("off", "on"):
        hop, pipeline = results[mode]["paired_hop"], results[mode]["paired_pipeline"]
        lines.append(
            f"{mode:8s} {hop['overhead_p50_ms']:20.3f} {pipeline['p50_ms']['pipeline']:16.2f} "
            f"{pipeline['ratio']:19.3f}"
        )
    lines.append(
        f"tracing off, hooks vs no tracing code: {hooks['per_pipeline_request_ns'] / 1000:.2f} us "
        f"per pipeline request ({', '.join(f'{k} {v:.0f} ns' for k, v in hooks['per_hook_ns'].items())})"
    )
    lines.append(
        f"Jaeger resident memory after the traced run: {results['jaeger_rss_mib']:.0f} MiB"
    )
    return "\n".join(lines)
