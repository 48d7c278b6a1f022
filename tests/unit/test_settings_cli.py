"""Every entry point declares its options one way (income_bundle.settings_cli): a settings model
whose fields are the flags, read from the flags, then the environment, then the defaults; a wrong
flag or value ends the program with one line."""

from __future__ import annotations

import argparse
import importlib
import re

import pytest

from income_bundle.settings_cli import CommandSettings
from tests.support.paths import ROOT

# Each entry point: its module's main, and the arguments before its options (subcommand,
# required positionals).
INCOME_BUNDLE = {
    "data": [],
    "train": [],
    "verify": [],
    "mlserver": [],
    "validate": [],
    "serve": [],
    "feedback": [],
    "monitor": [],
    "labelling": [],
    "infer": ["income"],
    "inspect": ["income-production.outputs"],
    "report": [],
    "demo": [],
}
ENTRY_POINTS = {
    **{
        f"income-bundle {command}": ("income_bundle.cli", [command, *positionals])
        for command, positionals in INCOME_BUNDLE.items()
    },
    "monitor": ("income_bundle.monitoring.service", []),
    "dashboard": ("income_bundle.monitoring.dashboard", []),
    "kserve infer": ("income_bundle.kserve.client", ["infer"]),
    "simulated cluster": ("income_bundle_dev.simcluster", []),
    "ansible docs": ("income_bundle_dev.ansible_docs", []),
    "report page": ("income_bundle_dev.report_page", ["drift-report.html"]),
    "gateway benchmark": ("income_bundle_dev.benchmarks.gateway", []),
    "client benchmark": ("income_bundle_dev.benchmarks.mlserver_client", []),
    "serving benchmark": ("income_bundle_dev.benchmarks.serving", []),
    "real seldon benchmark": ("income_bundle_dev.benchmarks.seldon_real", []),
    "seldon core": ("income_bundle_dev.seldon_core", []),
    "seldon mesh": ("income_bundle_dev.seldon_mesh", []),
    "seldon dataflow": ("income_bundle_dev.seldon_dataflow", []),
    "jaeger": ("income_bundle_dev.jaeger", []),
    "test tiers": ("income_bundle_dev.test_tiers", []),
}
# Runnable modules that are no command: their argv is a private protocol, not options.
INTERNAL = {"income_bundle.process": "the guard ServerProcess starts: --lifeline FD -- COMMAND"}
SHARED_HELPER = ROOT / "src" / "income_bundle" / "settings_cli.py"


def run_main(module: str, argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        importlib.import_module(module).main(argv)
    return exited.value.code, capsys.readouterr().err


def settings_models() -> list[type[CommandSettings]]:
    """Every settings model of the entry points (their modules imported)."""
    for module, _ in ENTRY_POINTS.values():
        importlib.import_module(module)
    models, pending = [], [CommandSettings]
    while pending:
        children = pending.pop().__subclasses__()
        models += children
        pending += children
    return models


def test_the_list_here_is_every_subcommand_of_income_bundle():
    from income_bundle.cli import build_parser

    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == set(INCOME_BUNDLE)


def runnable_modules() -> set[str]:
    """Every module of src/ and dev/ that runs as a program: a `__main__` block, or the module
    whose `main` a package's __main__.py or a script in scripts/ calls."""
    found = set()
    for folder in ("src", "dev", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            source = path.read_text()
            if path.name == "__main__.py" or folder == "scripts":
                found.update(re.findall(r"^from (\S+) import main$", source, re.M))
            elif re.search(r'^if __name__ == "__main__":', source, re.M):
                found.add(".".join(path.relative_to(ROOT / folder).with_suffix("").parts))
    return found


def test_every_runnable_module_is_an_entry_point_checked_here():
    listed = {module for module, _ in ENTRY_POINTS.values()}
    assert runnable_modules() - set(INTERNAL) == listed


def test_only_the_shared_helper_builds_argument_parsers():
    imports_argparse = re.compile(r"^\s*(import argparse|from argparse import)", re.M)
    sources = [p for folder in ("src", "dev", "scripts") for p in (ROOT / folder).rglob("*.py")]
    builders = [p for p in sources if imports_argparse.search(p.read_text())]
    assert builders == [SHARED_HELPER]


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_an_unknown_flag_is_refused_in_one_line(name, capsys):
    module, arguments = ENTRY_POINTS[name]
    code, err = run_main(module, [*arguments, "--no-such-flag"], capsys)
    assert code == 2
    assert re.fullmatch(
        r"\S.*: error: unrecognized arguments: --no-such-flag \(see --help\)\n", err
    )


def test_a_bad_value_is_one_line_naming_the_flag_and_the_variable(monkeypatch, capsys):
    code, err = run_main("income_bundle.cli", ["mlserver", "--http-port", "70000"], capsys)
    assert code == 2
    assert err == (
        "income-bundle mlserver: error: --http-port (or INCOME_MLSERVER_HTTP_PORT) '70000': "
        "Input should be less than or equal to 65535 (see --help)\n"
    )
    monkeypatch.setenv("INCOME_MONITOR_PORT", "ninety")
    code, err = run_main("income_bundle.monitoring.service", [], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "--store (or INCOME_MONITOR_STORE) is required" in err
    assert "--port (or INCOME_MONITOR_PORT) 'ninety': Input should be a valid integer" in err


def test_a_check_across_flags_is_one_line(capsys):
    code, err = run_main("income_bundle.cli", ["infer", "income", "--file", "rows.json",
                                                "--scenario", "outliers"], capsys)  # fmt: skip
    assert code == 2
    assert err == "income-bundle infer: error: give --file or --scenario, not both (see --help)\n"


def test_every_settings_model_forbids_unknown_fields_and_has_its_own_variables():
    models = [model for model in settings_models() if model.model_fields]
    assert len(models) >= len(ENTRY_POINTS) - 2  # data and verify have no options
    prefixes, variables = [], []
    for model in models:
        assert model.model_config["extra"] == "forbid", model
        prefix = model.model_config["env_prefix"]
        assert re.fullmatch(r"INCOME_[A-Z_]+_", prefix), model
        prefixes.append(prefix)
        variables += [f"{prefix}{name.upper()}" for name in model.model_fields]
    assert sorted(set(prefixes)) == sorted(prefixes)
    # No variable is read by two commands.
    assert sorted(set(variables)) == sorted(variables)
