"""Bundle validation: Seldon's own pipeline rules, and the artifact checks Seldon never makes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from income_bundle.crds import CrdSchemas, find_crd_dir
from income_bundle.seldon.bundle import SELDON_API_VERSION, load_bundle
from income_bundle.seldon.validation import Problem, format_problems, validate_bundle
from tests.support.paths import ROOT

EXAMPLES = ROOT / "seldon-examples"
ARTIFACTS = ("models/income", "models/income-preprocess", "models/income-explainer", "models/iris")
DETECTORS = ("detectors/income-drift", "detectors/income-outlier")
# income-preprocess feeds income-outlier: the one data dependency of the real bundle.
OUTLIER = {"name": "income-outlier", "inputs": ["income-preprocess"]}


@pytest.fixture(scope="module")
def crds() -> CrdSchemas | None:
    directory = find_crd_dir(ROOT)
    if directory is None:
        return None
    return CrdSchemas.load([directory / "seldon-core-v2.10.2-crds.yaml"])


def pipeline(*steps: str | dict, name: str = "p", **spec: Any) -> dict:
    """A Pipeline manifest; a step given as a string is just its name."""
    return {
        "apiVersion": SELDON_API_VERSION,
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"steps": [{"name": s} if isinstance(s, str) else s for s in steps], **spec},
    }


def model(name: str, storage_uri: str, **spec: Any) -> dict:
    return {
        "apiVersion": SELDON_API_VERSION,
        "kind": "Model",
        "metadata": {"name": name},
        "spec": {"storageUri": storage_uri, **spec},
    }


def explainer(**refs: str) -> dict:
    """The real income-explainer Model with other explainer references."""
    return model(
        "income-explainer",
        "/mnt/income-bundle/models/income-explainer",
        explainer={"type": "anchor_tabular", **refs},
    )


def write_bundle(directory: Path, docs: list[dict | str]) -> Path:
    """The real manifests plus `docs`; a doc replaces the real one of its kind and name.

    A string is written as a file of its own, as is: for manifests that do not load.
    """
    shutil.copytree(EXAMPLES, directory)
    for index, doc in enumerate(docs):
        if isinstance(doc, str):
            (directory / f"raw-{index}.yaml").write_text(doc)
            continue
        folder = directory / f"{doc['kind'].lower()}s"
        (folder / f"{doc['metadata']['name']}.yaml").write_text(yaml.safe_dump(doc))
    return directory


def validate(directory: Path, docs: list[dict | str], local_root: Path = ROOT) -> list[Problem]:
    return validate_bundle(load_bundle(write_bundle(directory, docs), local_root))


def reported(problems: list[Problem], where: str, phrase: str) -> bool:
    return any(p.where.endswith(where) and phrase in p.message for p in problems)


def test_real_bundle_has_no_problems(crds):
    bundle = load_bundle(EXAMPLES, ROOT)
    assert set(bundle.pipelines) == {"income-production", "income-v1", "income-v2"}
    assert set(bundle.models) == {
        "iris",
        "income-preprocess",
        "income",
        "income-drift",
        "income-outlier",
        "income-explainer",
    }
    assert validate_bundle(bundle, crds) == []


INVALID = [
    # 1. Names are DNS-1123 labels.
    pytest.param(
        [pipeline("income", name="income.v2")],
        "pipeline income.v2, metadata.name",
        "a '.' would break references",
        id="pipeline-name-with-dot",
    ),
    pytest.param(
        [pipeline("income", name="p" * 64)],
        f"pipeline {'p' * 64}, metadata.name",
        "at most 63",
        id="pipeline-name-too-long",
    ),
    pytest.param(
        [pipeline("income.v2")],
        "pipeline p, step income.v2, name",
        "'income.v2' is not a DNS-1123 label",
        id="step-name-with-dot",
    ),
    pytest.param(
        [model("Income_Model", "/mnt/income-bundle/models/income")],
        "model Income_Model, metadata.name",
        "'Income_Model' is not a DNS-1123 label",
        id="model-name-not-dns",
    ),
    # 2-4. At least one step, none named like the pipeline, no repeats.
    pytest.param([pipeline()], "pipeline p, spec.steps", "at least one step", id="no-steps"),
    pytest.param(
        [pipeline("income", name="income")],
        "pipeline income, step income, name",
        "must not have the pipeline's name 'income'",
        id="step-named-like-pipeline",
    ),
    pytest.param(
        [pipeline("income", "income-drift", "income")],
        "pipeline p, step income, steps[2]",
        "pipeline p has repeated step income (first at steps[0])",
        id="repeated-step",
    ),
    # 5. Reference grammar.
    pytest.param(
        [pipeline("income", {"name": "income-drift", "inputs": ["  "]})],
        "pipeline p, step income-drift, inputs[0]",
        "is empty",
        id="input-empty",
    ),
    pytest.param(
        [pipeline("income", {"name": "income-drift", "inputs": [".income.outputs"]})],
        "pipeline p, step income-drift, inputs[0]",
        "'.income.outputs' starts with '.'",
        id="input-starting-with-dot",
    ),
    pytest.param(
        [pipeline("income-preprocess", {**OUTLIER, "inputs": ["income-preprocess.output"]})],
        "pipeline p, step income-outlier, inputs[0]",
        "'income-preprocess.output' is not <step|pipeline>[.(inputs|outputs)[.<tensor>]]",
        id="input-bad-specifier",
    ),
    pytest.param(
        [pipeline("income-preprocess", {**OUTLIER, "inputs": ["income-preprocess.outputs.a.b"]})],
        "pipeline p, step income-outlier, inputs[0]",
        "expected 2 or 3 '.'-separated parts",
        id="input-too-many-parts",
    ),
    pytest.param(
        [pipeline("income", {"name": "income-drift", "triggers": ["income.predictions"]})],
        "pipeline p, step income-drift, triggers[0]",
        "'income.predictions' is not <step|pipeline>",
        id="trigger-bad-specifier",
    ),
    pytest.param(
        [pipeline("income", output={"steps": ["income.out"]})],
        "pipeline p, output.steps[0]",
        "'income.out' is not <step|pipeline>",
        id="output-bad-specifier",
    ),
    # 6. References name a step of the pipeline, or the pipeline's own inputs.
    pytest.param(
        [pipeline("income-preprocess", {**OUTLIER, "inputs": ["income-preprocesss"]})],
        "pipeline p, step income-outlier, inputs[0]",
        "references step 'income-preprocesss', which does not exist in pipeline p "
        "(steps: income-preprocess, income-outlier, or p for the pipeline's inputs)",
        id="input-unknown-step",
    ),
    pytest.param(
        [pipeline("income", {"name": "income-drift", "triggers": ["income-v1.outputs"]})],
        "pipeline p, step income-drift, triggers[0]",
        "references step 'income-v1', which does not exist",
        id="trigger-unknown-step",
    ),
    pytest.param(
        [pipeline("income", {"name": "income-drift", "inputs": ["p.outputs"]})],
        "pipeline p, step income-drift, inputs[0]",
        "'p.outputs' is the pipeline's own outputs, which no step can read: expected p.inputs",
        id="input-pipeline-outputs",
    ),
    pytest.param(
        [pipeline("income", output={"steps": ["income", "income-drift"]})],
        "pipeline p, output.steps[1]",
        "references step 'income-drift', which does not exist in pipeline p (steps: income)",
        id="output-unknown-step",
    ),
    pytest.param(
        [pipeline("income", output={"steps": ["p"]})],
        "pipeline p, output.steps[0]",
        "'p.inputs' is the pipeline's own inputs: the output must reference steps",
        id="output-pipeline-itself",
    ),
    # 7. No cycles, through inputs or triggers, unless allowCycles.
    pytest.param(
        [pipeline({"name": "income-preprocess", "inputs": ["income-outlier"]}, OUTLIER)],
        "pipeline p, step income-outlier, inputs[0]",
        "closes a cycle income-outlier -> income-preprocess -> income-outlier",
        id="cycle-through-inputs",
    ),
    pytest.param(
        [
            pipeline(
                {"name": "income", "inputs": ["p"], "triggers": ["income-drift.outputs.is_drift"]},
                {"name": "income-drift", "inputs": ["income.outputs"]},
            )
        ],
        "pipeline p, step income-drift, inputs[0]",
        "closes a cycle income-drift -> income -> income-drift",
        id="cycle-through-trigger",
    ),
    pytest.param(
        [pipeline({"name": "income", "inputs": ["income"]})],
        "pipeline p, step income, inputs[0]",
        "'income.outputs' closes a cycle income -> income",
        id="cycle-self",
    ),
    pytest.param(
        [pipeline({"name": "income", "inputs": ["income"]}, allowCycles=False)],
        "pipeline p, step income, inputs[0]",
        "unless spec.allowCycles is true",
        id="cycle-allow-cycles-false",
    ),
    # 8. Inputs and triggers differ.
    pytest.param(
        [pipeline("income-preprocess", {**OUTLIER, "triggers": ["income-preprocess.outputs"]})],
        "pipeline p, step income-outlier, triggers[0]",
        "'income-preprocess.outputs' is also inputs[0]: a step's inputs and triggers must differ",
        id="input-also-trigger",
    ),
    # 9. tensorMap keys are fully qualified and name what the step receives; values not empty.
    pytest.param(
        [pipeline("income-preprocess", {**OUTLIER, "tensorMap": {"transform": "x"}})],
        "pipeline p, step income-outlier, tensorMap key 'transform'",
        "not fully qualified: expected <step|pipeline>.(inputs|outputs).<tensor>",
        id="tensor-map-key-bare",
    ),
    pytest.param(
        [pipeline("income-preprocess", {**OUTLIER, "tensorMap": {"income-preprocess": "x"}})],
        "pipeline p, step income-outlier, tensorMap key 'income-preprocess'",
        "not fully qualified",
        id="tensor-map-key-step-only",
    ),
    pytest.param(
        [pipeline("income-preprocess", {**OUTLIER, "tensorMap": {"nope.outputs.t": "x"}})],
        "pipeline p, step income-outlier, tensorMap key 'nope.outputs.t'",
        "references step 'nope', which does not exist",
        id="tensor-map-key-unknown-step",
    ),
    pytest.param(
        [
            pipeline(
                "income-preprocess",
                {**OUTLIER, "tensorMap": {"income-preprocess.outputs.transform": ""}},
            )
        ],
        "pipeline p, step income-outlier, tensorMap key 'income-preprocess.outputs.transform'",
        "maps to '': expected a non-empty tensor name",
        id="tensor-map-empty-value",
    ),
    pytest.param(
        [
            pipeline(
                "income",
                "income-preprocess",
                {**OUTLIER, "tensorMap": {"income.outputs.predict": "transform"}},
            )
        ],
        "pipeline p, step income-outlier, tensorMap key 'income.outputs.predict'",
        "is not among the step's inputs (income-preprocess.outputs)",
        id="tensor-map-key-not-received",
    ),
    pytest.param(
        [pipeline("income", output={"steps": ["income"], "tensorMap": {"income": "label"}})],
        "pipeline p, output.tensorMap key 'income'",
        "not fully qualified",
        id="output-tensor-map-key-bare",
    ),
    pytest.param(
        [pipeline("income", output={"steps": ["income"], "tensorMap": {"p.inputs.predict": "x"}})],
        "pipeline p, output.tensorMap key 'p.inputs.predict'",
        "the output must reference steps",
        id="output-tensor-map-key-pipeline",
    ),
    # 10. Join types.
    pytest.param(
        [pipeline("income-preprocess", {**OUTLIER, "inputsJoinType": "left"})],
        "pipeline p, step income-outlier, inputsJoinType",
        "'left' is not a join type: expected one of inner, outer, any",
        id="inputs-join-type",
    ),
    pytest.param(
        [pipeline("income", {"name": "income-drift", "triggersJoinType": "all"})],
        "pipeline p, step income-drift, triggersJoinType",
        "'all' is not a join type",
        id="triggers-join-type",
    ),
    pytest.param(
        [pipeline("income", output={"steps": ["income"], "stepsJoin": "full"})],
        "pipeline p, output.stepsJoin",
        "'full' is not a join type",
        id="output-steps-join",
    ),
    # 11. input.externalInputs and externalTriggers, with Seldon's reasons.
    pytest.param(
        [pipeline("income", input={"externalInputs": []})],
        "pipeline p, input.externalInputs",
        "At least one pipeline input must be specified",
        id="external-inputs-empty",
    ),
    pytest.param(
        [pipeline("income", input={"externalInputs": ["income-v1"]})],
        "pipeline p, input.externalInputs[0]",
        "A Pipeline name must also specify one of inputs, outputs or a step name",
        id="external-input-only-pipeline-name",
    ),
    pytest.param(
        [pipeline("income", input={"externalInputs": ["income-v1.output"]})],
        "pipeline p, input.externalInputs[0]",
        "must be <pipelineName>.(inputs|outputs|step.<stepName>)",
        id="external-input-bad-prefix",
    ),
    pytest.param(
        [pipeline("income", input={"externalInputs": ["income-v1.step.income"]})],
        "pipeline p, input.externalInputs[0]",
        "A pipeline step must be <pipelineName>.step.<stepName>.(inputs|outputs)",
        id="external-input-step-without-specifier",
    ),
    pytest.param(
        [pipeline("income", input={"externalInputs": ["income-v1.step.income.outputs.a.b"]})],
        "pipeline p, input.externalInputs[0]",
        "The input is too long",
        id="external-input-too-long",
    ),
    pytest.param(
        [pipeline("income", input={"externalInputs": ["income-v1.step.income-drift.outputs"]})],
        "pipeline p, input.externalInputs[0]",
        "pipeline income-v1 has no step 'income-drift' (steps: income)",
        id="external-input-unknown-step",
    ),
    pytest.param(
        [
            pipeline(
                "income",
                input={"externalInputs": ["income-v1.outputs"], "externalTriggers": ["income-v2"]},
            )
        ],
        "pipeline p, input.externalTriggers[0]",
        "A Pipeline name must also specify one of inputs, outputs or a step name",
        id="external-trigger-only-pipeline-name",
    ),
    pytest.param(
        [
            pipeline(
                "income",
                input={
                    "externalInputs": ["income-v1.outputs"],
                    "tensorMap": {"income-v2.outputs.x": "y"},
                },
            )
        ],
        "pipeline p, input.tensorMap key 'income-v2.outputs.x'",
        "is not among externalInputs or externalTriggers (income-v1.outputs)",
        id="input-tensor-map-key-not-external",
    ),
    # 12. Batch and windows.
    pytest.param(
        [pipeline("income", {"name": "income-drift", "batch": {"size": 0}})],
        "pipeline p, step income-drift, batch.size",
        "0 must be a positive integer",
        id="batch-size-zero",
    ),
    pytest.param(
        [pipeline("income", {"name": "income-drift", "batch": {"size": 20, "windowMs": -5}})],
        "pipeline p, step income-drift, batch.windowMs",
        "-5 must be a non-negative integer",
        id="batch-window-negative",
    ),
    pytest.param(
        [pipeline("income-preprocess", {**OUTLIER, "joinWindowMs": -1})],
        "pipeline p, step income-outlier, joinWindowMs",
        "-1 must be a non-negative integer",
        id="join-window-negative",
    ),
    # 13. A step is a Model of the bundle.
    pytest.param(
        [pipeline("income-classifier")],
        "pipeline p, step income-classifier, name",
        "no Model named 'income-classifier' in the bundle: a step runs the Model of its name "
        "(Models: income, income-drift, income-explainer, income-outlier, income-preprocess, iris)",
        id="step-without-model",
    ),
    # 14. Named tensors exist in the model's model-settings.json.
    pytest.param(
        [
            pipeline(
                "income-preprocess", {**OUTLIER, "inputs": ["income-preprocess.outputs.features"]}
            )
        ],
        "pipeline p, step income-outlier, inputs[0]",
        "model income-preprocess has no output tensor 'features' "
        "(its outputs in models/income-preprocess/model-settings.json: transform)",
        id="input-unknown-output-tensor",
    ),
    pytest.param(
        [pipeline("income", {"name": "income-drift", "triggers": ["income.inputs.features"]})],
        "pipeline p, step income-drift, triggers[0]",
        "model income has no input tensor 'features' (its inputs in "
        "models/income/model-settings.json: predict)",
        id="trigger-unknown-input-tensor",
    ),
    pytest.param(
        [
            pipeline(
                "income-preprocess", OUTLIER, output={"steps": ["income-outlier.outputs.outlier"]}
            )
        ],
        "pipeline p, output.steps[0]",
        "model income-outlier has no output tensor 'outlier' (its outputs in "
        "detectors/income-outlier/model-settings.json: is_outlier, instance_score)",
        id="output-unknown-tensor",
    ),
    pytest.param(
        [
            pipeline(
                "income-preprocess",
                {**OUTLIER, "tensorMap": {"income-preprocess.outputs.features": "transform"}},
            )
        ],
        "pipeline p, step income-outlier, tensorMap key 'income-preprocess.outputs.features'",
        "has no output tensor 'features'",
        id="tensor-map-unknown-tensor",
    ),
    pytest.param(
        [
            pipeline(
                "income",
                input={"externalInputs": ["income-production.step.income-outlier.outputs.score"]},
            )
        ],
        "pipeline p, input.externalInputs[0]",
        "model income-outlier has no output tensor 'score'",
        id="external-input-unknown-tensor",
    ),
    # 16. storageUri resolves to an artifact folder with a model-settings.json.
    pytest.param(
        [model("income", "/mnt/income-bundle/models/income-v9")],
        "model income, storageUri",
        "'/mnt/income-bundle/models/income-v9' resolves to",
        id="storage-uri-missing-folder",
    ),
    pytest.param(
        [model("income", "gs://seldon-models/scv2/examples/income/classifier")],
        "model income, storageUri",
        "cannot be resolved to a local artifact folder: expected a storageUri under "
        "'/mnt/income-bundle/'",
        id="storage-uri-other-prefix",
    ),
    pytest.param(
        [model("income", "/mnt/income-bundle/seldon-examples")],
        "model income, storageUri",
        "which has no model-settings.json",
        id="storage-uri-folder-without-settings",
    ),
    # 17. An explainer references exactly one Model or Pipeline of the bundle.
    pytest.param(
        [explainer(modelRef="income-classifier")],
        "model income-explainer, spec.explainer.modelRef",
        "'income-classifier' is not a Model of the bundle",
        id="explainer-unknown-model",
    ),
    pytest.param(
        [explainer(pipelineRef="income-v3")],
        "model income-explainer, spec.explainer.pipelineRef",
        "'income-v3' is not a Pipeline of the bundle (Pipelines: income-production, income-v1",
        id="explainer-unknown-pipeline",
    ),
    pytest.param(
        [explainer(modelRef="income", pipelineRef="income-v1")],
        "model income-explainer, spec.explainer",
        "sets modelRef 'income' and pipelineRef 'income-v1': an explainer needs exactly one",
        id="explainer-both-references",
    ),
    pytest.param(
        [explainer()],
        "model income-explainer, spec.explainer",
        "sets neither modelRef nor pipelineRef",
        id="explainer-no-reference",
    ),
    # 18. What does not load is reported, not raised.
    pytest.param(
        ["kind: Pipeline\nmetadata: {name: p\n"],
        "raw-0.yaml",
        "not readable YAML",
        id="load-error-bad-yaml",
    ),
    pytest.param(
        ["apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: income}\n"],
        "raw-0.yaml",
        "kind 'Deployment' is not a Seldon Model or Pipeline",
        id="load-error-wrong-kind",
    ),
]


@pytest.mark.parametrize(("docs", "where", "phrase"), INVALID)
def test_invalid_bundle_is_reported(tmp_path, docs, where, phrase):
    problems = validate(tmp_path / "bundle", docs)
    assert reported(problems, where, phrase), format_problems(problems)


VALID = [
    pytest.param(
        [pipeline({"name": "income", "inputs": ["p"]}, output={"steps": ["income"]})],
        id="bare-pipeline-name-input",
    ),
    pytest.param(
        [
            pipeline(
                {"name": "income", "inputs": ["p.inputs.predict"]}, output={"steps": ["income"]}
            )
        ],
        id="pipeline-input-tensor",
    ),
    pytest.param(
        [pipeline("income", {"name": "income-drift", "inputs": ["p"], "triggers": ["income"]})],
        id="trigger-on-another-step",
    ),
    pytest.param(
        [pipeline("income", {"name": "income-drift", "inputs": ["income.inputs.predict"]})],
        id="input-from-another-steps-inputs",
    ),
    pytest.param(
        [
            pipeline(
                {
                    "name": "income-preprocess",
                    "inputs": ["p", "income-outlier"],
                    "inputsJoinType": "any",
                },
                OUTLIER,
                output={"steps": ["income-outlier"]},
                allowCycles=True,
                maxStepRevisits=3,
            )
        ],
        id="allowed-cycle",
    ),
    pytest.param(
        [
            pipeline(
                "income",
                "income-preprocess",
                {
                    **OUTLIER,
                    "inputs": ["income-preprocess", "p.inputs.predict"],
                    "inputsJoinType": "outer",
                    "triggers": ["income.outputs.predict"],
                    "triggersJoinType": "any",
                    "joinWindowMs": 0,
                },
                output={"steps": ["income", "income-outlier"], "stepsJoin": "any"},
            )
        ],
        id="outer-and-any-joins",
    ),
    pytest.param(
        [
            pipeline(
                {"name": "income", "tensorMap": {"p.inputs.features": "predict"}},
                "income-preprocess",
                {
                    **OUTLIER,
                    "inputs": ["income-preprocess.outputs.transform"],
                    "tensorMap": {"income-preprocess.outputs.transform": "transform"},
                },
                output={
                    "steps": ["income", "income-outlier"],
                    "tensorMap": {"income-outlier.outputs.is_outlier": "outlier"},
                },
            )
        ],
        id="fully-qualified-tensor-maps",
    ),
    pytest.param(
        [
            pipeline(
                "income",
                name="income-downstream",
                input={
                    "externalInputs": [
                        "income-production.outputs",
                        "income-production.step.income-outlier.outputs.is_outlier",
                    ],
                    "externalTriggers": ["income-v1.outputs"],
                    "joinType": "outer",
                    "tensorMap": {"income-production.outputs.predict": "predict"},
                },
            )
        ],
        id="external-inputs-and-triggers",
    ),
    pytest.param(
        [pipeline("income", {"name": "income-drift", "batch": {"size": 1, "windowMs": 0}})],
        id="smallest-batch",
    ),
    pytest.param([explainer(pipelineRef="income-production")], id="explainer-of-a-pipeline"),
]


@pytest.mark.parametrize("docs", VALID)
def test_valid_edge_case_has_no_problems(tmp_path, docs, crds):
    bundle = load_bundle(write_bundle(tmp_path / "bundle", docs), ROOT)
    problems = validate_bundle(bundle, crds)
    assert problems == [], format_problems(problems)


@pytest.fixture
def local_root(tmp_path) -> Path:
    """A copy of the artifact folders' settings, without the (large, git-ignored) artifacts."""
    root = tmp_path / "root"
    for folder in (*ARTIFACTS, *DETECTORS):
        (root / folder).mkdir(parents=True)
        shutil.copy(ROOT / folder / "model-settings.json", root / folder)
    return root


def test_settings_named_after_another_model_is_reported(tmp_path, local_root):
    # Upstream's outlier detector shipped model-settings.json named `income-drift`.
    settings_path = local_root / "detectors/income-outlier/model-settings.json"
    settings = json.loads(settings_path.read_text())
    settings_path.write_text(json.dumps({**settings, "name": "income-drift"}))

    problems = validate(tmp_path / "bundle", [], local_root)

    assert problems == [
        Problem(
            "model income-outlier, detectors/income-outlier/model-settings.json, name",
            "'income-drift' must equal the Model name 'income-outlier' (one name everywhere: "
            "Model, pipeline step and model-settings.json)",
        )
    ]


def test_artifact_checks_need_a_local_root(tmp_path):
    docs = [
        model("income", "gs://bucket/income"),
        pipeline("income", output={"steps": ["income.outputs.x"]}),
    ]
    bundle = load_bundle(write_bundle(tmp_path / "bundle", docs), local_root=None)
    assert validate_bundle(bundle) == []


def test_documents_are_checked_against_crds(tmp_path, crds):
    if crds is None:
        pytest.skip("no CRD schemas: set CRD_DIR or put shared/crds beside the checkout")
    typo = model("income", "/mnt/income-bundle/models/income")
    typo["spec"]["requirement"] = ["sklearn"]
    bundle = load_bundle(write_bundle(tmp_path / "bundle", [typo]), ROOT)

    problems = validate_bundle(bundle, crds)

    assert reported(problems, "models/income.yaml, Model income", "does not match the CRD schema")
    assert "requirement" in format_problems(problems)
    assert validate_bundle(bundle) == []  # the typo is only the schema's to catch


def test_all_problems_are_reported_at_once(tmp_path):
    docs = [
        model("income", "gs://bucket/income"),
        pipeline(
            "income-preprocess",
            {**OUTLIER, "inputs": ["income-preproces"], "inputsJoinType": "left"},
            {"name": "income-drift", "batch": {"size": -20}},
            "income-classifier",
            output={"steps": ["income-outlier.outputs.outlier"]},
        ),
    ]

    problems = validate(tmp_path / "bundle", docs)

    expected = [
        ("model income, storageUri", "cannot be resolved"),
        ("pipeline p, step income-outlier, inputs[0]", "'income-preproces'"),
        ("pipeline p, step income-outlier, inputsJoinType", "'left'"),
        ("pipeline p, step income-drift, batch.size", "-20"),
        ("pipeline p, step income-classifier, name", "no Model named 'income-classifier'"),
        ("pipeline p, output.steps[0]", "no output tensor 'outlier'"),
    ]
    assert [
        (where, phrase) for where, phrase in expected if not reported(problems, where, phrase)
    ] == []
    assert len(problems) == len(expected)
    assert validate(tmp_path / "again", docs) == problems  # a stable order


def test_format_problems_lists_each_problem():
    problems = [
        Problem("pipeline p, step a, inputs[0]", "'b.outputs' references step 'b'"),
        Problem("model m, storageUri", "cannot be resolved"),
    ]
    text = format_problems(problems)
    assert text.splitlines() == [
        "2 problems found:",
        "  - pipeline p, step a, inputs[0]: 'b.outputs' references step 'b'",
        "  - model m, storageUri: cannot be resolved",
    ]
    assert format_problems([]) == "no problems found"
