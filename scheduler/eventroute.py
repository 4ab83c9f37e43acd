"""Where an S3 event goes: the instance whose registered (bucket, prefix) holds the key (longest prefix wins),
what the key is in that instance's layout, and whether the event is newer than what was applied for the key.

Pure: the consumer (:mod:`backup_catalog.usecases.events`) does the I/O. Key classification is the layout
modules' own (``LayoutSpec.classify_event``, built on the scan's key classification), so a key means to an
event what it means to a scan.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from recovery.model import Layout
from scheduler.layouts import spec_of
from scheduler.layouts.spec import Kind, Target
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


def classify(layout: Layout, stanza: str | None, rel: str, seg_size: int) -> Target:
    """What ``rel`` (a key relative to the instance's prefix) is in ``layout`` (the layout module's
    ``classify_event``).

    >>> classify(Layout.BARMAN, "main", "main/wals/0000000100000000/000000010000000000000003.gz", 16 << 20)
    Target(kind=<Kind.SEGMENT: 'segment'>, timeline=1, segno=3, label=None, reason='')
    >>> classify(Layout.PGBACKREST, "main", "backup/main/backup.info", 16 << 20).kind
    <Kind.BACKUP_META: 'backup_meta'>
    """
    return spec_of(layout).classify_event(stanza, rel, seg_size)


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
