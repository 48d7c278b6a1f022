"""A bundle of Seldon Core v2 manifests (Models and Pipelines) as plain Python objects.

Loading never raises for content: whatever cannot be read is kept as a load error, so that
validation can report every problem at once. References are normalised as Seldon's scheduler
does: a bare step name means `<step>.outputs`, the pipeline's own name means `<pipeline>.inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "IN_CLUSTER_ROOT",
    "JOIN_TYPES",
    "SELDON_API_VERSION",
    "Bundle",
    "Model",
    "Pipeline",
    "Step",
    "TensorRef",
    "load_bundle",
    "normalise_reference",
]

SELDON_API_VERSION = "mlops.seldon.io/v1alpha1"
# storageUri prefix of the artifacts in the cluster; locally it maps to the checkout.
IN_CLUSTER_ROOT = "/mnt/income-bundle"
JOIN_TYPES = ("inner", "outer", "any")
SPECIFIERS = ("inputs", "outputs")


def normalise_reference(reference: str, pipeline_name: str) -> str:
    """Seldon's `updateInputSteps`: one-part references get `.outputs` or, for the pipeline, `.inputs`."""
    reference = reference.strip()
    if reference and "." not in reference:
        return f"{reference}.inputs" if reference == pipeline_name else f"{reference}.outputs"
    return reference


@dataclass(frozen=True)
class TensorRef:
    """`<source>.(inputs|outputs)[.<tensor>]`: all tensors, or one, of a step's (or pipeline's) data."""

    source: str
    kind: str
    tensor: str | None = None

    @classmethod
    def parse(cls, reference: str, pipeline_name: str) -> TensorRef | None:
        """The reference after normalisation, or None when it is not of that grammar."""
        parts = normalise_reference(reference, pipeline_name).split(".")
        if len(parts) not in (2, 3) or not all(parts) or parts[1] not in SPECIFIERS:
            return None
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        return ".".join(p for p in (self.source, self.kind, self.tensor) if p)


@dataclass
class Step:
    name: str
    inputs: list[str] = field(default_factory=list)  # normalised reference strings
    triggers: list[str] = field(default_factory=list)
    tensor_map: dict[str, str] = field(default_factory=dict)
    inputs_join: str = "inner"
    triggers_join: str = "inner"
    join_window_ms: int | None = None
    batch_size: int | None = None
    batch_window_ms: int | None = None


@dataclass
class Pipeline:
    name: str
    steps: list[Step]
    output: list[str] = field(default_factory=list)  # normalised reference strings
    output_join: str = "inner"
    output_tensor_map: dict[str, str] = field(default_factory=dict)
    output_join_window_ms: int | None = None
    external_inputs: list[str] | None = None  # None: no `input` section
    external_triggers: list[str] = field(default_factory=list)
    allow_cycles: bool = False
    max_step_revisits: int | None = None
    source: Path | None = None

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def upstream(self, name: str) -> list[str]:
        """The steps whose data reach step `name` (through inputs and triggers, transitively),
        in step order: on a cluster, the messages `name` reads carry their headers."""
        direct = {s.name: _sources(s, self.name) for s in self.steps}
        seen: set[str] = set()
        pending = list(direct.get(name, ()))
        while pending:
            other = pending.pop()
            if other not in seen and other in direct:
                seen.add(other)
                pending.extend(direct[other])
        return [s.name for s in self.steps if s.name in seen]

    def output_chain(self) -> list[str]:
        """The steps whose headers the pipeline's output message carries on a cluster. Kafka
        Streams' join keeps the headers of the record that completed it, the one that arrived
        last: taken here as the output source with the longest chain of steps before it (the
        later entry on a tie), with that chain."""
        chains = []
        for text in self.output:
            ref = TensorRef.parse(text, self.name)
            if ref is not None and ref.source != self.name and self.step(ref.source):
                chains.append([*self.upstream(ref.source), ref.source])
        return max(reversed(chains), key=len) if chains else []


def _sources(step: Step, pipeline: str) -> set[str]:
    refs = [TensorRef.parse(r, pipeline) for r in (*step.inputs, *step.triggers)]
    return {r.source for r in refs if r is not None and r.source != pipeline}


@dataclass
class Model:
    name: str
    storage_uri: str
    requirements: list[str] = field(default_factory=list)
    explainer_type: str | None = None
    explainer_model_ref: str | None = None
    explainer_pipeline_ref: str | None = None
    source: Path | None = None

    def local_folder(self, local_root: Path) -> Path | None:
        """The artifact folder this storageUri names on this machine, if it is under the root."""
        prefix = IN_CLUSTER_ROOT.rstrip("/") + "/"
        if not self.storage_uri.startswith(prefix):
            return None
        return local_root / self.storage_uri.removeprefix(prefix)


@dataclass
class Bundle:
    models: dict[str, Model] = field(default_factory=dict)
    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    documents: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    load_errors: list[str] = field(default_factory=list)
    local_root: Path | None = None


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _pipeline(doc: dict, path: Path) -> Pipeline:
    name = str(doc["metadata"]["name"])
    spec = doc.get("spec") or {}
    steps = []
    for raw in spec.get("steps") or []:
        batch = raw.get("batch") or {}
        steps.append(
            Step(
                name=str(raw.get("name", "")),
                inputs=[normalise_reference(r, name) for r in _strings(raw.get("inputs"))],
                triggers=[normalise_reference(r, name) for r in _strings(raw.get("triggers"))],
                tensor_map=dict(raw.get("tensorMap") or {}),
                inputs_join=raw.get("inputsJoinType") or "inner",
                triggers_join=raw.get("triggersJoinType") or "inner",
                join_window_ms=raw.get("joinWindowMs"),
                batch_size=batch.get("size"),
                batch_window_ms=batch.get("windowMs"),
            )
        )
    output = spec.get("output") or {}
    pipeline_input = spec.get("input")
    return Pipeline(
        name=name,
        steps=steps,
        output=[normalise_reference(r, name) for r in _strings(output.get("steps"))],
        output_join=output.get("stepsJoin") or "inner",
        output_tensor_map=dict(output.get("tensorMap") or {}),
        output_join_window_ms=output.get("joinWindowMs"),
        external_inputs=None
        if pipeline_input is None
        else _strings(pipeline_input.get("externalInputs")),
        external_triggers=[]
        if pipeline_input is None
        else _strings(pipeline_input.get("externalTriggers")),
        allow_cycles=bool(spec.get("allowCycles", False)),
        max_step_revisits=spec.get("maxStepRevisits"),
        source=path,
    )


def _model(doc: dict, path: Path) -> Model:
    spec = doc.get("spec") or {}
    explainer = spec.get("explainer") or {}
    return Model(
        name=str(doc["metadata"]["name"]),
        storage_uri=str(spec.get("storageUri", "")),
        requirements=_strings(spec.get("requirements")),
        explainer_type=explainer.get("type"),
        explainer_model_ref=explainer.get("modelRef"),
        explainer_pipeline_ref=explainer.get("pipelineRef"),
        source=path,
    )


def load_bundle(directory: Path, local_root: Path | None = None) -> Bundle:
    """Every Model and Pipeline in the YAML files under `directory` (recursively)."""
    bundle = Bundle(local_root=local_root)
    directory = Path(directory)
    paths = [directory] if directory.is_file() else sorted(directory.rglob("*.y*ml"))
    if not paths:
        bundle.load_errors.append(f"{directory}: no YAML manifests found")
    for path in paths:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except (OSError, yaml.YAMLError) as e:
            bundle.load_errors.append(f"{path}: not readable YAML: {e}")
            continue
        for doc in docs:
            kind = doc.get("kind") if isinstance(doc, dict) else None
            name = (doc.get("metadata") or {}).get("name") if isinstance(doc, dict) else None
            if kind not in ("Model", "Pipeline"):
                bundle.load_errors.append(
                    f"{path}: kind {kind!r} is not a Seldon Model or Pipeline"
                )
                continue
            if not name:
                bundle.load_errors.append(f"{path}: {kind} without metadata.name")
                continue
            bundle.documents.append((path, doc))
            target = bundle.models if kind == "Model" else bundle.pipelines
            if name in target:
                bundle.load_errors.append(f"{path}: {kind} {name} is defined twice")
                continue
            try:
                if kind == "Model":
                    bundle.models[name] = _model(doc, path)
                else:
                    bundle.pipelines[name] = _pipeline(doc, path)
            except (AttributeError, KeyError, TypeError, ValueError) as e:
                bundle.load_errors.append(f"{path}: {kind} {name} is malformed: {e}")
    return bundle
