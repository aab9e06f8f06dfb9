"""The CLI package: commands are module-level functions, and every command finds its configuration by one rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from connector.cli import app
from connector.cli.config import BUILT_IN, resolve_config
from connector.cli.daemon import check_config_command, status_command
from connector.cli.model import models_list
from connector.config import CONFIG_ENV, ConfigError

runner = CliRunner()


def _commands(group: typer.Typer, prefix: str = "") -> dict[str, object]:
    found = {f"{prefix}{c.name or c.callback.__name__}": c.callback for c in group.registered_commands}
    for sub in group.registered_groups:
        found.update(_commands(sub.typer_instance, f"{prefix}{sub.name} "))
    return found


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and no $HELPDESK_CONNECTOR_CONFIG."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    return tmp_path


def test_every_command_is_a_module_level_function_of_its_area() -> None:
    commands = _commands(app)
    assert {"run", "check-config", "classify", "status", "sandbox", "train", "serve", "demo", "models list"} <= set(
        commands
    )
    for name, callback in commands.items():
        module = __import__(callback.__module__, fromlist=["_"])
        assert callback.__module__.startswith("connector.cli."), name
        assert "<locals>" not in callback.__qualname__, f"{name} is defined inside a function"
        assert getattr(module, callback.__name__) is callback, name


def test_commands_run_as_plain_functions(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = workdir / "site.yaml"
    config.write_text("state_dir: ./state\n", encoding="utf-8")
    check_config_command(config)
    assert capsys.readouterr().out == f"{config}: valid (0 system(s): none)\n"
    status_command(config, as_json=True)
    assert json.loads(capsys.readouterr().out) == []
    models_list(config=config, json_out=True)
    assert json.loads(capsys.readouterr().out) == {"models": []}
    assert (workdir / "state").is_dir()


def test_the_rule_option_then_environment_then_config_yaml_then_defaults(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built_in = resolve_config(None, defaults=True)
    assert built_in.source_path is None and built_in.state_dir == workdir / "var"
    with pytest.raises(ConfigError, match="file not found"):
        resolve_config(None)  # a command that needs a file: ./config.yaml
    (workdir / "config.yaml").write_text("state_dir: ./here\n", encoding="utf-8")
    assert resolve_config(None, defaults=True).state_dir == workdir / "here"
    (workdir / "env.yaml").write_text("state_dir: ./from-env\n", encoding="utf-8")
    monkeypatch.setenv(CONFIG_ENV, "env.yaml")
    assert resolve_config(None, defaults=True).state_dir == workdir / "from-env"
    (workdir / "opt.yaml").write_text("state_dir: ./from-option\n", encoding="utf-8")
    assert resolve_config(Path("opt.yaml"), defaults=True).state_dir == workdir / "from-option"
    with pytest.raises(ConfigError, match="file not found"):
        resolve_config(Path("missing.yaml"), defaults=True)  # a named file must exist
    assert BUILT_IN == "<built-in defaults>"


def test_model_commands_read_config_yaml_of_the_working_directory(workdir: Path) -> None:
    (workdir / "config.yaml").write_text("no_such_key: 1\n", encoding="utf-8")
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 2, result.output
    assert "config.yaml" in result.output and "no_such_key" in result.output


def test_classify_runs_on_built_in_defaults_without_a_configuration(workdir: Path) -> None:
    result = runner.invoke(app, ["classify", "the printer is jammed"])
    # no file needed: it gets as far as loading the (absent) models from ./var
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and "file not found" not in result.output


def test_commands_that_need_a_configuration_still_exit_2_without_one(workdir: Path) -> None:
    for command in (["status"], ["run", "--once"], ["retrain"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert "config.yaml: file not found" in result.output
