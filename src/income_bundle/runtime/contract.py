"""What a model declares it takes and gives, read from its folder, and the checks that follow.

`model-settings.json` declares the inputs and outputs (MLServer serves them as the model's
metadata); `metadata.json` says what the columns of a table model are (feature names, and the
codes of each categorical column). The gateway checks a request against the contract before any
model sees it, and the MLServer runtimes check it again in the model folder, with the same checks
(income_bundle.v2.checks): a model taking one [rows, features] tensor gets the table check, any
other model each tensor's own consistency.

Imports only the standard library, numpy and the core: packaging copies it into every model
folder (see income_bundle.runtime).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..v2.checks import TableCheck, check_tensor
from ..v2.tensors import Tensor
from .artifact import METADATA_FILE

__all__ = ["CheckedRequest", "ModelContract"]


class CheckedRequest(Protocol):
    """A request as `ModelContract.validate` reads it: the parsed JSON body, whether the raw
    bytes are kept (the fast path applies only to a body forwarded as it came), and its tensors."""

    body: dict[str, Any] | None
    raw: bytes | None

    def decode(self) -> list[Tensor]: ...


@dataclass
class ModelContract:
    """A model's declared inputs and outputs (model-settings.json) and what its artifact says of
    its columns (metadata.json `input_features`)."""

    name: str
    declared: list[dict[str, Any]]
    feature_names: list[str] | None = None
    category_sizes: dict[int, int] = field(default_factory=dict)
    declared_outputs: list[dict[str, Any]] = field(default_factory=list)
    _table: TableCheck | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.declared) == 1 and len(self.declared[0].get("shape", [])) == 2:
            width = int(self.declared[0]["shape"][1])
            self._table = TableCheck(self.name, width, self.feature_names, self.category_sizes)

    @classmethod
    def from_declaration(
        cls, name: str, settings: dict[str, Any], metadata: dict[str, Any]
    ) -> ModelContract:
        """The contract in a model's parsed model-settings.json and metadata.json."""
        features = metadata.get("input_features") or {}
        sizes = {int(k): len(v) for k, v in (features.get("category_map") or {}).items()}
        return cls(
            name,
            settings.get("inputs") or [],
            features.get("names"),
            sizes,
            settings.get("outputs") or [],
        )

    @classmethod
    def from_folder(cls, name: str, folder: Path) -> ModelContract:
        settings = json.loads((folder / "model-settings.json").read_text())
        metadata = json.loads((folder / METADATA_FILE).read_text())
        return cls.from_declaration(name, settings, metadata)

    @property
    def table(self) -> TableCheck | None:
        """The checks of a model taking one [rows, features] tensor; None for any other."""
        return self._table

    def accepts_fast(self, body: Any) -> bool:
        """The fast path (see `TableCheck.accepts_fast`); False for a model that is no table."""
        return self._table is not None and self._table.accepts_fast(body)

    def validate(self, request: CheckedRequest) -> None:
        """The one check of a request for this model: the fast path on the parsed JSON body when
        that is beyond doubt valid (no tensors built), else the full check of the decoded
        tensors, which raises ServingError(400) naming the problem."""
        body = request.body
        if request.raw is not None and body is not None and self.accepts_fast(body):
            return
        self.check(request.decode())

    def check(self, tensors: list[Tensor]) -> np.ndarray | None:
        """The full check; a table model's rows as floats. ServingError(400) when the tensors do
        not fit the declaration."""
        if self._table is not None:
            return self._table.check(tensors)
        for tensor in tensors:
            check_tensor(self.name, tensor)
        return None
