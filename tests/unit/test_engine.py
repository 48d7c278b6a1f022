"""Pipeline semantics of the gateway's engine, with small async functions standing in for models.

These stand-ins are test doubles named as such (`echo_model`, `slow_model`); the same engine runs
against real MLServer in test_gateway.py.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from income_bundle.errors import ServingError
from income_bundle.seldon.bundle import Pipeline, Step
from income_bundle.seldon.engine import PipelineEngine
from income_bundle.v2.tensors import Tensor


def rows(n: int, name: str = "x", width: int = 2) -> Tensor:
    return Tensor(name, "FP32", [n, width], [1.0] * (n * width))


class Models:
    """Test doubles: each model echoes its inputs as `<model>_out` and records every call."""

    def __init__(
        self, failing: set[str] | None = None, gates: dict[str, asyncio.Event] | None = None
    ):
        self.calls: list[tuple[str, list[Tensor]]] = []
        self.failing = failing or set()
        # A gated model answers only once its event is set; `entered[model]` is set when called.
        self.gates = gates or {}
        self.entered: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def __call__(self, model: str, tensors: list[Tensor]) -> list[Tensor]:
        self.calls.append((model, tensors))
        self.entered[model].set()
        if model in self.gates:
            await self.gates[model].wait()
        if model in self.failing:
            raise ServingError(400, f"model {model}: broken on purpose")
        return [t.renamed(f"{model}_out") if i == 0 else t for i, t in enumerate(tensors)]

    def called(self, model: str) -> list[list[Tensor]]:
        return [tensors for name, tensors in self.calls if name == model]


def pipeline(name: str, steps: list[Step], output: list[str], **kwargs) -> Pipeline:
    return Pipeline(name=name, steps=steps, output=output, **kwargs)


def run(coro):
    return asyncio.run(coro)


async def _with_engine(p: Pipeline, models: Models, body, **kwargs):
    engine = PipelineEngine(p, models, **kwargs)
    engine.start()
    try:
        return await body(engine)
    finally:
        await engine.stop()


def test_step_without_inputs_reads_pipeline_inputs():
    models = Models()
    p = pipeline("p", [Step("a")], ["a.outputs"])
    out = run(_with_engine(p, models, lambda e: e.infer([rows(3)])))
    assert [t.name for t in out] == ["a_out"] and out[0].shape == [3, 2]
    assert models.called("a")[0][0].name == "x"


def test_reference_selects_one_tensor_and_tensor_map_renames():
    models = Models()
    steps = [
        Step("a"),
        Step("b", inputs=["a.outputs.a_out"], tensor_map={"a.outputs.a_out": "renamed"}),
    ]
    p = pipeline("p", steps, ["b.outputs"])
    run(_with_engine(p, models, lambda e: e.infer([rows(1), rows(1, "y")])))
    (b_inputs,) = models.called("b")
    assert [t.name for t in b_inputs] == ["renamed"]


def test_step_can_read_another_steps_inputs():
    models = Models()
    steps = [Step("a"), Step("b", inputs=["a.inputs"])]
    p = pipeline("p", steps, ["b.outputs"])
    run(_with_engine(p, models, lambda e: e.infer([rows(1, "orig")])))
    assert [t.name for t in models.called("b")[0]] == ["orig"]


def test_twenty_one_row_requests_fire_a_batch_of_20_once():
    models = Models()
    steps = [Step("clf"), Step("drift", batch_size=20)]
    p = pipeline("p", steps, ["clf.outputs"])

    async def body(engine):
        for _ in range(19):
            await engine.infer([rows(1)])
        assert await engine.wait_idle(5)
        assert models.called("drift") == []  # 19 rows never fire
        await engine.infer([rows(1)])
        assert await engine.wait_idle(5)
        return engine

    engine = run(_with_engine(p, models, body))
    (batch,) = models.called("drift")
    assert batch[0].shape == [20, 2] and len(batch[0].data) == 40
    assert len(models.called("clf")) == 20
    assert engine.latest["drift"].inputs[0].shape == [20, 2]


def test_batch_fires_with_all_rows_held_once_size_is_reached():
    models = Models()
    p = pipeline("p", [Step("clf"), Step("drift", batch_size=20)], ["clf.outputs"])

    async def body(engine):
        await engine.infer([rows(15)])
        await engine.infer([rows(10)])
        await engine.wait_idle(5)

    run(_with_engine(p, models, body))
    (batch,) = models.called("drift")
    assert batch[0].shape == [25, 2]


def test_triggers_gate_a_step_without_feeding_it():
    models = Models()
    steps = [
        Step("drift", batch_size=2),
        Step("alarm", inputs=["p.inputs"], triggers=["drift.outputs.drift_out"]),
        Step("clf"),
    ]
    p = pipeline("p", steps, ["clf.outputs", "alarm.outputs"], output_join="outer")

    async def body(engine):
        first = await engine.infer([rows(1)])
        second = await engine.infer([rows(1)])
        return first, second

    first, second = run(_with_engine(p, models, body))
    assert [t.name for t in first] == ["clf_out"]  # the batch has not fired: alarm gated
    assert [t.name for t in second] == ["clf_out", "alarm_out"]
    (alarm_inputs,) = models.called("alarm")
    assert [t.name for t in alarm_inputs] == ["x"]  # fed the pipeline inputs, not the trigger


@pytest.mark.parametrize(
    ("join", "fires", "inputs"),
    [("inner", False, None), ("outer", True, ["a_out"]), ("any", True, ["a_out"])],
)
def test_join_types_when_one_input_is_absent(join, fires, inputs):
    models = Models()
    steps = [
        Step("a"),
        Step("batched", batch_size=100),
        Step("c", inputs=["a.outputs", "batched.outputs"], inputs_join=join),
    ]
    p = pipeline("p", steps, ["a.outputs", "c.outputs"], output_join="outer")
    out = run(_with_engine(p, models, lambda e: e.infer([rows(1)])))
    assert ("c_out" in [t.name for t in out]) is fires
    if fires:
        assert [t.name for t in models.called("c")[0]] == inputs


async def _open_when_called(models: Models, called: str, gate: str) -> None:
    await models.entered[called].wait()
    models.gates[gate].set()


def test_inner_join_waits_for_every_input():
    models = Models(gates={"slow": asyncio.Event()})  # answers once "fast" was called
    steps = [Step("fast"), Step("slow"), Step("c", inputs=["fast.outputs", "slow.outputs"])]
    p = pipeline("p", steps, ["c.outputs"])

    async def body(engine):
        opener = asyncio.create_task(_open_when_called(models, "fast", "slow"))
        await asyncio.wait_for(engine.infer([rows(1)]), 30)
        await opener

    run(_with_engine(p, models, body))
    assert [t.name for t in models.called("c")[0]] == ["fast_out", "slow_out"]


def test_any_join_takes_the_first_input_produced():
    models = Models(gates={"slow": asyncio.Event()})  # answers only once "c" was called
    steps = [
        Step("fast"),
        Step("slow"),
        Step("c", inputs=["slow.outputs", "fast.outputs"], inputs_join="any"),
    ]
    p = pipeline("p", steps, ["c.outputs"])

    async def body(engine):
        opener = asyncio.create_task(_open_when_called(models, "c", "slow"))
        await asyncio.wait_for(engine.infer([rows(1)]), 30)
        await opener

    run(_with_engine(p, models, body))
    assert [t.name for t in models.called("c")[0]] == ["fast_out"]


def test_independent_steps_run_concurrently():
    # Each step answers only once the other has been called: run one after the other, they
    # would wait for ever (the bound only turns that into a failure).
    gates = {"a": asyncio.Event(), "b": asyncio.Event()}
    models = Models(gates=gates)
    p = pipeline("p", [Step("a"), Step("b")], ["a.outputs", "b.outputs"])

    async def body(engine):
        async def open_when_both_called():
            await models.entered["a"].wait()
            await models.entered["b"].wait()
            gates["a"].set()
            gates["b"].set()

        opener = asyncio.create_task(open_when_both_called())
        outputs = await asyncio.wait_for(engine.infer([rows(1)]), 30)
        await opener
        return outputs

    outputs = run(_with_engine(p, models, body))
    assert [t.name for t in outputs] == ["a_out", "b_out"]


def test_steps_outside_the_output_do_not_delay_the_response():
    # The detector answers only after the response: were the response waiting for it, the
    # request would never finish (the bound turns that into a failure).
    gates = {"detector": asyncio.Event()}
    models = Models(gates=gates)
    p = pipeline("p", [Step("clf"), Step("detector")], ["clf.outputs"])

    async def body(engine):
        outputs = await asyncio.wait_for(engine.infer([rows(1)]), 30)
        assert "detector" not in engine.latest
        gates["detector"].set()
        assert await engine.wait_idle(30)
        return outputs, engine

    outputs, engine = run(_with_engine(p, models, body))
    assert [t.name for t in outputs] == ["clf_out"]
    assert engine.latest["detector"].outputs[0].name == "detector_out"


def test_full_async_queue_drops_and_counts():
    # The detector holds its first run until all five requests were answered: one run in
    # hand, one queued (size 1), three dropped.
    gates = {"detector": asyncio.Event()}
    models = Models(gates=gates)
    p = pipeline("p", [Step("clf"), Step("detector")], ["clf.outputs"])

    async def body(engine):
        await engine.infer([rows(1)])
        await asyncio.wait_for(models.entered["detector"].wait(), 30)
        for _ in range(4):
            await engine.infer([rows(1)])
        gates["detector"].set()
        assert await engine.wait_idle(30)
        return engine

    engine = run(_with_engine(p, models, body, async_queue_size=1))
    assert engine.counters["async_dropped"] == 3
    assert engine.counters["async_processed"] == 2


def test_failing_step_names_pipeline_step_and_cause():
    models = Models(failing={"b"})
    p = pipeline("p", [Step("a"), Step("b", inputs=["a"])], ["b.outputs"])
    with pytest.raises(ServingError) as error:
        run(_with_engine(p, models, lambda e: e.infer([rows(1)])))
    assert error.value.status == 400
    assert error.value.message == "pipeline p, step b: model b: broken on purpose"


def test_step_that_never_answers_times_out():
    models = Models(gates={"a": asyncio.Event()})  # never set: the step never answers
    p = pipeline("p", [Step("a")], ["a.outputs"])
    with pytest.raises(ServingError) as error:
        run(_with_engine(p, models, lambda e: e.infer([rows(1)]), step_timeout_s=0.2))
    assert error.value.status == 504 and "did not answer within 0.2 s" in error.value.message


def test_output_that_never_fires_is_an_error_not_a_hang():
    models = Models()
    p = pipeline("p", [Step("batched", batch_size=20)], ["batched.outputs"])
    with pytest.raises(ServingError) as error:
        run(_with_engine(p, models, lambda e: e.infer([rows(1)])))
    assert "produced nothing for this request" in error.value.message


def test_batched_rows_must_agree_beyond_the_first_dimension():
    models = Models()
    p = pipeline("p", [Step("clf"), Step("drift", batch_size=2)], ["clf.outputs"])

    async def body(engine):
        await engine.infer([rows(1, width=2)])
        await engine.infer([rows(1, width=3)])
        await engine.wait_idle(5)
        return engine

    engine = run(_with_engine(p, models, body))
    assert engine.counters["async_failed"] == 1
    assert "cannot batch" in engine.latest["drift"].error


def test_gateway_metrics_export_the_engines_drop_counts():
    from prometheus_client import generate_latest

    from income_bundle.seldon.bundle import Bundle
    from income_bundle.seldon.gateway import Gateway

    p = pipeline("p", [Step("clf"), Step("detector")], ["clf.outputs"])
    gateway = Gateway(Bundle(pipelines={"p": p}), forwarder=None, contracts={})
    gateway.engines["p"].counters["async_dropped"] = 7
    text = generate_latest(gateway.metrics.registry).decode()
    assert 'income_gateway_async_dropped_total{pipeline="p"} 7.0' in text
