"""What a layout module provides (:class:`LayoutSpec`), and the value types its capabilities speak in.

Every member of :class:`recovery.model.Layout` has a module ``scheduler/layouts/<value>.py`` whose
``LAYOUT`` is its spec: the layout's whole knowledge, from key classification to the restore command
(docs/internals.md "Adding a layout"). :func:`scheduler.layouts.spec_of` finds it; nothing else lists
layouts. The command lines, prefixes and duplicate rules are pure (strings in, strings out); ``scan``
reads through the :class:`scheduler.storage.ObjectStore` it is given.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recovery.model import Layout, Storage

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


ScanFn = Callable[["ObjectStore", Storage, "Previous", str, "Acc", bool, int], Awaitable["LayoutScan"]]


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
      checked when the scanner reads the segment.
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
    server_env: Callable[[str], dict[str, str]] = lambda work: {}
    content_sha1: Callable[[str], str | None] = lambda key: None

    CAPABILITIES = ("classify_wal_key", "scan", "fetch_command", "restore_command", "purge_prefixes",
                    "same_segment", "server_env", "content_sha1")


def by_content(a: str, b: str) -> bool | None:
    """Duplicate rule of the tools that fetch one copy without comparing: the content decides."""
    return None


def name_ok(name: str | None) -> bool:
    """A stanza or server name usable as one path component."""
    return name is not None and name != "" and "/" not in name and name not in (".", "..") and name == name.strip()
