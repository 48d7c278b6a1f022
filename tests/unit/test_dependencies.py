"""The pins that keep MLServer 1.7.1 loading the income models cannot be lost by accident."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from income_bundle import server
from income_bundle.runtime.artifact import installed_version
from tests.support.paths import ROOT


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;]+)", line)
            assert match, f"{path.name}: {line!r} is not pinned with =="
            pins[match.group(1).lower().replace("_", "-")] = match.group(3)
    return pins


def test_every_requirement_is_pinned_and_locked_at_the_same_version():
    requirements = _pins(ROOT / "requirements.txt")
    constraints = _pins(ROOT / "constraints.txt")
    for name, version in requirements.items():
        assert constraints.get(name) == version, (
            f"{name}: constraints.txt has {constraints.get(name)}"
        )


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("uvloop", "0.21.0"),
        ("tf-keras", "2.18.0"),
        ("tensorflow", "2.18.0"),
        ("scikit-learn", "1.5.2"),
    ],
)
def test_known_good_versions_are_locked_and_installed(name, version):
    assert _pins(ROOT / "constraints.txt")[name] == version
    assert installed_version(name) == version


def test_runtime_module_selects_keras_2_before_tensorflow_loads():
    code = (
        "import os; os.environ.pop('TF_USE_LEGACY_KERAS', None);"
        "import income_bundle.runtime.models, tensorflow as tf;"
        "print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.layers.Dense.__module__)"
    )
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    assert out[0] == "1"
    assert out[1].startswith("tf_keras")  # Keras 2 (tf-keras), not Keras 3


def test_preflight_refuses_uvloop_that_crashes_mlserver(monkeypatch):
    real = installed_version

    def fake(name: str):
        return "0.23.0" if name == "uvloop" else real(name)

    monkeypatch.setattr("income_bundle.runtime.artifact.installed_version", fake)
    with pytest.raises(server.MLServerError) as error:
        server.preflight()
    assert "uvloop 0.23.0" in str(error.value) and "uvloop==0.21.0" in str(error.value)
    assert "make deps" in str(error.value)


def test_preflight_passes_with_the_pinned_set():
    server.preflight()
