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


# --- Built and loaded as the roles do, with income_bundle_dev.container_standins ----------------


def run_build_and_load(tmp_path: Path, context: Path, arch: str = "arm64"):
    from income_bundle_dev.container_standins import read_state

    python_bin = Path(sys.executable).parent
    result = subprocess.run(
        [str(python_bin / "ansible-playbook"), str(ROOT / "tests" / "ansible" / "build_and_load.yaml"),
         "-e", "image=income-mlserver:0123456789ab", "-e", "cluster=income", "-e", f"context={context}"],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1",
             "PATH": f"{tmp_path / 'bin'}:{python_bin}:{os.environ['PATH']}"},
    )  # fmt: skip
    return result, read_state(tmp_path / "state")


def _context(tmp_path: Path, base: str) -> Path:
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(f"FROM {base}\nUSER 1000\n")
    return context


PINNED = "docker.io/library/python:3.11.16-slim-bookworm@sha256:" + "c4" * 32


def test_an_image_is_built_saved_for_the_nodes_platform_and_loaded_once(tmp_path):
    from income_bundle_dev.container_standins import install

    install(tmp_path / "bin", tmp_path / "state", "arm64", "income")
    first, state = run_build_and_load(tmp_path, _context(tmp_path, PINNED))
    assert first.returncode == 0, first.stdout[-3000:]
    assert state["errors"] == []
    assert state["node_images"] == ["docker.io/library/income-mlserver:0123456789ab"]
    calls = [" ".join([c["tool"], *c["args"]]) for c in state["calls"]]
    (build,) = [c for c in calls if "buildx build" in c]
    assert "--tag income-mlserver:0123456789ab" in build
    (save,) = [c for c in calls if "image save" in c]
    assert "--platform linux/arm64" in save
    assert any(c.startswith("kind load image-archive") for c in calls)
    second, state = run_build_and_load(tmp_path, _context(tmp_path, PINNED))
    assert second.returncode == 0, second.stdout[-3000:]
    assert "changed=0" in second.stdout[second.stdout.index("PLAY RECAP") :]
    assert state["errors"] == [] and len(state["node_images"]) == 1


def test_the_stand_ins_refuse_an_unpinned_base_and_an_archive_of_another_platform(tmp_path):
    from income_bundle_dev.container_standins import install, read_state

    install(tmp_path / "bin", tmp_path / "state", "arm64", "income")
    result, state = run_build_and_load(tmp_path, _context(tmp_path, "python:3.11-slim"))
    assert result.returncode != 0
    assert "every FROM must be pinned by digest" in " ".join(state["errors"])
    archive = tmp_path / "amd64.tar"
    archive.write_text(
        '{"image": "income-mlserver:x", "id": "sha256:0", "platform": "linux/amd64"}'
    )
    loaded = subprocess.run(
        [str(tmp_path / "bin" / "kind"), "load", "image-archive", str(archive), "--name", "income"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert (
        loaded.returncode == 1 and "saved for linux/amd64, the node is linux/arm64" in loaded.stderr
    )
    assert read_state(tmp_path / "state")["node_images"] == []
