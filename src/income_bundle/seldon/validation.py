"""Validate a bundle of Seldon Core v2 manifests: Seldon's own rules, and the checks it never makes.

Seldon's scheduler (`scheduler/pkg/store/pipeline/validate.go`) rejects a pipeline at its first
problem, and only once it is applied to a cluster; it never looks behind a step at its Model, the
artifact's `model-settings.json` or the tensor names. Here every problem is reported at once,
before anything is applied, and each step is followed to its Model, artifact folder and tensors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from income_bundle.crds import CrdSchemas
from income_bundle.seldon.bundle import (
    IN_CLUSTER_ROOT,
    JOIN_TYPES,
    Bundle,
    Model,
    Pipeline,
    Step,
    TensorRef,
)

__all__ = ["Problem", "format_problems", "validate_bundle"]

SETTINGS_FILE = "model-settings.json"
SPECIFIERS = ("inputs", "outputs")
PIPELINE_STEP_SPECIFIER = "step"
MAX_NAME_LENGTH = 63
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
REFERENCE_GRAMMAR = "<step|pipeline>[.(inputs|outputs)[.<tensor>]]"
QUALIFIED_KEY_GRAMMAR = "<step|pipeline>.(inputs|outputs).<tensor>"
EXTERNAL_KEY_GRAMMAR = (
    "<pipeline>.(inputs|outputs).<tensor> or <pipeline>.step.<step>.(inputs|outputs).<tensor>"
)
# Seldon's reasons for a bad `input.externalInputs` entry (its checkPipelineInput).
EXTERNAL_INPUTS_EMPTY = "At least one pipeline input must be specified"
EXTERNAL_EMPTY_NAME = "Input name must not be empty"
EXTERNAL_ONLY_PIPELINE_NAME = (
    "A Pipeline name must also specify one of inputs, outputs or a step name"
)
EXTERNAL_INVALID_PREFIX = "A Pipeline inputs referencing another pipeline must be <pipelineName>.(inputs|outputs|step.<stepName>)"
EXTERNAL_STEP_BAD_SUFFIX = "A pipeline step must be <pipelineName>.step.<stepName>.(inputs|outputs)"
EXTERNAL_TOO_LONG = "The input is too long. It must be <pipelineName>.(inputs|outputs).(tensorName)? or <pipelineName>.step.<stepName>.<inputs|outputs>.<tensorName>"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the bundle: where it is, and what is wrong with what was expected."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class _ExternalRef:
    """`<pipeline>.(inputs|outputs)[.<tensor>]` or `<pipeline>.step.<step>.(inputs|outputs)[.<tensor>]`."""

    pipeline: str
    step: str | None
    kind: str
    tensor: str | None

    @property
    def source(self) -> str:
        """The reference without its tensor: what externalInputs list."""
        middle = f"{PIPELINE_STEP_SPECIFIER}.{self.step}." if self.step else ""
        return f"{self.pipeline}.{middle}{self.kind}"


def validate_bundle(bundle: Bundle, crds: CrdSchemas | None = None) -> list[Problem]:
    """Every problem at once (never stops at the first), in a stable order.

    Load errors come first, then CRD schema errors (when `crds` is given), then each Model and each
    Pipeline by name. Artifact checks (storageUri, `model-settings.json`, tensor names) need
    `bundle.local_root`; without it they are skipped.
    """
    return _Validator(bundle, crds).run()


def format_problems(problems: list[Problem]) -> str:
    """A count, then one problem a line, ready to print."""
    if not problems:
        return "no problems found"
    noun = "problem" if len(problems) == 1 else "problems"
    return "\n".join([f"{len(problems)} {noun} found:", *(f"  - {p}" for p in problems)])


def _names(names: Iterable[str]) -> str:
    listed = ", ".join(names)
    return listed or "none"


def _name_problem(name: str) -> str | None:
    """Why `name` cannot name a Seldon resource or step, or None when it can."""
    if DNS_LABEL.fullmatch(name) and len(name) <= MAX_NAME_LENGTH:
        return None
    if len(name) > MAX_NAME_LENGTH:
        return f"'{name}' is {len(name)} characters long: a DNS-1123 label has at most {MAX_NAME_LENGTH}"
    # A dot would split the name when Seldon parses `<step>.outputs.<tensor>`.
    dot = "; a '.' would break references like <step>.outputs.<tensor>" if "." in name else ""
    return (
        f"'{name}' is not a DNS-1123 label (lowercase alphanumerics and '-', starting and ending "
        f"with an alphanumeric, at most {MAX_NAME_LENGTH} characters){dot}"
    )


def _tensor_names(settings: dict[str, Any], kind: str) -> list[str] | None:
    """The names of a model's `inputs` or `outputs`, or None when the settings do not declare them."""
    entries = settings.get(kind)
    if not isinstance(entries, list):
        return None
    return [str(entry.get("name")) for entry in entries if isinstance(entry, dict)]


def _parse_external(reference: str) -> tuple[_ExternalRef | None, str | None]:
    """An external reference and None, or None and Seldon's reason for rejecting it."""
    if not reference.strip():
        return None, EXTERNAL_EMPTY_NAME
    parts = reference.split(".")
    if len(parts) == 1:
        return None, EXTERNAL_ONLY_PIPELINE_NAME
    if not all(parts):
        return None, "every '.'-separated part must be non-empty"
    if len(parts) == 2:
        if parts[1] not in SPECIFIERS:
            return None, EXTERNAL_INVALID_PREFIX
        return _ExternalRef(parts[0], None, parts[1], None), None
    if len(parts) == 3:
        if parts[1] == PIPELINE_STEP_SPECIFIER:
            return None, EXTERNAL_STEP_BAD_SUFFIX
        if parts[1] not in SPECIFIERS:
            return None, EXTERNAL_INVALID_PREFIX
        return _ExternalRef(parts[0], None, parts[1], parts[2]), None
    # Same order of checks as Seldon, so that the same reason is given.
    if parts[1] not in (*SPECIFIERS, PIPELINE_STEP_SPECIFIER):
        return None, EXTERNAL_INVALID_PREFIX
    if parts[3] not in SPECIFIERS:
        return None, EXTERNAL_STEP_BAD_SUFFIX
    if parts[1] in SPECIFIERS:
        return None, EXTERNAL_INVALID_PREFIX
    if len(parts) > 5:
        return None, EXTERNAL_TOO_LONG
    return _ExternalRef(parts[0], parts[2], parts[3], parts[4] if len(parts) == 5 else None), None


class _Validator:
    """Walks a bundle once, collecting problems; artifact settings are read once per Model."""

    def __init__(self, bundle: Bundle, crds: CrdSchemas | None) -> None:
        self.bundle = bundle
        self.crds = crds
        self.problems: list[Problem] = []
        self.settings: dict[str, dict[str, Any]] = {}  # model name -> its model-settings.json
        self.settings_paths: dict[str, str] = {}
        self.documents: dict[tuple[str, str], dict[str, Any]] = {}
        for _, doc in bundle.documents:
            name = str((doc.get("metadata") or {}).get("name"))
            # The loader keeps the first of two same-named documents, so do the same here.
            self.documents.setdefault((str(doc.get("kind")), name), doc)

    def report(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    def run(self) -> list[Problem]:
        self.check_load_errors()
        self.check_crds()
        for name in sorted(self.bundle.models):
            self.check_model(self.bundle.models[name])
        for name in sorted(self.bundle.pipelines):
            self.check_pipeline(self.bundle.pipelines[name])
        return self.problems

    def spec(self, kind: str, name: str) -> dict[str, Any]:
        spec = self.documents.get((kind, name), {}).get("spec")
        return spec if isinstance(spec, dict) else {}

    def display(self, path: Path) -> str:
        root = self.bundle.local_root
        if root is not None and path.is_relative_to(root):
            return str(path.relative_to(root))
        return str(path)

    # -- documents --------------------------------------------------------------------------

    def check_load_errors(self) -> None:
        for error in self.bundle.load_errors:
            where, separator, message = error.partition(": ")
            if separator:
                self.report(where, message)
            else:
                self.report("bundle", error)

    def check_crds(self) -> None:
        if self.crds is None:
            return
        for path, doc in self.bundle.documents:
            name = (doc.get("metadata") or {}).get("name")
            for error in self.crds.errors(doc):
                self.report(
                    f"{path}, {doc.get('kind')} {name}", f"does not match the CRD schema: {error}"
                )

    # -- models -----------------------------------------------------------------------------

    def check_model(self, model: Model) -> None:
        if why := _name_problem(model.name):
            self.report(f"model {model.name}, metadata.name", why)
        self.check_artifact(model)
        self.check_explainer(model)

    def check_artifact(self, model: Model) -> None:
        root = self.bundle.local_root
        if root is None:
            return
        where = f"model {model.name}, storageUri"
        uri = model.storage_uri
        folder = model.local_folder(root)
        if folder is None:
            self.report(
                where,
                f"'{uri}' cannot be resolved to a local artifact folder: expected a storageUri "
                f"under '{IN_CLUSTER_ROOT}/' (the repository root, {root}, on this machine)",
            )
            return
        if not folder.is_dir():
            self.report(where, f"'{uri}' resolves to {folder}, which is not a directory")
            return
        path = folder / SETTINGS_FILE
        shown = self.display(path)
        if not path.is_file():
            self.report(where, f"'{uri}' resolves to {folder}, which has no {SETTINGS_FILE}")
            return
        try:
            settings = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            self.report(f"model {model.name}, {shown}", f"is not readable JSON: {e}")
            return
        if not isinstance(settings, dict):
            self.report(f"model {model.name}, {shown}", "must be a JSON object")
            return
        if settings.get("name") != model.name:
            # Upstream's outlier detector shipped settings named `income-drift`.
            self.report(
                f"model {model.name}, {shown}, name",
                f"{settings.get('name')!r} must equal the Model name '{model.name}' (one name "
                "everywhere: Model, pipeline step and model-settings.json)",
            )
        self.settings[model.name] = settings
        self.settings_paths[model.name] = shown

    def check_explainer(self, model: Model) -> None:
        explainer = self.spec("Model", model.name).get("explainer")
        refs = {"modelRef": model.explainer_model_ref, "pipelineRef": model.explainer_pipeline_ref}
        if explainer is None and not any(refs.values()) and model.explainer_type is None:
            return
        where = f"model {model.name}, spec.explainer"
        set_refs = [f"{key} '{value}'" for key, value in refs.items() if value]
        if len(set_refs) != 1:
            found = " and ".join(set_refs) or "neither modelRef nor pipelineRef"
            self.report(
                where,
                f"sets {found}: an explainer needs exactly one of modelRef (a Model) or "
                "pipelineRef (a Pipeline) to explain",
            )
        model_ref, pipeline_ref = refs["modelRef"], refs["pipelineRef"]
        if model_ref and model_ref not in self.bundle.models:
            self.report(
                f"{where}.modelRef",
                f"'{model_ref}' is not a Model of the bundle (Models: {_names(sorted(self.bundle.models))})",
            )
        if pipeline_ref and pipeline_ref not in self.bundle.pipelines:
            self.report(
                f"{where}.pipelineRef",
                f"'{pipeline_ref}' is not a Pipeline of the bundle "
                f"(Pipelines: {_names(sorted(self.bundle.pipelines))})",
            )

    # -- pipelines --------------------------------------------------------------------------

    def check_pipeline(self, pipeline: Pipeline) -> None:
        where = f"pipeline {pipeline.name}"
        if why := _name_problem(pipeline.name):
            self.report(f"{where}, metadata.name", why)
        if not pipeline.steps:
            self.report(f"{where}, spec.steps", "has no steps: a pipeline needs at least one step")
        first_index: dict[str, int] = {}
        for index, step in enumerate(pipeline.steps):
            self.check_step(pipeline, step, index, first_index)
        self.check_cycles(pipeline)
        self.check_output(pipeline)
        self.check_input(pipeline)
        self.check_count(f"{where}, maxStepRevisits", pipeline.max_step_revisits, minimum=0)

    def step_where(self, pipeline: Pipeline, step: Step, index: int) -> str:
        label = f"step {step.name}" if step.name else f"steps[{index}]"
        return f"pipeline {pipeline.name}, {label}"

    def check_step(
        self, pipeline: Pipeline, step: Step, index: int, first_index: dict[str, int]
    ) -> None:
        where = self.step_where(pipeline, step, index)
        if why := _name_problem(step.name):
            self.report(f"{where}, name", why)
        if step.name == pipeline.name:
            self.report(
                f"{where}, name",
                f"a step must not have the pipeline's name '{pipeline.name}': that name in a "
                "reference means the pipeline's inputs",
            )
        if step.name in first_index:
            self.report(
                f"{where}, steps[{index}]",
                f"pipeline {pipeline.name} has repeated step {step.name} (first at "
                f"steps[{first_index[step.name]}]): step names must be unique",
            )
            return  # the first step of that name is the one checked
        first_index[step.name] = index
        if step.name not in self.bundle.models:
            self.report(
                f"{where}, name",
                f"no Model named '{step.name}' in the bundle: a step runs the Model of its name "
                f"(Models: {_names(sorted(self.bundle.models))})",
            )
        for field in ("inputs", "triggers"):
            for position, reference in enumerate(getattr(step, field)):
                self.check_reference(pipeline, f"{where}, {field}[{position}]", reference)
        for position, trigger in enumerate(step.triggers):
            if trigger in step.inputs:
                self.report(
                    f"{where}, triggers[{position}]",
                    f"'{trigger}' is also inputs[{step.inputs.index(trigger)}]: a step's inputs "
                    "and triggers must differ",
                )
        # A mapping applies to data the step receives: its inputs (the pipeline's by default).
        receives = [*(step.inputs or [f"{pipeline.name}.inputs"]), *step.triggers]
        for key, value in step.tensor_map.items():
            self.check_tensor_map_entry(
                pipeline,
                f"{where}, tensorMap key '{key}'",
                str(key),
                value,
                receives,
                "the step's inputs",
            )
        self.check_join(f"{where}, inputsJoinType", step.inputs_join)
        self.check_join(f"{where}, triggersJoinType", step.triggers_join)
        self.check_count(f"{where}, joinWindowMs", step.join_window_ms, minimum=0)
        self.check_count(f"{where}, batch.size", step.batch_size, minimum=1)
        self.check_count(f"{where}, batch.windowMs", step.batch_window_ms, minimum=0)

    def check_reference(
        self, pipeline: Pipeline, where: str, reference: str, *, output: bool = False
    ) -> None:
        """A step input or trigger, or (`output`) an `output.steps` entry."""
        if not reference.strip():
            self.report(where, f"{reference!r} is empty: expected {REFERENCE_GRAMMAR}")
            return
        if reference.startswith("."):
            self.report(where, f"'{reference}' starts with '.': expected {REFERENCE_GRAMMAR}")
            return
        parsed = TensorRef.parse(reference, pipeline.name)
        if parsed is None:
            self.report(
                where,
                f"'{reference}' is not {REFERENCE_GRAMMAR}: expected 2 or 3 '.'-separated parts "
                "with 'inputs' or 'outputs' second",
            )
            return
        self.check_source(pipeline, where, reference, parsed, output=output)

    def check_source(
        self, pipeline: Pipeline, where: str, reference: str, parsed: TensorRef, *, output: bool
    ) -> bool:
        """The step (or pipeline) a parsed reference names exists, and so does its tensor."""
        steps = _names(dict.fromkeys(s.name for s in pipeline.steps))
        if parsed.source == pipeline.name:
            if output:
                self.report(
                    where,
                    f"'{reference}' is the pipeline's own inputs: the output must reference steps "
                    f"of the pipeline ({steps})",
                )
                return False
            if parsed.kind == "outputs":
                self.report(
                    where,
                    f"'{reference}' is the pipeline's own outputs, which no step can read: "
                    f"expected {pipeline.name}.inputs[.<tensor>] or a step ({steps})",
                )
                return False
            return True  # the pipeline's inputs are whatever the request carries
        if pipeline.step(parsed.source) is None:
            alternative = "" if output else f", or {pipeline.name} for the pipeline's inputs"
            self.report(
                where,
                f"'{reference}' references step '{parsed.source}', which does not exist in "
                f"pipeline {pipeline.name} (steps: {steps}{alternative})",
            )
            return False
        return self.check_tensor(where, reference, parsed.source, parsed.kind, parsed.tensor)

    def check_tensor(
        self, where: str, reference: str, model: str, kind: str, tensor: str | None
    ) -> bool:
        """A named tensor is one the step's Model declares in its model-settings.json."""
        settings = self.settings.get(model)
        if tensor is None or settings is None:
            return True
        names = _tensor_names(settings, kind)
        if names is None or tensor in names:
            return True
        self.report(
            where,
            f"'{reference}': model {model} has no {kind[:-1]} tensor '{tensor}' (its {kind} in "
            f"{self.settings_paths[model]}: {_names(names)})",
        )
        return False

    def check_tensor_map_entry(
        self,
        pipeline: Pipeline,
        where: str,
        key: str,
        value: Any,
        receives: list[str],
        receiver: str,
        *,
        output: bool = False,
    ) -> None:
        if not isinstance(value, str) or not value.strip():
            self.report(where, f"maps to {value!r}: expected a non-empty tensor name")
        parsed = TensorRef.parse(key, pipeline.name) if key.count(".") == 2 else None
        if parsed is None or parsed.tensor is None:
            self.report(where, f"'{key}' is not fully qualified: expected {QUALIFIED_KEY_GRAMMAR}")
            return
        if not self.check_source(pipeline, where, key, parsed, output=output):
            return
        if key not in receives and f"{parsed.source}.{parsed.kind}" not in receives:
            self.report(
                where,
                f"'{key}' is not among {receiver} ({_names(receives)}): the mapping would never apply",
            )

    def check_join(self, where: str, value: Any) -> None:
        if value not in JOIN_TYPES:
            self.report(
                where, f"{value!r} is not a join type: expected one of {_names(JOIN_TYPES)}"
            )

    def check_count(self, where: str, value: Any, *, minimum: int) -> None:
        if value is None:
            return
        # bool is an int to Python, never to Kubernetes.
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            expected = "a positive integer" if minimum == 1 else "a non-negative integer"
            self.report(where, f"{value!r} must be {expected}")

    def check_cycles(self, pipeline: Pipeline) -> None:
        """Seldon's checkForCycles, reporting each cycle's path; edges come from inputs and triggers."""
        if pipeline.allow_cycles:
            return
        steps = {step.name: step for step in reversed(pipeline.steps)}  # first of a name wins
        reads: dict[str, list[tuple[str, str]]] = {}  # step -> (field, step it reads from)
        for name, step in steps.items():
            reads[name] = []
            for field in ("inputs", "triggers"):
                for position, reference in enumerate(getattr(step, field)):
                    parsed = TensorRef.parse(reference, pipeline.name)
                    if parsed and parsed.source != pipeline.name and parsed.source in steps:
                        reads[name].append((f"{field}[{position}] '{reference}'", parsed.source))
        finished: set[str] = set()
        reported: set[frozenset[str]] = set()
        path: list[str] = []

        def visit(name: str) -> None:
            path.append(name)
            for field, source in reads[name]:
                if source in path:
                    cycle = path[path.index(source) :]
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        self.report_cycle(pipeline, name, field, cycle)
                elif source not in finished:
                    visit(source)
            path.pop()
            finished.add(name)

        for step in pipeline.steps:
            if step.name not in finished:
                visit(step.name)

    def report_cycle(self, pipeline: Pipeline, step: str, field: str, cycle: list[str]) -> None:
        # `cycle` runs against the data (each step reads from the next): show it with the data.
        flow = [*reversed(cycle), step]
        position, _, reference = field.partition(" ")
        self.report(
            f"pipeline {pipeline.name}, step {step}, {position}",
            f"{reference} closes a cycle {' -> '.join(flow)}: Seldon rejects cycles unless "
            "spec.allowCycles is true (with maxStepRevisits to bound the loop)",
        )

    def check_output(self, pipeline: Pipeline) -> None:
        where = f"pipeline {pipeline.name}, output"
        for position, reference in enumerate(pipeline.output):
            self.check_reference(pipeline, f"{where}.steps[{position}]", reference, output=True)
        self.check_join(f"{where}.stepsJoin", pipeline.output_join)
        self.check_count(f"{where}.joinWindowMs", pipeline.output_join_window_ms, minimum=0)
        for key, value in pipeline.output_tensor_map.items():
            self.check_tensor_map_entry(
                pipeline,
                f"{where}.tensorMap key '{key}'",
                str(key),
                value,
                pipeline.output,
                "output.steps",
                output=True,
            )

    def check_input(self, pipeline: Pipeline) -> None:
        if pipeline.external_inputs is None:
            return
        where = f"pipeline {pipeline.name}, input"
        if not pipeline.external_inputs:
            self.report(
                f"{where}.externalInputs",
                f"{EXTERNAL_INPUTS_EMPTY}: the input section has no externalInputs",
            )
        sources = [*pipeline.external_inputs, *pipeline.external_triggers]
        for field, references in (
            ("externalInputs", pipeline.external_inputs),
            ("externalTriggers", pipeline.external_triggers),
        ):
            for position, reference in enumerate(references):
                self.check_external(f"{where}.{field}[{position}]", reference)
        section = self.spec("Pipeline", pipeline.name).get("input") or {}
        for field in ("joinType", "triggersJoinType"):
            if field in section:
                self.check_join(f"{where}.{field}", section[field])
        self.check_count(f"{where}.joinWindowMs", section.get("joinWindowMs"), minimum=0)
        for key, value in (section.get("tensorMap") or {}).items():
            self.check_external_tensor_map_entry(
                f"{where}.tensorMap key '{key}'", str(key), value, sources
            )

    def check_external(self, where: str, reference: str) -> _ExternalRef | None:
        parsed, reason = _parse_external(reference)
        if parsed is None:
            self.report(where, f"{reference!r} is invalid: {reason}")
            return None
        other = self.bundle.pipelines.get(parsed.pipeline)
        if other is None or parsed.step is None:
            return parsed  # pipelines outside the bundle cannot be checked
        if other.step(parsed.step) is None:
            self.report(
                where,
                f"'{reference}': pipeline {other.name} has no step '{parsed.step}' "
                f"(steps: {_names(dict.fromkeys(s.name for s in other.steps))})",
            )
            return None
        if not self.check_tensor(where, reference, parsed.step, parsed.kind, parsed.tensor):
            return None
        return parsed

    def check_external_tensor_map_entry(
        self, where: str, key: str, value: Any, sources: list[str]
    ) -> None:
        if not isinstance(value, str) or not value.strip():
            self.report(where, f"maps to {value!r}: expected a non-empty tensor name")
        parsed, _ = _parse_external(key)
        if parsed is None or parsed.tensor is None:
            self.report(where, f"'{key}' is not fully qualified: expected {EXTERNAL_KEY_GRAMMAR}")
            return
        if key not in sources and parsed.source not in sources:
            self.report(
                where,
                f"'{key}' is not among externalInputs or externalTriggers ({_names(sources)}): "
                "the mapping would never apply",
            )
            return
        self.check_external(where, key)
