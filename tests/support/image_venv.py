"""A virtual environment holding exactly an image's pins, installed as its Dockerfile installs them
(wheels only, no dependency resolution, then `pip check`), cached outside the checkout.

Used by tests/cluster/test_slim_images.py; run as a script (`python -m tests.support.image_venv
seldon|kserve`) it builds the venv and prints how long that took, to measure a cold build.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.support.paths import ROOT

__all__ = ["IMAGES", "ImageVenvError", "image_pins", "image_venv", "venv_dir"]

# image -> (role, its pins variable)
IMAGES = {
    "seldon": ("seldon_core", "seldon_core_mlserver_pins"),
    "kserve": ("kserve_stack", "kserve_stack_mlserver_pins"),
}
# What the Dockerfiles run, bar the pins (pip's cache is kept here: a rebuild after a pin change
# downloads only what changed).
PIP_INSTALL = ["-m", "pip", "install", "--quiet", "--no-input", "--disable-pip-version-check",
               "--only-binary=:all:", "--no-deps"]  # fmt: skip


class ImageVenvError(Exception):
    """The venv could not be made (no PyPI, or a pin without a wheel, or `pip check` failed)."""


def image_pins(image: str) -> list[str]:
    role, variable = IMAGES[image]
    defaults = ROOT / "ansible" / "roles" / role / "defaults" / "main.yaml"
    return list(yaml.safe_load(defaults.read_text())[variable])


def venv_dir(image: str, pins: list[str]) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "income-bundle"
    digest = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    return cache / "venvs" / f"{image}-mlserver-image-{digest}"


def image_venv(image: str) -> Path:
    """The venv's folder, made once per pins list. ImageVenvError naming the failed step."""
    pins = image_pins(image)
    venv = venv_dir(image, pins)
    python = venv / "bin" / "python"
    complete = venv / ".complete"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be making it
        if complete.is_file():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        steps = [
            # The images' Python is 3.11 (python:3.11-slim); so is this one (pyproject.toml).
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), *PIP_INSTALL, *pins],
            [str(python), "-m", "pip", "check"],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                raise ImageVenvError(
                    f"the {image} image's venv could not be made: {' '.join(step[:6])} ...: "
                    f"{(done.stdout + done.stderr).strip()[-1500:]}"
                )
        complete.write_text("\n".join(pins) + "\n")
    return venv


if __name__ == "__main__":
    started = time.monotonic()
    made = image_venv(sys.argv[1])
    print(f"{made} in {time.monotonic() - started:.0f} s")
