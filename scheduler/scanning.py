"""What every layout's scan shares (:mod:`scheduler.scan` runs one; each layout module of
:mod:`scheduler.layouts` has its own ``scan``): the scan's accumulator and its result per layout, what
the catalog already knew (:class:`Previous`), and the WAL listing (resume points, late WAL on older
timelines, segment size, timeline history files).
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from catalog.scanresult import ScanIssue, WalConflict
from recovery.errors import ParseError, PitrError
from recovery.model import Backup, Layout, WalKind, WalObject, WalRun, WindowEdge
from recovery.timeline import TimelineSwitch, parse_history
from recovery.wal import DEFAULT_SEG_SIZE, parse_seg_size_from_page, segment_name
from scheduler.layouts.common import ForeignObject, MetaObject, decompress
from scheduler.storage import NotFound, ObjectStore
from scheduler.walscan import RunBuilder

T = TypeVar("T")


class ScanFailed(PitrError):
    """The scan could not complete; the catalog keeps its previous generation."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Previous:
    """What the catalog already holds for the instance (input to an incremental scan)."""

    layout: Layout | None = None
    stanza: str | None = None
    seg_size: int | None = None
    backups: tuple[Backup, ...] = ()
    runs: tuple[WalRun, ...] = ()
    histories: frozenset[int] = frozenset()
    edges: tuple[WindowEdge, ...] = ()
    cursors: dict[str, str] = field(default_factory=dict)
    corrupt: tuple[tuple[int, int], ...] = ()   # (timeline, segno) known corrupt: re-checked by full scans


@dataclass(slots=True)
class Acc:
    """Mutable accumulator for one scan."""

    issues: list[ScanIssue] = field(default_factory=list)
    unknown: int = 0
    histories: dict[int, tuple[TimelineSwitch, ...]] = field(default_factory=dict)
    cursors: dict[str, str] = field(default_factory=dict)
    builder: RunBuilder = field(default_factory=RunBuilder)
    conflicts: list[WalConflict] = field(default_factory=list)
    integrity_ok: bool = True
    listed_histories: set[int] = field(default_factory=set)   # timelines whose .history a full listing holds

    def foreign(self, key: str, reason: str) -> None:
        self.unknown += 1
        if sum(1 for i in self.issues if i.code == "foreign_object") < 20:
            self.issues.append(ScanIssue("foreign_object", key, reason))

    def issue(self, code: str, key: str | None, message: str) -> None:
        self.issues.append(ScanIssue(code, key, message))


@dataclass(frozen=True, slots=True)
class LayoutScan:
    """What one layout's scanner found besides the WAL runs (collected in ``Acc``)."""

    stanza: str | None          # pgBackRest stanza or barman server name; None for WAL-G/WAL-E
    seg_size: int
    backups: tuple[Backup, ...] | None   # None: keep the catalog's (backup.info raced with expire)
    pg_version: int | None
    system_id: int | None


@dataclass(frozen=True, slots=True)
class WalSource:
    """One WAL listing root: ``rel_key(name)`` gives the key (relative to ``prefix``) of a segment name."""

    prefix: str
    classify: Callable[[str, int], object]
    rel_key: Callable[[str], str]


def hash_dir_key(name: str) -> str:
    return f"{name[:16]}/{name}"


def flat_key(name: str) -> str:
    return name


def _wal_cursor_key(prefix: str) -> str:
    return f"wal:{prefix}"


def _tl_cursor_key(prefix: str, tli: int) -> str:
    """Newest segment number seen on an older timeline (its own resume point; see _probe_older_timelines)."""
    return f"wal-tl:{prefix}:{tli}"


HISTORY_MAX = 1 << 20    # a timeline history file: a line per earlier timeline

# Older timelines probed by each incremental scan (the most recent ones; older still wait for the full scan)
MAX_PROBED_TIMELINES = 8


def etag_key(key: str) -> str:
    return f"etag:{key}"


async def single_stanza(store: ObjectStore, base: str, what: str) -> str:
    listing = await store.list_dir(base)
    names = [p[len(base):].rstrip("/") for p in listing.prefixes]
    if len(names) != 1:
        raise ScanFailed("ambiguous_stanza", f"{what} under {base!r}: found {names or 'none'}; pass --stanza")
    return names[0]


# ---------------------------------------------------------------- WAL listing

async def bounded_gather(coros: Sequence[Awaitable[T]], limit: int = 16) -> list[T]:
    """Run ``coros`` at most ``limit`` at a time; results in input order."""
    sem = asyncio.Semaphore(limit)

    async def one(c: Awaitable[T]) -> T:
        async with sem:
            return await c
    return list(await asyncio.gather(*(one(c) for c in coros)))


async def list_wal(store: ObjectStore, src: WalSource, previous: Previous, acc: Acc, full: bool,
                    lookback: int, seg_size: int | None) -> int | None:
    """List one WAL root (from a resume point unless ``full``), feeding runs, histories and issues."""
    ckey = _wal_cursor_key(src.prefix)
    start_after: str | None = None
    if not full and ckey in previous.cursors:
        start_after = previous.cursors[ckey]
    size = seg_size or DEFAULT_SEG_SIZE
    history_keys: list[tuple[int, str]] = []
    newest: tuple[int, int] | None = None
    newest_by_tl: dict[int, int] = {}
    async for o in store.list_keys(src.prefix, start_after=start_after):
        rel = o.key[len(src.prefix):]
        if seg_size is None and _looks_like_segment(rel):
            size = seg_size = await _probe_seg_size(store, o.key, rel) or DEFAULT_SEG_SIZE
        c = src.classify(rel, size)
        if c is None or isinstance(c, MetaObject):
            continue
        if isinstance(c, ForeignObject):
            acc.foreign(o.key, c.reason)
            continue
        assert isinstance(c, WalObject)
        if c.kind is WalKind.SEGMENT and c.segno is not None:
            acc.builder.add(c.timeline, c.segno, o.key, o.last_modified, c.checksum)
            if newest is None or (c.timeline, c.segno) > newest:
                newest = (c.timeline, c.segno)
            if c.segno > newest_by_tl.get(c.timeline, -1):
                newest_by_tl[c.timeline] = c.segno
        elif (c.kind is WalKind.HISTORY and c.timeline not in previous.histories) or (full and c.kind is WalKind.HISTORY):
            history_keys.append((c.timeline, o.key))
            if full:
                acc.listed_histories.add(c.timeline)
    for tli, key in history_keys:
        await read_history(store, tli, key, acc)
    main_tli = newest[0] if newest is not None else _cursor_timeline(start_after)
    await _probe_older_timelines(store, src, previous, acc, full, lookback, size, start_after, main_tli,
                                 newest_by_tl)
    # resume point for the next incremental listing: `lookback` segments before the newest seen
    if newest is None and start_after:
        acc.cursors[ckey] = start_after
    elif newest is not None:
        tli, segno = newest
        resume = max(0, segno - lookback)
        acc.cursors[ckey] = src.prefix + src.rel_key(segment_name(tli, resume, size)) + "~" if resume else ""
        if not acc.cursors[ckey]:
            del acc.cursors[ckey]
    await _probe_missing_histories(store, src, previous, acc, full)
    return seg_size


def _cursor_timeline(start_after: str | None) -> int | None:
    """The timeline the main resume point is on (None: the listing starts at the beginning)."""
    name = (start_after or "").rstrip("~").rsplit("/", 1)[-1][:24]
    if len(name) != 24 or any(ch not in "0123456789ABCDEF" for ch in name):
        return None
    return int(name[:8], 16)


async def _probe_older_timelines(store: ObjectStore, src: WalSource, previous: Previous, acc: Acc, full: bool,
                                 lookback: int, size: int, main_start: str | None, main_tli: int | None,
                                 newest_by_tl: dict[int, int]) -> None:
    """Late WAL on older timelines: an old primary that keeps archiving on timeline 1 after the switch to 2,
    or an async archiver that delivers the last segments of a timeline late.

    Keys sort by timeline, so the main incremental listing, which resumes on the newest timeline, starts
    after every older timeline's keys. Each older timeline therefore keeps its own resume point (the newest
    segment number seen on it) and an incremental scan probes it with one listing request from there,
    stopping at the first key of a later timeline: one request per older timeline (at most
    MAX_PROBED_TIMELINES, the most recent), nothing read unless something new is there. Not when the main
    listing began before that point anyway (a full scan, a short archive): then only the resume points are
    recorded.
    """
    known: dict[int, int] = dict(newest_by_tl)
    marker = _tl_cursor_key(src.prefix, 0)[:-1]
    for k, v in previous.cursors.items():
        if k.startswith(marker) and k[len(marker):].isdigit() and v.isdigit():
            t = int(k[len(marker):])
            known[t] = max(known.get(t, -1), int(v))
    if main_tli is None:
        return
    older = sorted((t for t in known if t < main_tli), reverse=True)[:MAX_PROBED_TIMELINES]
    for tli in older:
        resume = max(0, known[tli] - lookback)
        start = src.prefix + src.rel_key(segment_name(tli, resume, size)) + "~" if resume else None
        # the main listing began at or before this point (a short archive, or a full scan): already listed
        covered = full or main_start is None or (start is not None and main_start <= start)
        if not covered:
            async for o in store.list_keys(src.prefix, start_after=start):
                c = src.classify(o.key[len(src.prefix):], size)
                if not isinstance(c, WalObject):
                    continue
                if c.timeline > tli:
                    break                   # the next timeline's keys: nothing more on this one
                if c.timeline == tli and c.kind is WalKind.SEGMENT and c.segno is not None:
                    acc.builder.add(c.timeline, c.segno, o.key, o.last_modified, c.checksum)
                    known[tli] = max(known[tli], c.segno)
        acc.cursors[_tl_cursor_key(src.prefix, tli)] = str(known[tli])


def _looks_like_segment(rel: str) -> bool:
    base = rel.rsplit("/", 1)[-1]
    return len(base) >= 24 and base[:24].isalnum() and base[8:9] != "."


async def _probe_seg_size(store: ObjectStore, key: str, rel: str) -> int | None:
    """Segment size from the first page header of one archived segment (pgBackRest verify's method)."""
    codec = rel.rsplit(".", 1)[-1] if "." in rel.rsplit("/", 1)[-1] else None
    try:
        data = await store.read(key)
        raw = decompress(data, codec if codec in ("gz", "bz2", "xz", "lz4", "zst", "br", "lzma") else None)
    except (NotFound, ParseError, PitrError):
        return None
    return parse_seg_size_from_page(raw[:64])


async def read_history(store: ObjectStore, tli: int, key: str, acc: Acc) -> None:
    try:
        data = await store.read(key)
        codec = key.rsplit(".", 1)[-1] if not key.endswith(".history") else None
        text = decompress(data, codec, max_size=HISTORY_MAX).decode("utf-8")
        acc.histories[tli] = parse_history(text)
    except NotFound:
        acc.issue("not_found_race", key, "history file vanished after listing")
    except (ParseError, UnicodeDecodeError) as e:
        acc.issue("metadata_error", key, f"unreadable timeline history: {e}")


async def _probe_missing_histories(store: ObjectStore, src: WalSource, previous: Previous, acc: Acc,
                                   full: bool) -> None:
    """Timelines > 1 with segments but no known history: a late .history sorts before the resume point.

    A full scan knows only what its complete listing holds (the catalog's histories may be gone)."""
    known = (acc.listed_histories if full else set(previous.histories)) | set(acc.histories)
    need = sorted({r.timeline for r in acc.builder.runs if r.timeline > 1} - known)
    for tli in need:
        name = f"{tli:08X}.history"
        async for o in store.list_keys(src.prefix + name):
            acc.listed_histories.add(tli)
            await read_history(store, tli, o.key, acc)
            break
        else:
            acc.issue("missing_history", src.prefix + name,
                      f"timeline {tli} has WAL segments but no {name}: its path cannot be followed")
