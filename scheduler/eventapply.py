"""Apply a batch of S3 events to one instance with the scanner's own readers: no listing.

Given what the catalog holds (``Previous``, as for an incremental scan) and the events that passed the
per-key verdict, this reads only what the events name:

- a new WAL segment joins the runs; when it ends a run (or lies within the edge reader's reach of a run's
  end, ``EDGE_REACH`` segments) the run end's commit time is read (``scheduler.edges``), walking back over
  the segment keys events taught (``known``) and, past them, the edge the catalog had;
- a new history file is read (``scanning.read_history``);
- a backup's metadata (pgBackRest ``backup.info`` / a manifest, barman ``backup.info``, a WAL-G/WAL-E stop
  sentinel), or payload of a backup the catalog lacks, re-reads that metadata with the scan's parsers: the
  targeted scan of the backup prefix, by GET, without LIST;
- a removal (confirmed by HEAD when the event has no sequencer), or a second object for a segment the
  catalog already has (duplicates are the full scan's to compare), asks for a full reconcile of the instance.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from catalog.events import EventWrite, KeyEvent
from catalog.scanresult import ScanIssue, ScanResult, WalConflict
from recovery.model import Backup, WalRun, WindowEdge
from recovery.wal import DEFAULT_SEG_SIZE, merge_runs, segment_name
from scheduler import edges as edge_mod
from scheduler import scanning
from scheduler.eventroute import Kind, Target
from scheduler.layouts import spec_of
from scheduler.layouts.spec import MetaEvent
from scheduler.s3events import Action, S3Event, compare_sequencers
from scheduler.storage import ObjectInfo, ObjectStore
from scheduler.walscan import RunTail

EDGE_REACH = 8     # the scan's edge reader walks back over the last 8 segments of a run (walscan.RunTail)

# the segment keys events taught earlier for this batch's segments, by (timeline, segno): (key, LastModified)
Known = Callable[[], Awaitable[Mapping[tuple[int, int], tuple[str, datetime | None]]]]


@dataclass(frozen=True, slots=True)
class Pending:
    """One event to apply, with its key relative to the instance and what that key is."""

    event: S3Event
    rel: str
    target: Target


@dataclass(frozen=True, slots=True)
class Outcome:
    write: EventWrite | None = None
    reconcile: str | None = None      # why a full scan of the instance is needed instead
    stale_removals: int = 0           # removals the store contradicts (the object is there): ignored
    issues: tuple[ScanIssue, ...] = ()


class HeadStore(ObjectStore, Protocol):
    async def head(self, key: str) -> ObjectInfo | None: ...


def neighbour_patterns(p: Pending, seg_size: int, reach: int = EDGE_REACH) -> list[str]:
    r"""LIKE patterns for the keys of the ``reach`` segments up to ``p``'s (whatever the suffix: a pgBackRest
    SHA-1, a compression): where the edge reader may walk back to.

    >>> neighbour_patterns(Pending(S3Event("b", "x/wals/0000000100000001/000000010000000100000000.gz",
    ...                                     Action.CREATED, "", None, None), "", Target(Kind.SEGMENT, 1, 256)),
    ...                    16 << 20, 2)
    ['x/wals/0000000100000001/000000010000000100000000%', 'x/wals/0000000100000000/0000000100000000000000FF%']
    >>> neighbour_patterns(Pending(S3Event("b", "y/wal_005/000000010000000000000002.lz4", Action.CREATED, "",
    ...                                     None, None), "", Target(Kind.SEGMENT, 1, 2)), 16 << 20, 2)
    ['y/wal\\_005/000000010000000000000002%', 'y/wal\\_005/000000010000000000000001%']
    """
    assert p.target.timeline is not None and p.target.segno is not None
    key = p.event.key
    cut = key.rfind("/") + 1
    name = key[cut:cut + 24]
    head = key[:cut]
    hashed = len(head) > 17 and head[-17:-1] == name[:16]
    out = []
    for n in range(p.target.segno, max(-1, p.target.segno - reach), -1):
        other = segment_name(p.target.timeline, n, seg_size)
        d = head[:-17] + other[:16] + "/" if hashed else head
        out.append(d.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + other + "%")
    return out


def _lm(t: datetime | None) -> datetime | None:
    """An event time as a listing's LastModified (whole seconds)."""
    return t.replace(microsecond=0) if t is not None else None


def key_event(p: Pending) -> KeyEvent:
    e = p.event
    return KeyEvent(e.key, e.action.value, e.sequencer, e.time)


def newest_keys(keys: Iterable[KeyEvent]) -> tuple[KeyEvent, ...]:
    """One event per key, the newest: by sequencer when both have one, else the later in the batch.

    >>> [k.sequencer for k in newest_keys([KeyEvent("a", "created", "0B", None), KeyEvent("a", "created", "0A", None),
    ...                                    KeyEvent("b", "created", None, None)])]
    ['0B', None]
    """
    out: dict[str, KeyEvent] = {}
    for k in keys:
        old = out.get(k.key)
        if old is not None and old.sequencer and k.sequencer and compare_sequencers(k.sequencer, old.sequencer) < 0:
            continue
        out[k.key] = k
    return tuple(out.values())


async def apply_events(store: HeadStore, root: str, prev: scanning.Previous, pending: Sequence[Pending],
                       known: Known, classify_rel: Callable[[str], Target], *,
                       system_ids: frozenset[int] | None = None) -> Outcome:
    """The effects of ``pending`` on one instance (``root``: its normalized prefix). ``known``: the segment
    keys events taught earlier, by (timeline, segno), asked for only when an edge read may need them;
    ``classify_rel``: a relative key's meaning; ``system_ids``: those of the instance's backups (default:
    of ``prev.backups``), what a segment read is checked against."""
    assert prev.layout is not None, "an instance never scanned gets a full scan, not events"
    stale = 0
    for p in pending:
        if p.event.action is not Action.REMOVED or p.target.kind in (Kind.IGNORED, Kind.FOREIGN,
                                                                      Kind.BACKUP_PAYLOAD):
            continue
        if p.event.sequencer is None and await store.head(p.event.key) is not None:
            stale += 1            # no sequencer and the object is there: an old removal, or re-created since
            continue
        return Outcome(reconcile=f"{p.event.key} was removed", stale_removals=stale)
    created = [p for p in pending if p.event.action is Action.CREATED]
    seg_size = prev.seg_size or DEFAULT_SEG_SIZE
    segs: dict[tuple[int, int], tuple[str, datetime | None]] = {}
    for p in created:
        t = p.target
        if t.kind is not Kind.SEGMENT or t.timeline is None or t.segno is None:
            continue
        k = (t.timeline, t.segno)
        if k in segs or _covered(prev.runs, k):
            taught = {} if k in segs else await known()
            same = segs.get(k, taught.get(k, ("",)))[0] == p.event.key
            if same or (k not in segs and k not in taught and await _copies(store, root, p, classify_rel) <= 1):
                continue            # the same object again (a re-PUT, or the one a scan listed): nothing new
            return Outcome(reconcile=f"a second object for segment {k}: {p.event.key}", stale_removals=stale)
        segs[k] = (p.event.key, _lm(p.event.time))
    acc = scanning.Acc()
    for p in created:
        if p.target.kind is Kind.HISTORY and p.target.timeline is not None:
            await scanning.read_history(store, p.target.timeline, p.event.key, acc)
    write_backups, pg_version, system_id = await _backups(store, root, prev, created, acc)
    runs = merge_runs(WalRun(t, n, n) for t, n in segs)
    ids = system_ids if system_ids is not None else frozenset(b.system_id for b in prev.backups if b.system_id)
    edges, corrupt = await _edges(store, prev, runs, segs, known, seg_size, acc, ids)
    times = [p.event.time for p in pending if p.event.time is not None]
    keys = newest_keys(key_event(p) for p in pending if p.target.kind in (Kind.SEGMENT, Kind.HISTORY, Kind.BACKUP_META))
    bad = {i.key for i in acc.issues if i.key}
    resolved = tuple(sorted(k for p in created if p.target.kind is Kind.BACKUP_META
                            for k in (p.event.key, p.event.key.removesuffix(".copy"),
                                      p.event.key.removesuffix(".copy") + ".copy") if k not in bad))
    w = EventWrite(runs=runs, edges=edges, corrupt=corrupt, histories=acc.histories, backups=write_backups,
                   pg_version=pg_version, system_id=system_id, keys=keys, last_event=max(times, default=None),
                   resolved=resolved)
    return Outcome(write=w, stale_removals=stale, issues=tuple(acc.issues))


async def _copies(store: ObjectStore, root: str, p: Pending, classify_rel: Callable[[str], Target]) -> int:
    """How many objects hold the segment ``p`` names (one listing of that segment's name, only when a scan,
    not an event, taught the catalog the segment): 2 or more are duplicates, which the full scan compares."""
    cut = p.event.key.rfind("/") + 1
    name = p.event.key[cut:cut + 24]
    n = 0
    async for o in store.list_keys(p.event.key[:cut] + name):
        t = classify_rel(o.key[len(root):])
        n += t.kind is Kind.SEGMENT and (t.timeline, t.segno) == (p.target.timeline, p.target.segno)
    return n


def _covered(runs: Sequence[WalRun], k: tuple[int, int]) -> bool:
    return any(r.timeline == k[0] and r.first <= k[1] <= r.last for r in runs)


async def _edges(store: ObjectStore, prev: scanning.Previous, new: Sequence[WalRun],
                 segs: Mapping[tuple[int, int], tuple[str, datetime | None]], known: Known, seg_size: int,
                 acc: scanning.Acc, system_ids: frozenset[int]
                 ) -> tuple[tuple[WindowEdge, ...], tuple[WalConflict, ...]]:
    """Edges of the runs whose end is new or within reach of a new segment, read as a scan reads them.

    The walk back from a run's end reads the segments of this batch first; the keys earlier events taught
    (``known``, a query) are asked for only when the walk may need them: the run's end is not in this
    batch, or no commit was found in the batch's segments and older ones are within the reader's reach.
    """
    if not new:
        return (), ()
    merged = merge_runs((*prev.runs, *new))
    prev_edges = {(e.timeline, e.segno): e for e in prev.edges}
    checks = edge_mod.SegmentChecks(prev.layout, system_ids)
    edges: list[WindowEdge] = []
    corrupt: list[WalConflict] = []
    taught: dict[tuple[int, int], tuple[str, datetime | None]] | None = None

    async def all_keys() -> Mapping[tuple[int, int], tuple[str, datetime | None]]:
        nonlocal taught
        if taught is None:
            taught = {**await known(), **segs}
        return taught

    for r in merged:
        if not any(t == r.timeline and r.last - EDGE_REACH < n <= r.last for t, n in segs):
            continue
        keys = segs if (r.timeline, r.last) in segs else await all_keys()
        if (r.timeline, r.last) not in keys:
            continue                                  # the end predates events: its stored edge stands
        recent, found, issues = await _walk(store, r, keys, seg_size, checks)
        if keys is segs and recent[0][0] > r.first and len(recent) < EDGE_REACH and (
                found.corrupt or not any(e.segno == r.last and e.exact for e in found.edges)):
            recent, found, issues = await _walk(store, r, await all_keys(), seg_size, checks)
        acc.issues.extend(issues)
        edges.extend(_before_chain(e, recent[0][0], r, prev_edges, seg_size) for e in found.edges)
        corrupt.extend(found.corrupt)
    return tuple(edges), tuple(corrupt)


async def _walk(store: ObjectStore, r: WalRun, keys: Mapping[tuple[int, int], tuple[str, datetime | None]],
                seg_size: int, checks: edge_mod.SegmentChecks
                ) -> tuple[list[tuple[int, str, datetime | None]], edge_mod.EdgeFindings, list[ScanIssue]]:
    """The walk back from ``r``'s end over the consecutive segments ``keys`` knows (the scan's edge reader)."""
    recent: list[tuple[int, str, datetime | None]] = []
    n = r.last
    while n >= r.first and len(recent) < EDGE_REACH and (r.timeline, n) in keys:
        key, lm = keys[(r.timeline, n)]
        recent.insert(0, (n, key, lm))
        n -= 1
    tail = RunTail(r.timeline, r.first, r.last, recent[-1][1], recent[-1][2])
    tail.recent.clear()
    tail.recent.extend(recent)
    issues: list[ScanIssue] = []
    found = await edge_mod.decode_edges(store, [tail], [r], (), seg_size, issues, checks=checks)
    return recent, found, issues


def _before_chain(e: WindowEdge, first_read: int, run: WalRun, prev_edges: Mapping[tuple[int, int], WindowEdge],
                  seg_size: int) -> WindowEdge:
    """No commit in the segments events taught: the last commit before them is the catalog's edge at the
    segment before the chain, as long as a scan's reader (the run's last EDGE_REACH segments) reaches it."""
    if e.exact or e.segno != run.last or first_read <= run.first:
        return e
    before = prev_edges.get((run.timeline, first_read - 1))
    if before is None or not before.exact or before.last_commit_lsn is None:
        return e
    if before.last_commit_lsn.value // seg_size <= run.last - EDGE_REACH:
        return e
    return replace(before, segno=run.last)


async def _backups(store: ObjectStore, root: str, prev: scanning.Previous, created: Sequence[Pending],
                   acc: scanning.Acc) -> tuple[tuple[Backup, ...] | None, int | None, int | None]:
    """The backup set after these events (None: unchanged), with pg_version and system_id when read: the
    layout module's ``event_backups``."""
    assert prev.layout is not None
    have = {b.label: b for b in prev.backups}
    metas = [MetaEvent(p.event.key, p.target.label, p.event.time) for p in created
             if p.target.kind is Kind.BACKUP_META]
    unknown = frozenset(p.target.label for p in created if p.target.kind is Kind.BACKUP_PAYLOAD
                        and p.target.label is not None and p.target.label not in have)
    if not metas and not unknown:
        return None, None, None
    out, pg_version, system_id = await spec_of(prev.layout).event_backups(store, root, prev.stanza, have, metas,
                                                                          unknown, acc)
    return tuple(out.values()), pg_version, system_id


@dataclass(frozen=True, slots=True)
class Findings:
    """What a reconcile scan found that the catalog did not hold: candidates for drift. Objects found new
    are drift only if no event for them arrives within a grace period (events may be in flight);
    objects gone (full scans) are drift at once."""

    segments: frozenset[tuple[int, int]] = frozenset()
    histories: frozenset[int] = frozenset()
    backups: frozenset[str] = frozenset()
    gone: int = 0

    def __bool__(self) -> bool:
        return bool(self.segments or self.histories or self.backups or self.gone)


def findings(prev: scanning.Previous, result: ScanResult) -> Findings:
    """Segments, histories and backups new or changed, and (full scans) how many are gone. Nothing for an
    instance's first scan.

    >>> from datetime import datetime, timezone
    >>> from catalog.scanresult import WalMode
    >>> from recovery.model import Layout
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> p = scanning.Previous(layout=Layout.BARMAN, runs=(WalRun(1, 1, 5),))
    >>> sorted(findings(p, ScanResult(Layout.BARMAN, False, t, t, wal_runs=(WalRun(1, 4, 7),))).segments)
    [(1, 6), (1, 7)]
    >>> findings(p, ScanResult(Layout.BARMAN, True, t, t, wal_runs=(WalRun(1, 2, 5),), wal_mode=WalMode.REPLACE)).gone
    1
    """
    if prev.layout is None:
        return Findings()
    segs = frozenset((r.timeline, s) for r in result.wal_runs for s in range(r.first, r.last + 1)
                     if not _covered(prev.runs, (r.timeline, s)))
    gone = 0
    if result.full:
        gone += sum(1 for r in prev.runs for s in range(r.first, r.last + 1)
                    if not _covered(result.wal_runs, (r.timeline, s)))
    labels: frozenset[str] = frozenset()
    if result.backups is not None:
        def sig(b: Backup) -> tuple[object, ...]:
            return (b.status, b.stop_lsn, b.type)
        old = {b.label: sig(b) for b in prev.backups}
        new = {b.label: sig(b) for b in result.backups}
        labels = frozenset(label for label, s in new.items() if old.get(label) != s)
        gone += sum(1 for label in old if label not in new)
    return Findings(segs, frozenset(set(result.histories) - set(prev.histories)), labels, gone)


def unexplained(f: Findings, evented: Sequence[Target]) -> int:
    """Drift: the findings no event (applied since, per ``evented``: the meanings of the keys events
    created) accounts for.

    >>> unexplained(Findings(frozenset({(1, 6), (1, 7)}), frozenset(), frozenset({"b1"}), 1),
    ...             [Target(Kind.SEGMENT, 1, 6), Target(Kind.BACKUP_META, label="b1")])
    2
    """
    segs = {(t.timeline, t.segno) for t in evented if t.kind is Kind.SEGMENT}
    tlis = {t.timeline for t in evented if t.kind is Kind.HISTORY}
    labels = {t.label for t in evented if t.kind in (Kind.BACKUP_META, Kind.BACKUP_PAYLOAD)}
    pgbackrest_info = any(t.kind is Kind.BACKUP_META and t.label is None for t in evented)
    return (len(f.segments - segs) + len(f.histories - tlis) + f.gone
            + (0 if pgbackrest_info else len(f.backups - labels)))


__all__ = ["EDGE_REACH", "Findings", "HeadStore", "Known", "Outcome", "Pending", "apply_events", "findings", "key_event",
           "newest_keys", "unexplained"]
