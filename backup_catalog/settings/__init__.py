"""The product's settings, in one place: :class:`Settings` (pydantic-settings, read from the environment,
:mod:`.model`; names as in DESIGN.md), ``NAME_FILE`` secrets (:mod:`.files`), and the narrow protocols the
use cases declare they read.

Importing this package costs nothing: ``Settings`` and ``load_settings`` are loaded (with pydantic) on first
use, so a module that only names the protocols (or ``Settings`` in annotations) loads no pydantic. The
adapters below the use cases (catalog/, scheduler/, executor/) declare their own small config protocols and
never import this package.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from recovery.config import Secret

if TYPE_CHECKING:
    from backup_catalog.settings.model import DEFAULT_BROKER, DEFAULT_OPERATOR, Settings, load_settings

_LAZY = frozenset({"Settings", "load_settings", "DEFAULT_BROKER", "DEFAULT_OPERATOR", "FileSettingsSource"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        # pydantic is loaded by the first use of Settings, not by importing the package
        from backup_catalog.settings import model
        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_BROKER", "DEFAULT_OPERATOR", "CatalogConfig", "PlanConfig", "Secret", "Settings", "UndoConfig",
           "load_settings"]


# -- what the use cases read (Settings satisfies every one) ------------------------------------------


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
