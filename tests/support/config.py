"""The one configuration builder of the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connector.config import AppConfig, parse_config


def make_config(tmp_path: Path, *, state: str = "state", validated: bool = True, **sections: Any) -> AppConfig:
    """A configuration with its ``state_dir`` at ``tmp_path / state`` and the given top-level sections
    (``systems=``, ``model=``, ``training=``, ``api=``, ``learning=``, ``daemon=``...).

    ``validated`` (default): checked like a configuration file (:func:`connector.config.parse_config`, which also
    checks the systems' connections); ``validated=False``: only the model's own validation, for systems that
    are never connected to (an adapter factory stands in for them).
    """
    data: dict[str, Any] = {"state_dir": str(tmp_path / state), **sections}
    return parse_config(data) if validated else AppConfig(**data)
