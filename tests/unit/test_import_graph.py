"""The bundle's modules import in one direction: no circle, and nothing imports upward.

The graph is read from the source with `ast`: every `import` and `from ... import` of a bundle
module, relative ones resolved, wherever it stands (in a function, under TYPE_CHECKING). The layers
below run from the bottom up; a module may import its own layer and those below it. The rigs
(`income_bundle_dev`) sit on top: they may import the product, never the reverse (the product
reaches them only by name, through income_bundle.rigs and importlib, which is no import here).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGES = {"income_bundle": ROOT / "src", "income_bundle_dev": ROOT / "dev"}

# (layer, the modules in it: a name covers its submodules), from the bottom up.
LAYERS = [
    ("foundation", ["income_bundle", "income_bundle.errors", "income_bundle.paths",
                    "income_bundle.quiet", "income_bundle.settings_cli", "income_bundle.tracing"]),
    ("v2 core", ["income_bundle.v2"]),
    ("model runtime", ["income_bundle.runtime"]),
    ("tools", ["income_bundle.process", "income_bundle.rigs", "income_bundle.crds",
               "income_bundle.data", "income_bundle.scenarios", "income_bundle.artifacts",
               "income_bundle.training", "income_bundle.server", "income_bundle.client"]),
    ("services", ["income_bundle.seldon", "income_bundle.kserve", "income_bundle.monitoring"]),
    # Start the services together: the local Seldon (MLServer, gateway, monitor) and the demo.
    ("applications", ["income_bundle.seldon.local", "income_bundle.demo"]),
    ("command line", ["income_bundle.cli"]),
    ("development rigs", ["income_bundle_dev"]),
]  # fmt: skip

Graph = dict[str, set[str]]


def module_files(packages: dict[str, Path]) -> dict[str, Path]:
    """Module name -> its file, for every module of the packages (package name -> its parent)."""
    files = {}
    for package, parent in packages.items():
        for path in sorted((parent / package).rglob("*.py")):
            parts = list(path.relative_to(parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def imports_of(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """The known modules `module` (its source at `path`) imports anywhere in its code."""
    known = set(known)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:  # `from package import module` imports the module
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in known else source)
    return {name for name in found if name in known and name != module}


def build_graph(files: dict[str, Path]) -> Graph:
    return {module: imports_of(module, path, files) for module, path in files.items()}


def find_circle(graph: Graph) -> list[str] | None:
    """One circle of imports (its modules, the first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the path being explored, then "done"
    for start in sorted(graph):
        if start in state:
            continue
        path, pending = [start], [iter(sorted(graph[start]))]
        state[start] = "open"
        while pending:
            following = next(pending[-1], None)
            if following is None:
                state[path.pop()] = "done"
                pending.pop()
            elif state.get(following) == "open":
                return [*path[path.index(following) :], following]
            elif following not in state:
                state[following] = "open"
                path.append(following)
                pending.append(iter(sorted(graph.get(following, ()))))
    return None


def layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int | None:
    """The index of the layer naming the longest prefix of `module`, or None."""
    best, best_length = None, -1
    for index, (_, names) in enumerate(layers):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best_length:
                best, best_length = index, len(name)
    return best


def upward_imports(graph: Graph, layers: list[tuple[str, list[str]]]) -> list[str]:
    """Every import of a module in a higher layer than the importer's, worded."""
    found = []
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            low, high = layer_of(module, layers), layer_of(target, layers)
            if low is not None and high is not None and high > low:
                found.append(f"{module} ({layers[low][0]}) imports {target} ({layers[high][0]})")
    return found


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(module_files(PACKAGES))


def test_every_module_has_a_layer(graph):
    assert [module for module in sorted(graph) if layer_of(module, LAYERS) is None] == []


def test_the_bundle_has_no_import_circle(graph):
    assert find_circle(graph) is None


def test_nothing_imports_upward(graph):
    assert upward_imports(graph, LAYERS) == []


# Services of one layer that must not know each other: the gateway hands the monitor plain data
# through the local Seldon (an application), and the monitor reads what any world writes.
APART = [
    ("income_bundle.seldon", "income_bundle.monitoring"),
    ("income_bundle.kserve", "income_bundle.seldon"),
]


def imports_between(graph: Graph, one: str, other: str, exempt: tuple[str, ...] = ()) -> list[str]:
    """Imports from `one`'s modules to `other`'s or back, leaving out the `exempt` importers."""

    def inside(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    return [
        f"{module} imports {target}"
        for module, imported in sorted(graph.items())
        if module not in exempt
        for target in sorted(imported)
        if (inside(module, one) and inside(target, other))
        or (inside(module, other) and inside(target, one))
    ]


@pytest.mark.parametrize(("one", "other"), APART)
def test_the_services_apart_never_import_each_other(graph, one, other):
    assert imports_between(graph, one, other, exempt=("income_bundle.seldon.local",)) == []


def test_an_import_between_services_apart_is_found():
    graph = {"p.gw.a": {"p.mon.b"}, "p.mon.b": set(), "p.gw.app": {"p.mon.b"}}
    assert imports_between(graph, "p.gw", "p.mon", exempt=("p.gw.app",)) == [
        "p.gw.a imports p.mon.b"
    ]


# -- the checks themselves can fail ---------------------------------------------------------------


def _package(tmp_path: Path, sources: dict[str, str]) -> dict[str, Path]:
    for name, source in sources.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return module_files({"pkg": tmp_path})


def test_relative_function_level_and_type_checking_imports_are_read(tmp_path):
    files = _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/sub/mid.py": "from .. import low\n",
            "pkg/sub/high.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg.sub.mid import x\n"
                "def later():\n    from ..low import y\n    import os\n"
            ),
        },
    )
    assert build_graph(files) == {
        "pkg": set(),
        "pkg.low": set(),
        "pkg.sub": set(),
        "pkg.sub.mid": {"pkg.low"},
        "pkg.sub.high": {"pkg.sub.mid", "pkg.low"},
    }


def test_a_circle_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_circle(graph) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_an_upward_import_is_found():
    layers = [("low", ["p.core"]), ("high", ["p.app", "p.core.tool"])]
    graph = {"p.core.x": {"p.app.y"}, "p.app.y": {"p.core.x"}, "p.core.tool": {"p.core.x"}}
    assert upward_imports(graph, layers) == ["p.core.x (low) imports p.app.y (high)"]


def test_no_tier_imports_another_tiers_tests():
    # A tier runs alone (make test-fast runs only tests/unit): a test module that imports another
    # tier's test module drags that module's fixtures and servers in, and couples the tiers.
    # Helpers that more than one tier needs live in tests/support.
    tests = module_files({"tests": ROOT})
    tier = lambda name: [*name.split("."), ""][1]  # noqa: E731
    found = [
        f"{module} imports {target}"
        for module, imported in sorted(build_graph(tests).items())
        for target in sorted(imported)
        if tier(target) in {"unit", "integration", "cluster"} and tier(target) != tier(module)
    ]
    assert found == []
