"""What the drift report shows, on a small stand-in for the detector artifact: categorical bars by
the categories the traffic holds (the detector's pooled groups marked, not named after one of
their members), p-values that underflow printed as `< 1e-300`, and no path of the machine that
made the report. The report over the real artifact, rendered in Chromium:
tests/integration/test_report_page.py."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from income_bundle.monitoring.report import (
    DriftReference,
    DriftResult,
    FeatureDrift,
    TrafficWindow,
    category_groups,
    format_p_value,
    render_html,
)
from income_bundle.paths import project_root

EDUCATION = ["Associates", "Bachelors", "Doctorate", "Dropout", "High School grad", "Masters",
             "Prof-School"]  # fmt: skip
SEX = ["Female", "Male"]
# As training pooled the Adult reference: Bachelors alone, every other level into Masters.
POOLING = {1: np.array([5, 1, 5, 5, 5, 5, 5]), 2: np.array([0, 1])}


def stand_in(folder: Path) -> DriftReference:
    """Age, Education, Sex; 70 Bachelors and 30 Masters-group rows in the (pooled) reference."""
    rng = np.random.default_rng(0)
    x_ref = np.column_stack(
        [rng.normal(40, 10, 100), np.repeat([1, 5], [70, 30]), np.repeat([0, 1], [30, 70])]
    )
    return DriftReference(
        folder=folder,
        detector=SimpleNamespace(x_ref=x_ref),
        metadata={
            "created": "2026-12-07T00:00:00+00:00",
            "training": {
                "drift": {
                    "p_val": 0.05,
                    "correction": "bonferroni",
                    "min_expected_count": 2,
                    "batch_size": 20,
                }
            },
        },
        feature_names=["Age", "Education", "Sex"],
        category_map={1: EDUCATION, 2: SEX},
        pooling=POOLING,
    )


def low_education_rows() -> np.ndarray:
    """20 rows: 2 Dropout, 18 High School grad (codes 3 and 4), as the scenario sends them."""
    return np.column_stack([np.full(20, 30.0), np.repeat([3, 4], [2, 18]), np.ones(20)])


@pytest.fixture
def reference(tmp_path) -> DriftReference:
    return stand_in(tmp_path / "income-drift")


@pytest.fixture
def page(reference, tmp_path) -> str:
    result = DriftResult(
        [
            FeatureDrift("Age", 0, False, 0.3, 0.2, False),
            FeatureDrift("Education", 1, True, 445.1, 0.0, True),  # chi-squared tail underflowed
            FeatureDrift("Sex", 2, True, 0.1, 1.5e-300, True),
        ],
        threshold=0.05 / 3,
        is_drift=True,
        rows=20,
    )
    window = TrafficWindow(tmp_path / "traffic.jsonl", low_education_rows(), 1, 1.0, 1.0, "all")
    return render_html(reference, window, result)


def test_education_bars_are_the_categories_the_window_holds(reference):
    bachelors, pooled = category_groups(reference, 1, low_education_rows())
    assert bachelors.members == ["Bachelors"] and not bachelors.pooled
    assert (bachelors.reference, bachelors.current) == (0.7, {"Bachelors": 0.0})
    assert pooled.pooled and pooled.members[0] == "Masters"
    assert set(pooled.members) == set(EDUCATION) - {"Bachelors"}
    assert pooled.current == {name: 0.0 for name in pooled.members} | {
        "Dropout": 0.1,
        "High School grad": 0.9,
    }
    assert pooled.counts["High School grad"] == 18 and pooled.reference == 0.3


def test_captions_name_what_the_window_holds_not_a_pooled_label(page):
    assert "Masters +" not in page
    (caption,) = re.findall(r"<figcaption>(Education: .*?)</figcaption>", page)
    assert "tested together as one category: Masters, Associates, Doctorate, Dropout" in caption
    assert (
        "reference 30% (kept pooled, so one bar), this window 100% (Dropout 2, High School grad 18)"
        in caption
    )
    assert "categories rarer than 10% of the reference" in caption
    (sex,) = re.findall(r"<figcaption>(Sex: .*?)</figcaption>", page)
    assert "Shaded" not in sex  # nothing pooled there


def test_p_values_below_the_float_range_print_as_such(page):
    assert [format_p_value(p) for p in (0.0, 5e-324, 1.5e-300, 0.0123)] == [
        "< 1e-300", "< 1e-300", "1.5e-300", "0.0123"]  # fmt: skip
    p_values = re.findall(r'<td class="number">([^<]*)</td><td>(?:drift|no)</td>', page)
    assert p_values == ["0.2", "&lt; 1e-300", "1.5e-300"]
    assert "p-value &lt; 1e-300" in page


def test_paths_are_the_checkouts_or_only_names(page, tmp_path):
    assert str(tmp_path) not in page
    assert "<td>traffic.jsonl</td>" in page and "rows of income-drift (created" in page
    inside = render_html(
        stand_in(project_root() / "detectors" / "income-drift"),
        TrafficWindow(project_root() / "data" / "t.jsonl", low_education_rows(), 1, 1, 1, "all"),
        DriftResult([FeatureDrift("Age", 0, False, 0.3, 0.2, False)], 0.05, False, 20),
    )
    assert "<td>data/t.jsonl</td>" in inside and "rows of detectors/income-drift (" in inside
    assert str(project_root()) not in inside


def test_one_chart_per_feature_and_a_verdict_banner(page):
    assert re.findall(r'<figure class="chart" data-feature="([^"]+)">', page) == [
        "Age", "Education", "Sex"]  # fmt: skip
    assert '<p class="verdict drift" id="verdict"><strong>Drift</strong> in Education, Sex' in page
