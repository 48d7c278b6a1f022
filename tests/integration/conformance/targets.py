"""What the metadata and conformance tests call: every model, every shipped pipeline, and a request
for each built from what the target declares."""

from __future__ import annotations

import json

import numpy as np
import requests

from income_bundle.paths import ARTIFACT_FOLDERS, artifact_dir, project_root, scenario_dir
from income_bundle.seldon.bundle import TensorRef, load_bundle
from income_bundle.training import IRIS_REQUEST

ROOT = project_root()
MODELS = sorted(ARTIFACT_FOLDERS)
PIPELINES = sorted(p.stem for p in (ROOT / "seldon-examples" / "pipelines").glob("*.yaml"))
# The drift steps' batch size: a pipeline request of this many rows leaves no partial drift batch
# behind for the other tests sharing the gateway.
ROWS = 20
EXPLAINER_ROWS = 2  # an anchor search takes about a second a row
PIPELINE_SUFFIX = ".pipeline"

Tensors = dict[str, tuple[str, list[int]]]


def settings_of(model: str) -> dict:
    return json.loads((artifact_dir(model) / "model-settings.json").read_text())


def tensors(items: list) -> Tensors:
    """name -> (datatype, shape) of metadata or response tensors (REST JSON, or protobuf as dict)."""
    table = {}
    for item in items:
        assert isinstance(item, dict) and {"name", "datatype", "shape"} <= set(item), (
            f"not tensor metadata (name, datatype, shape): {item!r}"
        )
        table[item["name"]] = (item["datatype"], [int(d) for d in item["shape"]])
    return table


def declared_by_steps(pipeline: str) -> Tensors:
    """A pipeline's output tensors as its steps' models declare them (its `output.steps`)."""
    spec = load_bundle(ROOT / "seldon-examples").pipelines[pipeline]
    assert not spec.output_tensor_map, "renamed outputs: extend this helper"
    declared: Tensors = {}
    for reference in spec.output:
        ref = TensorRef.parse(reference, pipeline)
        assert ref is not None and ref.kind == "outputs", reference
        outputs = tensors(settings_of(ref.source)["outputs"])
        declared.update({n: v for n, v in outputs.items() if ref.tensor in (None, n)})
    return declared


def json_body(input_name: str, datatype: str, X: np.ndarray) -> dict:
    tensor = {"name": input_name, "datatype": datatype, "shape": list(X.shape)}
    return {"inputs": [{**tensor, "data": X.ravel().tolist()}]}


def target_inputs(
    http_url: str, X: np.ndarray, routed: bool
) -> dict[str, tuple[str, str, np.ndarray]]:
    """Per target (model, or `<pipeline>.pipeline`): its input's name, datatype and rows for it.

    Rows are picked by the declared width: the income features X, the preprocessor's output (asked
    of the preprocessor at `http_url`: the gateway when `routed`, else MLServer) for the outlier
    detector, iris's sample request. Failures here raise RuntimeError, not AssertionError, so that
    an xfail(raises=AssertionError) test cannot pass off a broken setup as the expected failure.
    """
    headers = {"seldon-model": "income-preprocess"} if routed else {}
    response = requests.post(
        f"{http_url}/v2/models/income-preprocess/infer",
        json=json_body("predict", "FP32", X),
        headers=headers,
        timeout=60,
    )
    if response.status_code != 200:
        raise RuntimeError(f"income-preprocess: {response.status_code} {response.text}")
    (transform,) = response.json()["outputs"]
    features = np.asarray(transform["data"], dtype=np.float64).reshape(transform["shape"])
    (iris,) = json.loads((scenario_dir() / IRIS_REQUEST).read_text())["inputs"]
    iris_rows = np.asarray(iris["data"], dtype=np.float64).reshape(iris["shape"])
    rows_by_width = {rows.shape[1]: rows for rows in (X, features, iris_rows)}
    inputs = {}
    for model in MODELS:
        (declared,) = settings_of(model)["inputs"]
        width = declared["shape"][1]
        if width not in rows_by_width:
            raise RuntimeError(f"model {model}: no sample rows of width {width}; add some here")
        rows = rows_by_width[width]
        if model == "income-explainer":
            rows = rows[:EXPLAINER_ROWS]
        inputs[model] = (declared["name"], declared["datatype"], rows)
    for pipeline in PIPELINES:
        inputs[pipeline + PIPELINE_SUFFIX] = ("predict", "FP32", X)
    return inputs
