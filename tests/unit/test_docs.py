"""The README is a front door that points into the docs, and the docs' generated page knows when it
is stale. (The site itself is built with --strict in tests/integration/test_docs_site.py.)"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

from income_bundle_dev.ansible_docs import MARKER, main, refresh_page, variables_page
from tests.support.paths import ROOT

README = ROOT / "README.md"
ROLES = ROOT / "ansible" / "roles"
# [text](target) outside code; the target ends at the first space or ')'.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The Markdown without fenced blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> set[str]:
    """The ids MkDocs gives the page's headings (the toc extension's slugs)."""
    headings = re.findall(r"^#{1,6} (.+?)\s*$", _prose(page.read_text()), re.M)
    return {slugify(heading, "-") for heading in headings}


def _relative_links(markdown: str) -> list[str]:
    return [
        target
        for target in LINK.findall(_prose(markdown))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")
    ]


def test_readme_is_a_front_door_of_at_most_200_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move detail into docs/"


def test_every_relative_link_in_the_readme_resolves():
    links = _relative_links(README.read_text())
    assert links, "the README links into the docs"
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (ROOT / path).resolve()
        if not target.exists():
            broken.append(f"{link}: no file {path}")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: {path} has no heading #{anchor}")
    assert broken == []


def test_the_link_check_sees_a_missing_file_and_a_missing_heading(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n## Licences before production\n\n```\n# not a heading\n```\n")
    assert _anchors(page) == {"page", "licences-before-production"}
    assert _relative_links("[a](docs/x.md#y) `[b](c.md)` [c](https://e.org) [d](#e)") == [
        "docs/x.md#y"
    ]


# Where a path in backticks points into the checkout; placeholders (<name>, *) are not paths.
REPO_PATH = re.compile(
    r"^(?:\.ci|ansible|detectors|dev|docs|kserve|models|monitoring|scripts|seldon-examples|src|tests)/"
    r"[^<>*{}|…]*$"
)


def _mentioned_paths(markdown: str) -> set[str]:
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)
    tokens = (token for span in re.findall(r"`([^`\n]+)`", text) for token in span.split())
    return {token.rstrip(",;:.)") for token in tokens if REPO_PATH.match(token)}


def test_every_path_the_docs_mention_exists():
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    missing = [
        f"{page.relative_to(ROOT)}: {path}"
        for page in pages
        for path in sorted(_mentioned_paths(page.read_text()))
        if not (ROOT / path).exists()
    ]
    assert missing == []


def test_the_testing_page_names_each_test_file_under_its_tier():
    text = (ROOT / "docs" / "testing.md").read_text()
    sections = re.split(r"^### \w+: `tests/(\w+)`$", text, flags=re.M)
    # A tier's section ends at the next heading of any level.
    tiers = {
        tier: re.split(r"^#", section, maxsplit=1, flags=re.M)[0]
        for tier, section in zip(sections[1::2], sections[2::2], strict=True)
    }
    assert set(tiers) == {"unit", "integration", "cluster"}
    misplaced = [
        f"tests/{tier}/{name}"
        for tier, section in tiers.items()
        for name in re.findall(r"`(test_[\w*]+\.py)`", section)
        if not list((ROOT / "tests" / tier).glob(name))
    ]
    assert misplaced == []


def test_the_path_check_sees_a_missing_path_and_skips_placeholders():
    found = _mentioned_paths(
        "`src/income_bundle/gone.py`, `detectors/<name>/x.json` `kserve/*.yaml` `data/raw/`\n"
        "```\nsrc/in/a/block.py\n```\n"
    )
    assert found == {"src/income_bundle/gone.py"}


def test_the_readme_keeps_the_licence_note_visible():
    text = README.read_text()
    assert "Business Source License 1.1" in text
    assert "docs/cluster-path.md#licences-before-production" in text


def test_generated_page_says_so_and_lists_every_variable():
    page = variables_page(ROLES)
    assert page.startswith(MARKER)
    for spec in ROLES.glob("*/meta/argument_specs.yaml"):
        role = spec.parent.parent.name
        assert f"\n## {role}\n" in page
    assert "| `seldon_core_version` | str | `2.10.2` |" in page
    # A placeholder in a description is text, not an HTML tag MkDocs would swallow.
    assert "<chart>" not in page and "&lt;chart>" in page


@pytest.fixture
def roles(tmp_path):
    copy = tmp_path / "roles"
    for spec in ROLES.glob("*/meta/argument_specs.yaml"):
        target = copy / spec.relative_to(ROLES)
        target.parent.mkdir(parents=True)
        shutil.copy(spec, target)
    return copy


def test_check_mode_fails_on_a_stale_page_and_writes_nothing(roles, tmp_path):
    page = tmp_path / "variables.md"
    assert refresh_page(page, roles) is True  # written
    assert refresh_page(page, roles, check=True) is False

    spec = roles / "seldon_core" / "meta" / "argument_specs.yaml"
    spec.write_text(spec.read_text().replace("Seldon Core v2 release", "Seldon release"))
    before = page.read_text()
    assert refresh_page(page, roles, check=True) is True
    assert page.read_text() == before
    assert refresh_page(page, roles) is True
    assert "Seldon release (charts and CLI)" in page.read_text()
    assert refresh_page(page, roles, check=True) is False


def test_check_mode_fails_on_a_missing_page(roles, tmp_path):
    assert refresh_page(tmp_path / "variables.md", roles, check=True) is True
    assert not (tmp_path / "variables.md").exists()


def test_make_docs_check_exits_1_on_a_stale_page_and_0_once_regenerated(
    roles, tmp_path, monkeypatch, capsys
):
    checkout = tmp_path / "checkout"
    (checkout / "ansible").mkdir(parents=True)
    roles.rename(checkout / "ansible" / "roles")
    (checkout / "docs").mkdir()
    (checkout / "docs" / "variables.md").write_text("# Ansible variables\n\nhand-edited\n")
    monkeypatch.setenv("INCOME_BUNDLE_ROOT", str(checkout))

    assert main(["--check"]) == 1
    assert "run 'make docs'" in capsys.readouterr().err
    assert main([]) == 0
    assert main(["--check"]) == 0
