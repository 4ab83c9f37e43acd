"""Plan inputs: each instance's archive snapshot and its windows, cached per process while the stored
generation is current (the one place the service keeps state between requests)."""
from __future__ import annotations

from collections import OrderedDict

import asyncpg

from catalog import repo
from recovery.model import ArchiveSnapshot
from recovery.windows import Window
from recovery.windows import all_windows as windows_by_path


def flat_windows(snap: ArchiveSnapshot) -> list[Window]:
    """Every window of every timeline path, as one list."""
    return [w for ws in windows_by_path(snap).values() for w in ws]


class SnapshotCache:
    """Per-process snapshots (and their windows) keyed by instance, valid while the stored generation is.

    Bounded by the number of backups held, not of instances: every cached backup is a few objects the
    cyclic garbage collector must traverse on each full collection, so a cache of millions of objects
    turns into pauses of hundreds of milliseconds. A few thousand backups keep the instances being worked
    on warm; everything else takes the cold path (one catalog snapshot, a few milliseconds).
    """

    def __init__(self, max_backups: int = 20_000) -> None:
        self.max_backups = max_backups
        self._entries: OrderedDict[str, tuple[object, ArchiveSnapshot, list[Window] | None]] = OrderedDict()
        self._held = 0

    @staticmethod
    def _weight(snap: ArchiveSnapshot) -> int:
        return len(snap.backups) + len(snap.runs) + 1

    def get(self, guid: str, gen: object) -> ArchiveSnapshot | None:
        hit = self._entries.get(guid)
        if hit is None or hit[0] != gen:
            return None
        self._entries.move_to_end(guid)
        return hit[1]

    def put(self, guid: str, gen: object, snap: ArchiveSnapshot) -> None:
        self.discard(guid)
        w = self._weight(snap)
        if w > self.max_backups:
            return
        self._entries[guid] = (gen, snap, None)
        self._held += w
        while self._held > self.max_backups:
            _, (_, old, _) = self._entries.popitem(last=False)
            self._held -= self._weight(old)

    def discard(self, guid: str) -> None:
        old = self._entries.pop(guid, None)
        if old is not None:
            self._held -= self._weight(old[1])

    def windows(self, guid: str, snap: ArchiveSnapshot) -> list[Window]:
        hit = self._entries.get(guid)
        if hit is None or hit[1] is not snap:
            return flat_windows(snap)
        if hit[2] is None:
            self._entries[guid] = (hit[0], snap, flat_windows(snap))
        return self._entries[guid][2] or []

    def clear(self) -> None:
        self._entries.clear()
        self._held = 0


SNAPSHOTS = SnapshotCache()


async def snapshot_of(pool: asyncpg.Pool, guid: str) -> ArchiveSnapshot:
    """The instance's snapshot, cached per process until a scan stores a new generation.

    Only ``save_scan``/``save_edges`` change what a snapshot holds, and they change the snapshot version:
    one cheap query replaces the snapshot's several (a stale hit is impossible; a race only causes a reload).
    """
    gen = await repo.snapshot_version(pool, guid)
    snap = SNAPSHOTS.get(guid, gen)
    if snap is None:
        snap = await repo.load_snapshot(pool, guid)
        SNAPSHOTS.put(guid, gen, snap)
    return snap


def windows_of(guid: str, snap: ArchiveSnapshot) -> list[Window]:
    """All windows of a snapshot obtained from :func:`snapshot_of`, computed once per generation."""
    return SNAPSHOTS.windows(guid, snap)


