"""What our MLServer runtimes export, measured: `python -m tests.support.metric_probe <model-settings.json>...`
prints, as JSON, each file's metric samples and their label names.

A process of its own, because MLServer's protobuf module registers the same `inference` package
as tritonclient's, and the two cannot be imported into one process (the test process imports
tritonclient's).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from prometheus_client import CollectorRegistry

# The sample names a metric family of each type is written with (the exposition formats).
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}


def registry_series(registry: CollectorRegistry) -> dict[str, frozenset[str]]:
    """Every sample name a registry writes, with its label names, observed yet or not.

    prometheus_client keeps a metric's label names on the metric (`_labelnames`), not in the
    family an unobserved metric collects to; custom collectors' families keep them likewise."""
    series: dict[str, set[str]] = {}
    for collector in list(registry._collector_to_names):
        declared = set(getattr(collector, "_labelnames", ()))
        for family in collector.collect():
            labels = declared | set(getattr(family, "_labelnames", ()))
            for sample in family.samples:
                labels |= set(sample.labels) - {"le", "quantile"}
            for suffix in SAMPLE_SUFFIXES[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                series.setdefault(family.name + suffix, set()).update(labels | extra)
    return {name: frozenset(labels) for name, labels in series.items()}


def _source_module(module: str) -> str:
    """The module of this checkout that a model-settings.json's module is a copy of (packaging
    copies ours into the model folders as the package RUNTIME_PACKAGE); else `module` itself."""
    from income_bundle.artifacts import RUNTIME_PACKAGE

    package, _, inner = module.partition(".")
    return f"income_bundle.{inner}" if package == RUNTIME_PACKAGE else module


def _without_artifact(self: Any) -> None:
    """Stands in for `_verify` (the sha256 and library check of trained files, absent here)."""
    self._metadata = {}
    self._table = self._declared_table(self._metadata)


def runtime_series(settings_file: Path) -> dict[str, frozenset[str]]:
    """The metrics the runtime a model-settings.json names creates when it loads.

    Ours create them in `load()` of the income_bundle.runtime.models classes (`_metric`, in
    prometheus_client's global registry, swapped for a fresh one here) before the stock runtime
    opens the artifact, which is not built here and so fails afterwards. The KServe runtimes
    subclass those, adding routes and no metrics (tests/cluster/test_metric_worlds.py checks): for them
    it is that class's `load()` that runs, on an instance of the KServe class."""
    from mlserver.settings import ModelSettings

    from income_bundle.runtime import models

    settings = json.loads(settings_file.read_text())
    module, _, name = settings["implementation"].rpartition(".")
    implementation = getattr(importlib.import_module(_source_module(module)), name)
    ours = [c for c in implementation.__mro__ if c.__module__ == models.__name__]
    if not ours:
        return {}  # a stock runtime: none of its own
    probe = type(f"Probe{name}", (implementation,), {"_verify": _without_artifact})
    registry = CollectorRegistry()
    with mock.patch.object(models, "REGISTRY", registry):
        source = {"implementation": implementation, "_source": str(settings_file)}
        model = probe(ModelSettings.model_validate({**settings, **source}))
        # The artifact itself fails to open: not needed, the metrics exist by then.
        with contextlib.suppress(Exception):
            asyncio.run(ours[0].load(model))
    return registry_series(registry)


def main(argv: Sequence[str]) -> None:
    found = {
        path: {name: sorted(labels) for name, labels in runtime_series(Path(path)).items()}
        for path in argv
    }
    print(json.dumps(found))  # the last line of the output (MLServer or TensorFlow may log)


if __name__ == "__main__":
    main(sys.argv[1:])
