"""Ticket-system adapters behind one interface (:mod:`adapters.base`).

The adapter types and the factory live in :mod:`adapters.registry`.
"""

from __future__ import annotations

from adapters.registry import ADAPTER_TYPES, adapter_class, build_adapter

__all__ = ["ADAPTER_TYPES", "adapter_class", "build_adapter"]
