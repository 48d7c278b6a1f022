"""The runtime package MLServer imports from every model folder: a copy of part of the bundle,
laid out as in the source tree, that must work where the bundle is not installed."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import income_bundle
from income_bundle import artifacts
from income_bundle.paths import artifact_dir

SOURCE = Path(income_bundle.__file__).parent
COPIED = artifacts.RUNTIME_MODULES + artifacts.DETECTOR_MODULES
# What the seldonio/mlserver 1.7.1 image has besides the standard library (the KServe image adds
# the CloudEvents SDK): MLServer and what it depends on, its sklearn and alibi-detect runtimes.
IMAGE_PACKAGES = {
    "numpy", "grpc", "pydantic", "fastapi", "prometheus_client", "mlserver", "mlserver_sklearn",
    "mlserver_alibi_detect", "alibi", "joblib", "cloudevents",
}  # fmt: skip


def _resolved(module: str, node: ast.ImportFrom) -> str:
    """The file (relative to the package) a relative import in `module` (a file name) names."""
    parts = list(Path(module).parent.parts)
    parts = parts[: len(parts) - node.level + 1] + (node.module.split(".") if node.module else [])
    return "/".join(parts)


def test_the_copies_import_only_each_other_and_what_the_mlserver_image_has():
    problems = []
    for module in COPIED:
        for node in ast.walk(ast.parse((SOURCE / module).read_text(), module)):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = _resolved(module, node)
                names = [target] if node.module else [f"{target}/{a.name}" for a in node.names]
                for name in names:
                    if f"{name}.py" not in COPIED and f"{name}/__init__.py" not in COPIED:
                        problems.append(f"{module}: imports {name}, which is not copied")
                continue
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                tops = [(node.module or "").split(".")[0]]
            else:
                continue
            for top in tops:
                if top not in sys.stdlib_module_names and top not in IMAGE_PACKAGES:
                    problems.append(f"{module}: imports {top}, which the MLServer image lacks")
    assert problems == []


def test_the_copied_package_works_without_the_bundle(tmp_path):
    """The folder's copy checks requests by itself: its relative imports resolve inside it."""
    for source, target in artifacts.runtime_modules("income-drift").items():
        (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / target).write_bytes(source.read_bytes())
    code = f"""
import sys
sys.modules["income_bundle"] = None  # not installed in the image: any import of it fails
sys.path.insert(0, {str(tmp_path)!r})
from {artifacts.RUNTIME_PACKAGE}.errors import ServingError
from {artifacts.RUNTIME_PACKAGE}.runtime.contract import ModelContract
from {artifacts.RUNTIME_PACKAGE}.v2.tensors import Tensor
contract = ModelContract("m", [{{"name": "x", "datatype": "FP32", "shape": [-1, 2]}}])
print(contract.check([Tensor("x", "FP32", [1, 2], [[1, 2]])]).tolist())
try:
    contract.check([Tensor("x", "FP32", [1, 2], [1, None])])
except ServingError as e:
    print(e.status, e.message)
print(ModelContract.__module__, sys.modules[ModelContract.__module__].__file__)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows, error, origin = result.stdout.splitlines()
    assert rows == "[[1.0, 2.0]]"
    assert error == "400 model m: input 'x': row 0, column 1 is None; expected a finite number"
    module, path = origin.split()
    assert module == f"{artifacts.RUNTIME_PACKAGE}.runtime.contract"
    assert Path(path).is_relative_to(tmp_path)


def test_repackaging_refreshes_the_copies_and_removes_stale_ones(tmp_path):
    """A folder trained with other runtime files (here: an earlier layout's) is repackaged:
    copies brought up to date, copies no longer made removed, trained files untouched."""
    folder = artifact_dir("income-drift", tmp_path)
    (folder / "detector").mkdir(parents=True)
    (folder / "detector" / "x_ref.npy").write_bytes(b"trained")
    (folder / "model-settings.json").write_text(json.dumps({"name": "income-drift"}))
    (folder / "income_runtimes.py").write_text("# an earlier layout's copy\n")
    stale = folder / artifacts.RUNTIME_PACKAGE / "v2" / "retired.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("# a module the package no longer has\n")
    (folder / "metadata.json").write_text(json.dumps({"name": "income-drift", "files": {}}))

    assert artifacts.refresh_runtime_modules("income-drift", tmp_path) is True
    copies = artifacts.runtime_modules("income-drift")
    for source, target in copies.items():
        assert (folder / target).read_bytes() == source.read_bytes()
    assert not (folder / "income_runtimes.py").exists() and not stale.exists()
    files = artifacts.read_metadata(folder)["files"]
    assert set(files) == {"detector/x_ref.npy", *copies.values()}
    assert (folder / "detector" / "x_ref.npy").read_bytes() == b"trained"
    assert artifacts.refresh_runtime_modules("income-drift", tmp_path) is False
