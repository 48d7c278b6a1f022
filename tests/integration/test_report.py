"""The static drift report: the served detector's p-values over a window of traffic, one chart per
feature in a self-contained HTML file, and a clear error for every unusable input. The errors
found before any artifact is read are tests/unit/test_report.py."""

from __future__ import annotations

import base64
import html
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from income_bundle.monitoring.report import (
    ReportError,
    TrafficWindow,
    format_p_value,
    load_reference,
    measure_drift,
    parse_time,
    read_traffic,
    render_html,
)
from income_bundle.paths import scenario_dir

CLI = str(Path(sys.executable).with_name("income-bundle"))
T0 = 1_795_400_000.0  # unix seconds of the first request in the logs written here
ROWS = 300  # enough for the drift tests, few enough to stay fast


def write_log(path: Path, X: np.ndarray, *, per_request: int = 20, pipeline="income-production"):
    """A traffic log as the gateway writes it: one request of `per_request` rows a second."""
    with path.open("w") as log:
        for index, start in enumerate(range(0, len(X), per_request)):
            record = {
                "request_id": f"req-{index}",
                "timestamp": T0 + index,
                "pipeline": pipeline,
                "rows": X[start : start + per_request].tolist(),
            }
            log.write(json.dumps(record) + "\n")
    return path


@pytest.fixture(scope="module")
def reference(training_report):
    return load_reference()


@pytest.fixture(scope="module")
def reference_rows(scenario) -> np.ndarray:
    return scenario["reference"].X[:ROWS]


@pytest.fixture(scope="module")
def low_education_rows(scenario) -> np.ndarray:
    return scenario["low-education"].X[:ROWS]


def test_reference_traffic_is_not_drift(reference, reference_rows, tmp_path):
    window = read_traffic(write_log(tmp_path / "traffic.jsonl", reference_rows))
    assert window.requests == ROWS // 20 and len(window.rows) == ROWS
    result = measure_drift(reference, window.rows)
    assert [f.name for f in result.features if f.p_value < result.threshold] == []
    assert result.verdict == "no drift" and not result.is_drift


def test_low_education_traffic_flags_education(reference, low_education_rows, tmp_path):
    window = read_traffic(write_log(tmp_path / "traffic.jsonl", low_education_rows))
    result = measure_drift(reference, window.rows)
    (education,) = [f for f in result.features if f.name == "Education"]
    assert education.categorical and education.p_value < result.threshold and education.drifted
    assert "Education" in result.drifted and result.verdict == "drift"


def test_p_values_are_what_the_detectors_predict_gives(reference, scenario, training_report):
    """An independent load of the artifact, pooled by training's own code, gives the same."""
    from alibi_detect.saving import load_detector

    from income_bundle.training import apply_pooling

    rows = np.concatenate([scenario["reference"].X[:60], scenario["low-education"].X[:40]])
    detector = load_detector(str(reference.folder / "detector"))
    pooling = {int(k): v for k, v in reference.metadata["category_pooling"].items()}
    expected = detector.predict(apply_pooling(rows, pooling), drift_type="batch")["data"]
    result = measure_drift(reference, rows)
    assert [f.p_value for f in result.features] == [float(p) for p in expected["p_val"]]
    assert [f.statistic for f in result.features] == [float(d) for d in expected["distance"]]
    assert result.threshold == float(expected["threshold"]) == pytest.approx(0.05 / 12)
    assert result.is_drift == bool(expected["is_drift"])


def test_html_has_one_chart_per_feature_and_the_p_values(reference, low_education_rows):
    window = TrafficWindow(
        Path("traffic.jsonl"), low_education_rows, 15, T0, T0 + 14, "all traffic"
    )
    result = measure_drift(reference, window.rows)
    page = render_html(reference, window, result)
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == page.count("<img") == 12
    assert [alt.split(":")[0] for alt, _ in images] == reference.feature_names
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for _, data in images)
    for feature in result.features:
        assert f'<td class="number">{html.escape(format_p_value(feature.p_value, 4))}</td>' in page
    verdict = re.search(r'<p class="verdict drift"[^>]*>(.*?)</p>', page, re.S).group(1)
    assert verdict.startswith("<strong>Drift</strong> in") and "Education" in verdict
    assert f"threshold {result.threshold:.4g}" in verdict
    # Categories are named from the artifact's category map, pooled groups explained.
    (education,) = [
        c for c in re.findall(r"<figcaption>(.*?)</figcaption>", page) if c.startswith("Education")
    ]
    assert "Dropout" in education and "High School grad" in education
    # Self-contained: nothing to fetch.
    assert not re.search(r'(src|href)="(?!data:)', page)


def test_window_by_time_pipeline_and_last_rows(tmp_path, reference_rows):
    path = write_log(tmp_path / "traffic.jsonl", reference_rows[:100])  # 5 requests, T0..T0+4
    with path.open("a") as log:  # a request written late, stamped earlier, to another pipeline
        log.write(json.dumps({"request_id": "late", "timestamp": T0 - 10, "pipeline": "income-v1",
                              "rows": reference_rows[100:103].tolist()}) + "\n")  # fmt: skip
    everything = read_traffic(path)
    assert everything.requests == 6 and len(everything.rows) == 103
    assert np.array_equal(everything.rows[:3], reference_rows[100:103])  # in time order
    window = read_traffic(path, since=T0 + 1, until=T0 + 3)
    assert window.requests == 2 and np.array_equal(window.rows, reference_rows[20:60])
    assert (window.first, window.last) == (T0 + 1, T0 + 2)
    iso = datetime.fromtimestamp(T0 + 1, UTC).isoformat()
    assert np.array_equal(read_traffic(path, since=parse_time(iso), until=T0 + 3).rows, window.rows)
    last = read_traffic(path, since=T0, last_rows=30)
    assert np.array_equal(last.rows, reference_rows[70:100])
    only_v1 = read_traffic(path, pipeline="income-v1")
    assert np.array_equal(only_v1.rows, reference_rows[100:103])
    assert len(read_traffic(path, last_rows=1000).rows) == 103


def test_scenario_file_window(scenario):
    window = read_traffic(scenario_dir() / "low-education.npz", last_rows=50)
    assert np.array_equal(window.rows, scenario["low-education"].X[-50:])
    with pytest.raises(ReportError, match=r"low-education\.npz: a scenario file has no timestamps"):
        read_traffic(scenario_dir() / "low-education.npz", since=T0)


def test_bad_jsonl_line_is_named_by_number(tmp_path, reference_rows):
    path = write_log(tmp_path / "traffic.jsonl", reference_rows[:40])
    with path.open("a") as log:
        log.write("\n{not json\n")
    with pytest.raises(ReportError, match=r"traffic\.jsonl line 4: not a JSON object"):
        read_traffic(path)


def test_wrong_row_width_is_named_by_line_and_row(tmp_path, reference_rows):
    path = write_log(tmp_path / "traffic.jsonl", reference_rows[:40])
    with path.open("a") as log:
        rows = reference_rows[:3].tolist()
        rows[2] = rows[2][:11]
        log.write(json.dumps({"timestamp": T0 + 5, "pipeline": "p", "rows": rows}) + "\n")
    with pytest.raises(
        ReportError, match=r"traffic\.jsonl line 3: row 2 has 11 values; expected 12 values \(Age,"
    ):
        read_traffic(path)


def test_bad_values_are_refused_as_the_runtime_would(tmp_path, reference_rows):
    rows = reference_rows[:2].tolist()
    rows[1][2] = 9  # Education has 7 categories
    path = tmp_path / "traffic.jsonl"
    path.write_text(json.dumps({"timestamp": T0, "rows": rows}) + "\n")
    with pytest.raises(ReportError, match=r"line 1: .*row 1, column 2 \('Education'\) is 9"):
        read_traffic(path, feature_names=["x"] * 2 + ["Education"] + ["x"] * 9,
                     categories={2: 7})  # fmt: skip
    path.write_text(json.dumps({"rows": rows}) + "\n")
    with pytest.raises(ReportError, match=r"line 1: missing 'timestamp'"):
        read_traffic(path)


def test_empty_window_says_what_the_file_holds(tmp_path, reference_rows):
    path = write_log(tmp_path / "traffic.jsonl", reference_rows[:40])
    with pytest.raises(ReportError) as error:
        read_traffic(path, since=T0 + 100)
    message = str(error.value)
    assert "traffic.jsonl: no rows in the window (since 2026-" in message
    assert "it holds 40 rows from 2026-" in message
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ReportError, match="it holds no traffic"):
        read_traffic(tmp_path / "empty.jsonl")
    with pytest.raises(ReportError, match="--last-rows must be at least 1"):
        read_traffic(path, last_rows=0)


def test_report_command_writes_the_html(tmp_path, training_report, low_education_rows):
    help_text = subprocess.run([CLI, "report", "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "usage: income-bundle report" in help_text.stdout
    log = write_log(tmp_path / "traffic.jsonl", low_education_rows[:200])
    output = tmp_path / "report.html"
    result = subprocess.run(
        [CLI, "report", str(log), "-o", str(output), "--since", "1795400000", "--last-rows", "200"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"wrote {output}: 200 rows, drift in " in result.stdout and "Education" in result.stdout
    assert output.read_text().count("<img") == 12


def test_report_reads_the_window_from_a_running_monitor(
    tmp_path, training_report, low_education_rows
):
    from income_bundle.monitoring.service import Monitor, classifier_info
    from income_bundle.monitoring.store import RequestRecord, SqliteStore, StoreWrite
    from income_bundle.paths import artifact_dir
    from tests.support.monitor_service import Served

    store = SqliteStore(tmp_path / "records.sqlite")
    rows = low_education_rows[:300]
    store.write(
        StoreWrite(
            [
                RequestRecord(
                    f"req-{i}", "income-production", "local", T0 + i, None, chunk.tolist()
                )
                for i, chunk in enumerate(np.split(rows, 15))
            ]
        )
    )
    served = Served(Monitor(store, {"income-production": classifier_info(artifact_dir("income"))}))
    try:
        output = tmp_path / "report.html"
        result = subprocess.run(
            [CLI, "report", served.url, "-o", str(output), "--since", str(T0 + 5)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        # Requests 5..14 of 20 rows each: the monitor's window, not all it holds.
        assert f"wrote {output}: 200 rows, drift in " in result.stdout
        unknown = subprocess.run(
            [CLI, "report", served.url, "--pipeline", "nope", "-o", str(output)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert unknown.returncode == 1 and "'nope'" in unknown.stderr
    finally:
        served.stop()
        store.close()
