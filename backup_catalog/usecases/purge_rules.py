"""Undo period and purge: the pure selection and safety rules (no I/O; exhaustively tested).

An instance deleted at D stays clonable until ``D + DELETED_RETENTION_DAYS`` (its ``undo_until``); a purge
deletes its archive only after a further ``PURGE_GRACE_HOURS`` (``delete_after``), and only when:

- nobody holds it (an operator hold exempts an instance);
- its exact prefixes are known, as its layout names them (``purge_prefixes`` of :mod:`scheduler.layouts`):
  pgBackRest ``<repo>/archive/<stanza>/`` and ``<repo>/backup/<stanza>/``; barman-cloud ``<prefix>/<server>/``;
  WAL-G/WAL-E ``<prefix>/basebackups_005/`` and ``<prefix>/wal_005/``
  (never the repository root, so sibling stanzas/servers in the bucket are out of reach);
- no other catalogued instance that is live, held, in its undo period or in its grace uses a prefix that
  overlaps one of them (either contains the other; an instance whose exact prefixes are unknown claims its
  whole root);
- nothing under them was written after the deletion (``LastModified > deleted_at``: in use again).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from recovery.timefmt import iso
from scheduler.layouts import spec_of
from scheduler.layouts.spec import LayoutArgumentError

if TYPE_CHECKING:
    from backup_catalog.settings import UndoConfig


class State(StrEnum):
    DUE = "due"             # would be deleted now (dry run) / about to be
    GRACE = "grace"         # undo period over, grace period still running
    REFUSED = "refused"     # due, but a safety rule forbids deleting it (see reason)
    DELETED = "deleted"     # deleted by this run
    FAILED = "failed"       # this run could not finish it (resumable)


@dataclass(frozen=True, slots=True)
class Policy:
    retention_days: float
    grace_hours: float

    def __post_init__(self) -> None:
        if not (self.retention_days >= 0 and self.grace_hours >= 0):
            raise ValueError("DELETED_RETENTION_DAYS and PURGE_GRACE_HOURS must be >= 0")

    @property
    def name(self) -> str:
        """How the audit and the ``purged`` refusal name the rule.

        >>> Policy(30, 24).name
        'DELETED_RETENTION_DAYS=30 PURGE_GRACE_HOURS=24'
        """
        return f"DELETED_RETENTION_DAYS={self.retention_days:g} PURGE_GRACE_HOURS={self.grace_hours:g}"

    def undo_until(self, deleted_at: datetime) -> datetime:
        return deleted_at + timedelta(days=self.retention_days)

    def delete_after(self, deleted_at: datetime) -> datetime:
        return self.undo_until(deleted_at) + timedelta(hours=self.grace_hours)


@dataclass(frozen=True, slots=True)
class Location:
    """What the rules need to know about one catalogued instance."""

    guid: str
    bucket: str
    prefix: str                     # the tool's repository root as registered
    layout: str | None              # pgbackrest|barman|walg|wale; None: unknown (never scanned, ``auto``)
    stanza: str | None = None       # pgBackRest stanza / barman-cloud server name
    deleted_at: datetime | None = None
    hold_at: datetime | None = None
    hold_reason: str | None = None
    purged_at: datetime | None = None
    purge_started: bool = False     # a purge already began deleting (resumed whatever the policy says now)


@dataclass(frozen=True, slots=True)
class Decision:
    guid: str
    state: State
    reason: str | None
    prefixes: tuple[str, ...]
    undo_until: datetime
    delete_after: datetime


class Unsafe(Exception):
    """The instance's exact prefixes cannot be named; the message says why."""


def root(prefix: str) -> str:
    """A registered prefix as a key prefix: no leading slash, one trailing slash ('' = the whole bucket).

    >>> root("/pgbackrest"), root("barman/"), root(""), root("/"), root("a//b/")
    ('pgbackrest/', 'barman/', '', '', 'a//b/')
    """
    p = prefix.lstrip("/")
    return p if p == "" or p.endswith("/") else p + "/"


def deletion_prefixes(loc: Location) -> tuple[str, ...]:
    """The exact key prefixes a purge of ``loc`` deletes.

    :raises Unsafe: layout, stanza or server unknown or not a single path component.
    """
    if loc.layout is None:
        raise Unsafe("archive layout unknown (auto, never scanned): its exact prefixes cannot be named")
    try:
        return spec_of(loc.layout).purge_prefixes(root(loc.prefix), loc.stanza)
    except ValueError as e:      # the layout's LayoutArgumentError, or not a layout
        raise Unsafe(str(e) if isinstance(e, LayoutArgumentError) else
                     f"archive layout unknown ({loc.layout}): its exact prefixes cannot be named") from None


def claimed_prefixes(loc: Location) -> tuple[str, ...]:
    """What an instance uses, for the overlap rule: its exact prefixes when they can be named, else its
    whole repository root (an unscanned or unknown instance may use anything under it)."""
    try:
        return deletion_prefixes(loc)
    except Unsafe:
        return (root(loc.prefix),)


def overlaps(a: str, b: str) -> bool:
    """Key prefixes overlap when one contains the other.

    >>> overlaps("x/archive/main/", "x/"), overlaps("x/", "x/archive/main/"), overlaps("x/a/", "x/ab/")
    (True, True, False)
    """
    return a.startswith(b) or b.startswith(a)


def _protected(o: Location, policy: Policy, now: datetime) -> str | None:
    """Why another instance's prefixes are protected (None: purged, or deleted and past its own grace, with
    no hold, so nothing is promised about its archive any more)."""
    if o.purged_at is not None:
        return None
    if o.deleted_at is None:
        return "live"
    if o.hold_at is not None:
        return "held"
    if now < policy.undo_until(o.deleted_at):
        return "in its undo period"
    if now < policy.delete_after(o.deleted_at):
        return "in its grace period"
    return None


def sharing(loc: Location, prefixes: Sequence[str], others: Iterable[Location], policy: Policy,
            now: datetime) -> str | None:
    """The reason another instance (live, held, in its undo period or grace) forbids deleting ``prefixes``."""
    for o in others:
        if o.guid == loc.guid or o.bucket != loc.bucket:
            continue
        why = _protected(o, policy, now)
        if why is None:
            continue
        for mine in prefixes:
            for theirs in claimed_prefixes(o):
                if overlaps(mine, theirs):
                    return (f"prefix s3://{loc.bucket}/{mine} overlaps s3://{o.bucket}/{theirs} of instance "
                            f"{o.guid} ({why})")
    return None


def decide(loc: Location, others: Iterable[Location], policy: Policy, now: datetime) -> Decision | None:
    """The catalog part of the purge decision for one instance; None when it is not due (live, in its undo
    period, or already purged). The listing part is :func:`reused`."""
    if loc.deleted_at is None or loc.purged_at is not None:
        return None
    undo, after = policy.undo_until(loc.deleted_at), policy.delete_after(loc.deleted_at)
    if now < undo and not loc.purge_started:
        return None
    try:
        prefixes = deletion_prefixes(loc)
    except Unsafe as e:
        return Decision(loc.guid, State.REFUSED, str(e), (), undo, after)
    if loc.hold_at is not None:
        why = f": {loc.hold_reason}" if loc.hold_reason else ""
        return Decision(loc.guid, State.REFUSED, f"operator hold since {iso(loc.hold_at)}{why}", prefixes,
                        undo, after)
    if now < after and not loc.purge_started:
        return Decision(loc.guid, State.GRACE, f"in the grace period until {iso(after)}", prefixes, undo, after)
    shared = sharing(loc, prefixes, others, policy, now)
    if shared is not None:
        return Decision(loc.guid, State.REFUSED, shared, prefixes, undo, after)
    return Decision(loc.guid, State.DUE, None, prefixes, undo, after)


def reused(objects: Iterable[tuple[str, datetime]], deleted_at: datetime) -> str | None:
    """The reason a listing shows the prefix in use again (an object written after the deletion), or None."""
    newest: tuple[str, datetime] | None = None
    count = 0
    for key, modified in objects:
        if modified > deleted_at:
            count += 1
            if newest is None or modified > newest[1]:
                newest = (key, modified)
    if newest is None:
        return None
    return (f"prefix in use again: {count} object(s) written after the deletion at {iso(deleted_at)}, "
            f"newest {newest[0]} at {iso(newest[1])}")


def batches(keys: Sequence[str], size: int = 1000) -> list[Sequence[str]]:
    """DeleteObjects takes at most 1,000 keys per request.

    >>> [len(b) for b in batches([str(i) for i in range(2500)])]
    [1000, 1000, 500]
    """
    size = max(1, min(1000, size))
    return [keys[i:i + size] for i in range(0, len(keys), size)]


def policy_of(settings: UndoConfig) -> Policy:
    return Policy(settings.deleted_retention_days, settings.purge_grace_hours)


def undo_until(settings: UndoConfig, deleted_at: datetime | None) -> datetime | None:
    """Until when a deleted instance stays clonable (None for a live one)."""
    return None if deleted_at is None else policy_of(settings).undo_until(deleted_at)
