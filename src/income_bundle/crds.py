"""Validate manifests against upstream CRD schemas the way a strict API server would.

The CRDs' `openAPIV3Schema` checks types and field names; unknown fields are rejected as
`kubectl apply --validate=strict` (and the seldon CLI's strict decoding) do, except where the
schema says `x-kubernetes-preserve-unknown-fields`.
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
        schemas = {}
        for path in files:
            for doc in yaml.safe_load_all(Path(path).read_text()):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
                for version in doc["spec"]["versions"]:
                    schema = strict_schema(version["schema"]["openAPIV3Schema"])
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
        validator = jsonschema.Draft7Validator(self.schemas[key])
        return [
            f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
            for error in sorted(validator.iter_errors(manifest), key=lambda e: list(e.path))
        ]
