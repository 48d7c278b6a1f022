"""The preflight reads Docker's memory and CPUs and stops before anything changes when the
chosen seldon_core_profile does not fit, saying which profile fits and what to change. Docker is
a stand-in here (no Docker Engine runs on this machine): a script named `docker` on PATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ansible_files import ANSIBLE
from tests.support.memory_budget import GIB

# Stand-in for the Docker CLI and a running daemon of `memory` bytes and `cpus` CPUs: answers
# `version`, `buildx version` and `info --format '{{json .}}'` as Docker 27 does.
STAND_IN_DOCKER = """#!/bin/sh
case "$1" in
  version) echo '{{"Client":{{"Version":"27.3.1"}},"Server":{{"Version":"27.3.1","Arch":"amd64"}}}}' ;;
  buildx) echo 'github.com/docker/buildx v0.17.1 257815a' ;;
  info) echo '{info}' ;;
  *) exit 1 ;;
esac
"""
# What Docker Desktop's VM reports for a setting of N GiB: a little less (the kernel's share).
REPORTED = 0.96


def run_preflight(tmp_path: Path, memory_gib: float, cpus: int = 8, *extra: str):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    info = json.dumps({"MemTotal": int(memory_gib * REPORTED * GIB), "NCPU": cpus})
    (bin_dir / "docker").write_text(STAND_IN_DOCKER.format(info=info))
    (bin_dir / "docker").chmod(0o755)
    python_bin = Path(sys.executable).parent
    result = subprocess.run(
        [str(python_bin / "ansible-playbook"), "playbooks/preflight.yaml",
         "-e", '{"preflight_tools": ["docker"]}', *extra],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": f"{bin_dir}:{python_bin}:{os.environ['PATH']}"},
    )  # fmt: skip
    return result, result.stdout + result.stderr


def test_4_gib_fits_no_profile_and_says_how_much_to_give_docker(tmp_path):
    result, output = run_preflight(tmp_path, 4)
    assert result.returncode != 0
    assert "Preflight failed, nothing was changed" in output
    assert "Docker has 3.8 GiB of memory, and no seldon_core_profile fits" in output
    assert "Settings > Resources > Memory" in output
    assert "to 8 GiB for the laptop profile" in output


def test_8_gib_fits_the_laptop_profile_the_default(tmp_path):
    result, output = run_preflight(tmp_path, 8)
    assert result.returncode == 0, output[-3000:]


def test_8_gib_refuses_the_full_profile_and_names_the_one_that_fits(tmp_path):
    result, output = run_preflight(tmp_path, 8, 8, "-e", "seldon_core_profile=full")
    assert result.returncode != 0
    assert "Docker has 7.7 GiB of memory, seldon_core_profile full needs 13.5 GiB" in output
    assert "run with -e seldon_core_profile=laptop, which fits" in output


@pytest.mark.parametrize("profile", ["laptop", "full"])
def test_16_gib_fits_both_profiles(tmp_path, profile):
    result, output = run_preflight(tmp_path, 16, 8, "-e", f"seldon_core_profile={profile}")
    assert result.returncode == 0, output[-3000:]


def test_too_few_cpus_are_named(tmp_path):
    result, output = run_preflight(tmp_path, 16, 2)
    assert result.returncode != 0
    assert "Docker has 2 CPUs, the kind node needs 4" in output


def test_an_existing_cluster_skips_the_check(tmp_path):
    # kind_cluster_create=false: the cluster is not made here, its memory is not Docker's.
    result, output = run_preflight(tmp_path, 4, 2, "-e", "kind_cluster_create=false")
    assert result.returncode == 0, output[-3000:]


def test_an_unknown_profile_is_named(tmp_path):
    result, output = run_preflight(tmp_path, 16, 8, "-e", "seldon_core_profile=huge")
    assert result.returncode != 0
    assert "seldon_core_profile huge is not one of laptop, full" in output
