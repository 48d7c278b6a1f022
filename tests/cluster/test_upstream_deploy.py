"""`make deploy` and `make deploy-kserve` validate the manifests first and stop on any problem
(what `income-bundle validate --kserve` checks: tests/unit/test_upstream_deploy.py)."""

from __future__ import annotations

import subprocess

import pytest

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
