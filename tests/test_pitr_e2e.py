"""Recovery plans executed for real through the restore use case (``backup-catalog restore``): for the
pgBackRest and barman-cloud archives (two backups on timeline 1, a PITR fork, timeline 2 with a third backup;
the old primary kept writing on TL1), each case is restored by the executor (the real tool fetches, the
plan's settings, PostgreSQL 15 recovers and is verified), then the test starts the restored directory with
plain ``pg_ctl start`` and compares its rows with the commit times/LSNs the fixture builder recorded.

The source archive is never written: every restore compares the bucket's object list before and after it
(the pgBackRest backups carry ``archive_mode = on`` and an ``archive_command`` whose config file this module
puts back in place, so it would work).

Refusals are checked without a restore. One catalog scan per tool for the whole module (instances
under a module-unique space on the session pool, so the per-test TRUNCATE of ``pool`` is not used).
Restores are the cost (5-15 s each), so the ``restores`` fixture starts every case's restore up front, two
at a time; each test plans again, asserts on its plan, and checks that the restore used the same backup.
Set ``PITR_E2E_TABLE=<file>`` to write the case table (markdown) at the end of the module.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from backup_catalog.usecases import backups
from backup_catalog.usecases.restore import plan_clone, restore_from_catalog
from catalog import repo
from recovery.errors import PlanningError
from recovery.jsonout import refusal_to_dict
from recovery.target import parse_time
from recovery.timefmt import iso
from recovery.wal import WalSegment, segment_name
from sandbox.archives import RealArchive, fresh_archive
from sandbox.s3 import list_all
from scheduler.clients import s3_client
from tests.support.clones import clone_request
from tests.support.fixtures import (
    Row,
    commits,
    on_path,
    register_and_scan,
    rows_until_lsn,
    rows_until_time,
    scan,
)
from tests.support.restore import (
    arm_archive_commands,
    restore_environ,
    restore_settings,
    scratch_dir,
    start_and_read,
)

pytestmark = pytest.mark.realtools
TOOLS = ("pgbackrest", "barman")
TABLE: list[tuple[str, str, str, str, str]] = []   # (tool, case, target, backup, outcome)


def mid(a: datetime, b: datetime) -> datetime:
    return a + (b - a) / 2


@dataclass(frozen=True, slots=True)
class Catalogued:
    arch: RealArchive
    space: str
    name: str
    guid: str


@dataclass(slots=True)
class Env:
    pool: asyncpg.Pool
    settings: Any
    client: Any
    instances: dict[str, Catalogued] = field(default_factory=dict)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(_catalog_pool: asyncpg.Pool, real_archives: Any, s3_endpoint: Any,
              catalog_dsn: str) -> AsyncIterator[Env]:
    """Both archives registered and fully scanned once, under a space no other test uses."""
    settings = restore_settings(s3_endpoint, catalog_dsn)
    arm_archive_commands(real_archives)
    run = uuid.uuid4().hex[:8]
    async with s3_client(settings) as client:
        e = Env(_catalog_pool, settings, client)
        for tool in TOOLS:
            c = Catalogued(real_archives[tool], f"pitr-space-{run}", f"prod-{tool}", f"pitr-{tool}-{run}")
            await register_and_scan(_catalog_pool, client, settings, c.arch, c.guid, space=c.space, name=c.name)
            e.instances[tool] = c
        yield e
    _write_table()


def _write_table() -> None:
    out = os.environ.get("PITR_E2E_TABLE")
    if not out or not TABLE:
        return
    lines = ["| tool | case | target | backup chosen | outcome |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in sorted(TABLE, key=lambda r: (r[0], r[1]))]
    if TIMES:
        lines.append(f"\nrestores: {len(TIMES)}, seconds each (fetch+recover+verify): min {min(TIMES):.1f}, "
                     f"max {max(TIMES):.1f}, total {sum(TIMES):.1f}")
    Path(out).write_text("\n".join(lines) + "\n")


async def plan(e: Env, c: Catalogued, body: dict[str, Any]) -> dict[str, Any]:
    return (await plan_clone(e.pool, e.settings, c.space, clone_request({"clone-from": c.name, **body}))).to_json()


def _objects(client: Any, bucket: str) -> list[tuple[str, int, str]]:
    return sorted((o["Key"], o["Size"], o["ETag"]) for o in list_all(client, bucket))


@dataclass(frozen=True, slots=True)
class Restored:
    label: str
    rows: list[Row]
    seconds: float


class Restores:
    """Restores through the restore use case, started ahead of the tests that check them, keyed by
    (tool, case); two at a time. Each compares the source bucket's object list before and after."""

    def __init__(self, e: Env, s3_endpoint: Any, workers: int = 2) -> None:
        self.e, self.ep = e, s3_endpoint
        self.environ = restore_environ(s3_endpoint)
        self._sem = asyncio.Semaphore(workers)
        self._jobs: dict[tuple[str, str], asyncio.Future[Restored]] = {}

    async def _restore(self, c: Catalogued, body: dict[str, Any]) -> Restored:
        async with self._sem:
            client = self.ep.client()
            before = await asyncio.to_thread(_objects, client, c.arch.bucket)
            d = scratch_dir()
            try:
                t0 = asyncio.get_running_loop().time()
                res = await restore_from_catalog(self.e.settings, c.space, clone_request({"clone-from": c.name, **body}),
                                                 d / "data", pool=self.e.pool, environ=self.environ)
                took = asyncio.get_running_loop().time() - t0
                assert not (d / "data" / "recovery.signal").exists()
                rows = await asyncio.to_thread(start_and_read, d / "data")
            finally:
                shutil.rmtree(d, ignore_errors=True)
            after = await asyncio.to_thread(_objects, client, c.arch.bucket)
            assert after == before, "the restore wrote into its source archive"
            return Restored(res.backup.label, rows, took)

    def submit(self, tool: str, case: str, c: Catalogued, body: dict[str, Any]) -> None:
        self._jobs[(tool, case)] = asyncio.ensure_future(self._restore(c, body))

    async def rows(self, tool: str, case: str, c: Catalogued, body: dict[str, Any], doc: dict[str, Any]) -> list[Row]:
        job = self._jobs.get((tool, case))
        r = await (job if job is not None else self._restore(c, body))
        assert r.label == doc["backup"]["label"], "the restore executed another plan"
        TIMES.append(r.seconds)
        return r.rows

    async def close(self) -> None:
        for j in self._jobs.values():
            j.cancel()
        await asyncio.gather(*self._jobs.values(), return_exceptions=True)


TIMES: list[float] = []


def describe(body: dict[str, Any]) -> str:
    parts = []
    for k in ("point-in-time", "lsn"):
        if k in body:
            parts.append(f"{k} {body[k]}")
    parts += [k for k in ("latest", "immediate") if body.get(k)]
    if body.get("exclusive"):
        parts.append("exclusive")
    if "timeline" in body:
        parts.append(f"timeline {body['timeline']}")
    return ", ".join(parts)


# -- the cases that restore -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Case:
    """``body(arch)`` is the clone request; ``backup`` the scenario backup (B1..B3) the plan must choose;
    ``expect(arch, doc)`` the rows PostgreSQL must end with; ``check(arch, doc)`` extra plan assertions."""

    id: str
    body: Callable[[RealArchive], dict[str, Any]]
    backup: str
    path: tuple[int, ...]
    expect: Callable[[RealArchive, dict[str, Any]], list[Row]]
    check: Callable[[RealArchive, dict[str, Any]], None] | None = None


def _t(arch: RealArchive, i: int) -> datetime:
    return commits(arch)[i].time


def _latest_rows(arch: RealArchive, _: dict[str, Any]) -> list[Row]:
    return [c.row for c in on_path(arch, (1, 2))]


def _warns_last_commit(arch: RealArchive, doc: dict[str, Any]) -> None:
    last = max(on_path(arch, (1, 2)), key=lambda c: c.time)
    assert doc["end_of_wal"] is True
    assert any(iso(last.time) in w for w in doc["warnings"]), doc["warnings"]
    assert "recovery_target_time =" not in doc["files"]["postgresql.auto.conf"]


def _time_settings(arch: RealArchive, doc: dict[str, Any]) -> None:
    conf = doc["files"]["postgresql.auto.conf"]
    assert "recovery_target_time = '" in conf and doc["files"]["recovery.signal"] == ""
    assert ("recovery_target_inclusive = 'false'" in conf) is (not doc["target"]["inclusive"])


def _immediate_rows(arch: RealArchive, doc: dict[str, Any]) -> list[Row]:
    from recovery.lsn import Lsn
    return rows_until_lsn(arch, doc["timeline_path"], Lsn.parse(doc["backup"]["stop_lsn"]))


def _lsn_rows(i: int, path: tuple[int, ...]) -> Callable[[RealArchive, dict[str, Any]], list[Row]]:
    return lambda arch, _: rows_until_lsn(arch, path, commits(arch)[i].lsn)


CASES = [
    Case("01-tl1-between-commits", lambda a: {"point-in-time": iso(mid(_t(a, 5), _t(a, 6)))}, "B1", (1, 2),
         lambda a, _: rows_until_time(a, (1, 2), mid(_t(a, 5), _t(a, 6))), _time_settings),
    Case("02-at-commit-inclusive", lambda a: {"point-in-time": iso(_t(a, 8))}, "B2", (1, 2),
         lambda a, _: rows_until_time(a, (1, 2), _t(a, 8)), _time_settings),
    Case("03-at-commit-exclusive", lambda a: {"point-in-time": iso(_t(a, 8)), "exclusive": True}, "B2", (1, 2),
         lambda a, _: rows_until_time(a, (1, 2), _t(a, 8), inclusive=False), _time_settings),
    Case("05-old-timeline-after-fork", lambda a: {"point-in-time": iso(mid(_t(a, 10), _t(a, 11))), "timeline": 1},
         "B2", (1,), lambda a, _: rows_until_time(a, (1,), mid(_t(a, 10), _t(a, 11))), _time_settings),
    Case("06-new-timeline-between-commits", lambda a: {"point-in-time": iso(mid(_t(a, 14), _t(a, 15)))}, "B2",
         (1, 2), lambda a, _: rows_until_time(a, (1, 2), mid(_t(a, 14), _t(a, 15))), _time_settings),
    Case("07-after-last-commit", lambda a: {"point-in-time": iso(_t(a, 17) + timedelta(seconds=1))}, "B3", (1, 2),
         _latest_rows, _warns_last_commit),
    Case("08-latest", lambda a: {"latest": True}, "B3", (1, 2), _latest_rows),
    Case("09-immediate", lambda a: {"immediate": True}, "B3", (1, 2), _immediate_rows),
    # commit 14 is on TL2, after the TL1 commits 10-11 by LSN: those must not be replayed
    Case("10-lsn-on-tl2", lambda a: {"lsn": str(commits(a)[14].lsn)}, "B2", (1, 2), _lsn_rows(14, (1, 2))),
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def restores(env: Env, gapped: dict[str, Gapped], s3_endpoint: Any) -> AsyncIterator[Restores]:
    """Every restoring case's restore started (the tests re-plan and compare the backup)."""
    r = Restores(env, s3_endpoint)
    try:
        for tool in TOOLS:
            for case in CASES:
                c = env.instances[tool]
                r.submit(tool, case.id, c, case.body(c.arch))
            g = gapped[tool]
            r.submit(tool, "11b", g.c, _after_hole(g.c.arch))
        yield r
    finally:
        await r.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("tool", TOOLS)
async def test_plan_restores_to_the_expected_rows(tool: str, case: Case, env: Env, restores: Restores) -> None:
    c = env.instances[tool]
    body = case.body(c.arch)
    doc = await plan(env, c, body)
    assert doc["source"]["instance_guid"] == c.guid
    assert doc["backup"]["label"] == c.arch.truth["scenario_backups"][case.backup], doc["backup"]
    assert tuple(doc["timeline_path"]) == case.path
    if case.check:
        case.check(c.arch, doc)
    expected = case.expect(c.arch, doc)
    assert expected, "a case must expect some rows"
    rows = await restores.rows(tool, case.id, c, body, doc)
    TABLE.append((tool, case.id, describe(body), f"{case.backup} `{doc['backup']['label']}`",
                  f"restored ids {_ids(rows)}" + ("; warning: last commit" if doc["warnings"] else "")))
    assert rows == expected


def _ids(rows: list[Row]) -> str:
    ids = [r[0] for r in rows]
    spans: list[str] = []
    for i in ids:
        if spans and int(spans[-1].split("-")[-1]) == i - 1:
            spans[-1] = f"{spans[-1].split('-')[0]}-{i}"
        else:
            spans.append(str(i))
    return ",".join(spans)


# -- refusals ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tool", TOOLS)
async def test_target_before_first_backup_is_refused_with_windows(tool: str, env: Env) -> None:
    c = env.instances[tool]
    t = _t(c.arch, 2)          # committed before B1 started
    with pytest.raises(PlanningError) as ei:
        await plan(env, c, {"point-in-time": iso(t)})
    err = ei.value
    assert err.code == "target_before_window", err.message
    windows = refusal_to_dict(err)["error"]["windows"]
    assert windows and all(parse_time(w["from"]) > t for w in windows)
    b1 = c.arch.truth["scenario_backups"]["B1"]
    assert any(b1 in w["backups"] for w in windows)
    TABLE.append((tool, "04-before-first-backup", f"point-in-time {iso(t)}", "none",
                  f"refused `{err.code}`, {len(windows)} windows listed"))


# -- a hole in timeline 1 between B1 and B2 ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Gapped:
    c: Catalogued
    missing: str     # segment name deleted from the bucket


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gapped(env: Env, s3_endpoint: Any) -> dict[str, Gapped]:
    """Per tool: a fresh copy of the archive, scanned, then one TL1 segment between B1's stop and B2's
    start deleted and the instance rescanned with ``full``."""
    out = {}
    for tool in TOOLS:
        arch = fresh_archive(s3_endpoint, tool)
        c = Catalogued(arch, env.instances[tool].space, f"gap-{tool}", f"gap-{tool}-{uuid.uuid4().hex[:8]}")
        await register_and_scan(env.pool, env.client, env.settings, arch, c.guid, space=c.space, name=c.name)
        snap = await repo.load_snapshot(env.pool, c.guid)
        by_label = {b.label: b for b in snap.backups}
        b1 = by_label[arch.truth["scenario_backups"]["B1"]]
        b2 = by_label[arch.truth["scenario_backups"]["B2"]]
        s = snap.seg_size
        assert b1.stop_lsn is not None and b2.start_lsn is not None
        lo, hi = (b1.stop_lsn.value - 1) // s, b2.start_lsn.value // s
        assert hi - lo >= 2, f"{tool}: no segment between B1's stop and B2's start"
        victim_name = segment_name(1, lo + 1, s)
        victims = [k for k in arch.keys if _segment_of(k) == victim_name]
        assert len(victims) == 1, victims
        s3_endpoint.client().delete_object(Bucket=arch.bucket, Key=victims[0])
        await scan(env.pool, env.client, env.settings, c.guid, full=True)
        out[tool] = Gapped(c, victim_name)
    return out


def _after_hole(arch: RealArchive) -> dict[str, Any]:
    return {"point-in-time": iso(mid(_t(arch, 7), _t(arch, 8)))}


def _segment_of(key: str) -> str | None:
    """The segment name of a WAL segment object key (not .backup/.history/.partial), else None."""
    base = key.rsplit("/", 1)[-1]
    name, rest = base[:24], base[24:]
    try:
        WalSegment.from_name(name)
    except Exception:
        return None
    if rest.startswith("-") or rest in ("", ".gz", ".bz2", ".xz", ".zst", ".lz4", ".snappy"):
        return name
    return None


@pytest.mark.parametrize("tool", TOOLS)
async def test_target_inside_hole_is_refused_as_wal_gap(tool: str, env: Env, gapped: dict[str, Gapped]) -> None:
    g = gapped[tool]
    arch = g.c.arch
    t = mid(_t(arch, 4), _t(arch, 5))    # commits 4-6 were written into the deleted segment
    with pytest.raises(PlanningError) as ei:
        await plan(env, g.c, {"point-in-time": iso(t)})
    err = ei.value
    assert err.code == "wal_gap", err.message
    assert g.missing in err.message
    assert err.details["first_missing"] == g.missing
    doc = await backups.backups_doc(env.pool, g.c.space, g.c.name)
    assert [h["first_missing"] for h in doc["instances"][0]["holes"]] == [g.missing]
    TABLE.append((tool, "11a-wal-gap-inside-hole", f"point-in-time {iso(t)}", "none",
                  f"refused `{err.code}` naming {g.missing}"))


@pytest.mark.parametrize("tool", TOOLS)
async def test_target_after_hole_uses_b2_and_restores(tool: str, env: Env, gapped: dict[str, Gapped],
                                                      restores: Restores) -> None:
    g = gapped[tool]
    arch = g.c.arch
    t = mid(_t(arch, 7), _t(arch, 8))
    body = _after_hole(arch)
    doc = await plan(env, g.c, body)
    assert doc["backup"]["label"] == arch.truth["scenario_backups"]["B2"]
    assert doc["wal"]["first_segment"] > g.missing
    rows = await restores.rows(tool, "11b", g.c, body, doc)
    TABLE.append((tool, "11b-after-hole", describe(body), f"B2 `{doc['backup']['label']}`",
                  f"restored ids {_ids(rows)}"))
    assert rows == rows_until_time(arch, (1, 2), t)
