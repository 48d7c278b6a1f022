"""What users get: the income-bundle wheel holds the product and no rig (the simulated cluster,
stand-ins, upstream checks, test Kafka, local Prometheus stack and benchmarks are the separate
income-bundle-dev package in dev/, which only `make deps` installs)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.support.paths import ROOT

RIG_NAMES = (
    "simcluster",
    "standins",
    "upstream_checks",
    "kafka_broker",
    "monitoring_stack",
    "benchmark",
    "ansible_docs",
    "income_bundle_dev",
)


# What each project's build reads; copied out first, since setuptools writes build/ beside it.
PROJECT_FILES = {
    ".": ["pyproject.toml", "README.md", "src"],
    "dev": ["pyproject.toml", "income_bundle_dev"],
}


def _wheel_files(project: str, directory) -> list[str]:
    source = directory / "source"
    source.mkdir()
    for name in PROJECT_FILES[project]:
        copy = shutil.copytree if (ROOT / project / name).is_dir() else shutil.copy
        copy(ROOT / project / name, source / name if copy is shutil.copytree else source)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(directory), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = directory.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def product_files(tmp_path_factory) -> list[str]:
    return _wheel_files(".", tmp_path_factory.mktemp("wheel"))


def test_the_wheel_holds_no_rig(product_files):
    python = [name for name in product_files if name.endswith(".py")]
    assert "income_bundle/seldon/gateway.py" in python, python
    rigs = [name for name in python if any(rig in name for rig in RIG_NAMES)]
    assert rigs == [], f"rigs in the income-bundle wheel: {rigs}"


def test_the_rigs_are_their_own_package(tmp_path):
    files = _wheel_files("dev", tmp_path)
    assert "income_bundle_dev/simcluster.py" in files
    assert "income_bundle_dev/standins.py" in files
    assert not [name for name in files if name.startswith("income_bundle/")]
