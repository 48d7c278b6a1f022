"""The drift report's errors found before any artifact or traffic is read: times it cannot parse,
a missing traffic file, and the command line's one-line error naming file and line (the report
itself: tests/integration/test_report.py)."""

from __future__ import annotations

import re

import pytest

from income_bundle.cli import main as cli_main
from income_bundle.monitoring.report import ReportError, parse_time, read_traffic


def test_parse_time_takes_unix_seconds_and_iso_8601():
    assert parse_time("1795400000") == 1795400000.0
    assert parse_time("2026-11-23T10:00:00Z") == parse_time("2026-11-23T11:00:00+01:00")
    assert parse_time("2026-11-23T10:00:00") == parse_time("2026-11-23T10:00:00Z")  # UTC
    with pytest.raises(ReportError, match="neither unix seconds nor an ISO-8601 time"):
        parse_time("yesterday")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ReportError, match=rf"{re.escape(str(tmp_path))}/nope\.jsonl: no such file"):
        read_traffic(tmp_path / "nope.jsonl")


def test_cli_error_is_one_line_naming_file_and_line(tmp_path, capsys):
    path = tmp_path / "traffic.jsonl"
    path.write_text('{"timestamp": 1, "rows": [[1, 2]]}\n')
    assert cli_main(["report", str(path), "-o", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "traffic.jsonl line 1: row 0 has 2 values" in err
    assert not (tmp_path / "r.html").exists()
