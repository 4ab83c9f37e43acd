"""WAL-G: the whole layout (LAYOUTS.md §3, from its source; docs/internals.md "Adding a layout"):
``basebackups_005/`` sentinels and ``wal_005/``, the scan (shared with WAL-E: basebackups.py), the
backup-fetch and wal-fetch lines, the purge prefixes and the duplicate rule.

WAL-G is not installable on this machine: its command lines are built from its documented CLI
(``wal-g backup-fetch PGDATA NAME`` with ``WALG_S3_PREFIX``, ``AWS_ENDPOINT``, ``AWS_S3_FORCE_PATH_STYLE``,
``AWS_REGION``) and tested as command lines only.

Sentinel (``BackupSentinelDto`` V1, ``V2`` adds ``Version``/``StartTime``/``FinishTime``): ``LSN``
and ``FinishLSN`` are JSON integers that may exceed 2^53; Python's json keeps them exact, and a
float there is refused. Complete ⇔ the sentinel exists (written last).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from recovery.errors import MetadataError
from recovery.lsn import Lsn
from recovery.model import Backup, BackupStatus, BackupType, Layout, WalKind, WalObject
from scheduler.layouts import basebackups
from scheduler.layouts.common import (
    ALLOWED,
    SENTINEL_SUFFIX,
    ForeignObject,
    MetaObject,
    split_basebackup_key,
    unsafe_key_reason,
    wal_object,
)
from scheduler.layouts.spec import Command, LayoutSpec, S3Access, StorageLoc, aws_env, by_content

NAME_RE = re.compile(r"^base_(?P<start>[0-9A-F]{24})(?:_D_(?P<parent>[0-9A-F]{24}))?$")

KIND_METADATA = "metadata"
KIND_FILES_METADATA = "files_metadata"
KIND_PAYLOAD = "payload"
KIND_WAL_DELTA = "wal_delta"          # <seg>_delta.<ext>: WAL-delta maps
KIND_WAL_METADATA = "wal_metadata"    # <seg>.json: WALG_UPLOAD_WAL_METADATA


def load_json(data: bytes | str, source: str) -> dict[str, Any]:
    """JSON object with exact integers; floats become Decimal so they can be refused where ints belong."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        obj = json.loads(text, parse_float=Decimal)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise MetadataError(source, f"not valid JSON ({e})", code="format_error") from None
    if not isinstance(obj, dict):
        raise MetadataError(source, "JSON document is not an object", code="format_error")
    return obj


def _int(obj: Mapping[str, Any], key: str, source: str, *, required: bool = False) -> int | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise MetadataError(source, f"missing {key}", code="format_error")
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise MetadataError(source, f"{key}: expected a non-negative integer, found {v!r}", code="format_error")
    return v


def _str(obj: Mapping[str, Any], key: str, source: str) -> str | None:
    v = obj.get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise MetadataError(source, f"{key}: expected a string, found {v!r}", code="format_error")
    return v


def parse_time(value: str | None, what: str, source: str) -> datetime | None:
    """RFC 3339 (Go ``time.Time`` JSON, up to nanoseconds) to an aware UTC datetime."""
    if value is None:
        return None
    v = value.strip()
    m = re.fullmatch(r"(.*?\.\d{6})\d+(Z|[+-]\d\d:\d\d)?", v)  # Python keeps microseconds
    if m:
        v = m.group(1) + (m.group(2) or "")
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        raise MetadataError(source, f"{what}: not an RFC 3339 time: {value!r}", code="format_error") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)


def backup_name(key_or_name: str) -> str:
    """Strip a trailing ``_backup_stop_sentinel.json`` and any directory part."""
    name = key_or_name.rsplit("/", 1)[-1]
    return name.removesuffix(SENTINEL_SUFFIX)


def parse_sentinel(data: bytes, name: str, source: str) -> Backup:
    """A ``base_…_backup_stop_sentinel.json`` to a done Backup labelled with the backup name.

    Delta backups (``DeltaFrom`` present) are of type delta, ``parent`` = DeltaFrom and
    ``depends_on`` = (DeltaFrom, DeltaFullName): the sentinel names only these two, the scanner
    completes intermediate links with :func:`delta_chain`. Times come only from V2 sentinels;
    ``FinishTime`` is taken after the upload, so ``stop_time_exact`` is always False.
    """
    label = backup_name(name)
    m = NAME_RE.match(label)
    if not m:
        raise MetadataError(source, f"not a WAL-G backup name: {label!r}", code="format_error")
    obj = load_json(data, source)
    start = _int(obj, "LSN", source, required=True)
    stop = _int(obj, "FinishLSN", source)
    delta_from = _str(obj, "DeltaFrom", source)
    delta_full = _str(obj, "DeltaFullName", source)
    depends = tuple(dict.fromkeys(x for x in (delta_from, delta_full) if x))
    sysid = _int(obj, "SystemIdentifier", source)
    return Backup(
        label=label,
        type=BackupType.DELTA if delta_from else BackupType.FULL,
        status=BackupStatus.DONE,
        timeline=int(m.group("start")[:8], 16),
        start_lsn=Lsn(start) if start is not None else None,
        stop_lsn=Lsn(stop) if stop is not None and stop > 0 else None,
        start_time=parse_time(_str(obj, "StartTime", source), "StartTime", source),
        stop_time=parse_time(_str(obj, "FinishTime", source), "FinishTime", source),
        depends_on=depends,
        parent=delta_from,
        size_bytes=_int(obj, "UncompressedSize", source),
        repo_size_bytes=_int(obj, "CompressedSize", source),
        pg_version=_int(obj, "PgVersion", source),
        system_id=sysid,
        stop_time_exact=False,
        metadata_key=source,
    )


@dataclass(frozen=True, slots=True)
class WalgMetadata:
    """``<name>/metadata.json`` (ExtendedMetadataDto)."""

    start_time: datetime | None
    finish_time: datetime | None
    hostname: str | None
    data_dir: str | None
    pg_version: int | None
    start_lsn: Lsn | None
    finish_lsn: Lsn | None
    is_permanent: bool
    system_identifier: int | None
    uncompressed_size: int | None
    compressed_size: int | None


def parse_metadata(data: bytes, source: str) -> WalgMetadata:
    obj = load_json(data, source)
    start, finish = _int(obj, "start_lsn", source), _int(obj, "finish_lsn", source)
    return WalgMetadata(
        start_time=parse_time(_str(obj, "start_time", source), "start_time", source),
        finish_time=parse_time(_str(obj, "finish_time", source), "finish_time", source),
        hostname=_str(obj, "hostname", source),
        data_dir=_str(obj, "data_dir", source),
        pg_version=_int(obj, "pg_version", source),
        start_lsn=Lsn(start) if start is not None else None,
        finish_lsn=Lsn(finish) if finish else None,
        is_permanent=obj.get("is_permanent") is True,
        system_identifier=_int(obj, "system_identifier", source),
        uncompressed_size=_int(obj, "uncompressed_size", source),
        compressed_size=_int(obj, "compressed_size", source),
    )


def with_metadata(backup: Backup, meta: WalgMetadata) -> Backup:
    """Fill what a (V1) sentinel lacks from metadata.json; the sentinel wins where both speak."""
    return replace(
        backup,
        start_time=backup.start_time or meta.start_time,
        stop_time=backup.stop_time or meta.finish_time,
        stop_lsn=backup.stop_lsn or meta.finish_lsn,
        pg_version=backup.pg_version or meta.pg_version,
        system_id=backup.system_id or meta.system_identifier,
        size_bytes=backup.size_bytes if backup.size_bytes is not None else meta.uncompressed_size,
        repo_size_bytes=backup.repo_size_bytes if backup.repo_size_bytes is not None else meta.compressed_size,
    )


def delta_chain(label: str, backups: Mapping[str, Backup]) -> tuple[str, ...]:
    """Every backup a delta needs, parent first, down to the full; stops at a missing link or a loop."""
    out: list[str] = []
    b = backups.get(label)
    while b is not None and b.parent and b.parent not in out and b.parent != label:
        out.append(b.parent)
        b = backups.get(b.parent)
    for extra in backups[label].depends_on if label in backups else ():
        if extra not in out:
            out.append(extra)
    return tuple(out)


# --- keys --------------------------------------------------------------------------------------

def classify_wal_key(rel: str, seg_size: int) -> WalObject | MetaObject | ForeignObject:
    """A key relative to ``wal_005/``: ``<name>[.<ext>]`` with a known extension (or ``name.``).

    ``_delta`` maps and ``<seg>.json`` side files are known (MetaObject), not foreign.

    >>> classify_wal_key("000000010000000000000001.lz4", 16 << 20).compression
    'lz4'
    >>> classify_wal_key("000000010000000000000001.", 16 << 20).compression is None
    True
    >>> classify_wal_key("000000010000000000000001.json", 16 << 20).kind
    'wal_metadata'
    """
    bad = unsafe_key_reason(rel)
    if bad:
        return ForeignObject(rel, bad)
    if "/" in rel:
        return ForeignObject(rel, "wal_005/ has no subdirectories")
    base, dot, ext = rel.rpartition(".")
    candidates: list[tuple[str, str | None]] = [(rel, None)]
    if dot and base:
        if ext == "":
            candidates.insert(0, (base, None))          # older WAL-G: "a dangling trailing dot"
        elif ext in ALLOWED[Layout.WALG]:
            candidates.insert(0, (base, ext))
        elif ext == "json" and _is_segment(base, seg_size):
            return MetaObject(rel, KIND_WAL_METADATA, None)
    for name, compression in candidates:
        w = wal_object(name, seg_size, compression)
        if w is not None:
            return w
        if name.endswith("_delta") and _is_segment(name[:-6], seg_size):
            return MetaObject(rel, KIND_WAL_DELTA, None)
    return ForeignObject(rel, "not a WAL file name with a known WAL-G compression extension")


def _is_segment(name: str, seg_size: int) -> bool:
    w = wal_object(name, seg_size)
    return w is not None and w.kind is WalKind.SEGMENT


def classify_basebackup_key(rel: str) -> MetaObject | ForeignObject:
    """A key relative to ``basebackups_005/``: depth-1 sentinels, per-backup metadata and payload.

    >>> classify_basebackup_key("base_000000010000000000000002_backup_stop_sentinel.json").kind
    'sentinel'
    >>> classify_basebackup_key("base_000000010000000000000002/tar_partitions/part_001.tar.lz4").kind
    'payload'
    """
    split = split_basebackup_key(rel, NAME_RE, backup_name, "base_<segment>[_D_<segment>]")
    if not isinstance(split, tuple):
        return split
    label, tail = split
    if tail == ["metadata.json"]:
        return MetaObject(rel, KIND_METADATA, label)
    if tail == ["files_metadata.json"]:
        return MetaObject(rel, KIND_FILES_METADATA, label)
    if tail[0] == "tar_partitions" and len(tail) == 2 and tail[1]:
        return MetaObject(rel, KIND_PAYLOAD, label)
    return ForeignObject(rel, "not metadata.json, files_metadata.json or tar_partitions/")


# --- scan and restore ------------------------------------------------------------------------------------

scan = basebackups.scanner(parse_sentinel, classify_wal_key)


def fetch_command(loc: StorageLoc, label: str, pgdata: str, s3: S3Access, work: str) -> Command:
    env = {**aws_env(s3), "WALG_S3_PREFIX": loc.url}
    if s3.endpoint_url:
        env["AWS_ENDPOINT"] = s3.endpoint_url
        env["AWS_S3_FORCE_PATH_STYLE"] = "true"
    if s3.ca_bundle:
        env["WALG_S3_CA_CERT_FILE"] = s3.ca_bundle
    return Command(("wal-g", "backup-fetch", pgdata, label), env=env,
                   label="WAL-G backup-fetch (command line from its documented CLI; not installed here)")


def restore_command(loc: StorageLoc, endpoint_url: str | None = None) -> str:
    return 'wal-g wal-fetch "%f" "%p"'


LAYOUT = LayoutSpec(
    layout=Layout.WALG, tool="WAL-G", classify_wal_key=classify_wal_key, scan=scan, fetch_command=fetch_command,
    restore_command=restore_command, purge_prefixes=basebackups.purge_prefixes, same_segment=by_content,
    classify_event=basebackups.event_classifier(classify_wal_key), wal_roots=basebackups.wal_roots_of(classify_wal_key),
    event_backups=basebackups.event_backups_of(parse_sentinel),
    duplicates_note=basebackups.DUPLICATES_NOTE)
