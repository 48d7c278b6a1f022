"""One way to declare and parse the options of every command the bundle has.

A command's options are a `CommandSettings` model: typed fields with descriptions, each one a
flag (`step_timeout_s` is `--step-timeout-s`, a bool is `--flag`/`--no-flag`), read from the
command line first, then from `<env_prefix><FIELD>` environment variables, then the defaults.
pydantic-settings' `CliSettingsSource` turns the fields into argparse arguments; `command_parser`
and `add_command` build the parsers, `parse_settings` and `settings_of` read the settings back.
Every error, from argparse or from validation, is one line and exits with status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, CliSettingsSource, SettingsConfigDict, SettingsError

__all__ = [
    "CommandParser",
    "CommandSettings",
    "NoOptions",
    "add_command",
    "command_parser",
    "parse_settings",
    "settings_of",
]

SettingsT = TypeVar("SettingsT", bound="CommandSettings")


class CommandSettings(BaseSettings):
    """Base of every command's settings; subclasses set `env_prefix` (e.g. `INCOME_SERVE_`)."""

    model_config = SettingsConfigDict(
        extra="forbid",  # a mistyped setting fails loudly
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,
        cli_show_env_vars=True,  # --help names each flag's environment variable
    )


class NoOptions(CommandSettings):
    """A command without options: only --help."""


class CommandParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line: the usage is one `--help` away."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _attach(parser: CommandParser, settings: type[CommandSettings]) -> None:
    parser.set_defaults(settings_source=CliSettingsSource(settings, root_parser=parser))


def command_parser(prog: str, description: str) -> CommandParser:
    """The root parser of a program with subcommands, each added with `add_command`."""
    return CommandParser(prog=prog, description=description)


def add_command(
    commands: argparse._SubParsersAction,
    name: str,
    settings: type[SettingsT],
    run: Callable[[SettingsT], int],
    help: str,
) -> CommandParser:
    """Subcommand `name`, its flags the fields of `settings`; `run` gets them, parsed."""
    parser = commands.add_parser(name, help=help, description=help)
    _attach(parser, settings)
    parser.set_defaults(run=run)
    return parser


def settings_of(args: argparse.Namespace) -> Any:
    """The settings of the (sub)command `args` were parsed for (an instance of the model given to
    `add_command`): its flags, else the environment, else the defaults. An invalid value ends the
    program with a one-line error."""
    source: CliSettingsSource = args.settings_source
    try:
        return source.settings_cls(_cli_settings_source=source(parsed_args=args))
    except SettingsError as e:
        source.root_parser.error(str(e))
    except ValidationError as e:
        env_prefix = source.settings_cls.model_config.get("env_prefix", "")
        source.root_parser.error("; ".join(_problem(p, env_prefix) for p in e.errors()))


def parse_settings(
    settings: type[SettingsT], argv: Sequence[str] | None, prog: str, description: str | None = None
) -> SettingsT:
    """The settings of a program without subcommands, from `argv` (None: the command line)."""
    parser = CommandParser(prog=prog, description=description or settings.__doc__)
    _attach(parser, settings)
    return settings_of(parser.parse_args(argv))


def _problem(error: ErrorDetails, env_prefix: str) -> str:
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:  # the model's own check, whose message names the flags
        return message
    field = str(error["loc"][0])
    name = f"--{field.replace('_', '-')} (or {env_prefix}{field.upper()})"
    if error["type"] == "missing":
        return f"{name} is required"
    return f"{name} {error['input']!r}: {message}"
