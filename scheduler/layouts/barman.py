"""barman-cloud: the whole layout (LAYOUTS.md §2; docs/internals.md "Adding a layout"):
``<server>/base/<backup_id>/…`` and ``<server>/wals/…``; the scan, the restore and restore_command
lines, the purge prefix and the duplicate rule.

WAL keys relative to ``<server>/wals/``: ``<TLI+log>/<name>[.<ext>]`` for segments, partials and
backup labels, ``<TLI>.history[.<ext>]`` at the root. Readers strip exactly one allowed suffix
(barman ``ALLOWED_COMPRESSIONS``) and then match the bare PostgreSQL name.
"""
from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime, timezone

from recovery.errors import BadLsn, MetadataError, ParseError
from recovery.lsn import Lsn
from recovery.model import Backup, BackupStatus, BackupType, Layout, Storage, WalKind, WalObject
from recovery.wal import DEFAULT_SEG_SIZE, valid_seg_size
from scheduler.layouts.common import (
    ALLOWED,
    ForeignObject,
    MetaObject,
    split_suffix,
    unsafe_key_reason,
    wal_object,
)
from scheduler.layouts.spec import (
    Command,
    Kind,
    LayoutArgumentError,
    LayoutSpec,
    MetaEvent,
    S3Access,
    StorageLoc,
    Target,
    WalRoot,
    aws_env,
    by_content,
    name_ok,
    wal_target,
)
from scheduler.scanning import (
    Acc,
    LayoutScan,
    Previous,
    WalSource,
    bounded_gather,
    hash_dir_key,
    list_wal,
    single_stanza,
)
from scheduler.storage import NotFound, ObjectStore

KIND_BACKUP_INFO = "backup_info"
KIND_PAYLOAD = "payload"
KIND_ANNOTATION = "annotation"
KIND_BACKUP_DIR = "backup_dir"

BACKUP_ID_RE = re.compile(r"^\d{8}T\d{6}$")   # datetime.now().strftime("%Y%m%dT%H%M%S")
_TAR_RE = re.compile(r"^(?:data|\d+)(?:_\d{4})?\.tar(?:\.(?:gz|bz2|snappy|lz4|xz|zst))?$")

_STATUS = {
    "DONE": BackupStatus.DONE,
    "FAILED": BackupStatus.FAILED,
    "STARTED": BackupStatus.RUNNING,
    # barman server states that barman-cloud could meet: not (yet) usable
    "EMPTY": BackupStatus.RUNNING,
    "WAITING_FOR_WALS": BackupStatus.RUNNING,
    "SYNCING": BackupStatus.RUNNING,
}

_DONE_REQUIRES = ("begin_xlog", "end_xlog", "begin_time", "end_time", "timeline")


def parse_key_values(text: str, source: str) -> dict[str, str | None]:
    """``key=value`` lines to a dict; ``None`` becomes None. Values stay text (Python literals too)."""
    out: dict[str, str | None] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, eq, value = line.partition("=")
        if not eq or not re.fullmatch(r"[a-z_][a-z0-9_]*", key):
            raise MetadataError(source, f"line {lineno}: expected key=value, found {line[:80]!r}",
                                code="format_error")
        out[key] = None if value == "None" else value
    if not out:
        raise MetadataError(source, "empty backup.info", code="format_error")
    return out


def parse_time(value: str | None, what: str, source: str) -> tuple[datetime | None, bool]:
    """An ISO-like barman time; naive times are taken as UTC and reported with ``False``.

    >>> parse_time("2026-01-01 12:00:02.822410+00:00", "t", "s")
    (datetime.datetime(2026, 1, 1, 12, 0, 2, 822410, tzinfo=datetime.timezone.utc), True)
    >>> parse_time("2026-01-01 12:00:02", "t", "s")[1]
    False
    """
    if value is None:
        return None, True
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        raise MetadataError(source, f"{what}: not a time: {value!r}", code="format_error") from None
    if t.tzinfo is None:
        # barman's load_datetime_tz takes naive times as the backup host's local time: unknown here
        return t.replace(tzinfo=timezone.utc), False
    return t.astimezone(timezone.utc), True


def _int(kv: dict[str, str | None], key: str, source: str) -> int | None:
    v = kv.get(key)
    if v is None:
        return None
    try:
        return int(v)
    except ValueError:
        raise MetadataError(source, f"{key}: not an integer: {v!r}", code="format_error") from None


def _lsn(kv: dict[str, str | None], key: str, source: str) -> Lsn | None:
    v = kv.get(key)
    if v is None:
        return None
    try:
        return Lsn.parse(v)
    except BadLsn:
        raise MetadataError(source, f"{key}: not an LSN: {v!r}", code="format_error") from None


def parse_backup_info(text: str, backup_id: str, source: str) -> Backup:
    """barman ``backup.info`` to a Backup labelled ``backup_id`` (from the key path, not ``server_name``).

    Status: DONE → done, FAILED → failed, STARTED/EMPTY/WAITING_FOR_WALS/SYNCING → running; an
    unknown status is failed with a note. Naive times are read as UTC and the backup's
    ``stop_time_exact`` is False (barman meant the backup host's local time).
    """
    if text and not text.endswith("\n"):
        # barman writes "key=value\n" per field: a missing final newline means a cut object
        raise MetadataError(source, f"truncated: line {text.count(chr(10)) + 1} has no end of line",
                            code="truncated")
    kv = parse_key_values(text, source)
    raw_status = kv.get("status")
    if raw_status is None:
        raise MetadataError(source, "no status", code="format_error")
    status = _STATUS.get(raw_status)
    if status is BackupStatus.DONE:
        missing = [k for k in _DONE_REQUIRES if kv.get(k) is None]
        if missing:
            raise MetadataError(source, f"status DONE but no {', '.join(missing)} (truncated?)", code="truncated")
    error = kv.get("error")
    if status is None:
        status, error = BackupStatus.FAILED, f"unknown barman status {raw_status!r}" + (f": {error}" if error else "")
    start_time, start_aware = parse_time(kv.get("begin_time"), "begin_time", source)
    stop_time, stop_aware = parse_time(kv.get("end_time"), "end_time", source)
    seg_size = _int(kv, "xlog_segment_size", source)
    if seg_size is not None and not valid_seg_size(seg_size):
        raise MetadataError(source, f"xlog_segment_size {seg_size} is not a valid segment size",
                            code="format_error")
    sysid = _int(kv, "systemid", source)
    parent = kv.get("parent_backup_id")
    return Backup(
        label=backup_id,
        type=BackupType.INCR if parent else BackupType.FULL,
        status=status,
        timeline=_int(kv, "timeline", source),
        start_lsn=_lsn(kv, "begin_xlog", source),
        stop_lsn=_lsn(kv, "end_xlog", source),
        start_time=start_time,
        stop_time=stop_time,
        depends_on=(parent,) if parent else (),
        parent=parent,
        size_bytes=_int(kv, "cluster_size", source),
        repo_size_bytes=_int(kv, "size", source),
        pg_version=_int(kv, "version", source),
        system_id=sysid,
        seg_size=seg_size,
        stop_time_exact=start_aware and stop_aware,
        error=error,
        metadata_key=source,
    )


# --- keys --------------------------------------------------------------------------------------

def classify_wal_key(rel: str, seg_size: int) -> WalObject | ForeignObject:
    """A key relative to ``<server>/wals/`` to a WAL object, or a foreign verdict.

    >>> classify_wal_key("0000000100000000/000000010000000000000003.000000D8.backup.gz", 16 << 20).kind
    <WalKind.BACKUP_LABEL: 'backup'>
    >>> classify_wal_key("00000002.history.gz", 16 << 20).compression
    'gz'
    """
    bad = unsafe_key_reason(rel)
    if bad:
        return ForeignObject(rel, bad)
    parts = rel.split("/")
    if len(parts) > 2:
        return ForeignObject(rel, "too deep for wals/")
    name, ext = split_suffix(parts[-1], ALLOWED[Layout.BARMAN])
    w = wal_object(name, seg_size, ext)
    if w is None:
        return ForeignObject(rel, "not a WAL file name with at most one known compression suffix")
    if len(parts) == 1:
        if w.kind is WalKind.HISTORY:
            return w
        return ForeignObject(rel, "WAL file outside its <timeline+log> directory")
    if w.kind is WalKind.HISTORY:
        return ForeignObject(rel, "history file inside a <timeline+log> directory")
    if parts[0] != name[:16]:
        return ForeignObject(rel, "file is in the wrong <timeline+log> directory")
    return w


def classify_base_key(rel: str) -> MetaObject | ForeignObject:
    """A key relative to ``<server>/base/``: backup.info, tar payload, annotations.

    >>> classify_base_key("20260101T120000/backup.info")
    MetaObject(key='20260101T120000/backup.info', kind='backup_info', label='20260101T120000')
    """
    bad = unsafe_key_reason(rel)
    if bad:
        return ForeignObject(rel, bad)
    parts = rel.split("/")
    if not BACKUP_ID_RE.match(parts[0]):
        return ForeignObject(rel, "not under a <YYYYMMDDTHHMMSS> backup id")
    label = parts[0]
    tail = parts[1:]
    if tail == [""]:
        return MetaObject(rel, KIND_BACKUP_DIR, label)
    if tail == ["backup.info"]:
        return MetaObject(rel, KIND_BACKUP_INFO, label)
    if len(tail) == 1 and _TAR_RE.match(tail[0]):
        return MetaObject(rel, KIND_PAYLOAD, label)
    if len(tail) == 2 and tail[0] == "annotations" and tail[1]:
        return MetaObject(rel, KIND_ANNOTATION, label)
    return ForeignObject(rel, "not backup.info, a data tar or an annotation")


# --- the scan ------------------------------------------------------------------------------------

async def scan(store: ObjectStore, storage: Storage, previous: Previous, root: str, acc: Acc,
                       full: bool, lookback: int) -> LayoutScan:
    server = storage.stanza or previous.stanza or await single_stanza(store, root, "barman-cloud servers")
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
            return parse_backup_info(text, bid, key)
        except NotFound:   # listed a moment ago: a race with retention. Keep what we knew; only a complete
            acc.issue("not_found_race", key, "backup.info vanished after listing")   # listing lacking it deletes
            return old
        except ParseError as e:
            acc.issue("metadata_error", key, str(e))
            return Backup(label=bid, type=BackupType.FULL, status=BackupStatus.FAILED, timeline=None, start_lsn=None,
                          stop_lsn=None, start_time=None, stop_time=None, error=f"unreadable backup.info: {e}")

    src = WalSource(f"{sdir}wals/", classify_wal_key, hash_dir_key)
    # metadata reads and the WAL listing overlap: a scan costs about the longer of the two, not their sum
    reads: list[Awaitable[Backup | None]] = [read_info(bid, has) for bid, has in dirs.items()]
    found, seg_size = await asyncio.gather(bounded_gather(reads),
                                           list_wal(store, src, previous, acc, full, lookback, seg_size))
    backups = [b for b in found if b is not None]
    pg_version = next((b.pg_version for b in reversed(backups) if b.pg_version), None)
    system_id = next((b.system_id for b in reversed(backups) if b.system_id), None)
    seg_size = seg_size or next((b.seg_size for b in backups if b.seg_size), None)
    return LayoutScan(server, seg_size or DEFAULT_SEG_SIZE, tuple(backups), pg_version, system_id)


# --- events: a key's meaning, the WAL root, the backup set re-read after events ----------------------------

def classify_event(server: str | None, rel: str, seg_size: int) -> Target:
    """What ``rel`` (relative to the bucket prefix) is to the event consumer.

    >>> classify_event("main", "main/wals/0000000100000000/000000010000000000000003.gz", 16 << 20)
    Target(kind=<Kind.SEGMENT: 'segment'>, timeline=1, segno=3, label=None, reason='')
    >>> classify_event("main", "main/base/20260101T120000/backup.info", 16 << 20).label
    '20260101T120000'
    """
    parts = rel.split("/", 2)
    if len(parts) < 3 or parts[1] not in ("wals", "base"):
        return Target(Kind.FOREIGN, reason="not under <server>/wals/ or <server>/base/")
    if server is not None and parts[0] != server:
        return Target(Kind.IGNORED, reason=f"server {parts[0]!r} is not this instance's")
    if parts[1] == "wals":
        return wal_target(classify_wal_key(parts[2], seg_size))
    c = classify_base_key(parts[2])
    if isinstance(c, ForeignObject):
        return Target(Kind.FOREIGN, reason=c.reason)
    if c.kind == KIND_BACKUP_INFO:
        return Target(Kind.BACKUP_META, label=c.label)
    return Target(Kind.BACKUP_PAYLOAD, label=c.label)


async def wal_roots(store: ObjectStore, root: str, server: str | None) -> list[WalRoot]:
    return [WalRoot(f"{root}{server or 'main'}/wals/", classify_wal_key, True)]


async def event_backups(store: ObjectStore, root: str, server: str | None, have: Mapping[str, Backup],
                        metas: Sequence[MetaEvent], unknown: frozenset[str],
                        acc: Acc) -> tuple[dict[str, Backup], int | None, int | None]:
    """Each backup.info created is read; payload of a backup without one: in progress (as a scan says)."""
    base = f"{root}{server}/base/"
    out = dict(have)
    for m in metas:
        label = m.label or ""
        try:
            text = (await store.read(m.key)).decode("utf-8", "replace")
            out[label] = parse_backup_info(text, label, m.key)
        except NotFound:
            acc.issue("not_found_race", m.key, "backup.info created, then gone before it was read")
        except ParseError as e:
            acc.issue("metadata_error", m.key, str(e))
            out[label] = Backup(label=label, type=BackupType.FULL, status=BackupStatus.FAILED, timeline=None,
                                start_lsn=None, stop_lsn=None, start_time=None, stop_time=None,
                                error=f"unreadable backup.info: {e}")
    for label in sorted(unknown - {m.label for m in metas}):
        info_key = f"{base}{label}/backup.info"
        try:
            text = (await store.read(info_key)).decode("utf-8", "replace")
            out[label] = parse_backup_info(text, label, info_key)
        except (NotFound, ParseError):
            out[label] = Backup(label=label, type=BackupType.FULL, status=BackupStatus.RUNNING, timeline=None,
                                start_lsn=None, stop_lsn=None, start_time=None, stop_time=None,
                                error="no backup.info: in progress or crashed")
    return out, None, None


# --- restoring ---------------------------------------------------------------------------------------

def _server(loc: StorageLoc) -> str:
    if not loc.stanza:
        raise LayoutArgumentError("a barman-cloud restore needs the server name (storage.stanza)")
    return loc.stanza


def fetch_command(loc: StorageLoc, label: str, pgdata: str, s3: S3Access, work: str) -> Command:
    """
    >>> c = fetch_command(StorageLoc(Layout.BARMAN, "b", "barman", "main"), "20260101T000000", "/d",
    ...                   S3Access("http://127.0.0.1:9000"), "/w")
    >>> c.argv
    ('barman-cloud-restore', '--endpoint-url', 'http://127.0.0.1:9000', 's3://b/barman', 'main', '20260101T000000', '/d')
    """
    ep = ("--endpoint-url", s3.endpoint_url) if s3.endpoint_url else ()
    return Command(("barman-cloud-restore", *ep, loc.url, _server(loc), label, pgdata), env=aws_env(s3),
                   label="barman-cloud-restore")


def restore_command(loc: StorageLoc, endpoint_url: str | None = None) -> str:
    """
    >>> restore_command(StorageLoc(Layout.BARMAN, "pg-archive", "barman", "main"))
    'barman-cloud-wal-restore --no-partial s3://pg-archive/barman main %f %p'
    """
    ep = f"--endpoint-url {shlex.quote(endpoint_url)} " if endpoint_url else ""
    return f"barman-cloud-wal-restore {ep}--no-partial {shlex.quote(loc.url)} {shlex.quote(_server(loc))} %f %p"


def purge_prefixes(root: str, stanza: str | None) -> tuple[str, ...]:
    """``<prefix>/<server>/``."""
    if not name_ok(stanza):
        raise LayoutArgumentError(f"barman-cloud server name unknown or invalid ({stanza!r}): its exact path "
                                  "cannot be named")
    return (f"{root}{stanza}/",)


LAYOUT = LayoutSpec(
    layout=Layout.BARMAN, tool="barman-cloud", classify_wal_key=classify_wal_key, scan=scan,
    fetch_command=fetch_command, restore_command=restore_command, purge_prefixes=purge_prefixes,
    same_segment=by_content, classify_event=classify_event, wal_roots=wal_roots, event_backups=event_backups,
    duplicates_note="barman-cloud-wal-restore fetches one of the copies without comparing them")
