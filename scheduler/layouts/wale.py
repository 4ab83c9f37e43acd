"""WAL-E 1.1.1: the whole layout (LAYOUTS.md §4; docs/internals.md "Adding a layout"): ``wal_005/<name>.lzo``
and ``basebackups_005/`` sentinels, the scan (shared with WAL-G: basebackups.py), the backup-fetch and
wal-fetch lines, the purge prefixes and the duplicate rule.

Backup names carry the start position: ``base_<24hex>_<8 decimal digits>`` (``lpad(offset::text,
8, '0')``). The sentinel holds the stop segment and decimal offset and nothing about time: the
scanner fills ``stop_time`` from the sentinel's LastModified (``stop_time_exact`` False).
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from recovery.errors import MetadataError, ParseError
from recovery.lsn import Lsn
from recovery.model import Backup, BackupStatus, BackupType, Layout, WalObject
from recovery.wal import DEFAULT_SEG_SIZE, WalSegment
from scheduler.layouts import basebackups
from scheduler.layouts.common import (
    SENTINEL_SUFFIX,
    ForeignObject,
    MetaObject,
    split_basebackup_key,
    unsafe_key_reason,
    wal_object,
)
from scheduler.layouts.spec import Command, LayoutSpec, S3Access, StorageLoc, aws_env, by_content
from scheduler.layouts.walg import load_json

SEG_SIZE = DEFAULT_SEG_SIZE      # hard-coded in WAL-E
NAME_RE = re.compile(r"^base_(?P<seg>[0-9A-F]{24})_(?P<off>\d{8})$")

KIND_METADATA = "extended_version"
KIND_PAYLOAD = "payload"


def position(segment: str, offset: str, what: str, source: str) -> Lsn:
    """LSN of (segment name, decimal offset) as ``pg_walfile_name_offset`` reported it.

    ``pg_walfile_name_offset`` names the *previous* segment for a position exactly on a
    boundary, with offset 0: so offset 0 means the end of the named segment (LAYOUTS.md §5.1).

    >>> str(position("000000010000000000000003", "00000216", "x", "s"))
    '0/30000D8'
    >>> str(position("000000010000000000000004", "00000000", "x", "s"))
    '0/5000000'
    """
    try:
        seg = WalSegment.from_name(segment, SEG_SIZE)
        off = int(offset, 10)
    except (ValueError, ParseError) as e:
        raise MetadataError(source, f"{what}: bad position {segment!r} + {offset!r} ({e})",
                            code="format_error") from None
    if not 0 <= off < SEG_SIZE:
        raise MetadataError(source, f"{what}: offset {off} outside a {SEG_SIZE}-byte segment", code="format_error")
    return seg.end_lsn if off == 0 else seg.start_lsn + off


def backup_name(key_or_name: str) -> str:
    name = key_or_name.rsplit("/", 1)[-1]
    return name.removesuffix(SENTINEL_SUFFIX)


def parse_sentinel(data: bytes, name: str, source: str) -> Backup:
    """A WAL-E sentinel to a done, full Backup; start from the name, stop from the sentinel."""
    label = backup_name(name)
    m = NAME_RE.match(label)
    if not m:
        raise MetadataError(source, f"not a WAL-E backup name: {label!r}", code="format_error")
    obj = load_json(data, source)
    stop_seg = obj.get("wal_segment_backup_stop")
    stop_off = obj.get("wal_segment_offset_backup_stop")
    if not isinstance(stop_seg, str) or not isinstance(stop_off, str) or not re.fullmatch(r"\d{1,10}", stop_off):
        raise MetadataError(source, "missing or malformed wal_segment_backup_stop / wal_segment_offset_backup_stop",
                            code="format_error")
    size = obj.get("expanded_size_bytes")
    return Backup(
        label=label,
        type=BackupType.FULL,
        status=BackupStatus.DONE,
        timeline=int(m.group("seg")[:8], 16),
        start_lsn=position(m.group("seg"), m.group("off"), "backup name", source),
        stop_lsn=position(stop_seg, stop_off, "sentinel stop", source),
        start_time=None,
        stop_time=None,
        size_bytes=size if isinstance(size, int) and not isinstance(size, bool) else None,
        seg_size=SEG_SIZE,
        stop_time_exact=False,
        metadata_key=source,
    )


def classify_wal_key(rel: str, seg_size: int = SEG_SIZE) -> WalObject | ForeignObject:
    """A key relative to ``wal_005/``: always ``<name>.lzo``.

    >>> classify_wal_key("000000010000000000000001.lzo").segno
    1
    >>> classify_wal_key("000000010000000000000001.gz").reason
    'not <WAL file name>.lzo'
    """
    bad = unsafe_key_reason(rel)
    if bad:
        return ForeignObject(rel, bad)
    if "/" in rel:
        return ForeignObject(rel, "wal_005/ has no subdirectories")
    if rel.endswith(".lzo"):
        w = wal_object(rel[:-4], seg_size, "lzo")
        if w is not None:
            return w
    return ForeignObject(rel, "not <WAL file name>.lzo")


def classify_basebackup_key(rel: str) -> MetaObject | ForeignObject:
    """A key relative to ``basebackups_005/``: depth-1 sentinels, extended_version.txt, tar parts."""
    split = split_basebackup_key(rel, NAME_RE, backup_name, "base_<segment>_<offset>")
    if not isinstance(split, tuple):
        return split
    label, tail = split
    if tail == ["extended_version.txt"]:
        return MetaObject(rel, KIND_METADATA, label)
    if len(tail) == 2 and tail[0] == "tar_partitions" and re.fullmatch(r"part_\d+\.tar(\.lzo)?", tail[1]):
        return MetaObject(rel, KIND_PAYLOAD, label)
    return ForeignObject(rel, "not extended_version.txt or tar_partitions/part_N.tar.lzo")


# --- scan and restore ------------------------------------------------------------------------------------

scan = basebackups.scanner(parse_sentinel, classify_wal_key)


def fetch_command(loc: StorageLoc, label: str, pgdata: str, s3: S3Access, work: str) -> Command:
    env = {**aws_env(s3), "WALE_S3_PREFIX": loc.url}
    if s3.endpoint_url:
        u = urlsplit(s3.endpoint_url)
        env["WALE_S3_ENDPOINT"] = f"{u.scheme}+path://{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"
    return Command(("wal-e", "backup-fetch", pgdata, label), env=env, label="WAL-E backup-fetch")


def restore_command(loc: StorageLoc, endpoint_url: str | None = None) -> str:
    return 'envdir /etc/wal-e.d/env wal-e wal-fetch "%f" "%p"'


LAYOUT = LayoutSpec(
    layout=Layout.WALE, tool="WAL-E", classify_wal_key=classify_wal_key, scan=scan, fetch_command=fetch_command,
    restore_command=restore_command, purge_prefixes=basebackups.purge_prefixes, same_segment=by_content,
    classify_event=basebackups.event_classifier(classify_wal_key), wal_roots=basebackups.wal_roots_of(classify_wal_key),
    event_backups=basebackups.event_backups_of(parse_sentinel),
    duplicates_note=basebackups.DUPLICATES_NOTE)
