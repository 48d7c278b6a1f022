"""The records the gateway's Kafka publisher writes, read back with the monitor's own decoders
(`income_bundle.v2.seldon_kafka`), as Seldon v2.10.2 writes them: the pipeline gateway's input
message, each step's input and output, the pipeline's output, with Seldon's headers. No broker:
the publisher's queue is read directly (tests/integration/test_gateway_kafka.py runs a real one).
"""

from __future__ import annotations

import asyncio

from tritonclient.grpc import service_pb2

from income_bundle.seldon.engine import StepResult
from income_bundle.seldon.forwarding import ModelOutputs
from income_bundle.seldon.kafka_publisher import SeldonTopicPublisher
from income_bundle.v2.seldon_kafka import SeldonMessage, decode_request, decode_response
from income_bundle.v2.tensors import Tensor
from tests.support.gateway_stubs import stub_gateway

NP = {"content_type": "np"}


def _published(results: dict[str, StepResult], outputs: list[Tensor]) -> list[SeldonMessage]:
    async def run():
        bundle = stub_gateway().bundle
        publisher = SeldonTopicPublisher("unused:9092", pipelines=bundle.pipelines)
        publisher._pump = asyncio.get_running_loop().create_future()  # queue, do not send
        inputs = [Tensor("predict", "FP32", [1, 12], [0.0] * 12)]
        publisher.request_done(
            "income-production", "dcbme7hksdu51hc9e3q0", inputs, results, outputs
        )
        (batch,) = [publisher._queue.get_nowait()]
        return [SeldonMessage(t, k, v, h, 0) for t, k, v, h in batch]

    return asyncio.run(run())


def test_records_are_named_versioned_and_headed_as_seldon_writes_them():
    features = [Tensor("predict", "FP32", [1, 12], [0.0] * 12)]
    predict = Tensor("predict", "INT64", [1, 1], [1], dict(NP))
    flags = Tensor("is_outlier", "INT64", [1, 1], [0], dict(NP))
    detector = ModelOutputs(
        [flags],
        parameters={"name": "IForest", "detector_type": "outlier", "online": False},
        headers=[("x-seldon-alibi-type", "outlier"), ("x-seldon-alibi-method", "isolationforest")],
    )
    transformed = Tensor("transform", "FP64", [1, 57], [0.0] * 57, dict(NP))
    results = {
        "income": StepResult(features, ModelOutputs([predict])),
        "income-preprocess": StepResult(features, ModelOutputs([transformed])),
        "income-outlier": StepResult([transformed], detector),
    }
    messages = {
        m.topic.removeprefix("seldon.seldon-mesh."): m
        for m in _published(results, [predict, flags])
    }
    assert list(messages) == [
        "pipeline.income-production.inputs",
        "model.income.inputs",
        "model.income.outputs",
        "model.income-preprocess.inputs",
        "model.income-preprocess.outputs",
        "model.income-outlier.inputs",
        "model.income-outlier.outputs",
        "pipeline.income-production.outputs",
    ]
    for message in messages.values():
        assert message.key == b"0.income-production.dcbme7hksdu51hc9e3q0"
        assert message.request_id == "dcbme7hksdu51hc9e3q0"
        assert message.pipeline == "income-production"

    # The pipeline gateway's message: a REST request becomes one without model name or id.
    first = service_pb2.ModelInferRequest.FromString(
        messages["pipeline.income-production.inputs"].value
    )
    assert (first.model_name, first.id) == ("", "")
    assert messages["pipeline.income-production.inputs"].header("x-pipeline-version") is None

    # A model's answer as MLServer gives it to the model gateway through the agent.
    answer = service_pb2.ModelInferResponse.FromString(
        messages["model.income-outlier.outputs"].value
    )
    assert (answer.model_name, answer.model_version) == ("income-outlier_1", "1")
    assert answer.parameters["detector_type"].string_param == "outlier"
    assert answer.parameters["online"].bool_param is False
    assert answer.outputs[0].parameters["content_type"].string_param == "np"
    assert decode_response(messages["model.income-outlier.outputs"].value)[0].parameters == NP
    assert decode_request(messages["model.income-outlier.inputs"].value)[0].parameters == NP

    def headers(topic):
        return [(k, v.decode()) for k, v in messages[topic].headers]

    # The dataflow engine's messages carry the upstream routes, then pipeline and version;
    # the model gateway adds the answer's headers and Envoy's route.
    assert headers("model.income-outlier.inputs") == [
        ("x-request-id", "dcbme7hksdu51hc9e3q0"),
        ("x-seldon-route", ":income-preprocess_1:"),
        ("pipeline", "income-production"),
        ("x-pipeline-version", "1"),
    ]
    assert headers("model.income-outlier.outputs") == [
        *headers("model.income-outlier.inputs"),
        ("x-seldon-alibi-type", "outlier"),
        ("x-seldon-alibi-method", "isolationforest"),
        ("x-seldon-route", ":income-outlier_1:"),
    ]
    # The output carries the later chain's routes, without the alibi headers.
    assert headers("pipeline.income-production.outputs") == [
        ("x-request-id", "dcbme7hksdu51hc9e3q0"),
        ("x-seldon-route", ":income-preprocess_1:"),
        ("x-seldon-route", ":income-outlier_1:"),
        ("pipeline", "income-production"),
        ("x-pipeline-version", "1"),
    ]
    last = service_pb2.ModelInferResponse.FromString(
        messages["pipeline.income-production.outputs"].value
    )
    assert (last.model_name, last.model_version, last.id) == ("", "", "")
