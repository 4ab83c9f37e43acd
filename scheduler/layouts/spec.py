"""What a layout module provides (:class:`LayoutSpec`), and the value types its capabilities speak in.

Every member of :class:`recovery.model.Layout` has a module ``scheduler/layouts/<value>.py`` whose
``LAYOUT`` is its spec: the layout's whole knowledge, from key classification to the restore command
(docs/internals.md "Adding a layout"). :func:`scheduler.layouts.spec_of` finds it; nothing else lists
layouts. The command lines, prefixes and duplicate rules are pure (strings in, strings out); ``scan``
reads through the :class:`scheduler.storage.ObjectStore` it is given.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from recovery.model import Backup, Layout, Storage, WalKind, WalObject
from scheduler.layouts.common import ForeignObject

if TYPE_CHECKING:
    from scheduler.scanning import Acc, LayoutScan, Previous
    from scheduler.storage import ObjectStore


class LayoutArgumentError(ValueError):
    """What a layout needs to name its command or its prefixes is missing (e.g. a barman server name)."""


@dataclass(frozen=True, slots=True)
class StorageLoc:
    """Where an archive is: its layout, bucket, the tool's repository root and the stanza/server name."""

    layout: Layout
    bucket: str
    prefix: str
    stanza: str | None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True, slots=True)
class S3Access:
    """The S3 side of the settings, as the tools need it."""

    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"
    verify_tls: bool = True
    ca_bundle: str | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """One tool invocation: argv, the environment it adds, and files to write first (name -> text)."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    label: str = ""


def aws_env(s3: S3Access) -> dict[str, str]:
    """The AWS SDK variables of the settings (boto3-based tools: barman-cloud, WAL-E; WAL-G reads them too)."""
    env = {"AWS_DEFAULT_REGION": s3.region, "AWS_REGION": s3.region}
    if s3.access_key and s3.secret_key:
        env["AWS_ACCESS_KEY_ID"] = s3.access_key
        env["AWS_SECRET_ACCESS_KEY"] = s3.secret_key
    if s3.ca_bundle:
        env["AWS_CA_BUNDLE"] = s3.ca_bundle
    if s3.endpoint_url:     # for a restore_command without --endpoint-url (boto3 reads these)
        env["AWS_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL_S3"] = s3.endpoint_url
    return env


class Kind(StrEnum):
    """What an object is to the event consumer (``classify_event``)."""

    SEGMENT = "segment"            # a WAL segment: extends or splits runs, edge-read when it ends one
    HISTORY = "history"            # a timeline history file
    BACKUP_META = "backup_meta"    # backup.info, a manifest, a sentinel: re-read the backup set
    BACKUP_PAYLOAD = "backup_payload"   # payload of a backup: matters only for a backup the catalog lacks
    IGNORED = "ignored"            # known and irrelevant (partial segments, .backup labels, archive.info...)
    FOREIGN = "foreign"            # nothing any layout writes there


@dataclass(frozen=True, slots=True)
class Target:
    """A key's meaning to the event consumer."""

    kind: Kind
    timeline: int | None = None
    segno: int | None = None
    label: str | None = None       # backup label / id (None: the whole set, e.g. pgBackRest backup.info)
    reason: str = ""


def wal_target(c: object) -> Target:
    """What a WAL-root classification (``classify_wal_key``) means to the event consumer."""
    if isinstance(c, ForeignObject):
        return Target(Kind.FOREIGN, reason=c.reason)
    if isinstance(c, WalObject):
        if c.kind is WalKind.SEGMENT and c.segno is not None:
            return Target(Kind.SEGMENT, c.timeline, c.segno)
        if c.kind is WalKind.HISTORY:
            return Target(Kind.HISTORY, c.timeline)
        return Target(Kind.IGNORED, c.timeline, reason=f"WAL {c.kind.value} file")
    return Target(Kind.IGNORED, reason="WAL side file")


@dataclass(frozen=True, slots=True)
class MetaEvent:
    """A backup-metadata object an event created (``key``: the full key; ``time``: the event's)."""

    key: str
    label: str | None
    time: datetime | None


@dataclass(frozen=True, slots=True)
class WalRoot:
    """A listing root of WAL segments: ``rel_key(name)`` is a segment's key below ``prefix`` (without the
    tool's suffixes); ``classify`` the layout's ``classify_wal_key``."""

    prefix: str
    classify: Callable[[str, int], Any]
    hashed: bool        # keys under a <first 16 hex>/ directory (pgBackRest, barman)

    def rel_key(self, name: str) -> str:
        return f"{name[:16]}/{name}" if self.hashed else name


ScanFn = Callable[["ObjectStore", Storage, "Previous", str, "Acc", bool, int], Awaitable["LayoutScan"]]


# (store, root, stanza, backups the catalog holds by label, metadata objects created, labels of payload of
# backups the catalog lacks, acc) -> (the backup set after them, pg_version, system_id)
EventBackupsFn = Callable[["ObjectStore", str, "str | None", Mapping[str, Backup], Sequence[MetaEvent],
                           frozenset[str], "Acc"], Awaitable[tuple[dict[str, Backup], int | None, int | None]]]


@dataclass(frozen=True, slots=True)
class LayoutSpec:
    """One layout's knowledge. Each capability is a plain function:

    - ``classify_wal_key(rel, seg_size)``: a key below the WAL root as a WalObject, MetaObject, ForeignObject
      or None (``rel`` relative to ``wal_root(root, stanza)``, a listing root: for pgBackRest the archive
      id directory is part of ``rel``);
    - ``scan(store, storage, previous, root, acc, full, lookback)``: read the metadata and list the WAL;
    - ``fetch_command(loc, label, pgdata, s3, work)``: the tool restoring a base backup into ``pgdata``;
    - ``restore_command(loc, endpoint_url)``: the ``restore_command`` PostgreSQL runs to fetch WAL;
    - ``server_env(work)``: what the server's environment needs for that restore_command;
    - ``purge_prefixes(root, stanza)``: the exact key prefixes that hold the archive (what a purge deletes);
    - ``same_segment(a, b)``: two keys of one segment, judged by their names: True (one segment, no
      conflict), False (the tool refuses the pair whatever the bytes), None (compare the content);
      ``duplicates_note``: what the tool does with two copies, for the conflict's message;
    - ``content_sha1(key)``: the SHA-1 a segment key's name promises for its content (None: names carry none),
      checked when the scanner reads the segment;
    - ``classify_event(stanza, rel, seg_size)``: what a key relative to the instance's prefix is to the
      event consumer (:class:`Target`);
    - ``wal_roots(store, root, stanza)``: the WAL listing roots (:class:`WalRoot`) of the archive at ``root``;
    - ``event_backups(store, root, stanza, have, metas, unknown, acc)``: the backup set after events created
      metadata objects (``metas``) or payload of backups the catalog lacks (``unknown``), re-read with the
      scan's parsers by GET (no listing).
    """

    layout: Layout
    tool: str
    classify_wal_key: Callable[[str, int], Any]
    scan: ScanFn
    fetch_command: Callable[[StorageLoc, str, str, S3Access, str], Command]
    restore_command: Callable[[StorageLoc, str | None], str]
    purge_prefixes: Callable[[str, str | None], tuple[str, ...]]
    same_segment: Callable[[str, str], bool | None]
    duplicates_note: str
    classify_event: Callable[[str | None, str, int], Target]
    wal_roots: Callable[[ObjectStore, str, str | None], Awaitable[list[WalRoot]]]
    event_backups: EventBackupsFn
    server_env: Callable[[str], dict[str, str]] = lambda work: {}
    content_sha1: Callable[[str], str | None] = lambda key: None

    CAPABILITIES = ("classify_wal_key", "scan", "fetch_command", "restore_command", "purge_prefixes",
                    "same_segment", "server_env", "content_sha1", "classify_event", "wal_roots", "event_backups")


def by_content(a: str, b: str) -> bool | None:
    """Duplicate rule of the tools that fetch one copy without comparing: the content decides."""
    return None


def name_ok(name: str | None) -> bool:
    """A stanza or server name usable as one path component."""
    return name is not None and name != "" and "/" not in name and name not in (".", "..") and name == name.strip()
