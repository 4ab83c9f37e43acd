"""What the read-only use cases need of the settings, as protocols importable without pydantic.

:class:`backup_catalog.settings.Settings` satisfies them; so does :class:`backup_catalog.quick.QuickSettings`,
which the terminal-speed commands (``backups``, ``plan``) build straight from the environment.
"""
from __future__ import annotations

from typing import Protocol


class Secret(Protocol):
    def get_secret_value(self) -> str: ...


class CatalogConfig(Protocol):
    """Where the catalog is (None: the embedded private cluster)."""

    @property
    def catalog_dsn(self) -> Secret | None: ...


class UndoConfig(Protocol):
    """The undo period of deleted instances (DELETED_RETENTION_DAYS, PURGE_GRACE_HOURS)."""

    @property
    def deleted_retention_days(self) -> float: ...

    @property
    def purge_grace_hours(self) -> float: ...


class PlanConfig(CatalogConfig, UndoConfig, Protocol):
    """What planning a clone reads: the S3 endpoint written into the restore command."""

    @property
    def s3_endpoint_url(self) -> str | None: ...
