"""Model management for the API (list, activate, roll back, register a trained run) over :class:`ModelRegistry`.

Errors are the registry's :class:`~connector.model.registry.RegistryError`; its ``code`` picks the HTTP answer.
"""

from __future__ import annotations


from connector.api.schemas import ModelVersionOut
from connector.config import AppConfig
from connector.model.classifier import ModelLoadError
from connector.model.registry import ModelInfo, ModelRegistry, RegistryError
from connector.store.db import Store

def _version_out(info: ModelInfo) -> ModelVersionOut:
    return ModelVersionOut(
        field=info.field,
        version=info.version,
        active=info.active,
        created_at=info.created_at,
        activated_at=info.activated_at,
        base_model=info.base_model,
        metrics=info.as_dict()["metrics"],
    )


class ModelOps:
    def __init__(self, config: AppConfig, store: Store) -> None:
        self.registry = ModelRegistry.from_config(config, store)

    def list(self, field: str | None = None) -> list[ModelVersionOut]:
        return [_version_out(info) for info in self.registry.list(field)]

    def activate(self, version: str, field: str | None) -> dict[str, str]:
        known = [i for i in self.registry.list(field) if i.version == version]
        if not known:
            where = f" for field {field!r}" if field else ""
            raise RegistryError(f"no model version {version!r}{where}", code="not_found")
        try:
            infos = self.registry.activate(version, field=field, reason="activated through the API")
        except ModelLoadError as exc:
            raise RegistryError(f"the model cannot be loaded: {exc}", code="unusable_model") from None
        return {info.field: info.version for info in infos}

    def rollback(self, fields: list[str] | None) -> dict[str, str]:
        changed: dict[str, str] = {}
        try:
            for field in fields or [None]:  # type: ignore[list-item]
                for info in self.registry.rollback(field, reason="rollback through the API"):
                    changed[info.field] = info.version
        except RegistryError as exc:
            raise RegistryError(str(exc), code="conflict") from None
        except ModelLoadError as exc:
            raise RegistryError(f"the earlier model cannot be loaded: {exc}", code="unusable_model") from None
        return changed

