"""The WAL index tables on the real catalog: one fenced transaction per segment, restore points replaced with
their segment, the xid range lookups, cursors and the lag."""
from __future__ import annotations

import pytest

from catalog import repo, walindex
from catalog.errors import Conflict
from catalog.scanresult import WalMode
from catalog.walindex import Carry, IndexedSegment
from recovery.exact import RestorePoint, SegmentSummary
from tests.catalog.factories import ref, scan, storage, t
from tests.recovery.builders import at, lsn, run

G = "wi-1"


async def setup(pool) -> int:
    await repo.register_instance(pool, ref(G, name=G), storage(), at=t(0))
    await repo.save_scan(pool, G, scan((run(1, 2, 6), run(1, 9, 10)), WalMode.REPLACE))
    token = await repo.try_acquire_lease(pool, f"scan:{G}", "me", 60)
    assert token is not None
    return token


def seg(segno: int, xids: tuple[int, int] | None, points: tuple[RestorePoint, ...] = (),
        carry: Carry | None = None) -> IndexedSegment:
    lo, hi = xids or (None, None)
    return IndexedSegment(SegmentSummary(1, segno, 2 if xids else 0, at(segno) if xids else None,
                                         at(segno + 0.5) if xids else None, lo, hi, lo, hi, 1 if segno == 4 else 0,
                                         f"k/{segno}"), points, carry)


@pytest.mark.asyncio(loop_scope="session")
async def test_save_read_and_fence(pool) -> None:
    tok = await setup(pool)
    key = f"scan:{G}"
    p4 = RestorePoint("before-migration", at(4.2), lsn(4, 0x200), 1)
    await walindex.save_segment(pool, G, seg(2, (700, 710)), next_segno=3, lease_key=key, lease_token=tok)
    await walindex.save_segment(pool, G, seg(4, (711, 720), (p4,), Carry(lsn(4, 0xFFFF00), 300, b"\x01\x02")),
                                next_segno=None, lease_key=key, lease_token=tok)
    await walindex.save_segment(pool, G, seg(5, (721, 730), (RestorePoint("n", at(5.1), lsn(5, 0x100), 1),)),
                                next_segno=None, lease_key=key, lease_token=tok)
    assert [p.name for p in await walindex.restore_points(pool, G)] == ["before-migration", "n"]
    assert (await walindex.restore_points(pool, G))[0] == p4
    # a second reading of segment 5 replaces its points
    await walindex.save_segment(pool, G, seg(5, (721, 730)), next_segno=None, lease_key=key, lease_token=tok)
    assert [p.name for p in await walindex.restore_points(pool, G)] == ["before-migration"]
    assert [s.segno for s in await walindex.summaries_for_xid(pool, G, 715)] == [4]
    assert [s.segno for s in await walindex.summaries_for_xid(pool, G, 740)] == []
    near = await walindex.summaries_near_xid(pool, G, 740)
    assert [s.segno for s in near] == [5, 4, 2]
    got = (await walindex.summaries_for_xid(pool, G, 711))[0]
    assert (got.first_xid, got.destructive, got.key, got.first_time) == (711, 1, "k/4", at(4))
    assert await walindex.carry_before(pool, G, 1, 5) == Carry(lsn(4, 0xFFFF00), 300, b"\x01\x02")
    assert await walindex.carry_before(pool, G, 1, 6) is None
    assert [s.segno for s in await walindex.summaries_between(pool, G, at(4.1), at(5))] == [4, 5]
    assert await walindex.indexed_segnos(pool, G, 1, 3, 10) == {4, 5}
    # lag: runs 2..6 and 9..10 from the cursor (3) on: 3..6 and 9..10
    assert await walindex.unindexed_segments(pool, G) == 6
    assert await walindex.lag_by_instance(pool) == {G: 6}
    state = await walindex.index_state(pool, G)
    assert state.cursors == {1: 3} and [(r.first, r.last) for r in state.runs] == [(2, 6), (9, 10)]
    # a holder whose lease was taken over writes nothing
    await repo.release_lease(pool, key, "me", tok)
    assert await repo.try_acquire_lease(pool, key, "other", 60) == tok + 1
    with pytest.raises(Conflict):
        await walindex.save_segment(pool, G, seg(6, (731, 740)), next_segno=7, lease_key=key, lease_token=tok)
    with pytest.raises(Conflict):
        await walindex.set_cursor(pool, G, 1, 7, lease_key=key, lease_token=tok)
    assert await walindex.indexed_segnos(pool, G, 1, 6, 6) == set()
    assert (await walindex.index_state(pool, G)).cursors == {1: 3}


def test_segments_to_index_and_cursor() -> None:
    runs = (run(1, 2, 6), run(1, 9, 10), run(2, 5, 7))
    assert walindex.segments_to_index(runs, {1: 3, 2: 0}, {1: {4}}, 4) == [(1, 3), (1, 5), (1, 6), (1, 9)]
    assert walindex.segments_to_index(runs, {1: 11}, {}, 10) == [(2, 5), (2, 6), (2, 7)]
    assert walindex.next_cursor(runs, 1, 3, {3, 4, 5, 6}) == 7           # the hole at 7 holds it
    assert walindex.next_cursor(runs, 1, 3, {3, 5, 6}) == 4
    assert walindex.next_cursor(runs, 2, 0, {5, 6, 7}) == 8              # below the first run is no hole
    assert walindex.next_cursor(runs, 2, 5, {6, 7}) == 5
