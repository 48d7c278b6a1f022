"""What every model and pipeline declares (GET metadata) against what it returns, on every path.

Each model folder's model-settings.json declares its tensors; MLServer serves them as model
metadata and the gateway passes them on. Seldon pipelines and `seldon pipeline inspect` address
outputs by these names, and generated clients size their buffers from these datatypes and shapes,
so an output must carry exactly the declared name and datatype, and a shape that matches the
declared one, where -1 is the batch size (the rows sent) and every other dimension is fixed.

Paths: each model directly on MLServer (REST and gRPC) and through the local gateway (REST and
gRPC); each shipped pipeline through the gateway (REST and gRPC). REST calls are plain JSON over
`requests`, gRPC calls tritonclient: clients nobody here wrote.

The declarations follow what the stock runtimes return (the runtimes here subclass them and
change no outputs): MLServer 1.7.1's alibi-detect runtime (runtimes/alibi-detect/
mlserver_alibi_detect/runtime.py, `_postproc_pred`) wraps each result of one detector run in a
list and `NumpyCodec.encode_output` (mlserver/codecs/numpy.py, `inject_batch_dimension`) adds a
dimension to 1-d arrays, so TabularDrift's scalar is_drift (int) and threshold (float) come back
INT64 and FP64 [1, 1], its per-feature p_val and distance (float32 arrays, alibi-detect 0.13.0
cd/tabular.py) FP32 [1, 12], and OutlierVAE's per-row is_outlier and instance_score [1, rows],
the score FP64 as it is computed on the FP64 features (od/vae.py). Seldon's income notebook
(seldon-core v2.10.2 docs-gb/examples/income.md) shows is_drift as INT64 ["1", "1"] in `seldon
pipeline inspect` and is_outlier as INT64 [1, 20] for 20 rows.
"""

from __future__ import annotations

import json

import joblib
import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc
from google.protobuf.json_format import MessageToDict

from income_bundle.kserve.manifests import local_detector
from income_bundle.paths import artifact_dir
from income_bundle.server import MLServer

from .conformance.targets import (
    MODELS,
    PIPELINE_SUFFIX,
    PIPELINES,
    ROOT,
    ROWS,
    Tensors,
    declared_by_steps,
    json_body,
    settings_of,
    target_inputs,
    tensors,
)

MODEL_PATHS = ["mlserver-rest", "mlserver-grpc", "gateway-rest", "gateway-grpc"]
KSERVE_DETECTORS = ["income-drift", "income-outlier"]


def assert_matches_declared(returned: Tensors, declared: Tensors, rows: int, where: str) -> None:
    """Same names; per tensor the same datatype and shape, -1 standing for the rows sent."""
    assert set(returned) == set(declared), (
        f"{where}: outputs {sorted(returned)}, declared {sorted(declared)}"
    )
    for name, (datatype, shape) in returned.items():
        declared_datatype, declared_shape = declared[name]
        expected = [rows if d == -1 else d for d in declared_shape]
        assert (datatype, shape) == (declared_datatype, expected), (
            f"{where}: output {name} is {datatype} {shape}; declared {declared_datatype} "
            f"{declared_shape}, so {expected} for {rows} rows"
        )


class Route:
    """One way to reach a target: MLServer or the gateway, over REST or gRPC."""

    def __init__(self, name: str, http_url: str, grpc_address: str):
        self.name = name
        self.protocol = name.rsplit("-", 1)[1]
        self.http_url = http_url
        self.grpc = triton_grpc.InferenceServerClient(grpc_address)
        self.routed = name.startswith("gateway")  # by the seldon-model header, as seldon-mesh

    def _headers(self, target: str) -> dict[str, str]:
        return {"seldon-model": target} if self.routed else {}

    def metadata(self, target: str) -> dict:
        name = target.removesuffix(PIPELINE_SUFFIX)
        if self.protocol == "rest":
            response = requests.get(
                f"{self.http_url}/v2/models/{name}", headers=self._headers(target), timeout=30
            )
            assert response.status_code == 200, response.text
            return response.json()
        answer = self.grpc.get_model_metadata(name, headers=self._headers(target))
        return MessageToDict(answer, preserving_proto_field_name=True)

    def infer(self, target: str, input_name: str, datatype: str, X: np.ndarray) -> Tensors:
        """The response's output tensors as name -> (datatype, shape)."""
        name = target.removesuffix(PIPELINE_SUFFIX)
        if self.protocol == "rest":
            response = requests.post(
                f"{self.http_url}/v2/models/{name}/infer",
                json=json_body(input_name, datatype, X),
                headers=self._headers(target),
                timeout=120,
            )
            assert response.status_code == 200, response.text
            return tensors(response.json()["outputs"])
        tensor = triton_grpc.InferInput(input_name, list(X.shape), datatype)
        tensor.set_data_from_numpy(X.astype(np.float32 if datatype == "FP32" else np.float64))
        result = self.grpc.infer(name, [tensor], headers=self._headers(target), client_timeout=120)
        response = MessageToDict(result.get_response(), preserving_proto_field_name=True)
        return tensors(response["outputs"])


@pytest.fixture(scope="module")
def routes(mlserver, seldon):
    made = {
        name: Route(name, server.http_url, server.grpc_address)
        for name, server in (
            ("mlserver-rest", mlserver),
            ("mlserver-grpc", mlserver),
            ("gateway-rest", seldon),
            ("gateway-grpc", seldon),
        )
    }
    yield made
    for route in made.values():
        route.grpc.close()


@pytest.fixture(scope="module")
def inputs(scenario, mlserver):
    return target_inputs(mlserver.http_url, scenario["reference"].X[:ROWS], routed=False)


def _model_route_params():
    for route in MODEL_PATHS:
        for model in MODELS:
            yield pytest.param(route, model, id=f"{route}-{model}")


@pytest.mark.parametrize(("route", "model"), list(_model_route_params()))
def test_model_metadata_is_what_its_settings_declare(routes, route, model):
    settings = settings_of(model)
    metadata = routes[route].metadata(model)
    assert metadata["name"] == model
    assert metadata.get("platform") == settings["platform"]
    for kind in ("inputs", "outputs"):
        assert tensors(metadata.get(kind, [])) == tensors(settings[kind]), f"{route}: {kind}"


@pytest.mark.parametrize("route", MODEL_PATHS)
@pytest.mark.parametrize("model", MODELS)
def test_model_outputs_are_what_its_metadata_declares(routes, inputs, route, model):
    # The metadata over REST of the same server (gRPC ModelMetadata says the same: the test above).
    same_server_rest = routes[route.rsplit("-", 1)[0] + "-rest"]
    declared = tensors(same_server_rest.metadata(model)["outputs"])
    input_name, datatype, X = inputs[model]
    returned = routes[route].infer(model, input_name, datatype, X)
    assert_matches_declared(returned, declared, len(X), f"{model} via {route}")


@pytest.mark.parametrize("route", ["gateway-rest", "gateway-grpc"])
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_pipeline_outputs_are_what_their_steps_declare(routes, inputs, route, pipeline):
    target = pipeline + PIPELINE_SUFFIX
    returned = routes[route].infer(target, *inputs[target])
    where = f"pipeline {pipeline} via {route}"
    assert_matches_declared(returned, declared_by_steps(pipeline), ROWS, where)


@pytest.mark.parametrize("route", ["gateway-rest", "gateway-grpc"])
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_pipeline_outputs_are_what_its_metadata_declares(routes, inputs, route, pipeline):
    target = pipeline + PIPELINE_SUFFIX
    metadata = routes[route].metadata(target)
    assert tensors(metadata.get("outputs", [])) == declared_by_steps(pipeline)
    # Every shipped pipeline's first steps read the raw features, as income declares them.
    assert tensors(metadata.get("inputs", [])) == tensors(settings_of("income")["inputs"])
    returned = routes[route].infer(target, *inputs[target])
    declared = tensors(metadata["outputs"])
    assert_matches_declared(returned, declared, ROWS, f"pipeline {pipeline} via {route}")


@pytest.mark.parametrize("model", KSERVE_DETECTORS)
def test_kserve_detectors_declare_what_the_seldon_detectors_declare(model):
    kserve = json.loads((ROOT / "kserve" / "detectors" / model / "model-settings.json").read_text())
    seldon = settings_of(model)
    for key in ("name", "platform", "inputs", "outputs"):
        assert kserve[key] == seldon[key], key


@pytest.fixture(scope="module")
def kserve_detectors(training_report):
    """Each KServe detector's MLServer as its Knative Service starts it (kserve/detectors.yaml)."""
    servers = {}
    try:
        for model in KSERVE_DETECTORS:
            local = local_detector(model)
            servers[model] = MLServer(
                models={model: local.folder},
                parallel_workers=local.parallel_workers,
                extra_env=local.env,
            ).start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
@pytest.mark.parametrize("model", KSERVE_DETECTORS)
def test_kserve_detector_outputs_are_what_its_metadata_declares(
    kserve_detectors, scenario, model, protocol
):
    server = kserve_detectors[model]
    route = Route(f"kserve-{protocol}", server.http_url, server.grpc_address)
    try:
        settings = json.loads(
            (ROOT / "kserve" / "detectors" / model / "model-settings.json").read_text()
        )
        metadata = route.metadata(model)
        assert tensors(metadata["outputs"]) == tensors(settings["outputs"])
        (declared_input,) = settings["inputs"]
        X = scenario["reference"].X[:ROWS]
        if declared_input["name"] == "transform":  # the outlier detector reads preprocessed rows
            preprocessor = joblib.load(artifact_dir("income-preprocess") / "model.joblib")
            X = np.asarray(preprocessor.transform(X), dtype=np.float64)
        returned = route.infer(model, declared_input["name"], declared_input["datatype"], X)
        declared = tensors(metadata["outputs"])
        assert_matches_declared(returned, declared, ROWS, f"KServe {model} via {protocol}")
    finally:
        route.grpc.close()
