"""The wheel pip would take for each of an image's pins on linux/amd64 and linux/arm64, read from
PyPI's JSON API, and the image's expected size from them (tests/cluster/test_slim_images.py;
`python -m tests.support.image_wheels` prints the table docs/cluster-path.md holds).

The images' Python is CPython 3.11 on Debian bookworm (glibc 2.36): a wheel fits when one of its
tags is among what pip 24 accepts there, manylinux_2_5 .. manylinux_2_36 (and their legacy
aliases) or `none-any`; of several, pip takes the one whose tag it ranks first, as here.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

__all__ = [
    "ARCHES",
    "BASE_SIZES",
    "PyPIUnreachableError",
    "chosen_wheels",
    "size_table",
]

ARCHES = {"amd64": "x86_64", "arm64": "aarch64"}
GLIBC_MINOR = 36  # Debian bookworm's glibc 2.36
LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
# python:3.11.16-slim-bookworm's compressed size per platform, as docker-library/repo-info records
# it (repos/python/remote/3.11.16-slim-bookworm.md at 422f3cfe488dc9ae394c5058b27db617f72c91db,
# "Total Size" of the linux/amd64 and linux/arm64 v8 manifests of the index the roles pin).
BASE_SIZES = {"amd64": 47_790_378, "arm64": 47_443_520}
PYPI_PROJECT = "https://pypi.org/pypi/{name}/json"


class PyPIUnreachableError(Exception):
    """PyPI's JSON API did not answer."""


def platform_tags(arch: str) -> list[Tag]:
    """The tags pip accepts for CPython 3.11 on glibc 2.36 `arch`, best first."""
    machine = ARCHES[arch]
    platforms = []
    for minor in range(GLIBC_MINOR, 4, -1):
        if machine == "aarch64" and minor < 17:
            break  # manylinux for aarch64 starts at glibc 2.17 (PEP 599)
        platforms.append(f"manylinux_2_{minor}_{machine}")
        if minor in LEGACY:
            platforms.append(f"{LEGACY[minor]}_{machine}")
    return [
        *cpython_tags((3, 11), abis=["cp311", "abi3", "none"], platforms=platforms),
        *compatible_tags((3, 11), "cp311", platforms),
    ]


@cache
def release_files(name: str, version: str) -> tuple[dict, ...]:
    """The release's files (filename, size, ...) from PyPI's project JSON."""
    try:
        with urllib.request.urlopen(PYPI_PROJECT.format(name=name), timeout=60) as answer:
            project = json.load(answer)
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise PyPIUnreachableError(f"{PYPI_PROJECT.format(name=name)}: {error}") from error
    return tuple(project["releases"].get(version, []))


def chosen_wheels(pins: list[str]) -> dict[str, dict[str, dict | None]]:
    """pin -> arch -> the wheel's file entry (None when no wheel fits)."""
    ranks = {arch: {tag: i for i, tag in enumerate(platform_tags(arch))} for arch in ARCHES}

    def choose(pin: str) -> dict[str, dict | None]:
        name, version = pin.split("==")
        files = [f for f in release_files(name, version) if f["filename"].endswith(".whl")]
        chosen = {}
        for arch, rank in ranks.items():
            fitting = []
            for entry in files:
                tags = parse_wheel_filename(entry["filename"])[3]
                best = min((rank[t] for t in tags if t in rank), default=None)
                if best is not None:
                    fitting.append((best, entry["filename"], entry))
            chosen[arch] = min(fitting, key=lambda f: f[:2])[2] if fitting else None
        return chosen

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(pins, pool.map(choose, pins), strict=True))


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


def size_table(images: dict[str, list[str]]) -> list[str]:
    """Markdown rows: image, platform, wheels, base, expected compressed size."""
    rows = [
        "| image | platform | pins | wheels | base (python:3.11.16-slim-bookworm) | expected size |",
        "|---|---|---|---|---|---|",
    ]
    for image, pins in images.items():
        wheels = chosen_wheels(pins)
        for arch in ARCHES:
            total = sum(w[arch]["size"] for w in wheels.values() if w[arch])
            rows.append(
                f"| {image} | linux/{arch} | {len(pins)} | {_mb(total)} | "
                f"{_mb(BASE_SIZES[arch])} | {_mb(total + BASE_SIZES[arch])} |"
            )
    return rows


if __name__ == "__main__":
    from tests.support.image_venv import IMAGES, image_pins

    chosen = sys.argv[1:] or list(IMAGES)
    print("\n".join(size_table({image: image_pins(image) for image in chosen})))
