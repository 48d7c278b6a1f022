"""The drift report as a reader sees it: the low-education window's report over the served drift
detector, laid out by headless Chromium (Debian package `chromium`) and measured in the page: one
chart per feature, the verdict banner, nothing wider than its box, the Education chart saying what
the window holds. Skips, naming the package, where Chromium is missing (CI installs it)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from income_bundle.data import CATEGORY_MAP, FEATURE_NAMES
from income_bundle.monitoring.report import write_report
from income_bundle_dev.report_page import DEBIAN_PACKAGE, chromium, measure, problems, screenshot

pytestmark = pytest.mark.skipif(
    chromium() is None, reason=f"no chromium: install Debian's package '{DEBIAN_PACKAGE}'"
)
ROWS = 20  # one pipeline request, as the demo sends it
EDUCATION = FEATURE_NAMES.index("Education")


@pytest.fixture(scope="module")
def window(scenario) -> np.ndarray:
    return scenario["low-education"].X[:ROWS]


@pytest.fixture(scope="module")
def page(window, tmp_path_factory):
    """The report of one low-education request, as the demo writes it from the monitor."""
    folder = tmp_path_factory.mktemp("report")
    traffic = folder / "traffic.jsonl"
    record = {"request_id": "r0", "timestamp": 1.8e9, "pipeline": "p", "rows": window.tolist()}
    traffic.write_text(json.dumps(record) + "\n")
    write_report(traffic, folder / "report.html")
    return folder / "report.html"


@pytest.mark.parametrize("width", [1280, 700])
def test_one_chart_per_feature_a_verdict_and_nothing_overflowing(page, width):
    measured = measure(page, width)
    assert problems(measured, FEATURE_NAMES) == []
    assert measured.viewport == width and measured.document_width <= width
    verdict = measured.verdict
    assert verdict["classes"] == ["verdict", "drift"] and verdict["height"] > 20
    assert verdict["text"].startswith("Drift in Education")
    assert verdict["background"] == "rgb(253, 226, 228)"  # the drift banner's colour, shown


def test_education_chart_shows_what_the_window_holds(page, window):
    (education,) = [f for f in measure(page).figures if f["feature"] == "Education"]
    codes, counts = np.unique(window[:, EDUCATION].astype(int), return_counts=True)
    held = ", ".join(
        f"{CATEGORY_MAP[EDUCATION][c]} {n}" for c, n in zip(codes, counts, strict=True)
    )
    assert held.startswith("Dropout") and "High School grad" in held
    assert f"this window 100% ({held})" in education["caption"]
    assert "Masters +" not in page.read_text()


def test_the_layout_check_catches_what_overflows(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<!DOCTYPE html><html><body style="margin:0"><p class="verdict" id="verdict">Drift</p>'
        '<table style="width:300px;table-layout:fixed"><tr><td style="white-space:nowrap">'
        + "x" * 400
        + "</td></tr></table></body></html>"
    )
    found = problems(measure(broken, 800), ["Age"])
    assert any(p.startswith("overflow: td") for p in found), found
    assert "no charts" in found and any(p.startswith("charts are for []") for p in found)


def test_screenshot_is_the_whole_page(page, tmp_path):
    png = screenshot(page, tmp_path / "report.png", width=1280)
    width, height = struct.unpack(">II", png.read_bytes()[16:24])  # the PNG header's size
    assert (width, height) == (1280, measure(page).document_height)
