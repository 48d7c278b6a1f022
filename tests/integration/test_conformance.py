"""The gateway as V2 clients nobody here wrote see it: every model and shipped pipeline.

Clients: tritonclient over REST (JSON, and its default binary tensor extension) and gRPC; KServe's
Python SDK 0.20.0 (InferenceRESTClient, InferenceGRPCClient) in its own virtual environment, as
its pins clash with ours (tests/integration/conformance/requirements-kserve-sdk.txt); Seldon's income notebook
requests as the notebook sends them; and `mlserver infer`. Each answer must carry what a plain JSON
request gets (the reference): the same output names, datatypes, shapes and values.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from .conformance.targets import MODELS, PIPELINE_SUFFIX, PIPELINES, ROWS, json_body, target_inputs

TARGETS = MODELS + [p + PIPELINE_SUFFIX for p in PIPELINES]
CONFORMANCE = Path(__file__).parent / "conformance"
KSERVE_SDK_REQUIREMENTS = CONFORMANCE / "requirements-kserve-sdk.txt"
KSERVE_SDK_CLIENT = CONFORMANCE / "kserve_sdk_client.py"
# Outputs that differ from call to call: OutlierVAE scores sampled reconstructions; checked for
# name, datatype and shape only.
STOCHASTIC = {("income-outlier", "instance_score")}


class Answer(dict):
    """output name -> (datatype, shape, values as numpy)."""


def answer_from_json(outputs: list[dict]) -> Answer:
    return Answer(
        {
            o["name"]: (o["datatype"], [int(d) for d in o["shape"]], np.asarray(o["data"]))
            for o in outputs
        }
    )


def assert_same_answer(answer: Answer, reference: Answer, target: str, client: str) -> None:
    assert set(answer) == set(reference), f"{client} on {target}: outputs {sorted(answer)}"
    model = target if target in MODELS else None
    for name, (datatype, shape, values) in answer.items():
        ref_datatype, ref_shape, ref_values = reference[name]
        assert (datatype, shape) == (ref_datatype, ref_shape), f"{client} on {target}: {name}"
        assert values.size == int(np.prod(shape)), f"{client} on {target}: {name} data vs shape"
        if (model, name) in STOCHASTIC or datatype == "BYTES":
            continue
        assert np.allclose(values.ravel().astype(float), ref_values.ravel().astype(float)), (
            f"{client} on {target}: {name} values differ from the JSON reference"
        )


@pytest.fixture(scope="module")
def inputs(seldon, scenario):
    return target_inputs(seldon.http_url, scenario["reference"].X[:ROWS], routed=True)


@pytest.fixture(scope="module")
def reference(seldon, inputs) -> dict[str, Answer]:
    """Per target, the answer to a plain JSON request."""
    answers = {}
    for target in TARGETS:
        name, datatype, X = inputs[target]
        response = requests.post(
            f"{seldon.http_url}/v2/models/{target.removesuffix(PIPELINE_SUFFIX)}/infer",
            json=json_body(name, datatype, X),
            headers={"seldon-model": target},
            timeout=120,
        )
        if response.status_code != 200:  # not an AssertionError: see target_inputs
            raise RuntimeError(f"{target}: {response.status_code} {response.text}")
        answers[target] = answer_from_json(response.json()["outputs"])
    return answers


# -- tritonclient ------------------------------------------------------------------------------


def _numpy(datatype: str, X: np.ndarray) -> np.ndarray:
    return X.astype(triton_to_np_dtype(datatype))


def triton_http_answer(
    seldon, target: str, inputs, *, binary_inputs: bool, binary_outputs: bool | None
) -> Answer:
    """tritonclient's HTTP client; binary_outputs None asks for no outputs by name, which
    tritonclient sends as `binary_data_output: true` (its default)."""
    name, datatype, X = inputs[target]
    client = triton_http.InferenceServerClient(seldon.http_url.removeprefix("http://"))
    try:
        tensor = triton_http.InferInput(name, list(X.shape), datatype)
        tensor.set_data_from_numpy(_numpy(datatype, X), binary_data=binary_inputs)
        outputs = None
        if binary_outputs is not None:
            declared = _declared_output_names(client, target)
            outputs = [
                triton_http.InferRequestedOutput(n, binary_data=binary_outputs) for n in declared
            ]
        try:
            result = client.infer(
                target.removesuffix(PIPELINE_SUFFIX),
                [tensor],
                outputs=outputs,
                headers={"seldon-model": target},
                timeout=120,
            )
        except InferenceServerException as e:
            raise AssertionError(f"tritonclient HTTP on {target}: {e}") from e
        response = result.get_response()
        answer = Answer()
        for output in response["outputs"]:
            parameters = output.get("parameters") or {}
            if binary_outputs is not False:
                assert "binary_data_size" in parameters, (
                    f"{target}: output {output['name']} came back as JSON, binary was asked for"
                )
            values = result.as_numpy(output["name"])
            answer[output["name"]] = (output["datatype"], [int(d) for d in output["shape"]], values)
        return answer
    finally:
        client.close()


def _declared_output_names(client, target: str) -> list[str]:
    """What the target's metadata declares (pipelines' derived from their steps)."""
    metadata = client.get_model_metadata(
        target.removesuffix(PIPELINE_SUFFIX), headers={"seldon-model": target}
    )
    return [o["name"] for o in metadata["outputs"]]


@pytest.mark.parametrize("target", TARGETS)
def test_tritonclient_http_json(seldon, inputs, reference, target):
    answer = triton_http_answer(seldon, target, inputs, binary_inputs=False, binary_outputs=False)
    assert_same_answer(answer, reference[target], target, "tritonclient HTTP JSON")


@pytest.mark.parametrize("target", TARGETS)
def test_tritonclient_http_binary_inputs(seldon, inputs, reference, target):
    answer = triton_http_answer(seldon, target, inputs, binary_inputs=True, binary_outputs=False)
    assert_same_answer(answer, reference[target], target, "tritonclient HTTP binary inputs")


@pytest.mark.parametrize("target", TARGETS)
def test_tritonclient_http_binary_outputs(seldon, inputs, reference, target):
    answer = triton_http_answer(seldon, target, inputs, binary_inputs=False, binary_outputs=True)
    assert_same_answer(answer, reference[target], target, "tritonclient HTTP binary outputs")


@pytest.mark.parametrize("target", TARGETS)
def test_tritonclient_http_defaults(seldon, inputs, reference, target):
    # What a tritonclient user gets without options: binary inputs, binary_data_output true.
    answer = triton_http_answer(seldon, target, inputs, binary_inputs=True, binary_outputs=None)
    assert_same_answer(answer, reference[target], target, "tritonclient HTTP defaults")


@pytest.mark.parametrize("target", TARGETS)
def test_tritonclient_grpc(seldon, inputs, reference, target):
    name, datatype, X = inputs[target]
    client = triton_grpc.InferenceServerClient(seldon.grpc_address)
    try:
        tensor = triton_grpc.InferInput(name, list(X.shape), datatype)
        tensor.set_data_from_numpy(_numpy(datatype, X))  # raw_input_contents
        result = client.infer(
            target.removesuffix(PIPELINE_SUFFIX),
            [tensor],
            headers={"seldon-model": target},
            client_timeout=120,
        )
    finally:
        client.close()
    answer = Answer(
        {
            o.name: (o.datatype, list(o.shape), result.as_numpy(o.name))
            for o in result.get_response().outputs
        }
    )
    assert_same_answer(answer, reference[target], target, "tritonclient gRPC")


# -- KServe's SDK, in its own virtual environment -----------------------------------------------


def kserve_sdk_python() -> Path:
    """The SDK's venv's python, created once per requirements file (cached outside the checkout).

    Skips naming the cause when it cannot be created (no PyPI); in CI that is a failure.
    """
    pins = KSERVE_SDK_REQUIREMENTS.read_bytes()
    version = re.search(rb"^kserve==(\S+)$", pins, re.MULTILINE).group(1).decode()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "income-bundle"
    venv = cache / "venvs" / f"kserve-sdk-{version}-{hashlib.sha256(pins).hexdigest()[:12]}"
    python = venv / "bin" / "python"
    complete = venv / ".complete"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be creating it
        if complete.is_file():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", "--no-input",
             "--disable-pip-version-check", "-r", str(KSERVE_SDK_REQUIREMENTS)],
        ]  # fmt: skip
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=1200)
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                message = (
                    f"the KServe SDK venv ({KSERVE_SDK_REQUIREMENTS.name}) could not be created "
                    f"(needs PyPI): {' '.join(step[:4])}: {done.stderr.strip()[-800:]}"
                )
                if os.environ.get("CI"):
                    pytest.fail(message)
                pytest.skip(message)
        complete.write_text(version + "\n")
    return python


KSERVE_CASES = {
    # case -> (protocol, binary tensors)
    "rest-json": ("rest", False),
    "rest-binary": ("rest", True),  # the SDK's default for REST
    "grpc-raw": ("grpc", True),  # the SDK's default for gRPC: raw_input_contents
    "grpc-typed": ("grpc", False),  # typed contents
}


@pytest.fixture(scope="module")
def kserve_sdk(seldon, inputs, tmp_path_factory) -> dict:
    """Every case for every target, run by the SDK in one process; its JSON report."""
    python = kserve_sdk_python()
    cases = []
    for target in TARGETS:
        name, datatype, X = inputs[target]
        for case, (protocol, binary) in KSERVE_CASES.items():
            cases.append(
                {
                    "id": f"{case}:{target}",
                    "protocol": protocol,
                    "binary": binary,
                    "model_name": target.removesuffix(PIPELINE_SUFFIX),
                    "headers": {"seldon-model": target},
                    "input": {
                        "name": name,
                        "datatype": datatype,
                        "shape": list(X.shape),
                        "data": X.ravel().tolist(),
                    },
                    "outputs": None,
                }
            )
    plan = {"rest_url": seldon.http_url, "grpc_address": seldon.grpc_address, "cases": cases}
    done = subprocess.run(
        [str(python), str(KSERVE_SDK_CLIENT)],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path_factory.mktemp("kserve-sdk"),  # nothing of the checkout on its sys.path
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    if done.returncode != 0:  # not an AssertionError: see target_inputs
        raise RuntimeError(f"{KSERVE_SDK_CLIENT.name} failed: {done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    return report


def test_kserve_sdk_is_the_pinned_version_and_sees_the_gateway_ready(kserve_sdk):
    assert kserve_sdk["kserve"] == "0.20.0"
    assert kserve_sdk["server_ready"] == {"rest": True, "grpc": True}


@pytest.mark.parametrize("case", KSERVE_CASES)
@pytest.mark.parametrize("target", TARGETS)
def test_kserve_sdk(kserve_sdk, reference, case, target):
    result = kserve_sdk["results"][f"{case}:{target}"]
    assert result["error"] is None, f"KServe SDK {case} on {target}: {result['error']}"
    answer = answer_from_json(result["outputs"])
    assert_same_answer(answer, reference[target], target, f"KServe SDK {case}")


# -- Seldon's income notebook, and `mlserver infer` -------------------------------------------------

# The notebook's request, as SeldonIO/seldon-core v2.10.2 docs-gb/examples/income.md builds it: an
# input named input_1, posted to /v2/models/model/infer, routed only by the seldon-model header.
NOTEBOOK_REQUEST = '{"inputs":[{"name":"input_1","data":[],"datatype":"FP32","shape":[]}]}'
NOTEBOOK_URL_PATH = "/v2/models/model/infer"
# What the notebook prints for those calls (same file): name -> (datatype, shape for N rows).
NOTEBOOK_OUTPUTS = {
    "income-production.pipeline": {
        "predict": ("INT64", ["N", 1]),
        "is_outlier": ("INT64", [1, "N"]),
    },
    "income-explainer": {"explanation": ("BYTES", ["N", 1])},
}
NOTEBOOK_CALLS = [  # (resource, rows, scenario): the notebook's four infer() calls
    ("income-production.pipeline", 20, "reference"),
    ("income-production.pipeline", 20, "low-education"),
    ("income-production.pipeline", 20, "outliers"),
    ("income-explainer", 1, "reference"),
]


@pytest.mark.parametrize(("resource", "rows", "data"), NOTEBOOK_CALLS)
def test_seldon_income_notebook_requests(seldon, scenario, resource, rows, data):
    body = json.loads(NOTEBOOK_REQUEST)
    X = scenario[data].X[:rows]
    body["inputs"][0]["data"] = X.flatten().tolist()
    body["inputs"][0]["shape"] = [rows, X.shape[1]]
    response = requests.post(
        seldon.http_url + NOTEBOOK_URL_PATH,
        json=body,
        headers={"Content-Type": "application/json", "seldon-model": resource},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    expected = {
        name: (datatype, [rows if d == "N" else d for d in shape])
        for name, (datatype, shape) in NOTEBOOK_OUTPUTS[resource].items()
    }
    assert {o["name"]: (o["datatype"], o["shape"]) for o in outputs} == expected
    if resource == "income-explainer":
        explanation = json.loads(outputs[0]["data"][0])
        assert explanation["meta"]["name"] == "AnchorTabular" and explanation["data"]["anchor"]


def mlserver_infer(seldon, target: str, request: dict, tmp_path: Path, *flags: str) -> dict:
    """`mlserver infer` (MLServer 1.7.1's batch client, on tritonclient) with one request."""
    source, sink = tmp_path / "requests.jsonl", tmp_path / "responses.jsonl"
    source.write_text(json.dumps(request) + "\n")
    command = [
        str(Path(sys.executable).with_name("mlserver")), "infer",
        "--url", seldon.http_url.removeprefix("http://"),
        "--model-name", target.removesuffix(PIPELINE_SUFFIX),
        "--input-data-path", str(source), "--output-data-path", str(sink),
        "--request-headers", f"seldon-model: {target}",
        "--workers", "1", "--retries", "1", *flags,  # retries 0 sends nothing
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = sink.read_text().splitlines()
    return json.loads(line)


# `mlserver infer` splits answers as if every output were batch-first: it sets dimension 0 to the
# request's rows (mlserver/batching/requests.py, BatchedRequests.split_response, at 1.7.1), so it
# reports is_outlier [1, 20] as [20, 20]. Targets with batch-first outputs only.
MLSERVER_INFER_TARGETS = ["income", "income-preprocess", "income-v1.pipeline"]


@pytest.mark.parametrize("target", MLSERVER_INFER_TARGETS)
def test_mlserver_infer(seldon, inputs, reference, target, tmp_path):
    name, datatype, X = inputs[target]
    answer = mlserver_infer(seldon, target, json_body(name, datatype, X), tmp_path)
    assert "error" not in answer, answer
    assert_same_answer(
        answer_from_json(answer["outputs"]), reference[target], target, "mlserver infer"
    )


@pytest.mark.parametrize("target", MLSERVER_INFER_TARGETS)
def test_mlserver_infer_binary(seldon, inputs, reference, target, tmp_path):
    name, datatype, X = inputs[target]
    answer = mlserver_infer(seldon, target, json_body(name, datatype, X), tmp_path, "--binary-data")
    assert "error" not in answer, answer
    assert_same_answer(
        answer_from_json(answer["outputs"]), reference[target], target, "mlserver infer -b"
    )
