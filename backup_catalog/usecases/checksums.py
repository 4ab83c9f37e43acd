"""Checksums of a plan's WAL where the tool gives them: pgBackRest names each archived segment
``<segment>-<sha1 of its content>[.<compression>]`` (LAYOUTS.md §12), so a segment whose content is wrong
is found without replaying it: download, decompress per the object's extension, sha1, compare.

Reads only (list, get): the archive is never written.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from backup_catalog.usecases.drill_rules import checksum_matches, plan_segments
from recovery.model import ArchiveSnapshot, WalKind, WalObject
from recovery.plandoc import PlanDoc
from recovery.timeline import TimelinePath
from recovery.wal import WalSegment
from scheduler.layouts.common import DecompressError, decompress
from scheduler.layouts.pgbackrest import classify_archive_key
from scheduler.storage import S3Store


@dataclass(frozen=True, slots=True)
class Mismatch:
    segment: str
    key: str


@dataclass(frozen=True, slots=True)
class ChecksumReport:
    checked: int = 0
    bytes_read: int = 0
    mismatches: tuple[Mismatch, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)   # what could not be verified, and why

    @property
    def first(self) -> Mismatch | None:
        return self.mismatches[0] if self.mismatches else None


def segments_of_plan(plan: PlanDoc, snapshot: ArchiveSnapshot) -> list[str]:
    """The segment names a recovery along the plan's timeline path restores, first..last."""
    s = snapshot.seg_size
    tli = plan.timeline_path[-1]
    path = TimelinePath.build(tli, snapshot.histories.get(tli, ()))
    first = WalSegment.from_name(plan.wal.first_segment or plan.wal.last_segment, s).segno
    last = WalSegment.from_name(plan.wal.last_segment, s).segno
    return plan_segments(path, first, last, s)


async def verify_pgbackrest(client: Any, bucket: str, prefix: str, stanza: str, segments: list[str], seg_size: int,
                            *, concurrency: int = 4) -> ChecksumReport:
    """Check every archived copy of ``segments`` in the pgBackRest repository at ``prefix`` against the
    sha1 in its name. Listing is per ``<timeline+log>`` directory of the needed segments only."""
    store = S3Store(client, bucket)
    p = prefix.strip("/")
    root = f"{p}/archive/{stanza}/" if p else f"archive/{stanza}/"
    wanted = set(segments)
    dirs = sorted({name[:16] for name in segments})
    archive_ids = [pfx[len(root):].rstrip("/") for pfx in (await store.list_dir(root)).prefixes]
    found: dict[str, list[tuple[str, WalObject]]] = defaultdict(list)
    for aid in archive_ids:
        for d in dirs:
            async for o in store.list_keys(f"{root}{aid}/{d}/"):
                w = classify_archive_key(o.key[len(root) + len(aid) + 1:], seg_size)
                if isinstance(w, WalObject) and w.kind is WalKind.SEGMENT and w.name in wanted and w.checksum:
                    found[w.name].append((o.key, w))
    notes = [f"segment {n} is not in the archive (replay will stop there)" for n in segments if n not in found]
    sem = asyncio.Semaphore(max(1, concurrency))
    results: dict[str, tuple[int, list[Mismatch], list[str]]] = {}

    async def one(name: str) -> None:
        bad: list[Mismatch] = []
        unread: list[str] = []
        n = 0
        for key, w in found[name]:
            async with sem:
                data = await store.read(key)
            n += len(data)
            try:
                ok = await asyncio.to_thread(_matches, data, w, seg_size)
            except DecompressError as e:     # an encrypted repository, or damage: named, not a mismatch
                unread.append(f"segment {name} ({key}) not verified: {e}")
                continue
            if not ok:
                bad.append(Mismatch(name, key))
        results[name] = (n, bad, unread)

    await asyncio.gather(*(one(n) for n in segments if n in found))
    mismatches = tuple(m for n in segments if n in results for m in results[n][1])
    notes += [u for n in segments if n in results for u in results[n][2]]
    return ChecksumReport(checked=len(results), bytes_read=sum(r[0] for r in results.values()),
                          mismatches=mismatches, notes=tuple(notes))


def _matches(data: bytes, w: WalObject, seg_size: int) -> bool:
    assert w.checksum is not None
    return checksum_matches(decompress(data, w.compression, max_size=seg_size), w.checksum)
