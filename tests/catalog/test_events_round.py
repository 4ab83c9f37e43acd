"""A round of the event consumer in the catalog (catalog.events.load_round / save_round): what it reads, and
that writing many instances at once leaves the catalog as writing them one by one (save_events) does; a
lost lease writes nothing for its instance; derived views given with a write are stored only over the
views of the generation the round read."""
from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from catalog import eventround, repo, scancache
from catalog import events as cat_events
from catalog.errors import CatalogError
from catalog.eventround import RoundWrite, ViewWrite
from catalog.events import EventWrite, KeyEvent
from catalog.scanresult import WalConflict
from recovery.model import WalRun, WindowEdge
from tests.catalog.factories import ref, scan, storage, t
from tests.recovery.builders import at, edge, lsn

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _instance(pool, guid: str) -> None:
    await repo.register_instance(pool, ref(guid, name=guid), storage(prefix=f"{guid}/"))
    await repo.save_scan(pool, guid, scan(runs=(WalRun(1, 2, 9), WalRun(1, 12, 14)), edges=(edge(1, 9, 10),
                                                                                           edge(1, 14, 20))))
    await scancache.refresh(pool, guid)


def _writes(guid: str) -> list[EventWrite]:
    """Three kinds: a run grown at its end, a hole filled (two runs merged), a corrupt segment and keys."""
    k = [KeyEvent(f"{guid}/k{n}", "created", f"{n:04X}", t(2)) for n in range(3)]
    return [EventWrite(runs=(WalRun(1, 15, 16),), edges=(edge(1, 16, 30),), keys=(k[0], k[0]), last_event=t(2)),
            EventWrite(runs=(WalRun(1, 10, 11),), edges=(), keys=(k[1],), last_event=t(3)),
            EventWrite(runs=(WalRun(1, 15, 15),), edges=(WindowEdge(1, 14, at(19), lsn(14, 0x80), True),
                                                          edge(1, 15, None, exact=False)),
                       corrupt=(WalConflict(1, 15, "not a segment"),), keys=(k[2],), last_event=t(1))]


async def _dump(pool, guid: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for table, order in (("wal_runs", "timeline, first_segno"), ("window_edges", "timeline, segno"),
                         ("wal_conflicts", "timeline, segno"), ("event_keys", "key")):
        rows = await pool.fetch(f"SELECT * FROM {table} WHERE instance_guid = $1 ORDER BY {order}", guid)
        out[table] = [{k: v for k, v in dict(r).items() if k not in ("instance_guid", "applied_at")} for r in rows]
    st = await pool.fetchrow("SELECT generation, last_event FROM scan_state WHERE instance_guid = $1", guid)
    out["state"] = dict(st)
    return out


async def test_a_round_writes_what_one_by_one_writes(pool) -> None:
    guids = [f"r{n}" for n in range(3)]
    for g in guids + [f"s{n}" for n in range(3)]:
        await _instance(pool, g)
    states = await eventround.load_round(pool, [*guids, "unknown"])
    assert sorted(states) == guids
    st = states["r0"]
    assert st.runs == (WalRun(1, 2, 9), WalRun(1, 12, 14)) and st.view is not None
    assert st.view.archive_tail.startswith(eventround.TAIL_MARK) and st.view.backup_need is not None
    tokens = await repo.try_acquire_leases(pool, [f"scan:{g}" for g in guids], "me", 30)
    saved = await eventround.save_round(pool, [
        RoundWrite(g, w, f"scan:{g}", tokens[f"scan:{g}"], states[g].generation or 0, states[g].runs)
        for g, w in zip(guids, _writes("x"))])
    assert sorted(saved.generations) == guids and not saved.lost and not saved.views
    for n, w in enumerate(_writes("x")):
        g = f"s{n}"
        tok = await repo.try_acquire_lease(pool, f"scan:{g}", "me", 30)
        assert tok is not None
        await cat_events.save_events(pool, g, w, lease_key=f"scan:{g}", lease_token=tok)
        assert await _dump(pool, g) == await _dump(pool, f"r{n}")


async def test_a_lost_lease_writes_nothing_and_the_others_are_written(pool) -> None:
    for g in ("a", "b"):
        await _instance(pool, g)
    states = await eventround.load_round(pool, ["a", "b"])
    tokens = await repo.try_acquire_leases(pool, ["scan:a", "scan:b"], "me", 0.1)
    before = await _dump(pool, "a")
    await asyncio.sleep(0.2)
    assert await repo.try_acquire_lease(pool, "scan:a", "scanner", 30) == tokens["scan:a"] + 1    # taken over
    assert await repo.try_acquire_lease(pool, "scan:b", "me", 30) == tokens["scan:b"] + 1         # mine anew
    w = _writes("x")[0]
    saved = await eventround.save_round(pool, [
        RoundWrite("a", w, "scan:a", tokens["scan:a"], states["a"].generation or 0, states["a"].runs),
        RoundWrite("b", w, "scan:b", tokens["scan:b"] + 1, states["b"].generation or 0, states["b"].runs)])
    assert saved.lost == {"a"} and list(saved.generations) == ["b"]
    assert await _dump(pool, "a") == before


async def test_views_are_stored_over_the_generation_read_only(pool) -> None:
    for g in ("v", "w"):
        await _instance(pool, g)
    states = await eventround.load_round(pool, ["v", "w"])
    tokens = await repo.try_acquire_leases(pool, ["scan:v", "scan:w"], "me", 30)
    await repo.save_edges(pool, "w", [edge(1, 5, 3)])        # the WAL index job moved w's generation since
    st = states["v"]
    assert st.view is not None
    tail = json.loads("{" + st.view.archive_tail[1:])
    tail["wal"][-1]["segments"] = 99                          # whatever the views say: they are stored as given
    vw = ViewWrite(st.view.windows, "," + json.dumps(tail, separators=(",", ":"))[1:],
                   replace(st.view.facts, archive_bytes=12345))
    w = _writes("x")[0]
    saved = await eventround.save_round(pool, [
        RoundWrite(g, w, f"scan:{g}", tokens[f"scan:{g}"], states[g].generation or 0, states[g].runs, vw)
        for g in ("v", "w")])
    assert saved.views == {"v"}
    doc = await scancache.stored_archive(pool, "v")
    assert doc is not None and json.loads(doc)["wal"][-1]["segments"] == 99
    assert json.loads(doc)["backups"] == []
    assert await pool.fetchval("SELECT archive_bytes FROM scan_cache_facts WHERE instance_guid = 'v'") == 12345
    assert await scancache.stored_archive(pool, "w") is None                  # w's views: recomputed by a reader


async def test_a_refused_round_writes_nothing(pool) -> None:
    await _instance(pool, "z")
    states = await eventround.load_round(pool, ["z"])
    tokens = await repo.try_acquire_leases(pool, ["scan:z"], "me", 30)
    before = await _dump(pool, "z")
    bad = EventWrite(runs=(WalRun(1, 15, 15),), corrupt=(WalConflict(1, 15, "nul \x00 byte"),))
    with pytest.raises(CatalogError):
        await eventround.save_round(pool, [RoundWrite("z", bad, "scan:z", tokens["scan:z"], states["z"].generation or 0,
                                                      states["z"].runs)])
    assert await _dump(pool, "z") == before
