"""The Maven build of Seldon's dataflow engine (dev/seldon-dataflow/pom.xml) against the Gradle build
it follows (scheduler/data-flow/build.gradle.kts in Seldon's release tarball): every dependency and
plugin Gradle declares is in the pom at the declared version, or is a row of the deviations table
in docs/seldon-local.md with its reason; every version the pom pins is in the pins table there."""

from __future__ import annotations

import re
import tarfile
import xml.etree.ElementTree as ET

import pytest

from tests.support.paths import ROOT, UPSTREAM

TARBALL = UPSTREAM / "src" / "seldon-core-v2.10.2.tar.gz"
GRADLE_FILE = "seldon-core-v2.10.2/scheduler/data-flow/build.gradle.kts"
POM = ROOT / "dev" / "seldon-dataflow" / "pom.xml"
DOCS = ROOT / "docs" / "seldon-local.md"
NS = {"m": "http://maven.apache.org/POM/4.0.0"}
# Gradle configuration -> the Maven scope it is.
SCOPES = {"implementation": "compile", "runtimeOnly": "runtime", "testImplementation": "test"}
# Gradle plugin ids -> the Maven artifact that does their work at the same version.
PLUGINS = {
    "org.jetbrains.kotlin.jvm": "org.jetbrains.kotlin:kotlin-maven-plugin",
    "org.jetbrains.kotlin.plugin.serialization": "org.jetbrains.kotlin:kotlin-maven-serialization",
    "com.github.johnrengelman.shadow": "org.apache.maven.plugins:maven-shade-plugin",
}
# Gradle's Kotlin plugin turns kotlin("test") into its JUnit 5 variant; Maven names that.
RENAMED = {"org.jetbrains.kotlin:kotlin-test": "org.jetbrains.kotlin:kotlin-test-junit5"}
# The plugins whose Maven counterpart is the same tool at the same version.
SAME_TOOL = {"org.jetbrains.kotlin.jvm", "org.jetbrains.kotlin.plugin.serialization"}


@pytest.fixture(scope="module")
def gradle() -> str:
    if not TARBALL.is_file():
        pytest.skip(f"{TARBALL} is absent (../shared beside the checkout holds Seldon's source)")
    with tarfile.open(TARBALL) as archive:
        return archive.extractfile(GRADLE_FILE).read().decode()


def gradle_declarations(text: str) -> dict[str, str]:
    """'group:artifact:version' (plugins: 'id:version') -> the Maven scope it needs ('plugin')."""
    declared: dict[str, str] = {}
    plugins = re.search(r"^plugins \{(.*?)^\}", text, re.M | re.S).group(1)
    for kotlin, plugin_id, version in re.findall(
        r'(?:kotlin\("([^"]+)"\)|id\("([^"]+)"\)) version "([^"]+)"', plugins
    ):
        declared[f"{plugin_id or 'org.jetbrains.kotlin.' + kotlin}:{version}"] = "plugin"
    kotlin_version = re.search(r'kotlin\("jvm"\) version "([^"]+)"', plugins).group(1)
    block = re.search(r"^dependencies \{(.*?)^\}", text, re.M | re.S).group(1)
    calls = re.findall(r"^\s*(implementation|runtimeOnly|testImplementation)\(", block, re.M)
    for configuration, coordinate in re.findall(r'(\w+)\("([^":]+:[^":]+:[^"]+)"\)', block):
        declared[coordinate] = SCOPES[configuration]
    for configuration, coordinate, preferred in re.findall(
        r'(\w+)\("([^":]+:[^":]+)"\) \{\s*version \{[^}]*prefer\("([^"]+)"\)', block
    ):
        declared[f"{coordinate}:{preferred}"] = SCOPES[configuration]
    for configuration, module in re.findall(r'(\w+)\(kotlin\("([^"]+)"\)\)', block):
        declared[f"org.jetbrains.kotlin:kotlin-{module}:{kotlin_version}"] = SCOPES[configuration]
    plugin_count = sum(1 for scope in declared.values() if scope == "plugin")
    assert len(declared) - plugin_count == len(calls), "a dependency the parser does not read"
    return declared


class Pom:
    """What the pom uses: 'group:artifact' -> (version, scope), its plugins' scope 'plugin'."""

    def __init__(self, path) -> None:
        root = ET.parse(path).getroot()
        self.properties = {
            element.tag.split("}")[1]: element.text or ""
            for element in root.find("m:properties", NS)
        }
        self.managed: dict[str, str] = {}
        self.boms: dict[str, str] = {}
        for dep in root.findall("m:dependencyManagement/m:dependencies/m:dependency", NS):
            group, artifact, version = (
                self.text(dep, t) for t in ("groupId", "artifactId", "version")
            )
            if self.text(dep, "scope") == "import":
                self.boms[f"{group}:{artifact.removesuffix('-bom')}"] = version
            else:
                self.managed[f"{group}:{artifact}"] = version
        self.used: dict[str, tuple[str, str]] = {}
        for dep in root.findall("m:dependencies/m:dependency", NS):
            key = f"{self.text(dep, 'groupId')}:{self.text(dep, 'artifactId')}"
            version = self.text(dep, "version") or self.managed_version(key)
            self.used[key] = (version, self.text(dep, "scope") or "compile")
        for plugin in root.iter(f"{{{NS['m']}}}plugin"):
            for item in [plugin, *plugin.findall("m:dependencies/m:dependency", NS)]:
                if (version := self.text(item, "version")) and self.text(item, "groupId"):
                    key = f"{self.text(item, 'groupId')}:{self.text(item, 'artifactId')}"
                    self.used[key] = (version, "plugin")

    def text(self, element, tag: str) -> str:
        found = element.find(f"m:{tag}", NS)
        value = (found.text or "").strip() if found is not None else ""
        while match := re.search(r"\$\{([^}]+)\}", value):
            value = value.replace(match.group(0), self.properties[match.group(1)])
        return value

    def managed_version(self, key: str) -> str:
        if key in self.managed:
            return self.managed[key]
        group, artifact = key.split(":")
        for bom, version in self.boms.items():
            bom_group, prefix = bom.split(":")
            if group.startswith(bom_group) and artifact.startswith(prefix):
                return version
        raise AssertionError(f"{key} has no version in the pom")

    def counterpart(self, coordinate: str, scope: str) -> str:
        """What the pom uses for Gradle's `coordinate`: 'group:artifact:version' or 'none'.
        Kotlin multiplatform libraries are named by their JVM artifact (`-jvm`)."""
        if scope == "plugin":
            key = PLUGINS.get(coordinate.rsplit(":", 1)[0], "")
            return f"{key}:{self.used[key][0]}" if key in self.used else "none"
        group, artifact, _ = coordinate.rsplit(":", 2)
        named = f"{group}:{artifact}"
        for key, reported in ((named, named), (f"{named}-jvm", named), (RENAMED.get(named), None)):
            if key in self.used:
                version, used_scope = self.used[key]
                assert used_scope == scope, f"{key}: scope {used_scope}, Gradle's is {scope}"
                return f"{reported or key}:{version}"
        return "none"


def docs_table(heading: str) -> list[list[str]]:
    section = DOCS.read_text().split(f"### {heading}\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip().strip("`") for cell in row.strip("|").split(" | ")] for row in rows[2:]]


def test_every_gradle_version_is_the_poms_or_a_listed_deviation(gradle):
    pom = Pom(POM)
    deviations = {
        row[0]: row
        for row in docs_table("Where the Maven build differs from Seldon's Gradle build")
    }
    declared = gradle_declarations(gradle)
    unexplained, misstated = [], []
    for coordinate, scope in declared.items():
        ours = pom.counterpart(coordinate, scope)
        plugin_id, version = coordinate.rsplit(":", 1)
        same_tool = plugin_id in SAME_TOOL and ours.rsplit(":", 1)[1] == version
        if ours == coordinate or same_tool:
            assert coordinate not in deviations, f"{coordinate} is listed but the pom matches"
            continue
        if coordinate not in deviations:
            unexplained.append(f"{coordinate} -> {ours}")
        elif deviations[coordinate][1] != ours or not deviations[coordinate][2]:
            misstated.append(
                f"{coordinate}: the docs say {deviations[coordinate][1]}, the pom {ours}"
            )
    assert not unexplained, "not in docs/seldon-local.md's deviations table: " + ", ".join(
        unexplained
    )
    assert not misstated
    assert set(deviations) <= set(declared), "rows for what Gradle does not declare"


def test_every_pinned_version_is_listed_with_who_asks_for_it():
    pom = Pom(POM)
    pins = {row[0]: row for row in docs_table("Versions pinned to what Gradle resolves")}
    pinned = {**pom.managed, **{f"{bom}-bom": v for bom, v in pom.boms.items()}}
    assert {key: row[1] for key, row in pins.items()} == pinned
    assert all(row[2] for row in pins.values())
