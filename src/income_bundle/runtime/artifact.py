"""A model folder's integrity: every file's sha256 and the library versions it was built with,
as its `metadata.json` records them, checked before anything in the folder is loaded.

Packaging writes the metadata (income_bundle.artifacts); the MLServer runtimes verify it at load.
Imports only the standard library and the bundle's error base: packaging copies it into every
model folder (see income_bundle.runtime), and the bundle's own tools use it without MLServer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from ..errors import ArtifactError

__all__ = [
    "ALLOW_VERSION_MISMATCH_ENV",
    "METADATA_FILE",
    "file_sha256",
    "installed_version",
    "verify_artifact",
    "versions_compatible",
]

METADATA_FILE = "metadata.json"
# Version checks can be relaxed for experiments; a mismatch is then logged, not fatal.
ALLOW_VERSION_MISMATCH_ENV = "INCOME_ALLOW_VERSION_MISMATCH"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def installed_version(distribution: str) -> str | None:
    try:
        return importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        return None


VERSION_LEVELS = {"exact": None, "minor": 2, "major": 1}


def versions_compatible(built: str | None, running: str, level: str) -> bool:
    """Whether `running` may load what `built` saved: same version, or same leading parts."""
    if built is None:
        return False
    parts = VERSION_LEVELS[level]
    return built.split(".")[:parts] == running.split(".")[:parts] if parts else built == running


def verify_artifact(folder: Path | str, model_name: str) -> dict[str, Any]:
    """Check every file's sha256 and the pinned library versions; return the metadata.
    ArtifactError saying what does not match and how to rebuild."""
    folder = Path(folder)
    metadata_path = folder / METADATA_FILE
    rebuild = "rebuild it with 'make artifacts'"
    try:
        metadata = json.loads(metadata_path.read_text())
    except FileNotFoundError:
        raise ArtifactError(
            f"model {model_name}: {metadata_path} is missing, so the artifact cannot be verified; "
            f"{rebuild}"
        ) from None
    except json.JSONDecodeError as e:
        raise ArtifactError(
            f"model {model_name}: {metadata_path} is not JSON ({e}); {rebuild}"
        ) from e

    problems = []
    for relative, expected in sorted(metadata.get("files", {}).items()):
        path = folder / relative
        if not path.is_file():
            problems.append(f"{relative} is missing")
        elif (actual := file_sha256(path)) != expected:
            problems.append(f"{relative} has sha256 {actual[:12]}…, expected {expected[:12]}…")
    if not metadata.get("files"):
        problems.append(f"{METADATA_FILE} lists no files")
    if problems:
        raise ArtifactError(
            f"model {model_name}: artifact {folder} does not match its {METADATA_FILE} "
            f"(tampered or incomplete): {'; '.join(problems)}; {rebuild}"
        )

    mismatches = []
    for distribution, level in sorted(metadata.get("version_checks", {}).items()):
        built = metadata.get("libraries", {}).get(distribution)
        running = installed_version(distribution)
        if running is None or not versions_compatible(built, running, level):
            mismatches.append(
                f"{distribution} {running or 'not installed'} (built with {built}, "
                f"{level} version must match)"
            )
    if mismatches:
        message = (
            f"model {model_name}: artifact {folder} was built with other library versions than "
            f"this server runs: {'; '.join(mismatches)}; install the versions in requirements.txt "
            f"or {rebuild} with the server's versions"
        )
        if os.environ.get(ALLOW_VERSION_MISMATCH_ENV) != "1":
            raise ArtifactError(message + f" (or set {ALLOW_VERSION_MISMATCH_ENV}=1 to try)")
        logging.getLogger(__name__).warning(message)
    return metadata
