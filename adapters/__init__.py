"""Ticket-system adapters behind one interface (:mod:`adapters.base`).

Adapters are imported lazily by their configuration ``type`` so that a
deployment only loads the code of the systems it talks to.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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
