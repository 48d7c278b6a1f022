"""Images reach the kind node as an archive saved for the node's platform, which kind imports
with both of Docker's image stores (`kind load docker-image` fails with the containerd store:
kind issue 3795). docker and kind are stand-ins here: scripts on PATH that log their arguments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

ANSIBLE = ROOT / "ansible"

# Stand-in docker: `version` as an Engine of the given version on arm64; `image save` writes the
# archive where -o says; logs each call. Stand-in kind: logs, and checks the archive exists.
STAND_IN_DOCKER = """#!/bin/sh
echo "docker $*" >> {log}
case "$1" in
  version) echo '{{"Server":{{"Version":"{version}","Arch":"arm64"}}}}' ;;
  image) while [ $# -gt 0 ]; do [ "$1" = -o ] && echo archive > "$2"; shift; done ;;
  *) exit 1 ;;
esac
"""
STAND_IN_KIND = """#!/bin/sh
echo "kind $*" >> {log}
test -s "$3" || {{ echo "no archive at $3" >&2; exit 1; }}
echo "$3" > {log}.archive
"""


def run_load(tmp_path: Path, docker_version: str):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "docker").write_text(STAND_IN_DOCKER.format(log=log, version=docker_version))
    (bin_dir / "kind").write_text(STAND_IN_KIND.format(log=log))
    for tool in ("docker", "kind"):
        (bin_dir / tool).chmod(0o755)
    python_bin = Path(sys.executable).parent
    result = subprocess.run(
        [str(python_bin / "ansible-playbook"), str(ROOT / "tests" / "ansible" / "kind_load.yaml"),
         "-e", "image=income-mlserver:0123456789ab", "-e", "cluster=income"],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": f"{bin_dir}:{python_bin}:{os.environ['PATH']}"},
    )  # fmt: skip
    calls = log.read_text().splitlines() if log.exists() else []
    loaded = tmp_path / "calls.log.archive"
    return result, calls, Path(loaded.read_text().strip()) if loaded.exists() else None


@pytest.mark.parametrize(
    ("version", "platform"), [("28.3.3", ["--platform", "linux/arm64"]), ("27.3.1", [])]
)
def test_the_image_is_saved_for_the_nodes_platform_and_loaded_as_an_archive(
    tmp_path, version, platform
):
    result, calls, archive = run_load(tmp_path, version)
    assert result.returncode == 0, result.stdout[-3000:]
    save = " ".join(
        ["docker image save", *platform, "-o", str(archive), "income-mlserver:0123456789ab"]
    )
    assert calls == [
        "docker version --format json",
        save,
        f"kind load image-archive {archive} --name income",
    ]
    # The archive is gone afterwards, its folder too.
    assert not archive.parent.exists()
    # Changes: the temporary folder made and removed, and the load; saving is not one (it
    # writes only into that folder).
    recap = result.stdout[result.stdout.index("PLAY RECAP") :]
    assert "changed=3" in recap


def test_a_failed_load_still_removes_the_archive(tmp_path):
    # kind fails when the archive is missing: make docker write nothing.
    bin_dir = tmp_path / "bin"
    log = tmp_path / "calls.log"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(
        STAND_IN_DOCKER.format(log=log, version="28.3.3").replace("echo archive >", ": >")
    )
    (bin_dir / "kind").write_text(STAND_IN_KIND.format(log=log))
    for tool in ("docker", "kind"):
        (bin_dir / tool).chmod(0o755)
    python_bin = Path(sys.executable).parent
    result = subprocess.run(
        [str(python_bin / "ansible-playbook"), str(ROOT / "tests" / "ansible" / "kind_load.yaml"),
         "-e", "image=income-mlserver:0123456789ab", "-e", "cluster=income", "-v"],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": f"{bin_dir}:{python_bin}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "no archive at" in result.stdout
    (load,) = [c for c in log.read_text().splitlines() if c.startswith("kind load")]
    archive = Path(load.split()[3])
    assert archive.name == "image.tar" and not archive.parent.exists()
