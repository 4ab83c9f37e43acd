"""Plan inputs: each instance's archive snapshot and its windows, for the use cases (plan, coverage,
metrics). The scan cache's tier in a process lives here, in the use-case layer, never in the pure core
(the stored tier, shared by every replica, is :mod:`catalog.scancache`).

A :class:`ProcessScanCache` is owned by whoever keeps one process alive (``serve`` creates one per
application, sized by ``scan_cache_backups``) and passed to the use cases; without one (the CLI's
one-shot commands) every call reads the catalog and computes windows afresh. There is no module state.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg

from catalog import repo, scancache
from recovery.model import ArchiveSnapshot
from recovery.windows import Window, all_windows

PathWindows = Mapping[tuple[int, ...], Sequence[Window]]


def flat_windows(by_path: PathWindows) -> list[Window]:
    """Every window of every timeline path, as one list."""
    return [w for ws in by_path.values() for w in ws]


@dataclass
class _Entry:
    gen: object
    snap: ArchiveSnapshot
    by_path: dict[tuple[int, ...], list[Window]] | None = None
    flat: list[Window] | None = field(default=None)


class ProcessScanCache:
    """Per-process snapshots (and their windows) keyed by instance, valid while the stored generation is.

    Bounded by the number of backups held, not of instances: every cached backup is a few objects the
    cyclic garbage collector must traverse on each full collection, so a cache of millions of objects
    turns into pauses of hundreds of milliseconds. A few thousand backups keep the instances being worked
    on warm; everything else takes the cold path (one catalog snapshot, a few milliseconds).
    """

    def __init__(self, max_backups: int = 20_000) -> None:
        self.max_backups = max_backups
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._held = 0

    @staticmethod
    def _weight(snap: ArchiveSnapshot) -> int:
        return len(snap.backups) + len(snap.runs) + 1

    def get(self, guid: str, gen: object) -> ArchiveSnapshot | None:
        hit = self._entries.get(guid)
        if hit is None or hit.gen != gen:
            return None
        self._entries.move_to_end(guid)
        return hit.snap

    def put(self, guid: str, gen: object, snap: ArchiveSnapshot) -> None:
        self.discard(guid)
        w = self._weight(snap)
        if w > self.max_backups:
            return
        self._entries[guid] = _Entry(gen, snap)
        self._held += w
        while self._held > self.max_backups:
            _, old = self._entries.popitem(last=False)
            self._held -= self._weight(old.snap)

    def discard(self, guid: str) -> None:
        old = self._entries.pop(guid, None)
        if old is not None:
            self._held -= self._weight(old.snap)

    def path_windows(self, guid: str, snap: ArchiveSnapshot) -> dict[tuple[int, ...], list[Window]]:
        """``recovery.windows.all_windows(snap)``, computed once per cached generation."""
        hit = self._entries.get(guid)
        if hit is None or hit.snap is not snap:
            return all_windows(snap)
        if hit.by_path is None:
            hit.by_path = all_windows(snap)
        return hit.by_path

    def windows(self, guid: str, snap: ArchiveSnapshot) -> list[Window]:
        """Every window of the snapshot as one list, computed once per cached generation."""
        hit = self._entries.get(guid)
        if hit is None or hit.snap is not snap:
            return flat_windows(all_windows(snap))
        if hit.flat is None:
            hit.flat = flat_windows(self.path_windows(guid, snap))
        return hit.flat

    def clear(self) -> None:
        self._entries.clear()
        self._held = 0


async def snapshot_of(pool: asyncpg.Pool, guid: str, cache: ProcessScanCache | None = None) -> ArchiveSnapshot:
    """The instance's snapshot; with ``cache``, reused until a scan stores a new generation.

    Only ``save_scan``/``save_edges`` change what a snapshot holds, and they change the snapshot version:
    one cheap query replaces the snapshot's several (a stale hit is impossible; a race only causes a reload).
    """
    if cache is None:
        return await repo.load_snapshot(pool, guid)
    gen = await repo.snapshot_version(pool, guid)
    snap = cache.get(guid, gen)
    if snap is None:
        snap = await repo.load_snapshot(pool, guid)
        cache.put(guid, gen, snap)
    return snap


def windows_of(guid: str, snap: ArchiveSnapshot, cache: ProcessScanCache | None = None) -> list[Window]:
    """All windows of a snapshot obtained from :func:`snapshot_of` (with ``cache``: once per generation)."""
    return cache.windows(guid, snap) if cache is not None else flat_windows(all_windows(snap))


def path_windows_of(guid: str, snap: ArchiveSnapshot,
                    cache: ProcessScanCache | None = None) -> dict[tuple[int, ...], list[Window]]:
    """Windows per timeline path of a snapshot obtained from :func:`snapshot_of`."""
    return cache.path_windows(guid, snap) if cache is not None else all_windows(snap)


async def whole_inputs(pool: asyncpg.Pool, guid: str,
                       cache: ProcessScanCache | None = None) -> tuple[ArchiveSnapshot, PathWindows]:
    """The instance's whole snapshot and its windows per path, the one way a plan gets them: with the
    service's ``cache``, once per generation; without, the instance's scan cache is computed from its
    current scan and stored on the way (the next request finds it, narrowed)."""
    if cache is not None:
        snap = await snapshot_of(pool, guid, cache)
        return snap, path_windows_of(guid, snap, cache)
    d, snap = await scancache.refresh(pool, guid)
    return snap, d.windows
