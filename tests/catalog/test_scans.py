"""save_scan: one transaction, MERGE/REPLACE of WAL runs, backups set replacement, fencing."""
from __future__ import annotations

import asyncio

import pytest

from catalog import repo
from catalog.errors import CatalogError, Conflict, NotScanned, UnknownInstance
from catalog.scanresult import ScanIssue, WalConflict, WalMode
from recovery.lsn import Lsn
from recovery.model import BackupStatus, BackupType, Layout, WalRun, WindowEdge
from recovery.timeline import TimelineSwitch
from tests.catalog.factories import backup, ref, scan, storage, t

pytestmark = pytest.mark.asyncio(loop_scope="session")
GUID = "inst-1"


@pytest.fixture
async def inst(pool):
    await repo.register_instance(pool, ref(GUID), storage(), at=t(0))
    return GUID


async def test_unscanned_instance(pool, inst) -> None:
    st = await repo.load_scan_state(pool, inst)
    assert st.generation == 0 and st.last_scan is None
    with pytest.raises(NotScanned):
        await repo.load_snapshot(pool, inst)
    with pytest.raises(UnknownInstance):
        await repo.save_scan(pool, "nope", scan())


async def test_full_round_trip_into_snapshot(pool, inst) -> None:
    full = backup("F1", depends_on=(), system_id=(1 << 64) - 1)
    incr = backup("F1_I1", type=BackupType.INCR, depends_on=("F1",), parent="F1",
                  start_lsn=Lsn.parse("FFFFFFFF/0"), stop_lsn=Lsn.parse("FFFFFFFF/FFFFFFFF"),
                  start_time=t(2), stop_time=t(2.1), stop_time_exact=False)
    failed = backup("F2", status=BackupStatus.FAILED, timeline=None, start_lsn=None, stop_lsn=None,
                    stop_time=None, start_time=t(3), error="killed")
    hist = {2: (TimelineSwitch(1, Lsn.parse("0/5000000"), "no recovery target specified"),)}
    edges = (WindowEdge(1, 3, t(1), Lsn.parse("0/3000100"), True), WindowEdge(2, 7, t(1.5), None, False))
    res = scan((WalRun(1, 2, 4), WalRun(2, 5, 7)), backups=(full, incr, failed), histories=hist, edges=edges,
               conflicts=(WalConflict(1, 3, "two different sha1"),), cursors={"archive/": "k1"},
               issues=(ScanIssue("foreign_object", "x/y", "not ours"),), unknown_objects=1, requests=7,
               stanza="main", system_id=(1 << 64) - 1)
    gen = await repo.save_scan(pool, inst, res)
    assert gen == 1
    snap = await repo.load_snapshot(pool, inst)
    assert snap.layout is Layout.PGBACKREST and snap.seg_size == 16 << 20 and snap.pg_version == 150000
    assert snap.backups == (full, incr, failed)
    assert snap.runs == (WalRun(1, 2, 4), WalRun(2, 5, 7))
    assert snap.histories == hist
    assert snap.edges == edges
    assert snap.conflicts == ((1, 3),)
    st = await repo.load_scan_state(pool, inst)
    assert st.generation == 1 and st.cursors == {"archive/": "k1"} and st.unknown_objects == 1
    assert st.issues == (ScanIssue("foreign_object", "x/y", "not ours"),)
    assert st.last_scan == t(1.01) and st.last_full_scan is None and st.requests == 7
    rec = await repo.get_instance(pool, inst)
    assert rec.system_id == (1 << 64) - 1 and rec.detected_layout is Layout.PGBACKREST


async def test_backups_none_keeps_set_and_set_replaces(pool, inst) -> None:
    await repo.save_scan(pool, inst, scan(backups=(backup("A"), backup("B"))))
    await repo.save_scan(pool, inst, scan(backups=None))
    assert [b.label for b in await repo.backups(pool, inst)] == ["A", "B"]
    await repo.save_scan(pool, inst, scan(backups=(backup("B", size_bytes=5), backup("C"))))
    got = await repo.backups(pool, inst)
    assert [b.label for b in got] == ["B", "C"] and got[0].size_bytes == 5
    await repo.save_scan(pool, inst, scan(backups=()))
    assert await repo.backups(pool, inst) == ()


async def test_merge_unions_and_merges_adjacent_runs(pool, inst) -> None:
    await repo.save_scan(pool, inst, scan((WalRun(1, 1, 10), WalRun(1, 20, 30))))
    await repo.save_scan(pool, inst, scan((WalRun(1, 11, 15), WalRun(2, 31, 31), WalRun(1, 25, 35))))
    assert await repo.wal_runs(pool, inst) == (WalRun(1, 1, 15), WalRun(1, 20, 35), WalRun(2, 31, 31))
    await repo.save_scan(pool, inst, scan((WalRun(1, 16, 19),)))
    assert await repo.wal_runs(pool, inst) == (WalRun(1, 1, 35), WalRun(2, 31, 31))


async def test_replace_drops_vanished_runs_and_their_edges(pool, inst) -> None:
    edges = (WindowEdge(1, 5, t(1), None, False), WindowEdge(1, 50, t(2), None, False))
    await repo.save_scan(pool, inst, scan((WalRun(1, 1, 10), WalRun(1, 40, 60)), edges=edges,
                                          conflicts=(WalConflict(1, 50, "x"),)))
    full = scan((WalRun(1, 3, 10),), WalMode.REPLACE, conflicts=())
    await repo.save_scan(pool, inst, full)
    assert await repo.wal_runs(pool, inst) == (WalRun(1, 3, 10),)
    snap = await repo.load_snapshot(pool, inst)
    assert [e.segno for e in snap.edges] == [5] and snap.conflicts == ()
    st = await repo.load_scan_state(pool, inst)
    assert st.last_full_scan == t(1.01)


async def test_merge_keeps_known_conflicts(pool, inst) -> None:
    await repo.save_scan(pool, inst, scan(conflicts=(WalConflict(1, 5, "a"),)))
    await repo.save_scan(pool, inst, scan(conflicts=(WalConflict(1, 9, "b"),)))
    assert [(c.segno, c.detail) for c in await repo.wal_conflicts(pool, inst)] == [(5, "a"), (9, "b")]
    snap = await repo.load_snapshot(pool, inst)     # the planner quotes the scanner's note in its refusals
    assert snap.conflicts == ((1, 5), (1, 9)) and snap.conflict_notes == {(1, 5): "a", (1, 9): "b"}


async def test_100k_contiguous_segments_in_batches_is_one_row(pool, inst) -> None:
    batch = 12_500
    for i in range(8):
        await repo.save_scan(pool, inst, scan(tuple(WalRun(1, s, s) for s in range(i * batch, (i + 1) * batch))))
    assert await repo.wal_runs(pool, inst) == (WalRun(1, 0, 99_999),)
    assert await pool.fetchval("SELECT count(*) FROM wal_runs") == 1
    # a hole: a full reconcile that lacks segment 50,000
    await repo.save_scan(pool, inst, scan((WalRun(1, 0, 49_999), WalRun(1, 50_001, 99_999)), WalMode.REPLACE))
    assert await pool.fetchval("SELECT count(*) FROM wal_runs") == 2
    assert (await repo.wal_runs(pool, inst))[1] == WalRun(1, 50_001, 99_999)
    assert (await repo.table_counts(pool))["wal_runs"] == 2


async def test_generation_fencing(pool, inst) -> None:
    g1 = await repo.save_scan(pool, inst, scan((WalRun(1, 1, 1),)), expected_generation=0)
    assert g1 == 1
    with pytest.raises(Conflict):
        await repo.save_scan(pool, inst, scan((WalRun(1, 9, 9),), backups=(backup("X"),)), expected_generation=0)
    assert await repo.wal_runs(pool, inst) == (WalRun(1, 1, 1),)
    assert await repo.backups(pool, inst) == ()
    assert (await repo.load_scan_state(pool, inst)).generation == 1
    assert await repo.save_scan(pool, inst, scan(), expected_generation=1) == 2


async def test_concurrent_writers_from_same_generation_one_wins(pool, inst) -> None:
    results = await asyncio.gather(
        *(repo.save_scan(pool, inst, scan((WalRun(1, i, i),)), expected_generation=0) for i in range(4)),
        return_exceptions=True)
    assert sorted(r for r in results if isinstance(r, int)) == [1]
    assert sum(isinstance(r, Conflict) for r in results) == 3
    assert len(await repo.wal_runs(pool, inst)) == 1


async def test_failing_save_leaves_previous_generation_intact(pool, inst) -> None:
    good = scan((WalRun(1, 1, 5),), backups=(backup("A"),), cursors={"p/": "k"})
    await repo.save_scan(pool, inst, good)
    before = await repo.load_snapshot(pool, inst)
    # runs and backups are written first, then the edge overflows bigint: all must roll back
    bad = scan((WalRun(1, 6, 9),), backups=(backup("B"),), cursors={"p/": "k2"},
               edges=(WindowEdge(1, 1 << 70, t(1), None, False),))
    with pytest.raises(CatalogError):
        await repo.save_scan(pool, inst, bad)
    assert await repo.load_snapshot(pool, inst) == before
    st = await repo.load_scan_state(pool, inst)
    assert st.generation == 1 and st.cursors == {"p/": "k"}


async def test_scan_failure_keeps_data_and_marks_stale(pool, inst) -> None:
    await repo.save_scan(pool, inst, scan((WalRun(1, 1, 5),), backups=(backup("A"),)))
    await repo.record_scan_failure(pool, inst, "storage_unavailable", "503 forever")
    st = await repo.load_scan_state(pool, inst)
    assert st.last_error == "503 forever" and st.last_error_code == "storage_unavailable"
    first_stale = st.stale_since
    assert first_stale is not None and st.generation == 1
    await repo.record_scan_failure(pool, inst, "storage_unavailable", "still down")
    assert (await repo.load_scan_state(pool, inst)).stale_since == first_stale
    assert await repo.wal_runs(pool, inst) == (WalRun(1, 1, 5),)
    await repo.save_scan(pool, inst, scan())
    st = await repo.load_scan_state(pool, inst)
    assert st.stale_since is None and st.last_error is None and st.generation == 2


async def test_lease_fenced_save(pool, inst) -> None:
    tok_a = await repo.try_acquire_lease(pool, f"scan:{inst}", "a", 0.2)
    await asyncio.sleep(0.3)
    tok_b = await repo.try_acquire_lease(pool, f"scan:{inst}", "b", 30)
    assert tok_a is not None and tok_b == tok_a + 1
    with pytest.raises(Conflict):
        await repo.save_scan(pool, inst, scan((WalRun(1, 1, 1),)), lease_key=f"scan:{inst}", lease_token=tok_a)
    assert await repo.wal_runs(pool, inst) == ()
    assert await repo.save_scan(pool, inst, scan((WalRun(1, 1, 1),)), lease_key=f"scan:{inst}",
                                lease_token=tok_b) == 1


async def test_save_edges_upserts(pool, inst) -> None:
    await repo.save_edges(pool, inst, (WindowEdge(1, 3, t(1), None, False),))
    await repo.save_edges(pool, inst, (WindowEdge(1, 3, t(0.5), Lsn.parse("0/3000200"), True),))
    await repo.save_scan(pool, inst, scan())
    assert (await repo.load_snapshot(pool, inst)).edges == (WindowEdge(1, 3, t(0.5), Lsn.parse("0/3000200"), True),)


async def test_save_edges_changes_the_snapshot_version(pool, inst) -> None:
    await repo.save_scan(pool, inst, scan())
    before = await repo.snapshot_version(pool, inst)
    await repo.save_edges(pool, inst, (WindowEdge(1, 3, t(1), None, False),))
    assert await repo.snapshot_version(pool, inst) != before


async def test_full_scan_forgets_histories_its_listing_lacks_incremental_forgets_nothing(pool, inst) -> None:
    sw = {tli: (TimelineSwitch(tli - 1, Lsn.parse(f"0/{tli}000000"), "no recovery target specified"),)
          for tli in (2, 3, 4)}
    await repo.save_scan(pool, inst, scan(histories=sw))
    assert set((await repo.load_snapshot(pool, inst)).histories) == {2, 3, 4}
    await repo.save_scan(pool, inst, scan(histories={2: sw[2]}))                  # incremental: no listing
    assert set((await repo.load_snapshot(pool, inst)).histories) == {2, 3, 4}
    # full: 2 read again, 3 listed but not read (a race: kept as known), 4 absent from the listing (forgotten)
    await repo.save_scan(pool, inst, scan(mode=WalMode.REPLACE, histories={2: sw[2]},
                                          listed_histories=frozenset({2, 3})))
    assert (await repo.load_snapshot(pool, inst)).histories == {2: sw[2], 3: sw[3]}
    await repo.save_scan(pool, inst, scan(mode=WalMode.REPLACE, listed_histories=frozenset()))
    assert (await repo.load_snapshot(pool, inst)).histories == {}
