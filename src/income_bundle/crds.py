"""Validate manifests against upstream CRD schemas the way a strict API server would.

The CRDs' `openAPIV3Schema` checks types and field names; unknown fields are rejected as
`kubectl apply --validate=strict` (and the seldon CLI's strict decoding) do, except where the
schema says `x-kubernetes-preserve-unknown-fields`. Two things the API server does for every
custom resource are done here too (apiextensions-apiserver, "Specifying a structural schema"):
`apiVersion`, `kind` and `metadata` are allowed at the root whether the schema lists them or not
(Knative's CRDs do not), and a null in a field that is not `nullable` is pruned before validation.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CRD_DIR_ENV", "CrdSchemas", "find_crd_dir", "strict_schema"]

CRD_DIR_ENV = "CRD_DIR"
# libyaml's safe loader where PyYAML has it: the CRDs are megabytes of YAML.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def find_crd_dir(project_root: Path) -> Path | None:
    """$CRD_DIR, else ../shared/crds beside the checkout; None when neither exists."""
    for candidate in (os.environ.get(CRD_DIR_ENV), project_root.parent / "shared" / "crds"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def strict_schema(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema that forbids properties it does not declare."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict_schema(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    # Kubernetes' int-or-string has no JSON-schema type of its own.
    if schema.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
        result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return result


@dataclass
class CrdSchemas:
    """Strict JSON schemas keyed by (apiVersion, kind), from CRD YAML files."""

    schemas: dict[tuple[str, str], dict]

    @classmethod
    def load(cls, files: Iterable[Path]) -> CrdSchemas:
        return cls.from_documents(
            doc
            for path in files
            for doc in yaml.load_all(Path(path).read_text(), Loader=_SAFE_LOADER)
        )

    @classmethod
    def from_documents(cls, documents: Iterable[Any]) -> CrdSchemas:
        """Schemas of the CustomResourceDefinitions among `documents` (others are ignored)."""
        schemas = {}
        for doc in documents:
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schema = strict_schema(_with_object_meta(version["schema"]["openAPIV3Schema"]))
                schemas[(f"{group}/{version['name']}", kind)] = schema
        return cls(schemas)

    @classmethod
    @cache
    def from_dir(cls, directory: Path) -> CrdSchemas:
        return cls.load(sorted(Path(directory).glob("*.yaml")))

    def errors(self, manifest: dict) -> list[str]:
        """Every schema violation of one manifest, as 'path: message' lines."""
        import jsonschema

        key = (manifest.get("apiVersion"), manifest.get("kind"))
        if key not in self.schemas:
            return [f"no CRD schema for apiVersion {key[0]!r} kind {key[1]!r}"]
        schema = self.schemas[key]
        validator = jsonschema.Draft7Validator(schema)
        pruned = _prune_nulls(manifest, schema)
        return [
            f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
            for error in sorted(validator.iter_errors(pruned), key=lambda e: list(e.path))
        ]


_OBJECT_META = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
}


def _with_object_meta(schema: dict) -> dict:
    """The root schema with apiVersion, kind and metadata, which every custom resource has."""
    if "properties" not in schema:
        return schema
    return {**schema, "properties": {**_OBJECT_META, **schema["properties"]}}


def _prune_nulls(value: Any, schema: Any) -> Any:
    """`value` without the nulls the API server prunes (fields whose schema is not nullable)."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {
            key: _prune_nulls(inner, properties.get(key))
            for key, inner in value.items()
            if not (inner is None and not (properties.get(key) or {}).get("nullable"))
        }
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune_nulls(item, schema["items"]) for item in value]
    return value
