"""recovery/changes.py: which segments a time range needs, and the answer's document (pure)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from recovery.changes import Anchor, NothingToRead, RangeTooLarge, changes_doc, segments_for
from recovery.lsn import Lsn
from recovery.model import WalRun
from recovery.relnames import RelationEntry, RelationMap, RelationNames
from recovery.timeline import TimelinePath, parse_history
from recovery.walrecords import RelFile
from recovery.walsummary import RestorePoint, RowCount, Summary, Transaction

SEG = 16 * 1024 * 1024
T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
TL1 = TimelinePath.build(1, ())
TL2 = TimelinePath.build(2, parse_history("1\t0/B02E650\tbefore 2026-01-01 10:30:00+00\n"))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_anchors_bound_the_range_with_slack() -> None:
    runs = [WalRun(1, 1, 40)]
    anchors = [Anchor(5, at(1)), Anchor(10, at(9)), Anchor(12, at(9.99)), Anchor(20, at(21)), Anchor(30, at(40))]
    r = segments_for(TL1, runs, SEG, anchors, at(10), at(20))
    assert r.files == tuple((1, n) for n in range(10, 21)) and r.missing == ()  # 12 is within the 1 s slack
    assert segments_for(TL1, runs, SEG, [], at(10), at(20)).files[0] == (1, 1)  # nothing known: everything
    with pytest.raises(RangeTooLarge, match=r"needs 11 WAL segments .*000000010000000000000014") as e:
        segments_for(TL1, runs, SEG, anchors, at(10), at(20), limit=10)
    assert (e.value.code, e.value.need, e.value.limit) == ("range_too_large", 11, 10)


def test_files_follow_the_timeline_path_and_holes_are_said() -> None:
    runs = [WalRun(1, 1, 9), WalRun(1, 11, 12), WalRun(2, 11, 14), WalRun(1, 13, 13)]
    r = segments_for(TL2, runs, SEG, [Anchor(8, at(0)), Anchor(14, at(99))], at(10), at(20))
    assert r.files == ((1, 8), (1, 9), (2, 11), (2, 12), (2, 13), (2, 14))  # TL2's 11.. (0x0B), not TL1's
    assert r.missing == ((1, 10),)   # before the switch segment: timeline 1's file
    with pytest.raises(NothingToRead):
        segments_for(TL1, [WalRun(2, 1, 3)], SEG, [], at(0), at(1))


def tx(xid: int, minutes: float, lsn: int, *, dropped: tuple[RelFile, ...] = (), created: tuple[RelFile, ...] = (),
       rows: tuple[RowCount, ...] = ()) -> Transaction:
    return Transaction(xid, "commit", at(minutes), Lsn(lsn), Lsn(lsn + 40), 5, (), dropped, created, rows)


ORDERS, PKEY, TOAST, LEDGER, NEW = (RelFile(1663, 5, n) for n in (16384, 16389, 16387, 16400, 16500))
NAMES = RelationNames.of([RelationMap(5, "postgres", at(-60), (
    RelationEntry(16384, 16384, "public", "orders", "r"), RelationEntry(16389, 16389, "public", "orders_pkey", "i"),
    RelationEntry(16387, 16387, "pg_toast", "pg_toast_16384", "t"),
    RelationEntry(16400, 16400, "public", "ledger", "r")))])


def test_document_lists_destructive_first_named_and_in_range() -> None:
    summary = Summary((
        tx(700, 9, 0x100),                                                    # before the range
        tx(701, 11, 0x200, rows=(RowCount(LEDGER, 1, 0, 0), RowCount(RelFile(1663, 5, 1259), 0, 5, 0))),
        tx(702, 12, 0x300, dropped=(ORDERS, PKEY, TOAST)),
        tx(703, 12, 0x400, rows=(RowCount(LEDGER, 0, 0, 1001),)),
        tx(704, 13, 0x500, dropped=(RelFile(1663, 5, 16600),), created=(NEW,)),
        tx(705, 14, 0x600, rows=(RowCount(LEDGER, 0, 1000, 0),)),
    ), (RestorePoint("deploy", at(11.5), Lsn(0x250), Lsn(0x2B8)), RestorePoint("old", at(1), Lsn(0x50), Lsn(0x90))),
        0)
    doc = changes_doc(instance_guid="g", path=TL1, start=at(10), end=at(20), summary=summary, names=NAMES,
                      segments_read=2, notes=["n0"])
    txs = doc["transactions"]
    assert [t["xid"] for t in txs] == [702, 703, 704, 701, 705]
    assert txs[0]["why"] == ["dropped public.orders (and 2 index/TOAST files)"]
    assert [d["name"] for d in txs[0]["dropped"]] == ["public.orders", "public.orders_pkey", "pg_toast.pg_toast_16384"]
    assert txs[1]["why"] == ["deleted 1001 rows of public.ledger"]
    assert txs[2]["why"] == ["truncated or rewrote relation file 16600"] and txs[2]["dropped"][0]["name"] is None
    assert txs[3]["rows"] == [{"relation": {"relfilenode": 16400, "name": "public.ledger"}, "inserted": 1,
                               "updated": 0, "deleted": 0}]                # catalog rows (pg_class) left out
    assert not txs[4]["destructive"] and txs[4]["why"] == []               # 1,000 is not more than 1,000
    assert txs[0]["commit_time"] == "2026-01-01T10:12:00Z" and txs[0]["commit_lsn"] == "0/300"
    assert doc["restore_points"] == [{"name": "deploy", "time": "2026-01-01T10:11:30Z", "lsn": "0/250", "timeline": 1}]
    assert doc["notes"][0] == "n0" and "16600 (database 5)" in doc["notes"][1]
    assert (doc["from"], doc["to"], doc["segments_read"], doc["timeline_path"]) == (
        "2026-01-01T10:10:00Z", "2026-01-01T10:20:00Z", 2, [1])
    strict = changes_doc(instance_guid="g", path=TL1, start=at(10), end=at(20), summary=summary, names=NAMES,
                         segments_read=2, mass_rows=999)
    assert [t["xid"] for t in strict["transactions"]][:4] == [702, 703, 704, 705]
    assert (doc["transactions_total"], doc["truncated"]) == (5, False)
    # a bounded answer: the first N, destructive first, and it says how many there were
    few = changes_doc(instance_guid="g", path=TL1, start=at(10), end=at(20), summary=summary, names=NAMES,
                      segments_read=2, limit=2)
    assert [t["xid"] for t in few["transactions"]] == [702, 703]
    assert (few["transactions_total"], few["truncated"]) == (5, True)
    assert "2 of 5 transactions listed (destructive first)" in few["notes"][-1]


def test_a_name_comes_from_a_map_taken_before_the_change() -> None:
    later = RelationNames.of([RelationMap(5, "postgres", at(30), (RelationEntry(16384, 16384, "public", "orders", "r"),))])
    doc = changes_doc(instance_guid="g", path=TL1, start=at(10), end=at(20),
                      summary=Summary((tx(702, 12, 0x300, dropped=(ORDERS,)),), (), 0), names=later, segments_read=1)
    assert doc["transactions"][0]["dropped"] == [{"relfilenode": 16384, "name": None}]
    assert "16384 (database 5)" in doc["notes"][0]
