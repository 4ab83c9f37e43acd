"""Narrowing a snapshot to the planner's newest candidate backups (a speed concern, kept apart from the
planner's rules): the candidate order the planner tries backups in, and the narrowed snapshot whose plan
equals the whole snapshot's whenever the chosen backup is in the prefix. Pure: no I/O, no state.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone

from recovery.model import ArchiveSnapshot, Backup
from recovery.target import Target, TargetKind


def is_candidate(b: Backup, target: Target) -> bool:
    assert b.stop_lsn is not None
    if target.kind is TargetKind.TIME:
        if b.stop_time is None:
            return False
        return b.stop_time <= target.time if target.inclusive else b.stop_time < target.time
    if target.kind is TargetKind.LSN:
        return b.stop_lsn <= target.lsn
    if target.exact:      # the commit or restore point record must follow the backup's consistency point
        return b.stop_lsn <= target.resolved.lsn
    return True


def backup_key(target: Target) -> Callable[[Backup], tuple[object, ...]]:
    """Sort key of the planner's candidate order (:func:`candidate_order`); newest is largest."""
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    if candidate_order(target) == "time":
        return lambda b: (b.stop_time or epoch, b.stop_lsn, b.label)
    return lambda b: (b.stop_lsn, b.stop_time or epoch, b.label)


def narrowable(target: Target) -> bool:
    """Can the plan for ``target`` come from a snapshot narrowed to its newest candidates?

    The planner picks the first backup that replays, in :func:`candidate_order` among those passing
    :func:`is_candidate`; a snapshot holding a prefix of that order (with each one's ``depends_on``
    chain) gives the same choice whenever the prefix contains it. Not for ``timeline: current``, whose
    windows are per backup timeline.
    """
    return target.timeline != "current"


def candidate_order(target: Target) -> str:
    """``time`` or ``lsn``: the order in which the planner tries candidates (newest first)."""
    return "time" if target.timeline == "current" or target.kind is TargetKind.TIME else "lsn"


def narrow(snapshot: ArchiveSnapshot, target: Target, k: int) -> tuple[ArchiveSnapshot, frozenset[str]]:
    """``snapshot`` with only the ``k`` newest usable candidates for ``target`` (the *prefix*) and their
    ``depends_on`` chains, and the prefix's labels — the reference for the catalog's narrowed load.

    A plan from the narrowed snapshot equals the whole snapshot's plan when it chose a backup of the
    prefix: every candidate tried before it is in the prefix too. A dependency outside the prefix can
    also be a candidate; a plan choosing it proves nothing (older prefix-external candidates are missing).
    """
    cands = sorted((b for b in snapshot.backups if b.usable and is_candidate(b, target)),
                   key=backup_key(target), reverse=True)
    prefix = frozenset(b.label for b in cands[:k])
    by_label = {b.label: b for b in snapshot.backups}
    keep: set[str] = set()
    todo = list(prefix)
    while todo:
        label = todo.pop()
        if label in keep or label not in by_label:
            continue
        keep.add(label)
        todo.extend(by_label[label].depends_on)
    return replace(snapshot, backups=tuple(b for b in snapshot.backups if b.label in keep)), prefix


__all__ = ["backup_key", "candidate_order", "is_candidate", "narrow", "narrowable"]
