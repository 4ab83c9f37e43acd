"""scheduler/eventroute.py: key -> instance (longest prefix), key -> meaning per layout, per-key verdicts.
The real archives' keys (every object the real tools wrote) mean to an event what they mean to a scan."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from recovery.model import Layout
from sandbox.cache import cache_dir
from scheduler.eventroute import Applied, Kind, PrefixIndex, Route, Target, Verdict, classify, verdict
from scheduler.s3events import Action, S3Event

SEG = 16 << 20


def test_longest_prefix_wins() -> None:
    ix = PrefixIndex([("b", "pg", "i1"), ("b", "/pg/x/", "i2"), ("b", "pg/x/y", "i3"), ("c", "", "whole"),
                      ("b", "pgx", "i4")])
    assert ix.lookup("b", "pg/x/y/k") == Route("i3", "k")
    assert ix.lookup("b", "pg/x/k") == Route("i2", "k")
    assert ix.lookup("b", "pg/k/l") == Route("i1", "k/l")
    assert ix.lookup("b", "pgx/k") == Route("i4", "k")
    assert ix.lookup("b", "pgxy/k") is None          # a prefix is a directory, not a string prefix
    assert ix.lookup("b", "other") is None and ix.lookup("z", "pg/k") is None
    assert ix.lookup("c", "any/deep/key") == Route("whole", "any/deep/key")
    assert len(ix) == 5 and ix.prefixes("b") == ["pg/", "pg/x/", "pg/x/y/", "pgx/"]


def test_same_prefix_twice_is_deterministic() -> None:
    assert PrefixIndex([("b", "p", "z"), ("b", "p/", "a")]).lookup("b", "p/k") == Route("a", "k")


def test_many_instances() -> None:
    ix = PrefixIndex(("bucket", f"org/{n:05d}", f"g{n}") for n in range(10_000))
    assert ix.lookup("bucket", "org/04242/main/wals/x") == Route("g4242", "main/wals/x")
    assert ix.lookup("bucket", "org/10000/x") is None


def _keys(tool: str) -> list[str]:
    d = cache_dir()
    if not (d / tool / "objects.json").is_file():
        pytest.skip("real archive cache not built")
    return [o["key"] for o in json.loads((d / tool / "objects.json").read_text())]


@pytest.mark.parametrize("tool,layout,stanza,want", [
    # segments, histories, backup metadata (info/manifest/sentinel) as the real tools wrote them
    ("pgbackrest", Layout.PGBACKREST, "main", {Kind.SEGMENT: 13, Kind.HISTORY: 1, Kind.BACKUP_META: 8}),
    ("barman", Layout.BARMAN, "main", {Kind.SEGMENT: 10, Kind.HISTORY: 1, Kind.BACKUP_META: 3}),
    ("walg", Layout.WALG, None, {Kind.SEGMENT: 10, Kind.HISTORY: 1, Kind.BACKUP_META: 3}),
    ("wale", Layout.WALE, None, {Kind.SEGMENT: 4, Kind.BACKUP_META: 1}),
])
def test_every_real_key_has_a_meaning(tool: str, layout: Layout, stanza: str | None,
                                      want: dict[Kind, int]) -> None:
    keys = _keys(tool)
    got = [classify(layout, stanza, k.split("/", 1)[1], SEG) for k in keys]
    assert not [k for k, t in zip(keys, got) if t.kind is Kind.FOREIGN]
    counts = Counter(t.kind for t in got)
    for kind, n in want.items():
        assert counts[kind] >= n - 1 and counts[kind] <= n + 1, (kind, counts)   # builds may differ by one segment
    segs = [(t.timeline, t.segno) for t in got if t.kind is Kind.SEGMENT]
    assert len(set(segs)) == len(segs) and all(t in (1, 2) for t, _ in segs)


@pytest.mark.parametrize("layout,stanza,rel,kind,label", [
    (Layout.PGBACKREST, "main", "archive/main/15-1/0000000100000000/000000010000000000000003-" + "a" * 40 + ".gz",
     Kind.SEGMENT, None),
    (Layout.PGBACKREST, "main", "archive/main/15-1/0000000100000000/000000010000000000000003.partial-" + "a" * 40,
     Kind.IGNORED, None),
    (Layout.PGBACKREST, "main", "archive/main/15-1/0000000100000000/000000010000000000000002.00000028.backup",
     Kind.IGNORED, None),
    (Layout.PGBACKREST, "main", "archive/main/archive.info", Kind.IGNORED, None),
    (Layout.PGBACKREST, "main", "archive/other/15-1/00000002.history", Kind.IGNORED, None),
    (Layout.PGBACKREST, "main", "archive/main/nope/00000002.history", Kind.FOREIGN, None),
    (Layout.PGBACKREST, "main", "backup/main/backup.info.copy", Kind.BACKUP_META, None),
    (Layout.PGBACKREST, "main", "backup/main/20260101-120000F/backup.manifest.copy", Kind.BACKUP_META,
     "20260101-120000F"),
    (Layout.PGBACKREST, "main", "backup/main/20260101-120000F/pg_data/base/1/1.gz", Kind.BACKUP_PAYLOAD,
     "20260101-120000F"),
    (Layout.PGBACKREST, "main", "backup/main/backup.history/2026/x.manifest.gz", Kind.IGNORED, None),
    (Layout.PGBACKREST, "main", "elsewhere/x", Kind.FOREIGN, None),
    (Layout.BARMAN, "main", "main/base/20260101T120000/backup.info", Kind.BACKUP_META, "20260101T120000"),
    (Layout.BARMAN, "main", "main/base/20260101T120000/data.tar.gz", Kind.BACKUP_PAYLOAD, "20260101T120000"),
    (Layout.BARMAN, "main", "main/base/junk/backup.info", Kind.FOREIGN, None),
    (Layout.BARMAN, "main", "other/wals/00000002.history.gz", Kind.IGNORED, None),
    (Layout.BARMAN, "main", "main/wals/00000002.history.gz", Kind.HISTORY, None),
    (Layout.BARMAN, "main", "main/elsewhere/x", Kind.FOREIGN, None),
    (Layout.WALG, None, "basebackups_005/base_000000010000000000000002_backup_stop_sentinel.json",
     Kind.BACKUP_META, "base_000000010000000000000002"),
    (Layout.WALG, None, "basebackups_005/base_000000010000000000000002/metadata.json", Kind.BACKUP_PAYLOAD,
     "base_000000010000000000000002"),
    (Layout.WALG, None, "wal_005/000000010000000000000001.json", Kind.IGNORED, None),
    (Layout.WALE, None, "wal_005/000000010000000000000001.lzo", Kind.SEGMENT, None),
    (Layout.WALE, None, "somewhere/else", Kind.FOREIGN, None),
])
def test_classify(layout: Layout, stanza: str | None, rel: str, kind: Kind, label: str | None) -> None:
    t = classify(layout, stanza, rel, SEG)
    assert (t.kind, t.label) == (kind, label)


def _ev(action: Action = Action.CREATED, seq: str | None = None) -> S3Event:
    return S3Event("b", "k", action, "x", None, seq)


SEGT = Target(Kind.SEGMENT, 1, 5)
META = Target(Kind.BACKUP_META)


@pytest.mark.parametrize("event,target,applied,want", [
    (_ev(), SEGT, None, Verdict.APPLY),
    (_ev(seq="0B"), SEGT, Applied(Action.CREATED, "0A"), Verdict.APPLY),
    (_ev(seq="0A"), SEGT, Applied(Action.CREATED, "0A"), Verdict.DUPLICATE),
    (_ev(seq="0A"), SEGT, Applied(Action.CREATED, "0A00"), Verdict.DUPLICATE),
    (_ev(seq="0A"), SEGT, Applied(Action.REMOVED, "0B"), Verdict.OLDER),          # created, then removed: stays gone
    (_ev(Action.REMOVED, "0A"), SEGT, Applied(Action.CREATED, "0B"), Verdict.OLDER),  # removal overtaken by a PUT
    (_ev(Action.REMOVED, "0C"), SEGT, Applied(Action.CREATED, "0B"), Verdict.APPLY),
    (_ev(), SEGT, Applied(Action.CREATED, None), Verdict.DUPLICATE),               # no sequencer: WAL is write-once
    (_ev(), META, Applied(Action.CREATED, None), Verdict.APPLY),                   # metadata: re-read current
    (_ev(Action.REMOVED), SEGT, Applied(Action.CREATED, None), Verdict.APPLY),     # confirmed by HEAD
    (_ev(), SEGT, Applied(Action.REMOVED, None), Verdict.APPLY),
    (_ev(seq="0A"), SEGT, Applied(Action.CREATED, None), Verdict.DUPLICATE),
])
def test_verdicts(event: S3Event, target: Target, applied: Applied | None, want: Verdict) -> None:
    assert verdict(event, target, applied) is want
