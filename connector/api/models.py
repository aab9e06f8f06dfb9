"""Compatibility import path: the module is :mod:`connector.api.model_admin` (remove once every branch imports it)."""

from __future__ import annotations

from connector.api.model_admin import ACTIVATION_POLICIES, ModelOps, register_and_activate

__all__ = ["ACTIVATION_POLICIES", "ModelOps", "register_and_activate"]
