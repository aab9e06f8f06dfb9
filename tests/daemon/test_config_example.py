"""config.example.yaml: valid, and it mentions (set or commented) every key of the configuration models."""

from __future__ import annotations

import re
import typing

from pydantic import BaseModel

from adapters.generic_rest import GenericRestSettings
from connector.config import AppConfig, SystemConfig, load_config
from tests.support.paths import REPO

EXAMPLE = REPO / "config.example.yaml"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        out.append(prefix + name)
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        for arg in list(candidates):
            candidates += typing.get_args(arg)
        for sub in candidates:
            if isinstance(sub, type) and issubclass(sub, BaseModel) and sub is not SystemConfig:
                out += _keys(sub, f"{prefix}{name}.")
                break
    return out


def test_example_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.systems["sandbox"].type == "generic_rest"
    assert isinstance(config.adapter_settings("sandbox"), GenericRestSettings)


def test_example_mentions_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    # a key is mentioned when it starts a line, set or commented out ("key:" or "# key:" or "- key:")
    mentioned = set(re.findall(r"^[ \t]*(?:#[ \t]*)?(?:-[ \t]+)?([A-Za-z_][\w]*):", text, re.MULTILINE))
    expected = _keys(AppConfig) + [f"systems.*.{k}" for k in _keys(SystemConfig)]
    expected += [f"systems.*.connection.{k}" for k in _keys(GenericRestSettings)]
    missing = [k for k in expected if k.rsplit(".", 1)[-1] not in mentioned]
    assert not missing, f"config.example.yaml does not mention: {', '.join(missing)}"


def test_check_config_accepts_the_example() -> None:
    from typer.testing import CliRunner

    from connector.cli import app

    result = CliRunner().invoke(app, ["check-config", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def _differences(shown: object, default: object, where: str = "") -> list[str]:
    if isinstance(shown, dict) and isinstance(default, dict) and shown:
        return [d for key, value in shown.items() for d in _differences(value, default.get(key), f"{where}{key}.")]
    return [] if shown == default else [f"{where.rstrip('.')}: example {shown!r}, default {default!r}"]


def test_generic_rest_connection_shows_the_real_defaults() -> None:
    import yaml

    shown = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["systems"]["sandbox"]["connection"]
    defaults = GenericRestSettings.model_validate({"base_url": shown["base_url"]}).model_dump(mode="json")
    assert _differences(shown, defaults) == []
    assert shown["paging"]["style"] == "page"  # the default, safe while routed tickets leave the listing
