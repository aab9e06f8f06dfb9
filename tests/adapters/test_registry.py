"""The one registry of adapter types and the one factory used by the daemon and the training export."""

from __future__ import annotations

from adapters import ADAPTER_TYPES
from adapters.base import Adapter
from adapters.registry import adapter_class, build_adapter
from adapters.zammad import ZammadAdapter
from connector import daemon
from connector.config import parse_config
from connector.learning import export

CONFIG = {
    "systems": {
        "helpdesk": {
            "type": "zammad",
            "connection": {"base_url": "http://zammad.example", "token": "t"},
            "source": {"queues": ["Incoming"], "states": ["new", "open"]},
        }
    }
}


def test_every_registered_type_names_an_adapter_class() -> None:
    for type_name in ADAPTER_TYPES:
        assert issubclass(adapter_class(type_name), Adapter)


def test_no_second_registry_on_the_classes() -> None:
    for type_name in ADAPTER_TYPES:
        assert not hasattr(adapter_class(type_name), "type_name")


def test_factory_builds_from_the_system_config() -> None:
    config = parse_config(CONFIG)
    adapter = build_adapter("helpdesk", config.systems["helpdesk"])
    assert isinstance(adapter, ZammadAdapter)
    assert adapter.name == "helpdesk"
    assert adapter.source_queues == ["Incoming"]
    assert adapter.source_states == ["new", "open"]


def test_daemon_and_export_use_the_one_factory() -> None:
    config = parse_config(CONFIG)
    for adapter in (daemon.build_adapter(config, "helpdesk"), export.make_adapter(config, "helpdesk")):
        assert isinstance(adapter, ZammadAdapter)
        assert (adapter.name, adapter.source_queues) == ("helpdesk", ["Incoming"])
