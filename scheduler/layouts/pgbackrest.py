"""pgBackRest: the whole layout (docs/internals.md "Adding a layout"): info files to values, repository
keys to verdicts, the scan, the restore and restore_command lines, the purge prefixes and the duplicate rule.

Over 400 lines: one module per layout is the rule (its INI reader is apart, pgbackrest_ini.py).

Keys (LAYOUTS.md §1.1), relative to the repository path::

    archive/<stanza>/archive.info[.copy]
    archive/<stanza>/<archiveId>/0000000N.history
    archive/<stanza>/<archiveId>/<first16>/<seg>-<sha1>[.<ext>]
    archive/<stanza>/<archiveId>/<first16>/<seg>.partial-<sha1>[.<ext>]
    archive/<stanza>/<archiveId>/<first16>/<seg>.<OFF8>.backup
    backup/<stanza>/backup.info[.copy], backup/<stanza>/<label>/backup.manifest[.copy], backup.history/
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from recovery.errors import BadLsn, MetadataError, ParseError
from recovery.lsn import Lsn
from recovery.model import Backup, BackupStatus, BackupType, Layout, Storage, WalKind, WalObject
from recovery.wal import DEFAULT_SEG_SIZE
from scheduler.layouts.common import (
    ALLOWED,
    ForeignObject,
    MetaObject,
    unsafe_key_reason,
    utc_from_epoch,
    wal_object,
)
from scheduler.layouts.pgbackrest_ini import InfoFile, check_type, parse_info, pg_version_num, require
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
    name_ok,
    wal_target,
)
from scheduler.scanning import (
    Acc,
    LayoutScan,
    Previous,
    ScanFailed,
    WalSource,
    etag_key,
    hash_dir_key,
    list_wal,
    single_stanza,
)
from scheduler.storage import NotFound, ObjectStore

InfoT = TypeVar("InfoT")   # what an info-file parser returns

__all__ = [
    "ArchiveInfo", "BackupInfo", "InfoFile", "parse_info", "parse_backup_info", "parse_archive_info",
    "parse_manifest_header", "classify_archive_key", "classify_backup_root_entry",
    "classify_archive_root_entry", "classify_backup_dir_entry", "label_type", "label_full",
    "is_label", "LABEL_RE",
]

# --- labels (backupLabelFormat) ----------------------------------------------------------------

_STAMP = r"\d{8}-\d{6}"
LABEL_RE = re.compile(rf"^(?P<full>{_STAMP}F)(?:_(?P<stamp>{_STAMP})(?P<kind>[DI]))?$")
_LABEL_TYPES = {None: BackupType.FULL, "D": BackupType.DIFF, "I": BackupType.INCR}


def is_label(name: str) -> bool:
    """
    >>> is_label("20260101-120000F"), is_label("20260101-120000F_20260101-120030I"), is_label("x")
    (True, True, False)
    """
    return LABEL_RE.match(name) is not None


def label_type(label: str) -> BackupType | None:
    """Backup type a label announces (F, D, I suffix), None if it is not a label.

    >>> label_type("20260101-120000F_20260101-120030D")
    <BackupType.DIFF: 'diff'>
    """
    m = LABEL_RE.match(label)
    return _LABEL_TYPES[m.group("kind")] if m else None


def label_full(label: str) -> str | None:
    """The full backup a label belongs to (its first 16 characters).

    >>> label_full("20260101-120000F_20260101-120030I")
    '20260101-120000F'
    """
    m = LABEL_RE.match(label)
    return m.group("full") if m else None


# --- backup.info -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BackupInfo:
    """``backup.info``: the complete backups, and the stanza's database history."""

    backups: tuple[Backup, ...]
    system_id: int
    pg_version: int
    db_history: dict[int, tuple[str, int]]    # db-id -> (db-version, db-system-id)
    checksum_ok: bool


@dataclass(frozen=True, slots=True)
class ArchiveInfo:
    """``archive.info``: every archiveId (``<db-version>-<history id>``), oldest history entry first."""

    archive_ids: tuple[str, ...]
    system_id: int
    pg_version: int
    checksum_ok: bool = True


_BACKUP_TYPES = {"full": BackupType.FULL, "diff": BackupType.DIFF, "incr": BackupType.INCR}


def _history(info: InfoFile, system_key: str, source: str) -> dict[int, tuple[str, int]]:
    out: dict[int, tuple[str, int]] = {}
    for k, v in info.section("db:history").items():
        if not k.isdigit() or not isinstance(v, dict):
            raise MetadataError(source, f"[db:history] bad entry {k}={v!r}", code="format_error")
        version = check_type(v.get("db-version"), str, f"[db:history] {k} db-version", source)
        sysid = check_type(v.get(system_key), int, f"[db:history] {k} {system_key}", source)
        out[int(k)] = (version, sysid)
    if not out:
        raise MetadataError(source, "[db:history] is empty", code="format_error")
    return dict(sorted(out.items()))


def _current_db(info: InfoFile, source: str) -> tuple[int, int]:
    sysid = require(info, "db", "db-system-id", int, source)
    version = require(info, "db", "db-version", str, source)
    return sysid, pg_version_num(version, source)


def parse_backup_info(text: str, source: str) -> BackupInfo:
    """``backup.info`` text to its complete backups (status done), newest last as pgBackRest lists them."""
    info = parse_info(text, source)
    sysid, version = _current_db(info, source)
    history = _history(info, "db-system-id", source)
    backups = tuple(_backup_from_entry(label, entry, history, source)
                    for label, entry in info.section("backup:current").items())
    return BackupInfo(backups, sysid, version, history, info.checksum_ok)


def _lsn(value: Any, what: str, source: str) -> Lsn | None:
    if value is None:
        return None
    try:
        return Lsn.parse(check_type(value, str, what, source))
    except BadLsn:
        raise MetadataError(source, f"{what}: not an LSN: {value!r}", code="format_error") from None


def _timeline(archive_start: Any, what: str, source: str) -> int | None:
    if archive_start is None:
        return None
    if not re.fullmatch(r"[0-9A-F]{24}", check_type(archive_start, str, what, source)) \
            or archive_start[:8] == "00000000":
        raise MetadataError(source, f"{what}: not a WAL segment name: {archive_start!r}", code="format_error")
    return int(archive_start[:8], 16)


def _opt_int(entry: dict[str, Any], key: str, what: str, source: str) -> int | None:
    v = entry.get(key)
    return None if v is None else check_type(v, int, f"{what} {key}", source)


def _backup_from_entry(label: str, entry: Any, history: dict[int, tuple[str, int]], source: str) -> Backup:
    what = f"[backup:current] {label}"
    if not is_label(label):
        raise MetadataError(source, f"{what}: not a backup label", code="format_error")
    if not isinstance(entry, dict):
        raise MetadataError(source, f"{what}: value is not a JSON object", code="format_error")
    btype = _BACKUP_TYPES.get(entry.get("backup-type"))  # type: ignore[arg-type]
    if btype is None:
        raise MetadataError(source, f"{what}: unknown backup-type {entry.get('backup-type')!r}",
                            code="format_error")
    refs = entry.get("backup-reference") or []
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise MetadataError(source, f"{what}: backup-reference is not a list of labels", code="format_error")
    db_id = _opt_int(entry, "db-id", what, source)
    pg = history.get(db_id) if db_id is not None else None
    start = _opt_int(entry, "backup-timestamp-start", what, source)
    stop = _opt_int(entry, "backup-timestamp-stop", what, source)
    prior = entry.get("backup-prior")
    return Backup(
        label=label,
        type=btype,
        status=BackupStatus.DONE,
        timeline=_timeline(entry.get("backup-archive-start"), f"{what} backup-archive-start", source),
        start_lsn=_lsn(entry.get("backup-lsn-start"), f"{what} backup-lsn-start", source),
        stop_lsn=_lsn(entry.get("backup-lsn-stop"), f"{what} backup-lsn-stop", source),
        start_time=utc_from_epoch(start) if start is not None else None,
        stop_time=utc_from_epoch(stop) if stop is not None else None,
        depends_on=tuple(r for r in refs if r != label),
        parent=check_type(prior, str, f"{what} backup-prior", source) if prior is not None else None,
        size_bytes=_opt_int(entry, "backup-info-size", what, source),
        repo_size_bytes=_opt_int(entry, "backup-info-repo-size", what, source),
        pg_version=pg_version_num(pg[0], source) if pg else None,
        system_id=pg[1] if pg else None,
        error="page checksum errors found (backup-error=true)" if entry.get("backup-error") is True else None,
        metadata_key=source,
    )


# --- archive.info ------------------------------------------------------------------------------

def parse_archive_info(text: str, source: str) -> ArchiveInfo:
    """``archive.info`` text to every archiveId, in history-key order (``[db:history]`` db-id = system id)."""
    info = parse_info(text, source)
    sysid = require(info, "db", "db-system-id", int, source)
    version = pg_version_num(require(info, "db", "db-version", str, source), source)
    history = _history(info, "db-id", source)
    ids = tuple(f"{ver}-{hid}" for hid, (ver, _sys) in history.items())
    return ArchiveInfo(ids, sysid, version, info.checksum_ok)


# --- backup.manifest ---------------------------------------------------------------------------

def parse_manifest_header(text: str, source: str, *, final: bool = True) -> Backup:
    """A backup from its ``backup.manifest`` (for labels missing from backup.info).

    ``final``: the text came from ``backup.manifest`` (written after the copy finished). From
    ``backup.manifest.copy`` alone (``final=False``) the backup is in progress or aborted, so
    its status is running whatever the header says.

    :raises MetadataError: checksum mismatch (code ``checksum_mismatch``: try the ``.copy``), or a
        damaged header.
    """
    info = parse_info(text, source)
    if not info.checksum_ok:
        raise MetadataError(source, f"backrest-checksum mismatch (expected {info.checksum_expected}, "
                            f"computed {info.checksum_actual})", code="checksum_mismatch")
    b = dict(info.section("backup"))
    label = require(info, "backup", "backup-label", str, source)
    refs = b.get("backup-reference")
    ref_list = [r for r in refs.split(",") if r] if isinstance(refs, str) else []
    b["backup-reference"] = ref_list
    db = info.section("backup:db")
    raw_id = db.get("db-id")
    db_id: int = raw_id if isinstance(raw_id, int) else 1
    history: dict[int, tuple[str, int]] = {}
    if isinstance(db.get("db-version"), str) and isinstance(db.get("db-system-id"), int):
        history[db_id] = (db["db-version"], db["db-system-id"])
    b["db-id"] = db_id
    files = [f for f in info.section("target:file").values() if isinstance(f, dict)]
    if files:   # as backup.info: DB bytes and repository bytes of the whole set (referenced files too)
        b["backup-info-size"] = sum(f.get("size", 0) for f in files if isinstance(f.get("size", 0), int))
        b["backup-info-repo-size"] = sum(f.get("repo-size", f.get("size", 0)) for f in files
                                         if isinstance(f.get("repo-size", f.get("size", 0)), int))
    backup = _backup_from_entry(label, b, history, source)
    complete = final and backup.stop_lsn is not None and backup.stop_time is not None
    if complete:
        return backup
    return replace(backup, status=BackupStatus.RUNNING,
                   error=backup.error or ("in progress or aborted (only backup.manifest.copy)" if not final
                                          else "manifest has no stop LSN/time"))


# --- keys --------------------------------------------------------------------------------------

KIND_BACKUP_DIR = "backup_dir"
KIND_BACKUP_INFO = "backup_info"
KIND_BACKUP_INFO_COPY = "backup_info_copy"
KIND_BACKUP_HISTORY = "backup_history"
KIND_LATEST_LINK = "latest_link"
KIND_ARCHIVE_INFO = "archive_info"
KIND_ARCHIVE_INFO_COPY = "archive_info_copy"
KIND_ARCHIVE_ID = "archive_id"
KIND_MANIFEST = "manifest"
KIND_MANIFEST_COPY = "manifest_copy"
KIND_PAYLOAD = "payload"

_EXT = "|".join(sorted(ALLOWED[Layout.PGBACKREST]))
_HASHED_RE = re.compile(
    rf"^(?P<name>[0-9A-F]{{24}}(?:\.partial)?)-(?P<sha>[0-9a-f]{{40}})(?:\.(?P<ext>{_EXT}))?$")
_ARCHIVE_ID_RE = re.compile(r"^(?P<version>\d+(?:\.\d+)?)-(?P<id>[1-9]\d*)$")


def classify_archive_key(rel: str, seg_size: int) -> WalObject | ForeignObject:
    """A key relative to ``archive/<stanza>/<archiveId>/`` to a WAL object, or a foreign verdict.

    >>> classify_archive_key("0000000100000000/000000010000000000000001-" + "e" * 40 + ".gz", 16 << 20).segno
    1
    >>> classify_archive_key("00000002.history", 16 << 20).timeline
    2
    >>> classify_archive_key("0000000100000000/000000010000000000000001.gz", 16 << 20).reason
    'not <segment>-<sha1>[.ext], <segment>.partial-<sha1>[.ext] or <segment>.<offset>.backup'
    """
    bad = unsafe_key_reason(rel)
    if bad:
        return ForeignObject(rel, bad)
    parts = rel.split("/")
    if len(parts) == 1:
        w = wal_object(parts[0], seg_size)
        if w is not None and w.kind is WalKind.HISTORY:
            return w
        return ForeignObject(rel, "only <TLI>.history files live directly under an archiveId")
    if len(parts) != 2:
        return ForeignObject(rel, "too deep for an archiveId directory")
    directory, filename = parts
    if not re.fullmatch(r"[0-9A-F]{16}", directory):
        return ForeignObject(rel, "directory is not 16 upper-case hex digits (timeline + log)")
    if filename[:16] != directory:
        return ForeignObject(rel, "file is in the wrong <timeline+log> directory")
    m = _HASHED_RE.match(filename)
    if m:
        w = wal_object(m.group("name"), seg_size, m.group("ext"), m.group("sha"))
        return w if w is not None else ForeignObject(rel, f"segment number out of range for {seg_size}-byte segments")
    w = wal_object(filename, seg_size)
    if w is not None and w.kind is WalKind.BACKUP_LABEL:
        return w
    return ForeignObject(rel, "not <segment>-<sha1>[.ext], <segment>.partial-<sha1>[.ext] or <segment>.<offset>.backup")


def classify_archive_root_entry(name: str) -> MetaObject | ForeignObject:
    """An entry of a delimiter listing of ``archive/<stanza>/`` (``15-1/``, ``archive.info``...).

    >>> classify_archive_root_entry("9.6-1/")
    MetaObject(key='9.6-1/', kind='archive_id', label='9.6-1')
    """
    if name == "archive.info":
        return MetaObject(name, KIND_ARCHIVE_INFO)
    if name == "archive.info.copy":
        return MetaObject(name, KIND_ARCHIVE_INFO_COPY)
    if name.endswith("/") and _ARCHIVE_ID_RE.match(name[:-1]):
        return MetaObject(name, KIND_ARCHIVE_ID, name[:-1])
    return ForeignObject(name, "not archive.info[.copy] or an <pg version>-<id>/ archive directory")


def classify_backup_root_entry(name: str) -> MetaObject | ForeignObject:
    """An entry of a delimiter listing of ``backup/<stanza>/``.

    >>> classify_backup_root_entry("20260101-120000F_20260101-120030I/")
    MetaObject(key='20260101-120000F_20260101-120030I/', kind='backup_dir', label='20260101-120000F_20260101-120030I')
    >>> classify_backup_root_entry("backup.info").kind
    'backup_info'
    """
    if name.endswith("/") and is_label(name[:-1]):
        return MetaObject(name, KIND_BACKUP_DIR, name[:-1])
    fixed = {"backup.info": KIND_BACKUP_INFO, "backup.info.copy": KIND_BACKUP_INFO_COPY,
             "backup.history/": KIND_BACKUP_HISTORY, "latest": KIND_LATEST_LINK, "latest/": KIND_LATEST_LINK}
    if name in fixed:
        return MetaObject(name, fixed[name])
    if is_label(name):
        return ForeignObject(name, "an object named like a backup label (expected a directory)")
    return ForeignObject(name, "not a backup label directory, backup.info[.copy] or backup.history/")


def classify_backup_dir_entry(label: str, name: str) -> MetaObject | ForeignObject:
    """An entry of a delimiter listing of ``backup/<stanza>/<label>/``."""
    fixed = {"backup.manifest": KIND_MANIFEST, "backup.manifest.copy": KIND_MANIFEST_COPY,
             "pg_data/": KIND_PAYLOAD, "bundle/": KIND_PAYLOAD}
    if name in fixed:
        return MetaObject(name, fixed[name], label)
    if name.startswith("pg_tblspc/") or name == "pg_tblspc/":
        return MetaObject(name, KIND_PAYLOAD, label)
    return ForeignObject(name, "not backup.manifest[.copy] or backup payload")


# --- the scan ------------------------------------------------------------------------------------

async def read_info(store: ObjectStore, key: str, parse: Callable[[str, str], InfoT], acc: Acc,
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


async def scan(store: ObjectStore, storage: Storage, previous: Previous, root: str, acc: Acc,
                           full: bool, lookback: int) -> LayoutScan:
    stanza = storage.stanza or previous.stanza or await single_stanza(store, root + "archive/", "pgBackRest stanzas")
    bdir = f"{root}backup/{stanza}/"
    blist = await store.list_dir(bdir)
    objs = {o.key: o for o in blist.objects}
    if not blist.objects and not blist.prefixes:
        raise ScanFailed("unknown_prefix", f"no pgBackRest stanza {stanza!r} under {root or '/'}")
    info_key = bdir + "backup.info"
    backups: tuple[Backup, ...] | None = previous.backups or None
    pg_version = system_id = None
    etag = objs[info_key].etag if info_key in objs else None
    if full or backups is None or etag is None or acc.cursors.get(etag_key(info_key)) != etag:
        info, _raced = await read_info(store, info_key, parse_backup_info, acc, set(objs))
        if info is not None:
            backups = tuple(info.backups)
            pg_version, system_id = info.pg_version, info.system_id
            if etag:
                acc.cursors[etag_key(info_key)] = etag
        else:
            # unreadable (integrity_error), or listed and gone at GET (not_found_race): either way the scan
            # does not re-state the backup set (None), so the catalog keeps the set it had
            backups = None
            acc.cursors.pop(etag_key(info_key), None)
    # backup directories not (yet) in backup.info: in progress, aborted, or crashed before registration
    known = {b.label for b in backups or ()}
    extra: list[Backup] = []
    for p in blist.prefixes:
        name = p[len(bdir):].rstrip("/")
        kind = classify_backup_root_entry(name + "/")
        if isinstance(kind, ForeignObject):
            acc.foreign(p, kind.reason)
            continue
        if kind.kind != KIND_BACKUP_DIR or name in known or backups is None:
            continue
        extra.append(await unregistered_backup(store, p, name, acc))
    for o in blist.objects:
        c = classify_backup_root_entry(o.key[len(bdir):])
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
    elif full or acc.cursors.get(etag_key(ainfo_key)) != aobj.etag:
        # a race (listed, gone at GET) leaves the archive id directories found, like a missing archive.info
        ainfo, _raced = await read_info(store, ainfo_key, parse_archive_info, acc,
                                         {o.key for o in alist.objects})
        if ainfo is not None:
            acc.cursors[etag_key(ainfo_key)] = aobj.etag
            listed = set(ids)
            ids = [i for i in ainfo.archive_ids if i in listed] + sorted(listed - set(ainfo.archive_ids))
            system_id = system_id or ainfo.system_id
    seg_size = previous.seg_size
    for aid in ids:
        src = WalSource(f"{adir}{aid}/", classify_archive_key, hash_dir_key)
        seg_size = await list_wal(store, src, previous, acc, full, lookback, seg_size)
    return LayoutScan(stanza, seg_size or DEFAULT_SEG_SIZE, backups, pg_version, system_id)


async def unregistered_backup(store: ObjectStore, prefix: str, label: str, acc: Acc) -> Backup:
    for name, status in (("backup.manifest", BackupStatus.DONE), ("backup.manifest.copy", BackupStatus.RUNNING)):
        try:
            text = (await store.read(prefix + name)).decode("utf-8", "replace")
            b = parse_manifest_header(text, prefix + name)
        except NotFound:
            continue
        except ParseError as e:
            acc.issue("metadata_error", prefix + name, str(e))
            continue
        # a manifest without a backup.info entry: crashed before registration, or still running.
        # Never offered for restore until pgBackRest registers it.
        note = "not in backup.info (crashed before registration?)" if status is BackupStatus.DONE else "in progress or aborted"
        return replace(b, status=BackupStatus.RUNNING, error=note)
    kind = label_type(label) or BackupType.FULL   # callers pass labels (is_label)
    return Backup(label=label, type=kind, status=BackupStatus.RUNNING, timeline=None, start_lsn=None,
                  stop_lsn=None, start_time=None, stop_time=None, error="backup directory without manifest")


# --- events: a key's meaning, the WAL roots, the backup set re-read after events ---------------------------

def classify_event(stanza: str | None, rel: str, seg_size: int) -> Target:
    """What ``rel`` (relative to the repository root) is to the event consumer.

    >>> classify_event("main", "backup/main/backup.info", 16 << 20).kind
    <Kind.BACKUP_META: 'backup_meta'>
    >>> classify_event("main", "archive/main/15-1/0000000100000000/000000010000000000000002-"
    ...                "aa5d6c8fd0d6a3a2d2d0a6ea4e4b5e5e1e2d3c4b.gz", 16 << 20)
    Target(kind=<Kind.SEGMENT: 'segment'>, timeline=1, segno=2, label=None, reason='')
    """
    parts = rel.split("/")
    if len(parts) < 3 or parts[0] not in ("archive", "backup"):
        return Target(Kind.FOREIGN, reason="not under archive/<stanza>/ or backup/<stanza>/")
    if stanza is not None and parts[1] != stanza:
        return Target(Kind.IGNORED, reason=f"stanza {parts[1]!r} is not this instance's")
    if parts[0] == "archive":
        if len(parts) == 3:
            return Target(Kind.IGNORED, reason="archive.info")
        c = classify_archive_root_entry(parts[2] + "/")
        if isinstance(c, ForeignObject):
            return Target(Kind.FOREIGN, reason=c.reason)
        return wal_target(classify_archive_key("/".join(parts[3:]), seg_size))
    if len(parts) == 3:
        kind = classify_backup_root_entry(parts[2])
        if not isinstance(kind, ForeignObject) and kind.kind in (KIND_BACKUP_INFO, KIND_BACKUP_INFO_COPY):
            return Target(Kind.BACKUP_META)
        return Target(Kind.IGNORED, reason="not backup.info in the backup directory")
    if not is_label(parts[2]):
        return Target(Kind.IGNORED, reason="backup.history/ or another non-backup directory")
    if len(parts) == 4 and parts[3] in ("backup.manifest", "backup.manifest.copy"):
        return Target(Kind.BACKUP_META, label=parts[2])
    return Target(Kind.BACKUP_PAYLOAD, label=parts[2])


async def wal_roots(store: ObjectStore, root: str, stanza: str | None) -> list[WalRoot]:
    """One root per archive id directory of ``archive/<stanza>/`` (listed)."""
    adir = f"{root}archive/{stanza or 'main'}/"
    listing = await store.list_dir(adir)
    ids = sorted(p[len(adir):].rstrip("/") for p in listing.prefixes)
    return [WalRoot(f"{adir}{aid}/", classify_archive_key, True) for aid in ids]


async def event_backups(store: ObjectStore, root: str, stanza: str | None, have: Mapping[str, Backup],
                        metas: Sequence[MetaEvent], unknown: frozenset[str],
                        acc: Acc) -> tuple[dict[str, Backup], int | None, int | None]:
    """backup.info created: the registered set is re-read (backups still running stay); a manifest or
    payload of a backup not registered: that backup, as a scan sees an unregistered directory."""
    bdir = f"{root}backup/{stanza}/"
    out = dict(have)
    pg_version = system_id = None
    labels = {m.label for m in metas if m.label is not None} | unknown
    registered: set[str] = {label for label, b in have.items() if b.status is not BackupStatus.RUNNING}
    if any(m.label is None for m in metas):
        info, _raced = await read_info(store, bdir + "backup.info", parse_backup_info, acc)
        if info is not None:
            registered = {b.label for b in info.backups}
            out = {label: b for label, b in out.items() if b.status is BackupStatus.RUNNING
                   and label not in registered}
            out.update({b.label: b for b in info.backups})
            pg_version, system_id = info.pg_version, info.system_id
    for label in sorted(labels - registered):
        out[label] = await unregistered_backup(store, f"{bdir}{label}/", label, acc)
    return out, pg_version, system_id


# --- restoring: the tool's restore and restore_command --------------------------------------------------

def pgbackrest_conf(loc: StorageLoc, s3: S3Access, *, pgdata: str, work: str) -> str:
    """A private pgbackrest.conf for the plan's repository (options in the file, so ``PGBACKREST_*``
    environment variables win, as pgBackRest defines: command line > environment > config file).

    >>> print(pgbackrest_conf(StorageLoc(Layout.PGBACKREST, "b", "pgbackrest", "main"),
    ...       S3Access("https://s3.example:9000", "K", "S"), pgdata="/d", work="/w"))  # doctest: +ELLIPSIS
    [global]
    repo1-type=s3
    repo1-s3-bucket=b
    repo1-path=/pgbackrest
    repo1-s3-region=us-east-1
    repo1-s3-endpoint=s3.example
    repo1-storage-port=9000
    repo1-s3-uri-style=path
    repo1-s3-key=K
    repo1-s3-key-secret=S
    lock-path=/w/lock
    ...
    [main]
    pg1-path=/d
    <BLANKLINE>
    """
    lines = ["[global]", "repo1-type=s3", f"repo1-s3-bucket={loc.bucket}", f"repo1-path=/{loc.prefix}",
             f"repo1-s3-region={s3.region}"]
    if s3.endpoint_url:
        u = urlsplit(s3.endpoint_url)
        lines.append(f"repo1-s3-endpoint={u.hostname}")
        if u.port:
            lines.append(f"repo1-storage-port={u.port}")
        lines.append("repo1-s3-uri-style=path")
    else:
        lines.append(f"repo1-s3-endpoint=s3.{s3.region}.amazonaws.com")
    if s3.access_key and s3.secret_key:
        lines += [f"repo1-s3-key={s3.access_key}", f"repo1-s3-key-secret={s3.secret_key}"]
    if not s3.verify_tls:
        lines.append("repo1-storage-verify-tls=n")
    if s3.ca_bundle:
        lines.append(f"repo1-storage-ca-file={s3.ca_bundle}")
    lines += [f"lock-path={work}/lock", f"log-path={work}/log", f"spool-path={work}/spool",
              "log-level-console=warn", "log-level-stderr=error", "log-level-file=off", "archive-async=n",
              "", f"[{loc.stanza or 'main'}]", f"pg1-path={pgdata}"]
    return "\n".join(lines) + "\n"


def fetch_command(loc: StorageLoc, label: str, pgdata: str, s3: S3Access, work: str) -> Command:
    """``pgbackrest restore --type=none`` of ``label`` with a derived config named by PGBACKREST_CONFIG (a
    caller's own PGBACKREST_* variables, that one included, win as pgBackRest defines); the destination is
    on the command line, so nothing can move it."""
    return Command(("pgbackrest", f"--stanza={loc.stanza or 'main'}", f"--set={label}", "--type=none",
                    f"--pg1-path={pgdata}", "restore"),
                   env=server_env(work),
                   files={"pgbackrest.conf": pgbackrest_conf(loc, s3, pgdata=pgdata, work=work)},
                   label="pgBackRest restore --type=none")


def server_env(work: str) -> dict[str, str]:
    return {"PGBACKREST_CONFIG": f"{work}/pgbackrest.conf"}


def restore_command(loc: StorageLoc, endpoint_url: str | None = None) -> str:
    """
    >>> restore_command(StorageLoc(Layout.PGBACKREST, "b", "pgbackrest", "main"))
    'pgbackrest --stanza=main archive-get %f "%p"'
    """
    return f'pgbackrest --stanza={shlex.quote(loc.stanza or "main")} archive-get %f "%p"'


def purge_prefixes(root: str, stanza: str | None) -> tuple[str, ...]:
    """``<repo>/archive/<stanza>/`` and ``<repo>/backup/<stanza>/``."""
    if not name_ok(stanza):
        raise LayoutArgumentError(f"pgBackRest stanza unknown or invalid ({stanza!r}): its exact paths cannot be "
                                  "named")
    return (f"{root}archive/{stanza}/", f"{root}backup/{stanza}/")


def content_sha1(key: str) -> str | None:
    """archive-push names each segment by the SHA-1 of its content: ``<segment>-<sha1>[.<ext>]``.

    >>> content_sha1("a/000000010000000000000003-" + "AB" * 20 + ".gz") == "ab" * 20
    True
    """
    base = key.rsplit("/", 1)[-1]
    if len(base) >= 65 and base[24] == "-":
        return base[25:65].lower()
    return None


def same_segment(a: str, b: str) -> bool | None:
    """Keys ``<segment>-<sha1>[.<ext>]``: one checksum under two compressions is one segment (it restores);
    two checksums are refused by archive-get whatever the bytes ("ERROR [045]: duplicates found for WAL
    segment", checked with pgBackRest 2.45)."""
    ha, hb = content_sha1(a), content_sha1(b)
    return None if ha is None or hb is None else ha == hb


LAYOUT = LayoutSpec(
    layout=Layout.PGBACKREST, tool="pgBackRest", classify_wal_key=classify_archive_key, scan=scan,
    fetch_command=fetch_command, restore_command=restore_command, purge_prefixes=purge_prefixes,
    same_segment=same_segment, server_env=server_env, content_sha1=content_sha1,
    classify_event=classify_event, wal_roots=wal_roots, event_backups=event_backups,
    duplicates_note="pgBackRest's archive-get refuses it ('duplicates found for WAL segment')")
