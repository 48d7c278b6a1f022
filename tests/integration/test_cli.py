"""The one console entry point: every subcommand documents itself; errors are one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("income-bundle"))
SUBCOMMANDS = [
    "data",
    "train",
    "verify",
    "mlserver",
    "validate",
    "serve",
    "infer",
    "inspect",
    "demo",
    "feedback",
    "labelling",
    "monitor",
    "report",
]


def test_the_list_here_is_every_subcommand():
    import argparse

    from income_bundle.cli import build_parser

    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == set(SUBCOMMANDS)


def test_top_level_help_lists_every_subcommand():
    out = subprocess.run([CLI, "--help"], capture_output=True, text=True, check=True).stdout
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name):
    result = subprocess.run([CLI, name, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: income-bundle " + name in result.stdout


def test_inspect_without_a_gateway_says_how_to_start_one():
    result = subprocess.run(
        [CLI, "inspect", "income-production.outputs", "--url", "127.0.0.1:9", "--wait", "0"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no gateway at 127.0.0.1:9" in result.stderr and "income-bundle serve" in result.stderr


def test_validate_reports_a_broken_bundle(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "apiVersion: mlops.seldon.io/v1alpha1\nkind: Pipeline\nmetadata: {name: Bad.Name}\nspec: {steps: []}\n"
    )
    result = subprocess.run([CLI, "validate", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "is not valid" in result.stderr
    assert "Bad.Name" in result.stderr and "at least one step" in result.stderr


def test_monitor_without_the_debian_packages_names_them(tmp_path):
    # A PATH with python but without prometheus: what a machine without the packages sees.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    result = subprocess.run(
        [CLI, "monitor"], capture_output=True, text=True, env={"PATH": str(bin_dir)}
    )
    assert result.returncode == 1
    assert "apt-get install prometheus prometheus-alertmanager" in result.stderr


def test_feedback_needs_an_id_and_labels_or_a_file():
    result = subprocess.run([CLI, "feedback", "--id", "x"], capture_output=True, text=True)
    assert result.returncode == 2 and "--truth" in result.stderr


def test_serve_settings_come_from_flags_then_environment_then_defaults(monkeypatch, tmp_path):
    from pydantic import ValidationError

    from income_bundle.cli import build_parser
    from income_bundle.seldon.local import ServeSettings
    from income_bundle.settings_cli import settings_of

    monkeypatch.setenv("INCOME_SERVE_GRPC_PORT", "9101")
    monkeypatch.setenv("INCOME_SERVE_HTTP_PORT", "9100")
    args = build_parser().parse_args(
        ["serve", "--http-port", "9200", "--step-timeout-s", "2.5", "--no-state",
         "--bundle-dir", str(tmp_path)]
    )  # fmt: skip
    settings = settings_of(args)
    assert isinstance(settings, ServeSettings)
    assert settings.http_port == 9200  # the flag wins over INCOME_SERVE_HTTP_PORT
    assert settings.grpc_port == 9101  # the environment over the default
    assert settings.step_timeout_s == 2.5 and settings.bundle_dir == tmp_path
    assert settings.state_dir is None  # --no-state
    assert settings.host == "127.0.0.1" and settings.async_queue_size == 1000
    with pytest.raises(ValidationError, match="http_port"):
        ServeSettings(http_port=70000)
    with pytest.raises(ValidationError, match="step_timout_s"):
        ServeSettings(step_timout_s=1)  # a typo fails loudly


def test_monitor_settings_come_from_flags_then_environment_then_defaults(monkeypatch, tmp_path):
    from pydantic import ValidationError

    from income_bundle.monitoring.service import MonitorSettings
    from income_bundle.settings_cli import parse_settings

    monkeypatch.setenv("INCOME_MONITOR_STORE", str(tmp_path / "from-environment.sqlite"))
    monkeypatch.setenv("INCOME_MONITOR_PORT", "9110")
    monkeypatch.setenv("INCOME_MONITOR_GROUP", "group-from-environment")
    settings = parse_settings(
        MonitorSettings,
        ["--store", str(tmp_path / "from-flag.sqlite"), "--port", "9210",
         "--kafka-bootstrap", "127.0.0.1:9092"],
        prog="income-monitor",
    )  # fmt: skip
    # The flag wins over INCOME_MONITOR_STORE, the environment over the default.
    assert settings.store == tmp_path / "from-flag.sqlite"
    assert settings.port == 9210 and settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.group == "group-from-environment"
    assert settings.host == "127.0.0.1" and settings.pipeline == "income-production"
    assert settings.namespace == "seldon-mesh"
    assert settings.classifier.parts[-2:] == ("models", "income")
    with pytest.raises(ValidationError, match="port"):
        MonitorSettings(store=tmp_path / "s.sqlite", port=70000)
    with pytest.raises(ValidationError, match="kafka_bootstrp"):
        MonitorSettings(store=tmp_path / "s.sqlite", kafka_bootstrp="x:9092")  # a typo fails loudly
