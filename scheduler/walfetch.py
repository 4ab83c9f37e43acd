"""Finding and reading archived WAL segments by (timeline, segment number): the adapter the WAL index job and
exact-target planning use to read segments the catalog knows are there (the scan catalogued them).

The catalog stores WAL as runs of segment numbers, not keys (a pgBackRest key carries the SHA-1 of the
content), so the keys are listed: one ``StartAfter`` listing per WAL root from the first wanted segment,
stopping past the last. Read-only, like the scanner.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recovery.model import Layout, WalKind, WalObject
from recovery.wal import segment_name
from scheduler.layouts import spec_of
from scheduler.layouts.spec import WalRoot
from scheduler.storage import ObjectStore


@dataclass(frozen=True, slots=True)
class SegmentObject:
    timeline: int
    segno: int
    key: str
    size: int


async def wal_roots(store: ObjectStore, layout: Layout, prefix: str, stanza: str | None) -> list[WalRoot]:
    """The WAL listing roots of an archive (the layout module's ``wal_roots``; pgBackRest lists its
    archive ids)."""
    root = prefix.strip("/")
    return await spec_of(layout).wal_roots(store, f"{root}/" if root else "", stanza)


async def locate(store: ObjectStore, roots: Sequence[WalRoot], wanted: Sequence[tuple[int, int]],
                 seg_size: int) -> dict[tuple[int, int], SegmentObject]:
    """The object of each wanted (timeline, segno) found under ``roots`` (the first root holding it wins;
    a segment archived twice: the first key listed). Absent ones are left out."""
    want = set(wanted)
    if not want:
        return {}
    lo, hi = min(want), max(want)
    found: dict[tuple[int, int], SegmentObject] = {}
    for root in roots:
        start = root.prefix + root.rel_key(segment_name(lo[0], lo[1], seg_size))
        async for o in store.list_keys(root.prefix, start_after=start):
            c = root.classify(o.key[len(root.prefix):], seg_size)
            if not isinstance(c, WalObject) or c.kind is not WalKind.SEGMENT or c.segno is None:
                continue
            k = (c.timeline, c.segno)
            if k > hi:
                break
            if k in want and k not in found:
                found[k] = SegmentObject(c.timeline, c.segno, o.key, o.size)
                if len(found) == len(want):
                    return found
    return found


__all__ = ["SegmentObject", "WalRoot", "locate", "wal_roots"]
