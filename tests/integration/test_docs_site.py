"""The docs site builds with `mkdocs build --strict` (what `make docs` and CI run), and strict really
fails on a broken link or anchor."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT

MKDOCS = Path(sys.executable).parent / "mkdocs"


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    # As the Makefile runs it: no --quiet, which would hide the warnings --strict counts.
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_site_builds_strictly_with_every_page(tmp_path):
    result = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    pages = {page.stem for page in (ROOT / "docs").glob("*.md")}
    built = {page.stem for page in (tmp_path / "site").glob("*.html")}
    assert pages <= built
    assert "seldon_core_version" in (tmp_path / "site" / "variables.html").read_text()


def test_a_broken_link_or_anchor_fails_the_strict_build(tmp_path):
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    tracing = tmp_path / "docs" / "tracing.md"
    tracing.write_text(
        tracing.read_text() + "\n[gone](no-such-page.md) [moved](monitoring.md#no-such-heading)\n"
    )
    result = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "no-such-page.md" in output and "#no-such-heading" in output
