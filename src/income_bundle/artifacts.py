"""MLServer model folders: packaging with metadata, verification, freshness.

A folder holds the committed `model-settings.json`, the trained files, a copy of the runtime
package (`income_mlserver/`, see income_bundle.runtime) and `metadata.json`: the sha256 of every
file, the library versions and which of them must match at load, the data hash, the training
parameters and the metrics.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from income_bundle.errors import ArtifactError
from income_bundle.paths import ARTIFACT_FOLDERS, artifact_dir
from income_bundle.runtime.artifact import (
    METADATA_FILE,
    file_sha256,
    installed_version,
    verify_artifact,
)

__all__ = [
    "LIBRARIES",
    "VERSION_CHECKS",
    "library_versions",
    "package_artifact",
    "read_metadata",
    "refresh_runtime_modules",
    "verify",
]

LIBRARIES = (
    "mlserver", "mlserver-sklearn", "mlserver-alibi-detect", "scikit-learn", "numpy", "scipy",
    "pandas", "joblib", "alibi", "alibi-detect", "tensorflow", "tf-keras",
)  # fmt: skip
# What must match at load, per model: the libraries whose file formats the artifact depends on.
# sklearn pickles are only guaranteed to load in the version that wrote them.
VERSION_CHECKS: dict[str, dict[str, str]] = {
    "income-preprocess": {"scikit-learn": "exact", "numpy": "major"},
    "income": {"scikit-learn": "exact", "numpy": "major"},
    "income-drift": {"alibi-detect": "exact", "numpy": "major"},
    "income-outlier": {
        "alibi-detect": "exact", "tensorflow": "minor", "tf-keras": "minor", "numpy": "major",
    },
    "income-explainer": {"alibi": "exact", "scikit-learn": "exact", "numpy": "major"},
    "iris": {"scikit-learn": "exact", "numpy": "major"},
}  # fmt: skip
# What MLServer imports from a model folder: the runtime package and the parts of the bundle it
# uses, copied into the folder as one package with this package's layout, so that their relative
# imports resolve the same there and here. Paths are relative to this package's folder.
RUNTIME_PACKAGE = "income_mlserver"
RUNTIME_MODULES = (
    "__init__.py",
    "errors.py",
    "v2/__init__.py",
    "v2/datatypes.py",
    "v2/tensors.py",
    "v2/checks.py",
    "runtime/__init__.py",
    "runtime/artifact.py",
    "runtime/contract.py",
    "runtime/models.py",
)
# The detectors also serve KServe's logger (kserve/): their CloudEvents runtime rides along.
DETECTOR_MODULES = ("runtime/cloudevents.py",)
_PACKAGE_DIR = Path(__file__).parent
_NOT_HASHED = {"model-settings.json", METADATA_FILE}


def runtime_modules(name: str) -> dict[Path, str]:
    """Source module -> its copy's path in the model folder, for one model."""
    extra = DETECTOR_MODULES if ARTIFACT_FOLDERS[name].startswith("detectors/") else ()
    return {
        _PACKAGE_DIR / module: f"{RUNTIME_PACKAGE}/{module}" for module in RUNTIME_MODULES + extra
    }


def library_versions() -> dict[str, str | None]:
    return {name: installed_version(name) for name in LIBRARIES}


def _hash_files(folder: Path) -> dict[str, str]:
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and relative not in _NOT_HASHED and "__pycache__" not in path.parts:
            files[relative] = file_sha256(path)
    return files


def read_metadata(folder: Path) -> dict[str, Any] | None:
    path = folder / METADATA_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _read_settings(name: str, folder: Path) -> dict[str, Any]:
    path = folder / "model-settings.json"
    try:
        settings = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing: every model folder commits its settings") from None
    if settings.get("name") != name:
        raise ArtifactError(f"{path} names the model {settings.get('name')!r}, expected {name!r}")
    return settings


def package_artifact(
    name: str,
    write_files: Callable[[Path], None],
    *,
    recipe: dict[str, Any],
    metrics: dict[str, Any],
    root: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a model folder: clear old outputs, write files, copy the runtime, write metadata."""
    folder = artifact_dir(name, root)
    _read_settings(name, folder)
    for path in folder.iterdir():
        if path.name == "model-settings.json":
            continue
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    write_files(folder)
    for source, target in runtime_modules(name).items():
        (folder / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / target)
    metadata = {
        "name": name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": _hash_files(folder),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "version_checks": VERSION_CHECKS[name],
        **recipe,
        "metrics": metrics,
        **(extra or {}),
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return folder


def refresh_runtime_modules(name: str, root: Path | None = None) -> bool:
    """Bring a trained folder's copies of the runtime modules up to date with this package.

    The runtimes serve the trained files but do not shape them, so a change to them repackages
    (copy, rehash, rewrite the metadata) instead of retraining. True if anything changed.
    """
    folder = artifact_dir(name, root)
    metadata = read_metadata(folder)
    if metadata is None:
        raise ArtifactError(f"{folder} has no {METADATA_FILE}: train it first")
    modules = runtime_modules(name)
    changed = False
    for source, target in modules.items():
        content = source.read_bytes()
        path = folder / target
        if not path.is_file() or path.read_bytes() != content:
            # Replace atomically: an MLServer loading this folder meanwhile sees old or new, whole.
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_suffix(".tmp")
            staging.write_bytes(content)
            staging.replace(path)
            changed = True
    for path in _stale_modules(folder, set(modules.values())):
        path.unlink()  # a copy this package no longer makes (an earlier layout's, say)
        changed = True
    if changed or metadata.get("version_checks") != VERSION_CHECKS[name]:
        metadata["files"] = _hash_files(folder)
        metadata["version_checks"] = VERSION_CHECKS[name]
        metadata["repackaged"] = datetime.now(UTC).isoformat(timespec="seconds")
        staging = folder / (METADATA_FILE + ".tmp")
        staging.write_text(json.dumps(metadata, indent=2) + "\n")
        staging.replace(folder / METADATA_FILE)
        changed = True
    return changed


def _stale_modules(folder: Path, copies: set[str]) -> list[Path]:
    """Python files in a model folder that are not copies of the runtime modules: trained files
    are never Python, so these can only be runtime copies of an earlier version."""
    candidates = [*folder.glob("*.py"), *(folder / RUNTIME_PACKAGE).rglob("*.py")]
    return sorted(
        path
        for path in candidates
        if "__pycache__" not in path.parts and path.relative_to(folder).as_posix() not in copies
    )


def recipe_key(recipe: dict[str, Any]) -> str:
    """A hash of everything that determines what training produces."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def verify(name: str, root: Path | None = None) -> dict[str, Any]:
    """Verify one folder as MLServer will at load (hashes, versions); raise ArtifactError."""
    folder = artifact_dir(name, root)
    _read_settings(name, folder)
    return verify_artifact(folder, name)


def all_fresh(recipe: dict[str, Any], root: Path | None = None) -> bool:
    """True when every folder verifies and was built from this recipe (same data, code, versions)."""
    for name in ARTIFACT_FOLDERS:
        metadata = read_metadata(artifact_dir(name, root))
        if not metadata or metadata.get("recipe_sha256") != recipe_key(recipe):
            return False
        try:
            verify(name, root)
        except ArtifactError:
            return False
    return True
