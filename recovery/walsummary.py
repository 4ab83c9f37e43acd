"""Decoded WAL records folded into what a user asks about: committed transactions and restore points.

Rows are counted per relation file for the (sub)transaction that wrote them (``xl_xid``); a commit adds
the rows of its own xid and of the subtransactions it lists; an abort discards its xid's and its
subtransactions' rows (a rolled-back savepoint writes its own abort record). Only what was decoded is
counted: a transaction that wrote rows before the first segment read shows fewer rows.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from recovery import exact
from recovery.lsn import Lsn
from recovery.walrecords import FileCreate, RelFile, RestorePointRecord, RowChange, WalRecord, XactEnd

CHANGES_MAX_TRANSACTIONS = 1000  # default: transactions listed per answer at most (destructive first)
CHANGES_MASS_ROWS = 1000  # default: deleting or updating more rows of one relation is destructive


@dataclass(frozen=True, slots=True)
class RowCount:
    rel: RelFile
    inserted: int = 0
    updated: int = 0
    deleted: int = 0


@dataclass(frozen=True, slots=True)
class Transaction:
    """A committed transaction and what it did."""

    xid: int
    kind: str  # commit | commit_prepared
    commit_time: datetime
    commit_lsn: Lsn  # start of the commit record (what recovery_target_xid stops before)
    end_lsn: Lsn
    db_oid: int | None  # None: no database named and no file touched
    subxacts: tuple[int, ...]
    dropped: tuple[RelFile, ...]  # relation files unlinked at commit: DROP, TRUNCATE's old file, rewrites
    created: tuple[RelFile, ...]  # relation files created (CREATE, TRUNCATE's new file, rewrites)
    rows: tuple[RowCount, ...]  # by relation file, sorted

    def destructive(self, mass_rows: int = CHANGES_MASS_ROWS) -> bool:
        """A drop or truncate, or more than ``mass_rows`` rows of one relation deleted or updated."""
        return bool(self.dropped) or any(r.deleted > mass_rows or r.updated > mass_rows for r in self.rows)


@dataclass(frozen=True, slots=True)
class RestorePoint:
    name: str
    time: datetime
    lsn: Lsn
    end_lsn: Lsn


@dataclass(frozen=True, slots=True)
class Summary:
    transactions: tuple[Transaction, ...]  # in WAL (commit) order
    restore_points: tuple[RestorePoint, ...]
    aborted: int  # top-level and subtransaction abort records seen


@dataclass(slots=True)
class Summariser:
    """Incremental :func:`summarise`, for records that arrive segment by segment."""

    _rows: dict[int, dict[tuple[RelFile, str], int]] = field(default_factory=dict)
    _created: dict[int, list[RelFile]] = field(default_factory=dict)
    _done: list[Transaction] = field(default_factory=list)
    _points: list[RestorePoint] = field(default_factory=list)
    _aborted: int = 0

    def add(self, record: WalRecord) -> None:
        if isinstance(record, RowChange):
            per = self._rows.setdefault(record.xid, {})
            key = (record.rel, record.op)
            per[key] = per.get(key, 0) + record.count
        elif isinstance(record, XactEnd):
            self._end(record)
        elif isinstance(record, RestorePointRecord):
            self._points.append(RestorePoint(record.name, record.time, record.lsn, record.end_lsn))
        elif isinstance(record, FileCreate):
            self._created.setdefault(record.xid, []).append(record.rel)

    def _end(self, x: XactEnd) -> None:
        xids = (x.xid, *x.subxacts)
        parts = [self._rows.pop(i, None) for i in xids]
        created = [rel for i in xids for rel in self._created.pop(i, ())]
        if not x.committed:
            self._aborted += 1
            return
        counts: dict[RelFile, list[int]] = {}
        for part in parts:
            for (rel, op), n in (part or {}).items():
                slot = counts.setdefault(rel, [0, 0, 0])
                slot[("insert", "update", "delete").index(op)] += n
        rows = tuple(RowCount(rel, *c) for rel, c in sorted(counts.items()))
        # a commit names its database only when it has invalidations or dropped files: else take the
        # database of the files it touched (a transaction writes in one database; 0 is shared catalogs)
        db = x.db_oid
        if db is None:
            db = next((r.rel.db for r in rows if r.rel.db), None) or next((f.db for f in created if f.db), None)
        self._done.append(Transaction(
            xid=x.xid, kind=x.kind, commit_time=x.time, commit_lsn=x.lsn, end_lsn=x.end_lsn, db_oid=db,
            subxacts=x.subxacts, dropped=x.dropped, created=tuple(created), rows=rows,
        ))

    def result(self) -> Summary:
        return Summary(tuple(self._done), tuple(self._points), self._aborted)


def summarise(records: Iterable[WalRecord]) -> Summary:
    """Committed transactions (with their rows and dropped files) and restore points, in WAL order."""
    s = Summariser()
    for r in records:
        s.add(r)
    return s.result()


def segment_summary(records: Iterable[WalRecord], timeline: int, segno: int, *, key: str | None = None,
                    mass_rows: int = CHANGES_MASS_ROWS) -> tuple[exact.SegmentSummary, tuple[exact.RestorePoint, ...],
                                                                  tuple[exact.CommitPoint, ...]]:
    """The WAL index's facts of one decoded segment (:mod:`recovery.exact` resolves targets from them): its
    summary, its restore points, and its commit/abort records (for resolving an xid). Destructive transactions are judged from what this segment holds (a
    drop or truncate is in the commit record itself; rows written in earlier segments are not counted)."""
    recs = list(records)
    ends = [r for r in recs if isinstance(r, XactEnd)]
    done = summarise(recs).transactions
    commits = [x for x in ends if x.committed]
    xids = [x.xid for x in commits]
    summary = exact.SegmentSummary(
        timeline, segno, len(commits), commits[0].time if commits else None, commits[-1].time if commits else None,
        xids[0] if xids else None, xids[-1] if xids else None, min(xids) if xids else None,
        max(xids) if xids else None, sum(1 for t in done if t.destructive(mass_rows)), key)
    points = tuple(exact.RestorePoint(r.name, r.time, r.lsn, timeline) for r in recs if isinstance(r, RestorePointRecord))
    return summary, points, tuple(exact.CommitPoint(x.xid, x.time, x.lsn, timeline, x.kind) for x in ends)


def destructive_first(transactions: Sequence[Transaction], mass_rows: int = CHANGES_MASS_ROWS) -> list[Transaction]:
    """Destructive transactions first, then the rest; each group by commit LSN."""
    return sorted(transactions, key=lambda t: (not t.destructive(mass_rows), t.commit_lsn.value))
