"""Finding and reading archived WAL segments by (timeline, segment number): the adapter the WAL index job and
exact-target planning use to read segments the catalog knows are there (the scan catalogued them).

The catalog stores WAL as runs of segment numbers, not keys (a pgBackRest key carries the SHA-1 of the
content), so the keys are listed: one ``StartAfter`` listing per WAL root from the first wanted segment,
stopping past the last. Read-only, like the scanner.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from recovery.model import Layout, WalKind, WalObject
from recovery.wal import segment_name
from scheduler.layouts import barman as bm
from scheduler.layouts import pgbackrest as pbr
from scheduler.layouts import wale, walg
from scheduler.storage import ObjectStore

Classify = Callable[[str, int], object]


@dataclass(frozen=True, slots=True)
class WalRoot:
    """A listing root of WAL segments: ``rel_key(name)`` is a segment's key below ``prefix`` (without the
    tool's suffixes)."""

    prefix: str
    classify: Classify
    hashed: bool        # keys under a <first 16 hex>/ directory (pgBackRest, barman)

    def rel_key(self, name: str) -> str:
        return f"{name[:16]}/{name}" if self.hashed else name


@dataclass(frozen=True, slots=True)
class SegmentObject:
    timeline: int
    segno: int
    key: str
    size: int


async def wal_roots(store: ObjectStore, layout: Layout, prefix: str, stanza: str | None) -> list[WalRoot]:
    """The WAL listing roots of an archive (pgBackRest: one per archive id, listed)."""
    root = prefix.strip("/")
    root = f"{root}/" if root else ""
    if layout is Layout.PGBACKREST:
        adir = f"{root}archive/{stanza or 'main'}/"
        listing = await store.list_dir(adir)
        ids = sorted(p[len(adir):].rstrip("/") for p in listing.prefixes)
        return [WalRoot(f"{adir}{aid}/", pbr.classify_archive_key, True) for aid in ids]
    if layout is Layout.BARMAN:
        return [WalRoot(f"{root}{stanza or 'main'}/wals/", bm.classify_wal_key, True)]
    mod: Classify = walg.classify_wal_key if layout is Layout.WALG else wale.classify_wal_key
    return [WalRoot(f"{root}wal_005/", mod, False)]


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
