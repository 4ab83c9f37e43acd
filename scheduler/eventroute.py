"""Where an S3 event goes: the instance whose registered (bucket, prefix) holds the key (longest prefix wins),
what the key is in that instance's layout, and whether the event is newer than what was applied for the key.

Pure: the consumer (:mod:`backup_catalog.usecases.events`) does the I/O. Key classification is the layout
modules' own (:mod:`scheduler.layouts`), so a key means to an event what it means to a scan.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from recovery.model import Layout, WalKind, WalObject
from scheduler.layouts import barman as bm
from scheduler.layouts import pgbackrest as pbr
from scheduler.layouts import wale, walg
from scheduler.layouts.common import ForeignObject
from scheduler.s3events import Action, S3Event, compare_sequencers


@dataclass(frozen=True, slots=True)
class Route:
    guid: str
    rel: str          # the key relative to the instance's prefix


class PrefixIndex:
    """Registered (bucket, prefix) -> instance; prefixes are ``Storage.normalized_prefix()`` ("" or "a/b/").

    A lookup tries the key's own "/"-boundaries, deepest first: O(depth of the key), whatever the fleet size.

    >>> ix = PrefixIndex([("b", "", "whole"), ("b", "pg/", "i1"), ("b", "pg/x/", "i2")])
    >>> ix.lookup("b", "pg/x/wal/1"), ix.lookup("b", "pg/y"), ix.lookup("c", "pg/y")
    (Route(guid='i2', rel='wal/1'), Route(guid='i1', rel='y'), None)
    """

    def __init__(self, entries: Iterable[tuple[str, str, str]]) -> None:
        self._map: dict[tuple[str, str], str] = {}
        def norm(prefix: str) -> str:
            p = prefix.strip("/")
            return f"{p}/" if p else ""
        for bucket, prefix, guid in sorted((b, norm(p), g) for b, p, g in entries):
            self._map.setdefault((bucket, prefix), guid)    # two instances on one prefix: the first GUID
        self.buckets = frozenset(b for b, _ in self._map)

    def __len__(self) -> int:
        return len(self._map)

    def prefixes(self, bucket: str) -> list[str]:
        """The registered prefixes of ``bucket``, sorted."""
        return sorted(p for b, p in self._map if b == bucket)

    def lookup(self, bucket: str, key: str) -> Route | None:
        if bucket not in self.buckets:
            return None
        end = len(key)
        while True:
            end = key.rfind("/", 0, end)
            prefix = key[:end + 1] if end >= 0 else ""
            guid = self._map.get((bucket, prefix))
            if guid is not None:
                return Route(guid, key[len(prefix):])
            if end < 0:
                return None


class Kind(StrEnum):
    SEGMENT = "segment"            # a WAL segment: extends or splits runs, edge-read when it ends one
    HISTORY = "history"            # a timeline history file
    BACKUP_META = "backup_meta"    # backup.info, a manifest, a sentinel: re-read the backup set
    BACKUP_PAYLOAD = "backup_payload"   # payload of a backup: matters only for a backup the catalog lacks
    IGNORED = "ignored"            # known and irrelevant (partial segments, .backup labels, archive.info...)
    FOREIGN = "foreign"            # nothing any layout writes there


@dataclass(frozen=True, slots=True)
class Target:
    kind: Kind
    timeline: int | None = None
    segno: int | None = None
    label: str | None = None       # backup label / id (None: the whole set, e.g. pgBackRest backup.info)
    reason: str = ""


def _wal_target(c: object) -> Target:
    if isinstance(c, ForeignObject):
        return Target(Kind.FOREIGN, reason=c.reason)
    if isinstance(c, WalObject):
        if c.kind is WalKind.SEGMENT and c.segno is not None:
            return Target(Kind.SEGMENT, c.timeline, c.segno)
        if c.kind is WalKind.HISTORY:
            return Target(Kind.HISTORY, c.timeline)
        return Target(Kind.IGNORED, c.timeline, reason=f"WAL {c.kind.value} file")
    return Target(Kind.IGNORED, reason="WAL side file")


def classify(layout: Layout, stanza: str | None, rel: str, seg_size: int) -> Target:
    """What ``rel`` (a key relative to the instance's prefix) is in ``layout``.

    >>> classify(Layout.BARMAN, "main", "main/wals/0000000100000000/000000010000000000000003.gz", 16 << 20)
    Target(kind=<Kind.SEGMENT: 'segment'>, timeline=1, segno=3, label=None, reason='')
    >>> classify(Layout.PGBACKREST, "main", "backup/main/backup.info", 16 << 20).kind
    <Kind.BACKUP_META: 'backup_meta'>
    """
    if layout is Layout.PGBACKREST:
        return _pgbackrest(stanza, rel, seg_size)
    if layout is Layout.BARMAN:
        return _barman(stanza, rel, seg_size)
    mod = walg if layout is Layout.WALG else wale
    if rel.startswith("wal_005/"):
        return _wal_target(mod.classify_wal_key(rel[len("wal_005/"):], seg_size))
    if rel.startswith("basebackups_005/"):
        name = rel[len("basebackups_005/"):]
        if "/" not in name and name.endswith("_backup_stop_sentinel.json"):
            return Target(Kind.BACKUP_META, label=name[: -len("_backup_stop_sentinel.json")])
        if "/" in name:
            return Target(Kind.BACKUP_PAYLOAD, label=name.split("/", 1)[0])
    return Target(Kind.FOREIGN, reason="not under wal_005/ or basebackups_005/")


def _pgbackrest(stanza: str | None, rel: str, seg_size: int) -> Target:
    parts = rel.split("/")
    if len(parts) < 3 or parts[0] not in ("archive", "backup"):
        return Target(Kind.FOREIGN, reason="not under archive/<stanza>/ or backup/<stanza>/")
    if stanza is not None and parts[1] != stanza:
        return Target(Kind.IGNORED, reason=f"stanza {parts[1]!r} is not this instance's")
    if parts[0] == "archive":
        if len(parts) == 3:
            return Target(Kind.IGNORED, reason="archive.info")
        c = pbr.classify_archive_root_entry(parts[2] + "/")
        if isinstance(c, ForeignObject):
            return Target(Kind.FOREIGN, reason=c.reason)
        return _wal_target(pbr.classify_archive_key("/".join(parts[3:]), seg_size))
    if len(parts) == 3:
        kind = pbr.classify_backup_root_entry(parts[2])
        if not isinstance(kind, ForeignObject) and kind.kind in (pbr.KIND_BACKUP_INFO, pbr.KIND_BACKUP_INFO_COPY):
            return Target(Kind.BACKUP_META)
        return Target(Kind.IGNORED, reason="not backup.info in the backup directory")
    if not pbr.is_label(parts[2]):
        return Target(Kind.IGNORED, reason="backup.history/ or another non-backup directory")
    if len(parts) == 4 and parts[3] in ("backup.manifest", "backup.manifest.copy"):
        return Target(Kind.BACKUP_META, label=parts[2])
    return Target(Kind.BACKUP_PAYLOAD, label=parts[2])


def _barman(server: str | None, rel: str, seg_size: int) -> Target:
    parts = rel.split("/", 2)
    if len(parts) < 3 or parts[1] not in ("wals", "base"):
        return Target(Kind.FOREIGN, reason="not under <server>/wals/ or <server>/base/")
    if server is not None and parts[0] != server:
        return Target(Kind.IGNORED, reason=f"server {parts[0]!r} is not this instance's")
    if parts[1] == "wals":
        return _wal_target(bm.classify_wal_key(parts[2], seg_size))
    c = bm.classify_base_key(parts[2])
    if isinstance(c, ForeignObject):
        return Target(Kind.FOREIGN, reason=c.reason)
    if c.kind == bm.KIND_BACKUP_INFO:
        return Target(Kind.BACKUP_META, label=c.label)
    return Target(Kind.BACKUP_PAYLOAD, label=c.label)


class Verdict(StrEnum):
    APPLY = "apply"
    OLDER = "older"            # the key has a newer applied event (sequencer): ignored
    DUPLICATE = "duplicate"    # this very event (or an equivalent one) was applied: ignored


@dataclass(frozen=True, slots=True)
class Applied:
    """The newest event applied for one key (what the catalog remembers per key)."""

    action: Action
    sequencer: str | None


def verdict(event: S3Event, target: Target, applied: Applied | None) -> Verdict:
    """Order-free and idempotent application, per key.

    With sequencers on both sides, only a newer event applies. Without (moto, some MinIO/RGW versions):
    a segment created again is a duplicate (WAL segments are written once); metadata is re-read (what is
    read is the current object, so re-reading is harmless); a removal is confirmed against the store
    (HEAD) by the caller before it changes the catalog.

    >>> e = S3Event("b", "k", Action.CREATED, "ObjectCreated:Put", None, "0B")
    >>> seg = Target(Kind.SEGMENT, 1, 2)
    >>> verdict(e, seg, None), verdict(e, seg, Applied(Action.CREATED, "0B")), verdict(e, seg, Applied(Action.REMOVED, "0C"))
    (<Verdict.APPLY: 'apply'>, <Verdict.DUPLICATE: 'duplicate'>, <Verdict.OLDER: 'older'>)
    """
    if applied is None:
        return Verdict.APPLY
    if event.sequencer is not None and applied.sequencer is not None:
        c = compare_sequencers(event.sequencer, applied.sequencer)
        return Verdict.APPLY if c > 0 else Verdict.DUPLICATE if c == 0 else Verdict.OLDER
    if event.action is Action.CREATED and applied.action is Action.CREATED and target.kind is Kind.SEGMENT:
        return Verdict.DUPLICATE
    return Verdict.APPLY


__all__ = ["Applied", "Kind", "PrefixIndex", "Route", "Target", "Verdict", "classify", "verdict"]
