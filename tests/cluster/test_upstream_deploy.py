"""`make deploy` and `make deploy-kserve` validate the manifests first and stop on any problem;
`income-bundle validate --kserve` checks kserve/ (schemas, selectors, served folders)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from income_bundle.cli import main
from tests.support.paths import ROOT


@pytest.mark.parametrize(
    ("target", "validate"),
    [("deploy", "validate"), ("deploy-kserve", "validate --kserve")],
)
def test_deploy_targets_validate_before_ansible(target, validate):
    # -n prints the recipe; -o skips the deps prerequisite so only the target's own lines show.
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.deps-stamp", "-o", "deps", target],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[0] == f".venv/bin/income-bundle {validate}"
    assert "ansible-playbook" in lines[1]


def test_validate_kserve_accepts_the_shipped_manifests(capsys):
    assert main(["validate", "--kserve"]) == 0
    assert capsys.readouterr().out.strip().endswith("kserve: valid")


def test_validate_kserve_names_every_problem_and_fails(tmp_path, capsys):
    broken = tmp_path / "kserve"
    shutil.copytree(ROOT / "kserve", broken)
    monitor = broken / "podmonitor.yaml"
    monitor.write_text(monitor.read_text().replace("port: user-port", "port: http1"))
    isvc = broken / "inferenceservice.yaml"
    isvc.write_text(isvc.read_text().replace("storageUri:", "storageURI:"))
    (broken / "broker.yaml").unlink()
    assert main(["validate", "--kserve", str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"error: {broken} is not valid:" in err
    assert "broker.yaml is missing" in err
    assert "scrapes port 'http1'" in err
    if (ROOT.parent / "shared").is_dir():  # the strict schema check needs the pinned CRDs
        assert "storageURI" in err
