"""Archives whose newest window is cut, on copies of the real pgBackRest and barman-cloud archives.

- A deleted segment (B3's last own segment: B3 becomes unusable and B2's replay on timeline path [1, 2]
  meets the hole): ``latest`` plans up to the hole with a warning naming it and the later WAL, PostgreSQL
  really stops there and promotes with exactly the rows before it; a time or LSN past it is ``wal_gap``.
- pgBackRest: a second copy of a segment under another checksum (identical content) blocks planning through
  it, because the real ``pgbackrest archive-get`` refuses it; the same checksum under another compression
  restores and does not block. barman-cloud-wal-restore takes one copy without a word: only differing
  content conflicts.
- pgBackRest: the newest timeline's last segment overwritten by its predecessor's bytes is recorded as
  corrupt: the window ends at the last commit before it (not at a LastModified), ``latest`` stops before it
  with a warning, a time past it is ``wal_corrupt``, the coverage report says critical, and PostgreSQL
  really stops exactly there.

Restores go through the executor (``executor.execute_plan``: the real tool fetches, PostgreSQL 15 replays the
plan's files and replay is verified), then the directory is started with plain ``pg_ctl start`` and read.
"""
from __future__ import annotations

import asyncio
import bz2
import gzip
import hashlib
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from backup_catalog.usecases import coverage
from backup_catalog.usecases.backups import backups_doc
from backup_catalog.usecases.plan import plan_doc
from catalog import repo
from executor import execute_plan
from recovery.errors import PlanningError
from recovery.lsn import Lsn
from recovery.model import CorruptSegment
from recovery.plandoc import PlanDoc
from recovery.timefmt import iso
from recovery.wal import segment_name
from sandbox.pg import as_postgres, make_postgres_dir
from sandbox.tool_barman import TOOLS_BIN, aws_env
from sandbox.tool_pgbackrest import pgbackrest_conf, write_conf
from scheduler import runner
from scheduler.clients import s3_client
from scheduler.scan import scan_archive
from scheduler.storage import S3Store
from tests.realarchives.plugin import RealArchive, fresh_archive
from tests.support.clones import clone_request
from tests.support.fixtures import Row, commits, register_and_scan, rows_until_lsn, scan
from tests.support.restore import restore_environ, restore_settings, scratch_dir, start_and_read

pytestmark = pytest.mark.realtools
S = 16 << 20
TOOLS = ("pgbackrest", "barman")


@dataclass(slots=True)
class Env:
    pool: asyncpg.Pool
    settings: Any
    client: Any
    space: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(_catalog_pool: asyncpg.Pool, s3_endpoint: Any, catalog_dsn: str) -> AsyncIterator[Env]:
    settings = restore_settings(s3_endpoint, catalog_dsn)
    async with s3_client(settings) as client:
        yield Env(_catalog_pool, settings, client, f"cuts-{uuid.uuid4().hex[:8]}")


@dataclass(frozen=True, slots=True)
class Inst:
    arch: RealArchive
    guid: str
    name: str


async def catalogued(e: Env, s3_endpoint: Any, tool: str, what: str) -> Inst:
    arch = fresh_archive(s3_endpoint, tool)
    inst = Inst(arch, f"{what}-{tool}-{uuid.uuid4().hex[:8]}", f"{what}-{tool}")
    await register_and_scan(e.pool, e.client, e.settings, arch, inst.guid, space=e.space, name=inst.name)
    return inst


async def plan(e: Env, inst: Inst, body: dict[str, Any]) -> dict[str, Any]:
    return (await plan_doc(e.pool, e.settings, e.space, clone_request({"clone-from": inst.name, **body}))).to_json()


async def refusal(e: Env, inst: Inst, body: dict[str, Any]) -> PlanningError:
    with pytest.raises(PlanningError) as ei:
        await plan(e, inst, body)
    return ei.value


def segment_keys(s3_endpoint: Any, arch: RealArchive, name: str) -> list[str]:
    """The keys of segment ``name`` (not .backup/.partial/.history)."""
    out = []
    for o in s3_endpoint.client().list_objects_v2(Bucket=arch.bucket, Prefix=arch.prefix)["Contents"]:
        base = o["Key"].rsplit("/", 1)[-1]
        if base.startswith(name) and ".backup" not in base and ".partial" not in base:
            out.append(o["Key"])
    return out


def t(arch: RealArchive, i: int) -> datetime:
    return commits(arch)[i].time


Restorer = Callable[[dict[str, Any]], Awaitable[list[Row]]]


@pytest.fixture
def pitr_restore(env: Env, s3_endpoint: Any) -> Restorer:
    async def run(doc: dict[str, Any]) -> list[Row]:
        d = scratch_dir()
        try:
            await execute_plan(PlanDoc.from_json(doc), d / "data", env.settings, environ=restore_environ(s3_endpoint))
            return await asyncio.to_thread(start_and_read, d / "data")
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return run


async def restore_rows(pitr_restore: Restorer, arch: RealArchive, doc: dict[str, Any]) -> list[Row]:
    """The plan restored and verified by the executor, then started with plain ``pg_ctl start``."""
    assert doc["storage"]["bucket"] == arch.bucket
    return await pitr_restore(doc)


# -- a deleted segment in the newest window -----------------------------------------------------------------

@pytest.mark.parametrize("tool", TOOLS)
async def test_latest_through_a_deleted_segment_stops_before_it(tool: str, env: Env, s3_endpoint: Any,
                                                                pitr_restore: Restorer) -> None:
    inst = await catalogued(env, s3_endpoint, tool, "hole")
    arch = inst.arch
    labels = arch.truth["scenario_backups"]
    b3 = next(b for b in (await repo.load_snapshot(env.pool, inst.guid)).backups if b.label == labels["B3"])
    assert b3.timeline == 2 and b3.stop_lsn is not None
    hole = (b3.stop_lsn.value - 1) // S          # B3's last own segment: B3 is unusable, B2 replays into the hole
    victim, before, after = (segment_name(2, n, S) for n in (hole, hole - 1, hole + 1))
    [key] = segment_keys(s3_endpoint, arch, victim)
    assert segment_keys(s3_endpoint, arch, after), "the fixture has WAL after the victim"
    s3_endpoint.client().delete_object(Bucket=arch.bucket, Key=key)
    await scan(env.pool, env.client, env.settings, inst.guid, full=True)

    doc = await plan(env, inst, {"latest": True})
    assert doc["backup"]["label"] == labels["B2"] and doc["timeline_path"] == [1, 2]
    assert doc["wal"]["last_segment"] == before and doc["end_of_wal"] is True
    (warning,) = doc["warnings"]
    assert f"WAL segment {victim} is missing on timeline path [1, 2]" in warning, warning
    assert f"the later archived WAL {after}..{after} cannot be reached" in warning, warning
    c15 = commits(arch)[15]
    assert iso(c15.time) in warning
    replay = doc["replay"]
    assert replay["mode"] == "end_of_wal" and replay["end_segment"] == before
    assert replay["last_commit_time"] == iso(c15.time)
    assert Lsn((hole - 1) * S) <= Lsn.parse(replay["end_lsn"]) < Lsn(hole * S), replay

    # a specific time or LSN past the hole stays refused, with the horizon
    e = await refusal(env, inst, {"point-in-time": iso(t(arch, 16))})
    assert e.code == "wal_gap" and e.details["first_missing"] == victim, e.message
    assert e.details["horizon_time"] == c15.time and e.details["horizon_is_exact"] is True
    e = await refusal(env, inst, {"lsn": str(Lsn(hole * S + 0x100))})
    assert e.code == "wal_gap" and victim in e.message

    # PostgreSQL stops at the hole and promotes: exactly the rows before it
    rows = await restore_rows(pitr_restore, arch, doc)
    assert rows == rows_until_lsn(arch, (1, 2), Lsn(hole * S))
    assert [r[0] for r in rows] == [*range(1, 10), 13, 14, 15]


# -- duplicates, as each tool's restore sees them ------------------------------------------------------------

def archive_get(s3_endpoint: Any, arch: RealArchive, segment: str, work: Path) -> tuple[int, str, bytes | None]:
    """The real ``pgbackrest archive-get`` of ``segment`` (exit code, stderr, bytes fetched)."""
    dest = work / f"got-{uuid.uuid4().hex[:6]}"
    p = as_postgres(["pgbackrest", f"--config={work / 'pgbackrest.conf'}", f"--stanza={arch.stanza}",
                     "archive-get", segment, str(dest)], check=False)
    return p.returncode, p.stderr, dest.read_bytes() if dest.exists() else None


@pytest.fixture
def scratch() -> Iterator[Callable[[str], Path]]:
    """Directories the postgres user can use, removed after the test."""
    made: list[Path] = []

    def make(prefix: str) -> Path:
        made.append(make_postgres_dir(prefix))
        return made[-1]
    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


def archive_get_workdir(s3_endpoint: Any, arch: RealArchive, work: Path) -> Path:
    """A config for the session's TLS front, and a data directory holding only the backup's pg_control
    (archive-get checks the system identifier and version against it)."""
    (work / "data" / "global").mkdir(parents=True)
    c = s3_endpoint.client()
    ctl = next(o["Key"] for o in c.list_objects_v2(Bucket=arch.bucket, Prefix=f"{arch.prefix}/backup/")["Contents"]
               if o["Key"].endswith("pg_data/global/pg_control.gz"))
    (work / "data" / "global" / "pg_control").write_bytes(
        gzip.decompress(c.get_object(Bucket=arch.bucket, Key=ctl)["Body"].read()))
    for p in (work / "data", work / "data" / "global", work / "data" / "global" / "pg_control"):
        shutil.chown(p, "postgres", "postgres")
    write_conf(work, pgbackrest_conf(bucket=arch.bucket, tls_port=s3_endpoint.tls_port, work=work,
                                     pg_path=work / "data", repo_path="/" + arch.prefix, stanza=arch.stanza or "main"))
    return work


async def test_pgbackrest_second_checksum_blocks_planning_as_archive_get_refuses(
        env: Env, s3_endpoint: Any, pitr_restore: Restorer, scratch: Callable[[str], Path]) -> None:
    inst = await catalogued(env, s3_endpoint, "pgbackrest", "dup")
    arch = inst.arch
    seg = arch.truth["last_archived"]["tl2"]            # commits 16-17
    [key] = segment_keys(s3_endpoint, arch, seg)
    c = s3_endpoint.client()
    raw = gzip.decompress(c.get_object(Bucket=arch.bucket, Key=key)["Body"].read())
    assert key.rsplit("/", 1)[-1][25:65] == hashlib.sha1(raw).hexdigest()
    work = archive_get_workdir(s3_endpoint, arch, scratch("archive-get-"))
    code, err, got = archive_get(s3_endpoint, arch, seg, work)
    assert code == 0 and got == raw, err

    # the same checksum under another compression: archive-get restores it, and nothing is blocked
    same = key.rsplit(".", 1)[0] + ".bz2"
    c.put_object(Bucket=arch.bucket, Key=same, Body=bz2.compress(raw))
    code, err, got = archive_get(s3_endpoint, arch, seg, work)
    assert code == 0 and got == raw, err
    await scan(env.pool, env.client, env.settings, inst.guid, full=True)
    assert (await repo.load_snapshot(env.pool, inst.guid)).conflicts == ()
    c.delete_object(Bucket=arch.bucket, Key=same)

    # identical bytes under another checksum: archive-get refuses the segment
    other = key.rsplit("/", 1)[0] + f"/{seg}-{'0' * 40}.gz"
    c.put_object(Bucket=arch.bucket, Key=other, Body=gzip.compress(raw))
    code, err, got = archive_get(s3_endpoint, arch, seg, work)
    assert code == 45 and f"duplicates found for WAL segment {seg}" in err and got is None, (code, err)
    await scan(env.pool, env.client, env.settings, inst.guid, full=True)
    snap = await repo.load_snapshot(env.pool, inst.guid)
    n = int(seg[-8:], 16)
    assert snap.conflicts == ((2, n),)
    [row] = await repo.wal_conflicts(env.pool, inst.guid)
    assert "identical content" in row.detail and "archive-get refuses" in row.detail, row.detail

    doc = await plan(env, inst, {"latest": True})
    assert doc["backup"]["label"] == arch.truth["scenario_backups"]["B3"]
    assert doc["wal"]["last_segment"] == segment_name(2, n - 1, S)
    assert f"WAL segment {seg} has conflicting archived copies (two copies with different checksums" in doc["warnings"][0]
    assert "pgBackRest's archive-get refuses" in doc["warnings"][0]
    e = await refusal(env, inst, {"point-in-time": iso(t(arch, 17))})
    assert e.code == "wal_conflict" and "pgBackRest's archive-get refuses" in e.message and seg in e.message
    e = await refusal(env, inst, {"lsn": str(commits(arch)[17].lsn)})
    assert e.code == "wal_conflict"
    # and the restore it promises is what PostgreSQL gives: archive-get fails on the segment, replay ends
    rows = await restore_rows(pitr_restore, arch, doc)
    assert rows == rows_until_lsn(arch, (1, 2), Lsn(n * S))


def barman_wal_restore(s3_endpoint: Any, arch: RealArchive, segment: str, work: Path) -> bytes:
    dest = work / f"got-{uuid.uuid4().hex[:6]}"
    as_postgres([str(TOOLS_BIN / "barman-cloud-wal-restore"), "--endpoint-url", s3_endpoint.url, "--no-partial",
                 f"s3://{arch.bucket}/{arch.prefix}", arch.stanza or "main", segment, str(dest)], env=aws_env())
    return dest.read_bytes()


async def test_barman_keeps_the_content_rule(env: Env, s3_endpoint: Any, scratch: Callable[[str], Path]) -> None:
    """barman-cloud-wal-restore fetches one of the copies without comparing them: an identical copy is
    harmless, a different one makes the restored bytes depend on the names, so it conflicts."""
    inst = await catalogued(env, s3_endpoint, "barman", "bdup")
    arch = inst.arch
    seg = arch.truth["last_archived"]["tl2"]
    [key] = segment_keys(s3_endpoint, arch, seg)
    c = s3_endpoint.client()
    raw = gzip.decompress(c.get_object(Bucket=arch.bucket, Key=key)["Body"].read())
    work = scratch("barman-get-")
    c.put_object(Bucket=arch.bucket, Key=key[: -len(".gz")] + ".bz2", Body=bz2.compress(raw))
    assert barman_wal_restore(s3_endpoint, arch, seg, work) == raw
    await scan(env.pool, env.client, env.settings, inst.guid, full=True)
    assert (await repo.load_snapshot(env.pool, inst.guid)).conflicts == ()
    odd = bytearray(raw)
    odd[5000] ^= 0xFF
    c.put_object(Bucket=arch.bucket, Key=key[: -len(".gz")] + ".bz2", Body=bz2.compress(bytes(odd)))
    assert barman_wal_restore(s3_endpoint, arch, seg, work) in (raw, bytes(odd))   # no error, no comparison
    await scan(env.pool, env.client, env.settings, inst.guid, full=True)
    assert (await repo.load_snapshot(env.pool, inst.guid)).conflicts == ((2, int(seg[-8:], 16)),)


# -- a segment overwritten by its predecessor's bytes ------------------------------------------------------

async def test_segment_holding_its_predecessors_bytes_cuts_the_window(
        env: Env, s3_endpoint: Any, pitr_restore: Restorer) -> None:
    inst = await catalogued(env, s3_endpoint, "pgbackrest", "corrupt")
    arch = inst.arch
    victim = arch.truth["last_archived"]["tl2"]          # commits 16-17
    n = int(victim[-8:], 16)
    prev = segment_name(2, n - 1, S)
    [vkey] = segment_keys(s3_endpoint, arch, victim)
    [pkey] = segment_keys(s3_endpoint, arch, prev)
    c = s3_endpoint.client()
    c.put_object(Bucket=arch.bucket, Key=vkey, Body=c.get_object(Bucket=arch.bucket, Key=pkey)["Body"].read())
    await scan(env.pool, env.client, env.settings, inst.guid, full=True)

    why = f"segment starts at {Lsn((n - 1) * S)} (segno {n - 1}), expected segno {n}"
    snap = await repo.load_snapshot(env.pool, inst.guid)
    assert snap.corrupt == (CorruptSegment(2, n, why),)
    state = await repo.load_scan_state(env.pool, inst.guid)
    assert [i.key for i in state.issues if i.code == "wal_corrupt"] == [vkey]

    c15 = commits(arch)[15]
    doc = await backups_doc(env.pool, env.space, inst.name)
    entry = doc["instances"][0]
    assert entry["corrupt"] == [{"timeline": 2, "segment": victim, "reason": why}]
    [w] = [w for w in entry["windows"] if w["timeline_path"] == [1, 2]]
    assert (w["ends_at"], w["to"], w["to_is_exact"], w["to_lsn"]) == ("corrupt", iso(c15.time), True,
                                                                     str(Lsn(n * S)))

    p = await plan(env, inst, {"latest": True})
    assert p["backup"]["label"] == arch.truth["scenario_backups"]["B3"] and p["wal"]["last_segment"] == prev
    assert f"WAL segment {victim} is corrupt ({why})" in p["warnings"][0]
    assert p["replay"] == {"mode": "end_of_wal", "end_lsn": str(Lsn((n - 1) * S + 0x28)), "end_segment": prev,
                           "last_commit_time": iso(c15.time)}
    e = await refusal(env, inst, {"point-in-time": iso(t(arch, 16))})
    assert e.code == "wal_corrupt" and e.details["segment"] == victim and why in e.message
    assert e.details["horizon_time"] == c15.time

    rows = {r["instance_guid"]: r for r in await coverage.all_rows(env.pool, env.settings, now=datetime.now(UTC))}
    row = rows[inst.guid]
    assert row["status"] == "critical" and row["latest_window_end_kind"] == "corrupt"
    assert any(victim in x and "recovery cannot replay past it" in x for x in row["reasons"]), row["reasons"]

    # an incremental scan keeps it; a full scan finds it again
    for full in (False, True):
        await scan(env.pool, env.client, env.settings, inst.guid, full=full)
        assert (await repo.load_snapshot(env.pool, inst.guid)).corrupt == (CorruptSegment(2, n, why),)

    # PostgreSQL stops exactly there: the plan's promise is what a restore gives
    rows_got = await restore_rows(pitr_restore, arch, p)
    assert rows_got == rows_until_lsn(arch, (1, 2), Lsn(n * S))
    assert [r[0] for r in rows_got] == [*range(1, 10), 13, 14, 15]


async def test_full_scan_rechecks_a_known_corrupt_segment_inside_a_run(env: Env, s3_endpoint: Any) -> None:
    """A corrupt segment that is not at a run's end is not reached by the edge reader; once known, a full
    scan reads it again: still bad, it stays (with the last commit before it); repaired, it goes."""
    inst = await catalogued(env, s3_endpoint, "pgbackrest", "recheck")
    arch = inst.arch
    c = s3_endpoint.client()
    tl1_last = int(arch.truth["last_archived"]["tl1"][-8:], 16)
    n = tl1_last - 1
    [vkey] = segment_keys(s3_endpoint, arch, segment_name(1, n, S))
    [pkey] = segment_keys(s3_endpoint, arch, segment_name(1, n - 1, S))
    good = c.get_object(Bucket=arch.bucket, Key=vkey)["Body"].read()
    c.put_object(Bucket=arch.bucket, Key=vkey, Body=c.get_object(Bucket=arch.bucket, Key=pkey)["Body"].read())
    rec = await repo.get_instance(env.pool, inst.guid)
    store = S3Store(env.client, arch.bucket)
    prev = replace(await runner.previous_of(env.pool, inst.guid, rec, full=True), corrupt=((1, n),))
    res = await scan_archive(store, rec.storage, prev, full=True)
    assert [(x.timeline, x.segno) for x in res.corrupt] == [(1, n)]
    [edge] = [x for x in res.edges if (x.timeline, x.segno) == (1, n - 1)]
    last_before = max((cm for cm in commits(arch).values() if cm.tl == 1 and cm.lsn <= Lsn(n * S)),
                      key=lambda cm: cm.lsn)
    assert edge.exact and edge.last_commit_time == last_before.time
    c.put_object(Bucket=arch.bucket, Key=vkey, Body=good)
    res = await scan_archive(store, rec.storage, prev, full=True)
    assert res.corrupt == ()
