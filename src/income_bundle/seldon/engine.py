"""Seldon Core v2 pipeline semantics for one machine: the dataflow engine's rules, per request.

- a step with no `inputs` reads the pipeline inputs; references select all tensors, or one, of a
  step's inputs or outputs (or the pipeline's inputs); `tensorMap` renames them;
- `inputsJoinType`: inner waits for every input, outer takes those that were produced, any takes
  the first one produced; triggers gate a step without feeding it (`triggersJoinType` alike);
- `batch.size` accumulates rows across requests (concatenated on dimension 0) and calls the model
  once at least `size` rows are held;
- independent steps run concurrently; steps the output does not need (the drift detector) run
  after the response, through a bounded queue that counts what it drops.

Observers (monitoring) see each request's step results once its response is ready, and the
asynchronous steps' results once they ran; a batched step's result names the requests whose rows
it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from income_bundle import tracing
from income_bundle.errors import ServingError
from income_bundle.seldon import traced
from income_bundle.seldon.bundle import Pipeline, Step, TensorRef
from income_bundle.v2.tensors import Tensor, concat_rows

__all__ = ["ModelCall", "PipelineEngine", "PipelineObserver", "StepResult"]

log = logging.getLogger(__name__)

ModelCall = Callable[[str, list[Tensor]], Awaitable[list[Tensor]]]


@dataclass
class StepResult:
    inputs: list[Tensor]
    outputs: list[Tensor]
    finished: float = field(default_factory=time.time)
    error: str | None = None
    # For a batched step: (request id, rows) of every request whose rows the call held.
    members: list[tuple[str, int]] = field(default_factory=list)


class PipelineObserver(Protocol):
    """Told of every answered request (its inputs, the synchronous steps' results and the
    pipeline's outputs) and of every run of its asynchronous steps. Called on the event loop:
    an observer must return at once."""

    def request_done(
        self,
        pipeline: str,
        request_id: str,
        inputs: list[Tensor],
        results: dict[str, StepResult],
        outputs: list[Tensor],
    ) -> None: ...

    def async_done(
        self, pipeline: str, request_id: str, results: dict[str, StepResult]
    ) -> None: ...


@dataclass
class _Run:
    """One pipeline request: its inputs and a future per step (None: the step did not fire)."""

    inputs: list[Tensor]
    request_id: str = ""
    results: dict[str, asyncio.Future] = field(default_factory=dict)
    # The request's context (its trace) for the asynchronous steps; None with tracing off.
    context: contextvars.Context | None = None

    def settled(self, names: list[str] | set[str]) -> dict[str, StepResult]:
        """The results of these steps that fired and succeeded."""
        found = {}
        for name in names:
            future = self.results[name]
            if not future.done() or future.cancelled() or future.exception() is not None:
                continue
            if (result := future.result()) is not None:
                found[name] = result
        return found


@dataclass
class _Batch:
    held: list[list[Tensor]] = field(default_factory=list)
    members: list[tuple[str, int]] = field(default_factory=list)
    rows: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class PipelineEngine:
    """Runs one validated Pipeline by calling its steps' models through `call_model`."""

    def __init__(
        self,
        pipeline: Pipeline,
        call_model: ModelCall,
        *,
        step_timeout_s: float = 30.0,
        async_queue_size: int = 1000,
    ):
        self.pipeline = pipeline
        self.call_model = call_model
        self.step_timeout_s = step_timeout_s
        self.steps = {step.name: step for step in pipeline.steps}
        self.output_refs = [self._ref(r) for r in pipeline.output]
        self.sync_steps = self._needed_by_output()
        self.async_steps = [s.name for s in pipeline.steps if s.name not in self.sync_steps]
        self._batches = {s.name: _Batch() for s in pipeline.steps if s.batch_size}
        self._queue: asyncio.Queue[_Run] = asyncio.Queue(maxsize=async_queue_size)
        self._worker: asyncio.Task | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.latest: dict[str, StepResult] = {}
        self.latest_inputs: list[Tensor] = []
        self.latest_outputs: list[Tensor] = []
        self.counters = {"requests": 0, "async_dropped": 0, "async_processed": 0, "async_failed": 0}
        self.observers: list[PipelineObserver] = []

    def _ref(self, text: str) -> TensorRef:
        ref = _parse_reference(text, self.pipeline.name)
        if ref is None:  # validation rejects these before an engine is built
            raise ValueError(f"pipeline {self.pipeline.name}: invalid reference {text!r}")
        return ref

    def _dependencies(self, step: Step) -> set[str]:
        refs = [self._ref(r) for r in (*step.inputs, *step.triggers)]
        return {r.source for r in refs if r.source != self.pipeline.name}

    def _needed_by_output(self) -> set[str]:
        needed: set[str] = set()
        pending = [r.source for r in self.output_refs]
        while pending:
            name = pending.pop()
            if name in needed or name not in self.steps:
                continue
            needed.add(name)
            pending.extend(self._dependencies(self.steps[name]))
        return needed

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.async_steps and self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._async_worker())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every queued asynchronous step has run; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    # -- requests ----------------------------------------------------------------------------

    async def infer(self, inputs: list[Tensor], request_id: str = "") -> list[Tensor]:
        self.counters["requests"] += 1
        self.latest_inputs = inputs
        traced.name_request(request_id)
        run = _Run(inputs, request_id)
        loop = asyncio.get_running_loop()
        for name in self.steps:
            run.results[name] = loop.create_future()
        tasks = [loop.create_task(self._run_step(self.steps[n], run)) for n in self.sync_steps]
        try:
            outputs = await self._collect_output(run)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        finally:
            if self.async_steps:
                self._enqueue(run)
        self.latest_outputs = outputs
        if self.observers:
            results = run.settled(self.sync_steps)
            for observer in self.observers:
                self._notify(
                    observer.request_done, self.pipeline.name, request_id, inputs, results, outputs
                )
        return outputs

    def _notify(self, method: Callable, *args) -> None:
        """Monitoring must never fail a request or the asynchronous worker."""
        try:
            method(*args)
        except Exception:
            log.exception("pipeline %s: observer %s failed", self.pipeline.name, method)

    def held_rows(self) -> dict[str, int]:
        """Rows each batched step holds towards its next call."""
        return {name: batch.rows for name, batch in self._batches.items()}

    def _enqueue(self, run: _Run) -> None:
        if tracing.enabled():
            run.context = contextvars.copy_context()
        try:
            self._queue.put_nowait(run)
            self._idle.clear()
        except asyncio.QueueFull:
            self.counters["async_dropped"] += 1
            log.warning("pipeline %s: asynchronous queue full, request dropped", self.pipeline.name)

    async def _async_worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            run = await self._queue.get()
            tasks = [
                loop.create_task(self._run_step(self.steps[n], run), context=run.context)
                for n in self.async_steps
            ]
            await asyncio.gather(*tasks, return_exceptions=True)
            futures = [run.results[n] for n in self.async_steps]
            failed = [f.exception() for f in futures if not f.cancelled() and f.exception()]
            self.counters["async_failed"] += len(failed)
            self.counters["async_processed"] += 1
            for error in failed:
                log.warning("pipeline %s: asynchronous step failed: %s", self.pipeline.name, error)
            if self.observers:
                results = run.settled(self.async_steps)
                for observer in self.observers:
                    self._notify(observer.async_done, self.pipeline.name, run.request_id, results)
            if self._queue.empty():
                self._idle.set()

    async def _collect_output(self, run: _Run) -> list[Tensor]:
        gathered = await self._gather(run, self.output_refs, self.pipeline.output_join)
        if gathered is None:
            missing = [str(r) for r in self.output_refs]
            raise ServingError(
                500,
                f"pipeline {self.pipeline.name}: output {', '.join(missing)} produced nothing for "
                f"this request (a batched or triggered step did not fire); "
                f"with stepsJoin {self.pipeline.output_join} every output is needed",
            )
        return _apply_tensor_map(gathered, self.pipeline.output_tensor_map)

    async def _resolve(self, run: _Run, ref: TensorRef) -> list[tuple[str, Tensor]] | None:
        """The tensors a reference selects, each with its fully qualified name; None if absent."""
        if ref.source == self.pipeline.name:
            tensors = run.inputs
        else:
            result: StepResult | None = await run.results[ref.source]
            if result is None:
                return None
            tensors = result.outputs if ref.kind == "outputs" else result.inputs
        selected = [t for t in tensors if ref.tensor is None or t.name == ref.tensor]
        if not selected:
            return None
        return [(f"{ref.source}.{ref.kind}.{t.name}", t) for t in selected]

    async def _gather(
        self, run: _Run, refs: list[TensorRef], join: str
    ) -> list[tuple[str, Tensor]] | None:
        if join == "any":
            pending = {asyncio.ensure_future(self._resolve(run, r)) for r in refs}
            try:
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        if (found := task.result()) is not None:
                            return found
                return None
            finally:
                for task in pending:
                    task.cancel()
        resolved = await asyncio.gather(*(self._resolve(run, r) for r in refs))
        present = [r for r in resolved if r is not None]
        if (join == "inner" and len(present) < len(refs)) or not present:
            return None
        return [item for group in present for item in group]

    async def _run_step(self, step: Step, run: _Run) -> None:
        """Fire one step and settle its future; never raises (waiters see the exception)."""
        future = run.results[step.name]
        try:
            result = await self._fire(step, run)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            if isinstance(error, ServingError):
                self.latest[step.name] = StepResult([], [], error=error.message)
            future.set_exception(error)
            return
        future.set_result(result)

    async def _fire(self, step: Step, run: _Run) -> StepResult | None:
        if step.triggers:
            refs = [self._ref(r) for r in step.triggers]
            if await self._gather(run, refs, step.triggers_join) is None:
                return None
        if step.inputs:
            gathered = await self._gather(
                run, [self._ref(r) for r in step.inputs], step.inputs_join
            )
            if gathered is None:
                return None
            tensors = _apply_tensor_map(gathered, step.tensor_map)
        else:
            tensors = list(run.inputs)
        members: list[tuple[str, int]] = []
        if step.batch_size:
            batched = await self._accumulate(step, tensors, run.request_id)
            if batched is None:
                return None
            tensors, members = batched
        outputs = await self._call(step, tensors)
        result = StepResult(tensors, outputs, members=members)
        self.latest[step.name] = result
        return result

    async def _accumulate(
        self, step: Step, tensors: list[Tensor], request_id: str
    ) -> tuple[list[Tensor], list[tuple[str, int]]] | None:
        batch = self._batches[step.name]
        async with batch.lock:
            rows = tensors[0].rows if tensors else 0
            batch.held.append(tensors)
            batch.members.append((request_id, rows))
            batch.rows += rows
            if batch.rows < (step.batch_size or 0):
                return None
            held, members = batch.held, batch.members
            batch.held, batch.members, batch.rows = [], [], 0
        try:
            return [concat_rows(list(group)) for group in itertools.zip_longest(*held)], members
        except (ServingError, TypeError) as e:
            raise ServingError(
                400, f"pipeline {self.pipeline.name}, step {step.name}: cannot batch: {e}"
            ) from e

    @traced.step_span
    async def _call(self, step: Step, tensors: list[Tensor]) -> list[Tensor]:
        where = f"pipeline {self.pipeline.name}, step {step.name}"
        try:
            async with asyncio.timeout(self.step_timeout_s):  # no task per call, as wait_for makes
                return await self.call_model(step.name, tensors)
        except TimeoutError:
            raise ServingError(
                504, f"{where}: model {step.name} did not answer within {self.step_timeout_s:g} s"
            ) from None
        except ServingError as e:
            raise ServingError(e.status, f"{where}: {e.message}") from e


@functools.lru_cache(maxsize=4096)
def _parse_reference(text: str, pipeline_name: str) -> TensorRef | None:
    """References are parsed on every request; the strings come from a fixed manifest."""
    return TensorRef.parse(text, pipeline_name)


def _apply_tensor_map(
    gathered: list[tuple[str, Tensor]], tensor_map: dict[str, str]
) -> list[Tensor]:
    return [
        tensor.renamed(tensor_map[key]) if key in tensor_map else tensor for key, tensor in gathered
    ]
