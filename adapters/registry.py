"""The one registry of adapter types, and the one factory that builds an adapter from a system's configuration.

Adapters are imported lazily by their configuration ``type`` so that a
deployment only loads the code of the systems it talks to.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.base import Adapter

#: configuration ``type`` -> "module:class"
ADAPTER_TYPES: dict[str, str] = {
    "generic_rest": "adapters.generic_rest:GenericRestAdapter",
    "request_tracker": "adapters.request_tracker:RequestTrackerAdapter",
    "otobo": "adapters.otobo_znuny:OtoboZnunyAdapter",
    "znuny": "adapters.otobo_znuny:OtoboZnunyAdapter",
    "zammad": "adapters.zammad:ZammadAdapter",
}


def adapter_class(type_name: str) -> type[Adapter]:
    """The adapter class configured as ``type: <type_name>``; KeyError if unknown."""
    target = ADAPTER_TYPES[type_name]
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


def build_adapter(name: str, system_config: Any) -> Adapter:
    """The adapter of system ``name`` from its validated configuration (``connector.config.SystemConfig``)."""
    cls = adapter_class(system_config.type)
    return cls(
        name,
        system_config.connection,
        source_queues=system_config.source.queues,
        source_states=system_config.source.states,
    )
