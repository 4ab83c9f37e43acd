"""Names for relation file numbers: what restore drills saw in their clones (``pg_class`` ⨝ ``pg_namespace``).

WAL names relations by file locator (tablespace, database, relation file number), never by name. Each
passed drill records, per database of its clone, relfilenode → (OID, schema, name, kind) as of the clone's
last replayed commit (``as_of``). A change at time T is named from the newest map with ``as_of <= T`` that
holds the file number — so a dropped table is named from a drill before the drop. Pure.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

FIRST_NORMAL_OID = 16384  # FirstNormalObjectId (transam.h): OIDs and file numbers below are the system's


@dataclass(frozen=True, slots=True)
class RelationEntry:
    relfilenode: int
    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind: r table, i index, t TOAST, S sequence, m matview, p/I partitioned

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def system(self) -> bool:
        return self.oid < FIRST_NORMAL_OID


@dataclass(frozen=True, slots=True)
class RelationMap:
    """One database of one drill's clone."""

    database_oid: int
    database_name: str
    as_of: datetime  # the clone's state: its last replayed commit
    entries: tuple[RelationEntry, ...]


@dataclass(frozen=True, slots=True)
class RelationNames:
    """Maps of one instance, for naming; ``lookup`` picks the newest map as of before the change."""

    maps: tuple[RelationMap, ...]  # newest first
    _index: tuple[dict[int, RelationEntry], ...] = ()

    @classmethod
    def of(cls, maps: Iterable[RelationMap]) -> RelationNames:
        ordered = tuple(sorted(maps, key=lambda m: m.as_of, reverse=True))
        return cls(ordered, tuple({e.relfilenode: e for e in m.entries} for m in ordered))

    def lookup(self, database_oid: int, relfilenode: int, at: datetime) -> RelationEntry | None:
        """The entry for ``relfilenode`` in the newest map of ``database_oid`` taken as of ``at`` or before.

        >>> from datetime import UTC
        >>> t = lambda h: datetime(2026, 1, 1, h, tzinfo=UTC)
        >>> old = RelationMap(5, "app", t(8), (RelationEntry(16384, 16384, "public", "orders", "r"),))
        >>> new = RelationMap(5, "app", t(11), (RelationEntry(16384, 16384, "public", "orders_v2", "r"),))
        >>> names = RelationNames.of([old, new])
        >>> names.lookup(5, 16384, t(10)).qualified, names.lookup(5, 16384, t(12)).qualified
        ('public.orders', 'public.orders_v2')
        >>> names.lookup(5, 16384, t(7)) is None, names.lookup(6, 16384, t(12)) is None
        (True, True)
        """
        for m, index in zip(self.maps, self._index, strict=True):
            if m.database_oid == database_oid and m.as_of <= at and relfilenode in index:
                return index[relfilenode]
        return None

    def databases(self) -> dict[int, str]:
        return {m.database_oid: m.database_name for m in reversed(self.maps)}
