"""The scan cache (windows + archive document + coverage facts per stored scan) and the narrowed plan load, on the real catalog.

- the SQL narrowing (repo.load_plan_inputs) loads exactly what the pure reference recovery.narrow.narrow keeps;
- a plan through usecases.plan._plan (narrowed, stored windows) equals the whole-snapshot plan, refusals included;
- a stored view is used only for the scan it was computed from, and a stale writer cannot store one.
"""
from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from backup_catalog.usecases import backups
from backup_catalog.usecases import plan as plans
from backup_catalog.usecases.snapshots import ProcessScanCache
from catalog import repo, scancache
from catalog.scanresult import WalConflict, WalMode
from recovery.errors import PlanningError
from recovery.jsonout import windows_from_json
from recovery.model import ArchiveSnapshot, Backup, BackupStatus, BackupType, CorruptSegment
from recovery.narrow import narrow, narrowable
from recovery.plan import plan_recovery
from recovery.target import Target, make_target
from recovery.windows import all_windows
from tests.catalog.factories import ref, scan, storage, t
from tests.recovery.builders import NOW, SWITCH, at, backup_at, edge, lsn, make_snapshot, run, switch

pytestmark = pytest.mark.asyncio(loop_scope="session")


def random_archive(rnd: random.Random) -> ArchiveSnapshot:
    """Forks, holes, a conflict, failed/running backups, incrementals (some with a missing parent), ties."""
    forked = rnd.random() < 0.5
    cuts = sorted(rnd.sample(range(3, 0x17), rnd.randint(0, 2)))
    runs, first = [], 2
    for c in cuts:
        if first <= c - 1:
            runs.append(run(1, first, c - 1))
        first = c + 1
    runs.append(run(1, first, 0x18))
    edges = [edge(1, r.last, 3.0 * r.last + 0.5, exact=rnd.random() < 0.7) for r in runs]
    histories = {}
    if forked:
        runs.append(run(2, 0xB, 0x1C))
        histories = {2: (switch(1, SWITCH),)}
        edges.append(edge(2, 0x1C, 90))
    backups: list[Backup] = []
    for i in range(rnd.randint(1, 12)):
        seg = rnd.randint(2, 0x1B)
        tl = 2 if forked and seg >= 0xC and rnd.random() < 0.5 else 1
        minute = 3.0 * seg + rnd.choice([0.2, 0.7])
        status = rnd.choice([BackupStatus.DONE] * 4 + [BackupStatus.FAILED, BackupStatus.RUNNING])
        b = backup_at(f"B{i:02d}", seg, minute, timeline=tl, status=status)
        if backups and rnd.random() < 0.4:
            b = replace(b, type=BackupType.INCR, depends_on=(rnd.choice([x.label for x in backups] + ["GONE"]),))
        if rnd.random() < 0.1:
            b = replace(b, stop_time=None)
        backups.append(b)
    conflicts = ((1, rnd.randint(3, 0x17)),) if rnd.random() < 0.2 else ()
    corrupt = ()
    if rnd.random() < 0.25:
        tli = 2 if forked and rnd.random() < 0.5 else 1
        corrupt = (CorruptSegment(tli, rnd.randint(0xB if tli == 2 else 3, 0x1B), "bad page address"),)
    return make_snapshot(backups=tuple(backups), runs=tuple(runs), histories=histories, edges=tuple(edges),
                         conflicts=conflicts, corrupt=corrupt)


def targets(rnd: random.Random) -> list[Target]:
    out = [make_target(latest=True), make_target(immediate=True), make_target(latest=True, timeline=1)]
    for _ in range(14):
        tl = rnd.choice(["latest", "latest", 1, 2, "current"])
        if rnd.random() < 0.7:
            out.append(make_target(point_in_time=at(round(rnd.uniform(0, 100), 1)), timeline=tl,
                                   exclusive=rnd.random() < 0.3))
        else:
            out.append(make_target(lsn=lsn(rnd.randint(1, 0x1D), rnd.choice([0, 0x138, 0x200])), timeline=tl,
                                   exclusive=rnd.random() < 0.3))
    return out


async def store_archive(pool, guid: str, snap: ArchiveSnapshot) -> None:
    await repo.register_instance(pool, ref(guid, name=guid), storage(), at=t(0))
    await repo.save_scan(pool, guid, scan(snap.runs, WalMode.REPLACE, backups=snap.backups,
                                          histories=dict(snap.histories), edges=snap.edges,
                                          conflicts=tuple(WalConflict(a, b, "differs") for a, b in snap.conflicts),
                                          corrupt=tuple(WalConflict(c.timeline, c.segno, c.reason)
                                                        for c in snap.corrupt)))


def outcome(fn) -> object:
    try:
        return fn()
    except PlanningError as e:
        return ("refused", e.code)


async def test_sql_narrowing_and_plans_match_the_whole_snapshot(pool) -> None:
    rnd = random.Random(20261125)
    compared = narrowed_plans = 0
    cache = ProcessScanCache()
    for n in range(30):
        guid = f"arch-{n:02d}"
        await store_archive(pool, guid, random_archive(rnd))
        whole = await repo.load_snapshot(pool, guid)
        assert await repo.load_plan_inputs(pool, guid, make_target(latest=True), 4) is None  # no view yet
        try:
            await scancache.refresh(pool, guid)
        except Exception:
            continue
        rec = await repo.get_instance(pool, guid)
        for target in targets(rnd):
            for k in (1, 4):
                inputs = await repo.load_plan_inputs(pool, guid, target, k)
                assert inputs is not None
                ref_snap, ref_prefix = narrow(whole, target, k)
                assert sorted(b.label for b in inputs.snapshot.backups) == sorted(b.label for b in ref_snap.backups), (target, k, [(b.label, b.status, b.timeline, b.stop_lsn, b.stop_time, b.depends_on) for b in whole.backups])
                assert inputs.prefix == ref_prefix
                # the one-statement load decodes everything else exactly as the whole snapshot's load does
                assert replace(inputs.snapshot, backups=()) == replace(whole, backups=())
                assert all(b in whole.backups for b in inputs.snapshot.backups)
                assert windows_from_json(json.loads(inputs.windows_json)) == all_windows(whole)
            expect = outcome(lambda: plan_recovery(whole, target, now=NOW, pg_version=15))
            inputs = (await repo.load_plan_inputs(pool, guid, target, plans.PLAN_CANDIDATES)
                      if narrowable(target) else None)
            try:
                got, _ = await plans._plan(pool, rec, target, NOW, 15, inputs)
            except PlanningError as e:
                got = ("refused", e.code)
            assert got == expect, (guid, target)
            for _ in range(2):   # the service's snapshot cache (cold, then warm) changes nothing either
                try:
                    cached, _ = await plans._plan(pool, rec, target, NOW, 15, inputs, cache=cache)
                except PlanningError as e:
                    cached = ("refused", e.code)
                assert cached == expect, (guid, target)
            compared += 1
            if not isinstance(got, tuple):
                inputs = await repo.load_plan_inputs(pool, guid, target, plans.PLAN_CANDIDATES)
                narrowed_plans += inputs is not None and got.backup.label in inputs.prefix
    assert compared > 300 and narrowed_plans > 50   # the narrowed path is the one mostly taken


async def test_view_belongs_to_one_scan_and_stale_writers_are_refused(pool) -> None:
    snap = make_snapshot(backups=(backup_at("F1", 2, 1),))
    await store_archive(pool, "v-1", snap)
    assert await scancache.stored_archive(pool, "v-1") is None
    d, _ = await scancache.refresh(pool, "v-1")
    stored = await scancache.stored_archive(pool, "v-1")
    assert stored == d.archive and [b["label"] for b in json.loads(stored)["backups"]] == ["F1"]
    # a new scan: the view is stale until refreshed, and the old one can no longer be stored
    await repo.save_scan(pool, "v-1", scan(snap.runs, WalMode.REPLACE,
                                           backups=(backup_at("F1", 2, 1), backup_at("F2", 5, 10)),
                                           edges=snap.edges))
    assert await scancache.stored_archive(pool, "v-1") is None
    assert await repo.load_plan_inputs(pool, "v-1", make_target(latest=True), 4) is None
    assert await scancache.store(pool, "v-1", d) is False
    doc = json.loads(await backups.archive_text(pool, "v-1"))   # a reader recomputes and stores it
    assert [b["label"] for b in doc["backups"]] == ["F1", "F2"]
    assert json.loads(await scancache.stored_archive(pool, "v-1") or "{}") == doc


async def test_corrupt_stored_windows_fall_back_to_the_whole_snapshot(pool) -> None:
    snap = make_snapshot(backups=(backup_at("F1", 2, 1),))
    await store_archive(pool, "v-2", snap)
    await scancache.refresh(pool, "v-2")
    await pool.execute("UPDATE scan_cache SET windows = '{\"not\": \"windows\"}' WHERE instance_guid = 'v-2'")
    rec = await repo.get_instance(pool, "v-2")
    target = make_target(latest=True)
    inputs = await repo.load_plan_inputs(pool, "v-2", target, plans.PLAN_CANDIDATES)
    assert inputs is not None
    plan, _ = await plans._plan(pool, rec, target, NOW, 15, inputs)
    assert plan.backup.label == "F1" and plan.end_of_wal
