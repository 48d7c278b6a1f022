"""YAML manifests as the tests read them: a file's documents, edited in place to break them, and
objects picked from kserve/'s documents (file -> documents, as
income_bundle.kserve.manifests.load_documents returns them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def edit_documents(path: Path, change: Callable[[dict], None]) -> None:
    """Apply `change` to every document of the file and write them back."""
    docs = documents(path)
    for doc in docs:
        change(doc)
    path.write_text(yaml.safe_dump_all(docs))


def every(docs: dict[str, list[dict]]) -> list[dict]:
    return [d for in_file in docs.values() for d in in_file]


def one(docs: dict[str, list[dict]], kind: str, name: str | None = None) -> dict:
    (found,) = [
        d for d in every(docs) if d["kind"] == kind and name in (None, d["metadata"]["name"])
    ]
    return found
