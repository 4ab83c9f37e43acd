"""Catalog domain errors (the PitrError tree's catalog branch)."""
from __future__ import annotations

from recovery.errors import PitrError


class CatalogError(PitrError):
    """Base of every catalog error."""

    code = "catalog_error"


class CatalogUnavailable(CatalogError):
    """The catalog database cannot be reached or started (the message never holds a password)."""

    code = "catalog_unavailable"


class UnknownInstance(CatalogError):
    code = "unknown_instance"

    def __init__(self, guid: str) -> None:
        super().__init__(f"unknown instance {guid!r}")
        self.guid = guid


class UnknownService(CatalogError):
    """No instance ever held NAME in SPACE (a name held only in another space is unknown too)."""

    code = "unknown_service"

    def __init__(self, space: str, name: str) -> None:
        super().__init__(f"no service instance named {name!r} in space {space!r}")
        self.space = space
        self.name = name


class Conflict(CatalogError):
    """A write lost a race or contradicts the catalog (stale generation/lease, name already held)."""

    code = "conflict"


class NotScanned(CatalogError):
    """The instance's archive layout is not known yet (never scanned successfully)."""

    code = "not_scanned"

    def __init__(self, guid: str) -> None:
        super().__init__(f"instance {guid!r} has not been scanned yet (archive layout unknown)")
        self.guid = guid
