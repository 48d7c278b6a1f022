"""The drift report as a browser shows it: headless Chromium (Debian package `chromium`) lays the
page out, a script measures it, and a screenshot keeps what it looked like.

`measure()` loads a copy of the report with a script that runs once the page and its images have
loaded and writes what it measured into the page as JSON; Chromium's `--dump-dom` prints the page,
so no DevTools connection is needed. `problems()` turns a measurement into sentences.

`python -m income_bundle_dev.report_page build/drift-report.html --screenshot build/drift-report.png`
checks the page (exit 1 on a problem) and writes the screenshot (`make report`).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import CliPositionalArg, SettingsConfigDict

from income_bundle.settings_cli import CommandSettings, parse_settings

__all__ = [
    "DEBIAN_PACKAGE",
    "PageMeasurement",
    "ReportPageSettings",
    "chromium",
    "main",
    "measure",
    "problems",
    "screenshot",
]

DEBIAN_PACKAGE = "chromium"
BINARIES = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 120.0
RESULT_ID = "layout-check"

# Runs after `load` (images decoded); writes its findings into <pre id="layout-check">.
MEASURE_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const describe = (el) => {
    const text = (el.innerText || el.getAttribute("alt") || "").trim().replace(/\\s+/g, " ");
    return `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}`
      + `${el.className ? "." + String(el.className).trim().replace(/\\s+/g, ".") : ""}`
      + ` "${text.slice(0, 60)}"`;
  };
  const viewport = document.documentElement.clientWidth;
  const overflowing = [];
  for (const el of document.body.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
      overflowing.push(`${describe(el)}: content ${el.scrollWidth} px wide in a ${el.clientWidth} px box`);
    } else if (box.width > 0 && box.right > viewport + 1) {
      overflowing.push(`${describe(el)}: ends at ${Math.round(box.right)} px, page is ${viewport} px`);
    }
  }
  const figures = [...document.querySelectorAll("figure.chart")].map((figure) => {
    const img = figure.querySelector("img");
    const caption = figure.querySelector("figcaption");
    return {
      feature: figure.dataset.feature,
      loaded: Boolean(img && img.complete && img.naturalWidth > 0),
      image_width: img ? Math.round(img.getBoundingClientRect().width) : 0,
      figure_width: Math.round(figure.getBoundingClientRect().width),
      caption: caption ? caption.innerText : "",
    };
  });
  const verdict = document.getElementById("verdict");
  const style = verdict ? getComputedStyle(verdict) : null;
  const result = {
    viewport: viewport,
    document_width: document.documentElement.scrollWidth,
    document_height: document.documentElement.scrollHeight,
    figures: figures,
    verdict: verdict ? {
      text: verdict.innerText,
      classes: [...verdict.classList],
      width: Math.round(verdict.getBoundingClientRect().width),
      height: Math.round(verdict.getBoundingClientRect().height),
      background: style.backgroundColor,
    } : null,
    overflowing: overflowing,
  };
  const out = document.createElement("pre");
  out.id = "RESULT_ID";
  out.hidden = true;
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>
""".replace("RESULT_ID", RESULT_ID)  # a template: the script's braces are its own


class ChromiumError(RuntimeError):
    """Chromium could not render the page; the message has its output."""


@dataclass(frozen=True)
class PageMeasurement:
    """What the page measured in Chromium at one window width."""

    viewport: int
    document_width: int
    document_height: int
    figures: list[dict[str, Any]]
    verdict: dict[str, Any] | None
    overflowing: list[str]


def chromium() -> str | None:
    """The Chromium binary on PATH, or None."""
    return next((found for name in BINARIES if (found := shutil.which(name))), None)


def _run_chromium(arguments: list[str], width: int, height: int) -> subprocess.CompletedProcess:
    binary = chromium()
    if binary is None:
        raise ChromiumError(f"no chromium on PATH: install Debian's package '{DEBIAN_PACKAGE}'")
    with tempfile.TemporaryDirectory(prefix="income-chromium-") as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",  # root in CI containers; the page is our own file
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--mute-audio",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            *arguments,
        ]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env={**os.environ, "HOME": profile},  # nothing written to the real home
        )
    if result.returncode != 0:
        raise ChromiumError(
            f"chromium exited with {result.returncode}: {result.stderr.strip()[-2000:]}"
        )
    return result


def measure(page: Path | str, width: int = 1280, height: int = 900) -> PageMeasurement:
    """Lay the page out in a `width` px wide window and measure it."""
    source = Path(page).read_text(encoding="utf-8")
    if "</body>" not in source:
        raise ValueError(f"{page}: not an HTML page with a </body>")
    with tempfile.TemporaryDirectory(prefix="income-report-page-") as directory:
        probe = Path(directory) / "page.html"
        probe.write_text(source.replace("</body>", MEASURE_SCRIPT + "</body>", 1), "utf-8")
        result = _run_chromium(
            ["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], width, height
        )
    found = re.search(rf'<pre id="{RESULT_ID}"[^>]*>(.*?)</pre>', result.stdout, re.S)
    if not found:
        raise ChromiumError(
            f"the page's measurement script left no result (stderr: {result.stderr[-1000:]})"
        )
    return PageMeasurement(**json.loads(html.unescape(found.group(1))))


def screenshot(page: Path | str, output: Path | str, width: int = 1280) -> Path:
    """A PNG of the whole page (as tall as the page is) in a `width` px wide window."""
    height = max(measure(page, width).document_height, 600)
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    _run_chromium(
        ["--virtual-time-budget=10000", f"--screenshot={output}", Path(page).resolve().as_uri()],
        width,
        height,
    )
    if not output.is_file():
        raise ChromiumError(f"chromium wrote no screenshot at {output}")
    return output


def problems(measured: PageMeasurement, features: Sequence[str] | None = None) -> list[str]:
    """What is wrong with the page as laid out: a missing or unloaded chart, charts not one per
    feature, no verdict banner, text or boxes wider than their box or the page."""
    found = []
    charts = [figure["feature"] for figure in measured.figures]
    if features is not None and charts != list(features):
        found.append(f"charts are for {charts}; expected one per feature: {list(features)}")
    if not charts:
        found.append("no charts")
    for figure in measured.figures:
        if not figure["loaded"]:
            found.append(f"chart {figure['feature']}: the image did not load")
        elif figure["image_width"] > figure["figure_width"] + 1:
            found.append(
                f"chart {figure['feature']}: image {figure['image_width']} px wide in a "
                f"{figure['figure_width']} px figure"
            )
    verdict = measured.verdict
    if verdict is None:
        found.append("no verdict banner (#verdict)")
    elif verdict["height"] == 0 or not verdict["text"].strip():
        found.append("the verdict banner is empty or not shown")
    if measured.document_width > measured.viewport + 1:
        found.append(
            f"the page is {measured.document_width} px wide in a {measured.viewport} px window"
        )
    found += [f"overflow: {item}" for item in measured.overflowing]
    return found


class ReportPageSettings(CommandSettings):
    """Check the drift report's page in headless Chromium and take its screenshot."""

    model_config = SettingsConfigDict(env_prefix="INCOME_REPORT_PAGE_")

    page: CliPositionalArg[Path] = Field(description="the report's HTML file")
    screenshot: Path | None = Field(None, description="PNG to write (the whole page)")
    width: int = Field(1280, ge=1, description="window width in px")


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(
        ReportPageSettings, argv, prog="python -m income_bundle_dev.report_page"
    )
    if chromium() is None:
        print(
            f"warning: no chromium: the report page is not checked and no screenshot is taken "
            f"(install Debian's package '{DEBIAN_PACKAGE}')",
            file=sys.stderr,
        )
        return 0
    try:
        found = problems(measure(settings.page, settings.width))
        if settings.screenshot:
            screenshot(settings.page, settings.screenshot, settings.width)
            print(f"screenshot {settings.screenshot}")
    except (ChromiumError, OSError, ValueError, subprocess.TimeoutExpired) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for problem in found:
        print(f"problem: {settings.page}: {problem}", file=sys.stderr)
    if not found:
        print(
            f"checked {settings.page} in Chromium at {settings.width} px: "
            "charts, verdict, no overflow"
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
