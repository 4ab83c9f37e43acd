"""Scan one instance's archive prefix into a ScanResult (incremental by default, ``full`` reconciles).

Per layout: read the small metadata (never backup payload), list WAL with StartAfter from a resume point
``lookback`` segments before the newest known segment, build merged runs while streaming, read new
timeline history files, and decode the commit timestamps of segments at window edges.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TypeVar

from catalog.scanresult import ScanIssue, ScanResult, WalConflict, WalMode
from recovery.errors import ParseError, PitrError
from recovery.model import Backup, BackupStatus, BackupType, Layout, Storage, WalKind, WalObject, WalRun, WindowEdge
from recovery.timeline import TimelineSwitch, parse_history
from recovery.wal import DEFAULT_SEG_SIZE, merge_runs, parse_seg_size_from_page, segment_name
from scheduler import edges as edge_mod
from scheduler.edges import SegmentChecks, read_segment
from scheduler.layouts import barman as bm
from scheduler.layouts import pgbackrest as pbr
from scheduler.layouts import wale, walg
from scheduler.layouts.common import ForeignObject, MetaObject, UnknownLayout, decompress
from scheduler.layouts.detect import detect_layout, guess_walg_or_wale
from scheduler.storage import NotFound, ObjectInfo, ObjectStore, StorageError
from scheduler.walscan import RunBuilder, RunTail

log = logging.getLogger(__name__)
T = TypeVar("T")
InfoT = TypeVar("InfoT")   # what an info-file parser returns


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
class _Acc:
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
    """What one layout's scanner found besides the WAL runs (collected in ``_Acc``)."""

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


def _hash_dir_key(name: str) -> str:
    return f"{name[:16]}/{name}"


def _flat_key(name: str) -> str:
    return name


def _wal_cursor_key(prefix: str) -> str:
    return f"wal:{prefix}"


def _tl_cursor_key(prefix: str, tli: int) -> str:
    """Newest segment number seen on an older timeline (its own resume point; see _probe_older_timelines)."""
    return f"wal-tl:{prefix}:{tli}"


HISTORY_MAX = 1 << 20    # a timeline history file: a line per earlier timeline

# Older timelines probed by each incremental scan (the most recent ones; older still wait for the full scan)
MAX_PROBED_TIMELINES = 8


def _etag_key(key: str) -> str:
    return f"etag:{key}"


async def scan_archive(store: ObjectStore, storage: Storage, previous: Previous, *, full: bool,
                       lookback: int = 32, now: datetime | None = None) -> ScanResult:
    """Scan one archive. Raises ScanFailed (storage unreachable, unknown prefix, …); never partial results."""
    started = now or datetime.now(timezone.utc)
    root = storage.normalized_prefix()
    acc = _Acc()
    acc.builder.watch = frozenset(previous.corrupt) if full else frozenset()   # incremental scans keep them
    if not full:
        acc.cursors.update({k: v for k, v in previous.cursors.items() if k.startswith("etag:")})
    try:
        layout = await _layout(store, storage, previous, root)
        if layout is Layout.PGBACKREST:
            res = await _scan_pgbackrest(store, storage, previous, root, acc, full, lookback)
        elif layout is Layout.BARMAN:
            res = await _scan_barman(store, storage, previous, root, acc, full, lookback)
        else:
            res = await _scan_walg_wale(store, layout, previous, root, acc, full, lookback)
        await _check_duplicates(store, layout, acc)
    except StorageError as e:
        raise ScanFailed(e.code, str(e)) from None
    stanza, seg_size, backups, pg_version, system_id = (res.stanza, res.seg_size, res.backups, res.pg_version,
                                                        res.system_id)
    runs = acc.builder.wal_runs()
    mode = WalMode.REPLACE if full else WalMode.MERGE
    all_runs = runs if full else merge_runs((*previous.runs, *runs))
    # a full reconcile re-reads every run end (objects may have been replaced); incremental reuses known edges.
    # Segments read are checked against their names and the archive's system identifiers.
    system_ids = {b.system_id for b in (backups if backups is not None else previous.backups) if b.system_id}
    checks = SegmentChecks(layout, frozenset(system_ids | ({system_id} if system_id else set())))
    found = await edge_mod.decode_edges(store, acc.builder.runs, all_runs, () if full else previous.edges,
                                        seg_size, acc.issues, checks=checks,
                                        recheck={k: v for k, v in acc.builder.watched.items() if k in acc.builder.watch},
                                        blocked={(c.timeline, c.segno): acc.builder.watched[(c.timeline, c.segno)]
                                                 for c in acc.conflicts if (c.timeline, c.segno) in acc.builder.watched})
    edges = tuple({(e.timeline, e.segno): e for e in found.edges}.values())
    # a segment with several copies: the edge reader judged one copy; the conflict is what blocks restores
    bad = {(c.timeline, c.segno): c.detail for c in found.corrupt}
    conflicts = tuple(replace(c, detail=f"{c.detail}; one copy is not the segment its name says: "
                                        f"{bad[(c.timeline, c.segno)]}")
                      if (c.timeline, c.segno) in bad else c for c in acc.conflicts)
    corrupt = tuple(c for c in found.corrupt if (c.timeline, c.segno) not in {(x.timeline, x.segno)
                                                                               for x in acc.conflicts})
    return ScanResult(
        layout=layout, full=full, started_at=started, finished_at=datetime.now(timezone.utc), stanza=stanza,
        seg_size=seg_size, pg_version=pg_version, system_id=system_id, backups=backups,
        histories=acc.histories, listed_histories=frozenset(acc.listed_histories) if full else None,
        wal_mode=mode, wal_runs=runs, conflicts=conflicts, corrupt=corrupt, edges=edges,
        cursors=acc.cursors, unknown_objects=acc.unknown, issues=tuple(acc.issues),
        requests=store.requests, integrity_ok=acc.integrity_ok)


async def _layout(store: ObjectStore, storage: Storage, previous: Previous, root: str) -> Layout:
    if storage.layout and storage.layout != "auto":
        return Layout(storage.layout)
    if previous.layout:
        return previous.layout
    listing = await store.list_dir(root)
    entries = {p[len(root):] for p in listing.prefixes} | {o.key[len(root):] for o in listing.objects}
    if not entries:
        raise ScanFailed("empty_prefix", f"nothing found under s3://{getattr(store, 'bucket', '?')}/{root}: "
                         "is the prefix right?")
    try:
        layout = detect_layout(entries)
    except UnknownLayout as e:
        raise ScanFailed(getattr(e, "code", "unknown_layout"),
                         f"s3://{getattr(store, 'bucket', '?')}/{root}: {e}; pass --layout") from None
    return layout or await _walg_or_wale(store, root)


async def _walg_or_wale(store: ObjectStore, root: str) -> Layout:
    """Tell WAL-G from WAL-E by one sentinel's fields, sentinel names, or WAL suffixes."""
    listing = await store.list_dir(root + "basebackups_005/")
    sentinels = [o.key for o in listing.objects if o.key.endswith("_backup_stop_sentinel.json")]
    data = None
    if sentinels:
        try:
            data = await store.read(sentinels[0])
        except NotFound:
            pass
    sample: list[str] = []
    async for o in store.list_keys(root + "wal_005/"):
        sample.append(o.key)
        if len(sample) >= 20:
            break
    return guess_walg_or_wale(sample, data, sentinels)


async def _single_stanza(store: ObjectStore, base: str, what: str) -> str:
    listing = await store.list_dir(base)
    names = [p[len(base):].rstrip("/") for p in listing.prefixes]
    if len(names) != 1:
        raise ScanFailed("ambiguous_stanza", f"{what} under {base!r}: found {names or 'none'}; pass --stanza")
    return names[0]


# ---------------------------------------------------------------- pgBackRest

async def _read_info(store: ObjectStore, key: str, parse: Callable[[str, str], InfoT], acc: _Acc,
                     listed: set[str] | frozenset[str] = frozenset()) -> tuple[InfoT | None, bool]:
    """Load a pgBackRest info file, falling back to ``.copy`` (pgBackRest's own rule).

    Returns (info, raced). A file in ``listed`` (the directory listing just made) that is gone at GET is a race
    with expire/retention (``not_found_race``), not corruption: when no copy could be loaded because of such a
    race, the result is (None, True) and no ``integrity_error`` is recorded. The caller keeps what the catalog
    knew; only a complete listing that lacks both files makes the stanza invalid.
    """
    results: list[InfoT | None] = []
    raws: list[bytes | None] = []
    errors: list[str] = []
    raced: list[str] = []
    for k in (key, key + ".copy"):
        try:
            data = await store.read(k)
        except NotFound:
            if k in listed:
                raced.append(k)
                acc.issue("not_found_race", k, "info file listed, then gone before it was read (expire or "
                          "retention running during the scan)")
            else:
                errors.append(f"{k}: missing")
            results.append(None)
            raws.append(None)
            continue
        raws.append(data)
        try:
            text = data.decode("utf-8")
            info = parse(text, k)
        except (ParseError, UnicodeDecodeError) as e:
            errors.append(f"{k}: {e}")
            results.append(None)
            if getattr(e, "code", "") == "format_error":
                acc.issue("format_error", k, str(e))
            continue
        if not getattr(info, "checksum_ok", True):
            errors.append(f"{k}: checksum mismatch")
            results.append(None)
            continue
        results.append(info)
    main, copy = results
    if main is not None:
        if copy is None and key + ".copy" not in raced:
            acc.issue("integrity_warning", key + ".copy", "; ".join(errors) or "copy unusable")
        elif copy is not None and raws[0] != raws[1]:
            acc.issue("integrity_warning", key, "info file and its .copy differ")
        return main, False
    if copy is not None:
        if key not in raced:
            acc.issue("integrity_warning", key, f"main info file unusable ({'; '.join(errors)}); using .copy")
        return copy, False
    if raced:
        if errors:      # the other file is unusable on its own account: say so, but it proves nothing yet
            acc.issue("integrity_warning", key, "; ".join(errors) + "; the other copy vanished after listing")
        return None, True
    acc.integrity_ok = False
    acc.issue("integrity_error", key, "; ".join(errors))
    return None, False


async def _scan_pgbackrest(store: ObjectStore, storage: Storage, previous: Previous, root: str, acc: _Acc,
                           full: bool, lookback: int) -> LayoutScan:
    stanza = storage.stanza or previous.stanza or await _single_stanza(store, root + "archive/", "pgBackRest stanzas")
    bdir = f"{root}backup/{stanza}/"
    blist = await store.list_dir(bdir)
    objs = {o.key: o for o in blist.objects}
    if not blist.objects and not blist.prefixes:
        raise ScanFailed("unknown_prefix", f"no pgBackRest stanza {stanza!r} under {root or '/'}")
    info_key = bdir + "backup.info"
    backups: tuple[Backup, ...] | None = previous.backups or None
    pg_version = system_id = None
    etag = objs[info_key].etag if info_key in objs else None
    if full or backups is None or etag is None or acc.cursors.get(_etag_key(info_key)) != etag:
        info, _raced = await _read_info(store, info_key, pbr.parse_backup_info, acc, set(objs))
        if info is not None:
            backups = tuple(info.backups)
            pg_version, system_id = info.pg_version, info.system_id
            if etag:
                acc.cursors[_etag_key(info_key)] = etag
        else:
            # unreadable (integrity_error), or listed and gone at GET (not_found_race): either way the scan
            # does not re-state the backup set (None), so the catalog keeps the set it had
            backups = None
            acc.cursors.pop(_etag_key(info_key), None)
    # backup directories not (yet) in backup.info: in progress, aborted, or crashed before registration
    known = {b.label for b in backups or ()}
    extra: list[Backup] = []
    for p in blist.prefixes:
        name = p[len(bdir):].rstrip("/")
        kind = pbr.classify_backup_root_entry(name + "/")
        if isinstance(kind, ForeignObject):
            acc.foreign(p, kind.reason)
            continue
        if kind.kind != pbr.KIND_BACKUP_DIR or name in known or backups is None:
            continue
        extra.append(await _pgbackrest_unregistered(store, p, name, acc))
    for o in blist.objects:
        c = pbr.classify_backup_root_entry(o.key[len(bdir):])
        if isinstance(c, ForeignObject):
            acc.foreign(o.key, c.reason)
    if backups is not None:
        backups = tuple(backups) + tuple(extra)
    # archive ids: list archive/<stanza>/ (archive.info ETag + id directories)
    adir = f"{root}archive/{stanza}/"
    alist = await store.list_dir(adir)
    ainfo_key = adir + "archive.info"
    ids = sorted(p[len(adir):].rstrip("/") for p in alist.prefixes)
    aobj = next((o for o in alist.objects if o.key == ainfo_key), None)
    if aobj is None:
        acc.issue("integrity_warning", ainfo_key, "archive.info missing; using the archive id directories found")
    elif full or acc.cursors.get(_etag_key(ainfo_key)) != aobj.etag:
        # a race (listed, gone at GET) leaves the archive id directories found, like a missing archive.info
        ainfo, _raced = await _read_info(store, ainfo_key, pbr.parse_archive_info, acc,
                                         {o.key for o in alist.objects})
        if ainfo is not None:
            acc.cursors[_etag_key(ainfo_key)] = aobj.etag
            listed = set(ids)
            ids = [i for i in ainfo.archive_ids if i in listed] + sorted(listed - set(ainfo.archive_ids))
            system_id = system_id or ainfo.system_id
    seg_size = previous.seg_size
    for aid in ids:
        src = WalSource(f"{adir}{aid}/", pbr.classify_archive_key, _hash_dir_key)
        seg_size = await _list_wal(store, src, previous, acc, full, lookback, seg_size)
    return LayoutScan(stanza, seg_size or DEFAULT_SEG_SIZE, backups, pg_version, system_id)


async def _pgbackrest_unregistered(store: ObjectStore, prefix: str, label: str, acc: _Acc) -> Backup:
    for name, status in (("backup.manifest", BackupStatus.DONE), ("backup.manifest.copy", BackupStatus.RUNNING)):
        try:
            text = (await store.read(prefix + name)).decode("utf-8", "replace")
            b = pbr.parse_manifest_header(text, prefix + name)
        except NotFound:
            continue
        except ParseError as e:
            acc.issue("metadata_error", prefix + name, str(e))
            continue
        # a manifest without a backup.info entry: crashed before registration, or still running.
        # Never offered for restore until pgBackRest registers it.
        note = "not in backup.info (crashed before registration?)" if status is BackupStatus.DONE else "in progress or aborted"
        return replace(b, status=BackupStatus.RUNNING, error=note)
    kind = pbr.label_type(label) or BackupType.FULL   # callers pass labels (pbr.is_label)
    return Backup(label=label, type=kind, status=BackupStatus.RUNNING, timeline=None, start_lsn=None,
                  stop_lsn=None, start_time=None, stop_time=None, error="backup directory without manifest")


# ---------------------------------------------------------------- barman-cloud

async def _scan_barman(store: ObjectStore, storage: Storage, previous: Previous, root: str, acc: _Acc,
                       full: bool, lookback: int) -> LayoutScan:
    server = storage.stanza or previous.stanza or await _single_stanza(store, root, "barman-cloud servers")
    sdir = f"{root}{server}/"
    base = f"{sdir}base/"
    # one flat listing of base/ (a few objects per backup: backup.info, data*.tar*, annotations) tells which
    # backup directories hold a backup.info, so a 404 on a listed one is a race, not an in-progress backup
    dirs: dict[str, bool] = {}
    async for o in store.list_keys(base):
        rel = o.key[len(base):]
        if "/" not in rel:
            acc.foreign(o.key, "unexpected object in base/")
            continue
        bid, rest = rel.split("/", 1)
        dirs[bid] = dirs.get(bid, False) or rest == "backup.info"
    prev = {b.label: b for b in previous.backups}
    seg_size = previous.seg_size or next((b.seg_size for b in previous.backups if b.seg_size), None)

    async def read_info(bid: str, listed: bool) -> Backup | None:
        key = f"{base}{bid}/backup.info"
        old = prev.get(bid)
        if not listed:   # the listing is complete: no backup.info (yet)
            return Backup(label=bid, type=BackupType.FULL, status=BackupStatus.RUNNING, timeline=None, start_lsn=None,
                          stop_lsn=None, start_time=None, stop_time=None, error="no backup.info: in progress or crashed")
        if old is not None and not full and old.status is not BackupStatus.RUNNING:
            return old       # DONE/FAILED backup.info files are final
        try:
            text = (await store.read(key)).decode("utf-8", "replace")
            return bm.parse_backup_info(text, bid, key)
        except NotFound:   # listed a moment ago: a race with retention. Keep what we knew; only a complete
            acc.issue("not_found_race", key, "backup.info vanished after listing")   # listing lacking it deletes
            return old
        except ParseError as e:
            acc.issue("metadata_error", key, str(e))
            return Backup(label=bid, type=BackupType.FULL, status=BackupStatus.FAILED, timeline=None, start_lsn=None,
                          stop_lsn=None, start_time=None, stop_time=None, error=f"unreadable backup.info: {e}")

    src = WalSource(f"{sdir}wals/", bm.classify_wal_key, _hash_dir_key)
    # metadata reads and the WAL listing overlap: a scan costs about the longer of the two, not their sum
    reads: list[Awaitable[Backup | None]] = [read_info(bid, has) for bid, has in dirs.items()]
    found, seg_size = await asyncio.gather(_bounded_gather(reads),
                                           _list_wal(store, src, previous, acc, full, lookback, seg_size))
    backups = [b for b in found if b is not None]
    pg_version = next((b.pg_version for b in reversed(backups) if b.pg_version), None)
    system_id = next((b.system_id for b in reversed(backups) if b.system_id), None)
    seg_size = seg_size or next((b.seg_size for b in backups if b.seg_size), None)
    return LayoutScan(server, seg_size or DEFAULT_SEG_SIZE, tuple(backups), pg_version, system_id)


# ---------------------------------------------------------------- WAL-G / WAL-E

async def _scan_walg_wale(store: ObjectStore, layout: Layout, previous: Previous, root: str, acc: _Acc,
                          full: bool, lookback: int) -> LayoutScan:
    mod = walg if layout is Layout.WALG else wale
    bdir = f"{root}basebackups_005/"
    blist = await store.list_dir(bdir)
    prev = {b.metadata_key: b for b in previous.backups if b.metadata_key}
    with_sentinel: set[str] = set()

    async def read_sentinel(o: ObjectInfo, label: str) -> Backup | None:
        ek = _etag_key(o.key)
        old = prev.get(o.key)
        if old is not None and not full and acc.cursors.get(ek) == o.etag:
            return old
        try:
            b: Backup = mod.parse_sentinel(await store.read(o.key), label, o.key)
        except NotFound:   # listed a moment ago: a race with retention. Keep what we knew; only a complete
            acc.issue("not_found_race", o.key, "sentinel vanished after listing")   # listing lacking it deletes
            return old
        except ParseError as e:
            acc.issue("metadata_error", o.key, str(e))
            b = Backup(label=label, type=BackupType.FULL, status=BackupStatus.FAILED, timeline=None, start_lsn=None,
                       stop_lsn=None, start_time=None, stop_time=None, error=f"unreadable sentinel: {e}", metadata_key=o.key)
        if b.stop_time is None:
            b = replace(b, stop_time=o.last_modified, stop_time_exact=False)
        acc.cursors[ek] = o.etag
        return replace(b, metadata_key=o.key)

    reads = []
    for o in blist.objects:
        name = o.key[len(bdir):]
        if not name.endswith("_backup_stop_sentinel.json"):
            acc.foreign(o.key, "unexpected object in basebackups_005/")
            continue
        label = name[: -len("_backup_stop_sentinel.json")]
        with_sentinel.add(label)
        reads.append(read_sentinel(o, label))
    src = WalSource(f"{root}wal_005/", mod.classify_wal_key, _flat_key)
    # sentinel reads and the WAL listing overlap: a scan costs about the longer of the two, not their sum
    found, seg_size = await asyncio.gather(
        _bounded_gather(reads), _list_wal(store, src, previous, acc, full, lookback, previous.seg_size or DEFAULT_SEG_SIZE))
    backups = [b for b in found if b is not None]
    for p in blist.prefixes:
        label = p[len(bdir):].rstrip("/")
        if label not in with_sentinel:
            backups.append(Backup(label=label, type=BackupType.FULL, status=BackupStatus.RUNNING, timeline=None,
                                  start_lsn=None, stop_lsn=None, start_time=None, stop_time=None,
                                  error="no stop sentinel: in progress, failed or abandoned"))
    pg_version = next((b.pg_version for b in backups if b.pg_version), None)
    system_id = next((b.system_id for b in backups if b.system_id), None)
    return LayoutScan(None, seg_size or DEFAULT_SEG_SIZE, tuple(backups), pg_version, system_id)


# ---------------------------------------------------------------- WAL listing

async def _bounded_gather(coros: Sequence[Awaitable[T]], limit: int = 16) -> list[T]:
    """Run ``coros`` at most ``limit`` at a time; results in input order."""
    sem = asyncio.Semaphore(limit)

    async def one(c: Awaitable[T]) -> T:
        async with sem:
            return await c
    return list(await asyncio.gather(*(one(c) for c in coros)))


async def _list_wal(store: ObjectStore, src: WalSource, previous: Previous, acc: _Acc, full: bool,
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
        await _read_history(store, tli, key, acc)
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


async def _probe_older_timelines(store: ObjectStore, src: WalSource, previous: Previous, acc: _Acc, full: bool,
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


async def _read_history(store: ObjectStore, tli: int, key: str, acc: _Acc) -> None:
    try:
        data = await store.read(key)
        codec = key.rsplit(".", 1)[-1] if not key.endswith(".history") else None
        text = decompress(data, codec, max_size=HISTORY_MAX).decode("utf-8")
        acc.histories[tli] = parse_history(text)
    except NotFound:
        acc.issue("not_found_race", key, "history file vanished after listing")
    except (ParseError, UnicodeDecodeError) as e:
        acc.issue("metadata_error", key, f"unreadable timeline history: {e}")


async def _probe_missing_histories(store: ObjectStore, src: WalSource, previous: Previous, acc: _Acc,
                                   full: bool) -> None:
    """Timelines > 1 with segments but no known history: a late .history sorts before the resume point.

    A full scan knows only what its complete listing holds (the catalog's histories may be gone)."""
    known = (acc.listed_histories if full else set(previous.histories)) | set(acc.histories)
    need = sorted({r.timeline for r in acc.builder.runs if r.timeline > 1} - known)
    for tli in need:
        name = f"{tli:08X}.history"
        async for o in store.list_keys(src.prefix + name):
            acc.listed_histories.add(tli)
            await _read_history(store, tli, o.key, acc)
            break
        else:
            acc.issue("missing_history", src.prefix + name,
                      f"timeline {tli} has WAL segments but no {name}: its path cannot be followed")


async def _check_duplicates(store: ObjectStore, layout: Layout, acc: _Acc) -> None:
    """Compare the copies of every segment listed twice; different content is a ``wal_conflict``.

    A copy that 404s was listed a moment ago: a race with retention or cleanup (``not_found_race``), never a
    conflict (that would block planning through the segment on no evidence). The surviving copy is the
    segment: run ends that pointed at the vanished key now point at it (their commit times are read from it).
    """
    vanished: set[str] = set()
    stand_in: dict[str, str] = {}     # a vanished first copy -> the copy that stands for it (a third copy
    for tli, segno, first, b in acc.builder.duplicates:   # was recorded against the first one)
        a = stand_in.get(first, first)
        detail = await _compare_duplicates(store, layout, a, b, vanished, acc)
        if detail:
            acc.conflicts.append(WalConflict(tli, segno, detail))
        for gone, survivor in ((a, b), (b, a)):
            if gone in vanished and survivor not in vanished:
                acc.builder.replace_key(gone, survivor)
                stand_in[gone] = survivor


async def _compare_duplicates(store: ObjectStore, layout: Layout, a: str, b: str, vanished: set[str],
                              acc: _Acc) -> str | None:
    """Two objects for one segment: identical content is fine, different content is a conflict.

    pgBackRest is stricter, and its rule is the one that counts at restore: archive-get matches every
    ``<segment>-<sha1>`` object and refuses a segment with two checksums, whatever the bytes ("ERROR [045]:
    duplicates found for WAL segment"), while one checksum under two compressions restores (checked with
    pgBackRest 2.45). barman-cloud-wal-restore fetches one of the copies without comparing them, so only
    differing content matters there (WAL-G and WAL-E likewise fetch one copy).
    """
    pgbackrest_dup = False
    if layout is Layout.PGBACKREST:
        ha, hb = (k.rsplit("/", 1)[-1][25:65] for k in (a, b))
        if ha == hb:             # the name carries the SHA-1 of the content (other compression only)
            return None
        pgbackrest_dup = True
    if a in vanished or b in vanished:
        return None
    got = await asyncio.gather(read_segment(store, a), read_segment(store, b), return_exceptions=True)
    for k, r in zip((a, b), got):
        if isinstance(r, NotFound):
            vanished.add(k)
            acc.issue("not_found_race", k, "duplicate copy of a segment vanished after listing, while the copies "
                      "were compared: the other copy is the segment")
    if a in vanished or b in vanished:
        return None
    for r in got:                # storage trouble (after retries) fails the scan, like anywhere else
        if isinstance(r, StorageError):
            raise r
    for r in got:
        if isinstance(r, BaseException) and not isinstance(r, Exception):
            raise r
    if pgbackrest_dup:
        same = "identical" if got[0] == got[1] and not isinstance(got[0], Exception) else "different"
        return (f"two copies with different checksums for one segment ({same} content): {a} and {b}; "
                "pgBackRest's archive-get refuses it ('duplicates found for WAL segment')")
    for r in got:
        if isinstance(r, Exception):
            return f"duplicate objects {a} and {b} could not be compared: {r}"   # e.g. an undecodable copy
    if got[0] == got[1]:
        return None
    return f"two objects with different content for one segment: {a} and {b}"


__all__ = ["Previous", "RunTail", "ScanFailed", "scan_archive"]
