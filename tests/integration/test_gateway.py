"""The local Seldon gateway end to end: real MLServer, the shipped pipelines and small ones."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from income_bundle.client import V2Error, inspect
from income_bundle.scenarios import SCENARIOS
from tests.support.clients import routed

ROWS = 20


def http(seldon) -> str:
    return seldon.http_url.removeprefix("http://")


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_three_scenarios_through_income_production(seldon, scenario, protocol):
    client = routed(seldon, "income-production.pipeline", protocol)
    verdicts = {}
    for name in SCENARIOS:
        X = scenario[name].X[:ROWS]
        outputs = client.infer("income-production", X)
        assert set(outputs) == {"predict", "is_outlier"}
        assert outputs["predict"].shape == (ROWS, 1)
        assert outputs["is_outlier"].shape == (1, ROWS)
        drift = inspect(http(seldon), "income-production.income-drift.outputs.is_drift", wait_s=10)
        verdicts[name] = (int(outputs["is_outlier"].sum()), drift["tensors"][0]["data"][0])
        direct = routed(seldon, "income", protocol).infer("income", X)["predict"]
        assert np.array_equal(outputs["predict"], direct)  # same model, same answer
    assert verdicts["reference"] == (0, 0)
    assert verdicts["low-education"][1] == 1
    assert verdicts["outliers"][0] >= 15 and verdicts["outliers"][1] == 0


def test_seldon_client_style_request_with_other_input_name(seldon, scenario):
    # Seldon's notebook posts {"inputs": [{"name": "input_1", ...}]} to /v2/models/model/infer.
    X = scenario["reference"].X[:ROWS]
    body = {
        "inputs": [{"name": "input_1", "datatype": "FP32", "shape": [ROWS, 12], "data": X.tolist()}]
    }
    request = urllib.request.Request(
        f"{seldon.http_url}/v2/models/model/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "seldon-model": "income-v1.pipeline"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
        key, request_id = response.headers.get_all("x-request-id")
        assert key == f"0.income-v1.{request_id}"
        assert response.headers["x-pipeline-version"] == "1"
    assert answer["model_name"] == "" and "id" not in answer  # as the pipeline gateway answers
    assert [o["name"] for o in answer["outputs"]] == ["predict"]


def test_twenty_one_row_requests_fire_drift_once_and_19_never(seldon, scenario):
    client = routed(seldon, "batch-test.pipeline")
    reference = "batch-test.income-drift.outputs.is_drift"
    for row in scenario["low-education"].X[:19]:
        client.infer("m", row[None, :])
    assert inspect(http(seldon), reference, wait_s=10)["tensors"] == []
    client.infer("m", scenario["low-education"].X[19:20])
    fired = inspect(http(seldon), "batch-test.income-drift.inputs", wait_s=10)
    assert fired["tensors"][0]["shape"] == [20, 12]
    assert inspect(http(seldon), reference, wait_s=10)["tensors"][0]["data"] == [1]
    assert fired["counters"]["async_processed"] == 20


def test_trigger_runs_a_step_only_when_the_drift_batch_fires(seldon, scenario):
    client = routed(seldon, "trigger-on-drift.pipeline")
    for row in scenario["reference"].X[:19]:
        assert set(client.infer("m", row[None, :])) == {"predict"}
    last = client.infer("m", scenario["reference"].X[19:20])
    assert set(last) == {"predict", "transform"}
    assert last["transform"].shape == (1, 57)  # fed the request's row, not the trigger


@pytest.mark.parametrize(("join", "fires"), [("inner", False), ("outer", True), ("any", True)])
def test_step_join_types_with_an_absent_input(seldon, scenario, join, fires):
    outputs = routed(seldon, f"join-{join}.pipeline").infer("m", scenario["outliers"].X[:1])
    assert "transform" in outputs
    assert ("is_outlier" in outputs) is fires


def test_failing_step_names_pipeline_step_and_mlserver_message(seldon, scenario):
    # 20 rows complete the drift batch, so the outer join feeds income-outlier two tensors.
    with pytest.raises(V2Error) as error:
        routed(seldon, "join-outer.pipeline").infer("m", scenario["reference"].X[:ROWS])
    assert error.value.status == "400"
    message = error.value.message
    assert "pipeline join-outer, step income-outlier: model income-outlier" in message
    assert "got 2 inputs" in message


def test_tensor_map_renames_what_the_step_receives(seldon, scenario):
    outputs = routed(seldon, "tensor-map.pipeline").infer("m", scenario["outliers"].X[:5])
    assert list(outputs) == ["is_outlier"]
    received = inspect(http(seldon), "tensor-map.income-outlier.inputs")["tensors"]
    assert [t["name"] for t in received] == ["features"]


def test_reference_to_a_named_pipeline_input(seldon, scenario):
    X = scenario["reference"].X[:3]
    assert routed(seldon, "named-input.pipeline").infer("m", X, input_name="predict")[
        "predict"
    ].shape == (3, 1)
    with pytest.raises(V2Error, match="produced nothing"):
        routed(seldon, "named-input.pipeline").infer("m", X, input_name="other")


def test_asynchronous_step_does_not_delay_the_response(seldon, scenario):
    X = scenario["reference"].X[:4]
    outputs = routed(seldon, "slow-async.pipeline").infer("m", X)
    # Answered before the explainer ran: its four anchors (seconds) are still being searched.
    reference = "slow-async.income-explainer.outputs.explanation"
    at_answer = inspect(http(seldon), reference, wait_s=0)
    assert at_answer["counters"]["async_processed"] == 0 and at_answer["tensors"] == []
    assert outputs["predict"].shape == (4, 1)
    explained = inspect(http(seldon), reference, wait_s=30)
    assert len(explained["tensors"][0]["data"]) == 4


def test_inspect_reads_pipeline_and_step_data(seldon, scenario):
    routed(seldon, "income-v1.pipeline").infer("m", scenario["reference"].X[:2])
    outputs = inspect(http(seldon), "income-v1.outputs")
    assert [t["name"] for t in outputs["tensors"]] == ["predict"]
    inputs = inspect(http(seldon), "income-v1.income.inputs")
    assert inputs["tensors"][0]["shape"] == [2, 12]
    with pytest.raises(V2Error, match="no such pipeline"):
        inspect(http(seldon), "nothing.here.outputs")
    with pytest.raises(V2Error, match=r"expected <pipeline>\.<step>"):
        inspect(http(seldon), "income-v1.nostep.outputs")


def test_cli_infer_and_inspect(seldon):
    cli = str(Path(sys.executable).with_name("income-bundle"))
    address = http(seldon)
    out = subprocess.run(
        [cli, "infer", "income-v1.pipeline", "--scenario", "reference", "--rows", "3", "--url", address],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert len(json.loads(out)["predict"]) == 3
    grpc_out = subprocess.run(
        [cli, "infer", "income", "--rows", "2", "--protocol", "grpc", "--grpc", seldon.grpc_address],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert len(json.loads(grpc_out)["predict"]) == 2
    shown = subprocess.run(
        [cli, "inspect", "income-v1.income.outputs.predict", "--url", address],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert json.loads(shown.splitlines()[0])["name"] == "predict"


def test_health_readiness_and_metadata(seldon):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2"):
        with urllib.request.urlopen(seldon.http_url + path, timeout=10) as response:
            assert response.status == 200
    request = urllib.request.Request(
        f"{seldon.http_url}/v2/models/x", headers={"seldon-model": "income-production.pipeline"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        metadata = json.loads(response.read())
    assert metadata["platform"] == "seldon-pipeline"
    assert [i["name"] for i in metadata["inputs"]] == ["predict"]
    assert [o["name"] for o in metadata["outputs"]] == ["predict", "is_outlier"]
    assert all(set(o) == {"name", "datatype", "shape"} for o in metadata["outputs"])
    with urllib.request.urlopen(
        f"{seldon.http_url}/v2/models/income-drift", timeout=10
    ) as response:
        assert json.loads(response.read())["name"] == "income-drift"
    assert routed(seldon, "income-production.pipeline").ready()
    assert routed(seldon, "income-production.pipeline", "grpc").ready("income-production.pipeline")


def test_gateway_metrics_count_requests_as_seldon_does(seldon, scenario):
    routed(seldon, "income").infer("m", scenario["reference"].X[:1])
    routed(seldon, "income-production.pipeline").infer("m", scenario["reference"].X[:1])
    with urllib.request.urlopen(f"{seldon.http_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert (
        'seldon_model_infer_total{code="200",method_type="rest",model="income",'
        'model_internal="income_1",server="mlserver",server_replica="0"}' in text
    )
    assert 'seldon_model_infer_api_seconds_bucket{code="200",le="0.005",method="post"' in text
    assert (
        'seldon_pipeline_infer_total{code="200",method_type="rest",pipeline="income-production",'
        'server="pipeline-gateway"}' in text
    )
    assert "seldon_pipeline_infer_api_seconds_bucket" in text


def test_invalid_bundle_refuses_to_start_and_lists_every_problem(tmp_path, seldon_bundle):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(seldon_bundle, bundle)
    production = bundle / "pipelines" / "income-production.yaml"
    text = production.read_text().replace("- income-preprocess\n", "- income-preproces\n")
    production.write_text(text.replace("size: 20", "size: 0"))
    cli = str(Path(sys.executable).with_name("income-bundle"))
    result = subprocess.run(
        [cli, "serve", "--bundle-dir", str(bundle), "--http-port", "0", "--grpc-port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "starting MLServer" not in result.stdout  # refused before MLServer starts
    assert "nothing was started" in result.stderr
    assert "income-preproces" in result.stderr and "batch.size" in result.stderr


@pytest.fixture
def impatient_seldon(training_report, seldon_bundle):
    """A second gateway with a 1 s step timeout, stopped (and its MLServer killed) by its test."""
    from income_bundle.seldon.local import LocalSeldon, ServeSettings

    config = ServeSettings(bundle_dir=seldon_bundle, step_timeout_s=1.0, state_dir=None)
    with LocalSeldon(config) as gateway:
        yield gateway


def test_slow_model_times_out_and_dead_mlserver_is_unavailable(impatient_seldon, scenario):
    explainer = routed(impatient_seldon, "income-explainer")
    with pytest.raises(V2Error) as error:
        explainer.infer("m", scenario["reference"].X[:10])  # ten anchors: several seconds
    assert error.value.status == "504" and "did not answer within 1 s" in error.value.message

    pid = impatient_seldon.mlserver_pid()
    assert pid
    exited = os.pidfd_open(pid)  # readable once the process has exited: no sleep to wait
    os.killpg(pid, signal.SIGKILL)
    assert select.select([exited], [], [], 60)[0], "MLServer outlived SIGKILL"
    os.close(exited)
    for protocol in ("rest", "grpc"):
        with pytest.raises(V2Error) as error:
            routed(impatient_seldon, "income-production.pipeline", protocol).infer(
                "m", scenario["reference"].X[:2]
            )
        assert error.value.status in ("503", "StatusCode.UNAVAILABLE")
        assert "unavailable" in error.value.message
