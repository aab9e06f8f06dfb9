"""The one configuration loader of every command.

The rule: ``--config FILE``, else ``$HELPDESK_CONNECTOR_CONFIG``, else ``./config.yaml``
if present, else the built-in defaults (state in ``./var``) for the commands that
can run on them (``serve``, ``train``, ``evaluate``, ``models``, ``classify``).
A file that is named (by the option or the variable) must exist; the commands
that need a configuration (``run``, ``status``, ``export``…) also need
``./config.yaml`` when nothing names a file.  A configuration error prints
every problem with its key path and exits with status 2.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from connector.config import CONFIG_ENV, AppConfig, ConfigError, load_config, parse_config

EXIT_CONFIG = 2

#: read from the working directory when neither --config nor $HELPDESK_CONNECTOR_CONFIG names a file
DEFAULT_FILE = "config.yaml"

#: the source name of a configuration built from the defaults alone (no file)
BUILT_IN = "<built-in defaults>"

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help=f"configuration file (default: ${CONFIG_ENV} or ./config.yaml)"),
]

DefaultsConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help=f"configuration file (default: ${CONFIG_ENV}, else ./config.yaml, else built-in defaults "
        "with the state in ./var)",
    ),
]


def named_config(option: Path | None) -> Path | None:
    """The file the command line or the environment names, if any."""
    if option is not None:
        return option
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else None


def config_path(option: Path | None) -> Path:
    """The file a command that needs one reads: the named one, else ./config.yaml."""
    return named_config(option) or Path(DEFAULT_FILE)


def built_in_config() -> AppConfig:
    """The built-in defaults, with the state in ./var of the working directory."""
    config = parse_config({}, BUILT_IN)
    config.state_dir = config.state_dir.resolve()
    return config


def resolve_config(option: Path | None, *, defaults: bool = False) -> AppConfig:
    """The configuration by the rule above; ``defaults``: the command runs on the built-in defaults
    when no file is named and ./config.yaml is absent (``source_path`` is then None)."""
    named = named_config(option)
    if named is not None:
        return load_config(named)
    if defaults and not Path(DEFAULT_FILE).is_file():
        return built_in_config()
    return load_config(DEFAULT_FILE)


def print_config_error(exc: ConfigError) -> None:
    """Every problem with its key path, one line each, on stderr."""
    typer.echo(f"{exc.source}: invalid configuration ({len(exc.problems)} problem(s))", err=True)
    for problem in exc.problems:
        typer.echo(f"  {exc.source}: {problem}", err=True)


def echo_config_error(exc: ConfigError) -> None:
    """The error as one message (``invalid configuration in FILE (N problem(s)):`` and the problems)."""
    typer.echo(str(exc), err=True)


def load_or_exit(
    option: Path | None,
    *,
    defaults: bool = False,
    report: Callable[[ConfigError], None] = print_config_error,
) -> AppConfig:
    """:func:`resolve_config`, or report the error and exit with status 2."""
    try:
        return resolve_config(option, defaults=defaults)
    except ConfigError as exc:
        report(exc)
        raise typer.Exit(EXIT_CONFIG) from None
