"""`income-bundle validate --kserve` checks kserve/ (schemas, selectors, served folders) and names
every problem; that `make deploy-kserve` runs it first is tests/cluster/test_upstream_deploy.py."""

from __future__ import annotations

import shutil

from income_bundle.cli import main
from tests.support.paths import ROOT


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
