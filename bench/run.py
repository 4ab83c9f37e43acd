"""``make bench``: build the data, run every measurement in one run, print a table, write JSON.

Data: one instance-year (WAL-G layout) and a fleet (all four layouts, several instances per bucket) in an
in-process moto server, preloaded through moto's backend (a real HTTP endpoint for every scan); a large
catalog COPYed straight into a private embedded PostgreSQL cluster. Scans and listings run in child
processes (bench.job) so their CPU time and peak RSS are the client's alone; HTTP load comes from wrk.

Phases (``main``'s plan, each with the phases it needs; each prints its wall and CPU time): walrecords, setup,
year, fleet, tools-upload, drills, events, catalog, serve-start, reports, http, tools. ``--smoke``
(``make bench-smoke``) runs them at tiny sizes, all but the drills, side by side where they do not depend on
each other, with one shared job process: see bench/README.md, "The smoke".
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import archives, bigcatalog, drills, events, fastlist, fleetreports, load, report, sidebyside, walrecords
from bench.runner import SERVE_INTERVAL, Jobs, Phases, Server, log
from catalog import db as catalog_db
from catalog import embedded, migrate, repo
from recovery.model import InstanceRef, Storage
from sandbox.s3 import MotoEndpoint

RESULTS = Path(__file__).parent / "results"
job = Jobs()


# -- S3 --------------------------------------------------------------------------------------------

def backend() -> Any:
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def preload(ep: MotoEndpoint, bucket: str, items: Any) -> int:
    """Insert objects through moto's in-process backend (~10,000/s instead of ~350/s over HTTP)."""
    ep.ensure_bucket(bucket)
    be, n = backend(), 0
    for key, body in items:
        be.put_object(bucket, key, body)
        n += 1
    return n


# -- child jobs ------------------------------------------------------------------------------------

def child_env(dsn: str, s3_url: str) -> dict[str, str]:
    env = sidebyside.cli_env(dsn, s3_url)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


# -- catalog ---------------------------------------------------------------------------------------

async def register(dsn: str, rows: list[tuple[str, str, str, Storage]]) -> None:
    pool = await catalog_db.open_pool(dsn)
    try:
        for guid, space, name, storage in rows:
            await repo.register_instance(pool, InstanceRef(guid, space, name), storage, existed_before=True)
    finally:
        await pool.close()


async def footprint(dsn: str, guid: str) -> dict[str, int]:
    conn = await catalog_db.connect(dsn)
    try:
        out = {}
        for t in ("backups", "wal_runs", "window_edges", "timelines", "wal_conflicts", "instance_names"):
            out[t] = int(await conn.fetchval(f"SELECT count(*) FROM {t} WHERE instance_guid = $1", guid))
        return out
    finally:
        await conn.close()


# -- phases ----------------------------------------------------------------------------------------

def instance_year(ep: MotoEndpoint, dsn: str, env: dict[str, str], segments: int, backups: int,
                  instances: int = 2) -> dict[str, Any]:
    spec = archives.Spec("walg", "year/walg", segments, backups,
                         holes=frozenset(segments * k // 4 + 7 for k in (1, 2, 3)))
    t0 = time.perf_counter()
    n = preload(ep, "bench-year", archives.objects(spec))
    log(f"instance-year: {n} objects preloaded in {time.perf_counter() - t0:.1f}s")
    # two instances on the same prefix: two initial scans, interleaved with three bare listings (moto in this
    # process sets the wall clock and is noisy; medians of repeated runs, each run kept in the JSON); the smoke
    # scans one instance after one listing
    guids = ("year-walg", "year-walg-2")[:instances]
    asyncio.run(register(dsn, [(g, "bench-year", g, Storage("bench-year", spec.prefix)) for g in guids]))
    wal_prefix = spec.prefix + "/wal_005/"
    bares, scans = [], []
    for g in guids:
        bares.append(job(env, "list", "--bucket", "bench-year", "--prefix", wal_prefix))
        log(f"bare listing: {bares[-1]['keys']} keys {bares[-1]['wall_s']:.1f}s")
        scans.append(job(env, "scan", "--guid", g))
        log(f"initial scan ({g}): {scans[-1]}")
    if instances > 1:
        bares.append(job(env, "list", "--bucket", "bench-year", "--prefix", wal_prefix))
    scan = dict(scans[0])
    scan["wall_s"] = statistics.median(x["wall_s"] for x in scans)
    scan["cpu_s"] = statistics.median(x["cpu_s"] for x in scans)
    scan["child_maxrss_mb"] = max(x["child_maxrss_mb"] for x in scans)
    scan["runs"] = scans
    bare1 = bares[0]
    bare_wall = statistics.median(x["wall_s"] for x in bares)
    bare_cpu = statistics.median(x["cpu_s"] for x in bares)
    keys = bare1["keys"]
    foot = asyncio.run(footprint(dsn, "year-walg"))
    idle = job(env, "scan", "--guid", "year-walg")
    log(f"rescan, nothing new: {idle['requests']} requests {idle['wall_s']:.2f}s")
    last = spec.first_segno + spec.segments - 1
    preload(ep, "bench-year", archives.wal_keys(spec, range(last + 1, last + 1001)))
    new = job(env, "scan", "--guid", "year-walg")
    log(f"rescan after 1,000 new: {new['requests']} requests {new['wall_s']:.2f}s")
    return {"segments": segments, "backups": backups, "objects": n, "wal_keys_listed": keys,
            "bare_list": {"wall_s": bare_wall, "cpu_s": bare_cpu, "requests": bare1["requests"],
                          "cpu_ms_per_1000_keys": 1000 * bare_cpu / keys * 1000, "runs": bares},
            "initial_scan": {**scan, "cpu_ms_per_1000_keys": 1000 * scan["cpu_s"] / keys * 1000,
                             "wall_ratio_vs_bare": scan["wall_s"] / bare_wall},
            "footprint": foot, "rescan_idle": idle, "rescan_1000_new": new}


def fleet(ep: MotoEndpoint, dsn: str, env: dict[str, str], tmp: Path, instances: int, segments: int,
          backups: int, per_bucket: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    regs, specs, total = [], [], 0
    for i in range(instances):
        layout = archives.LAYOUTS[i % len(archives.LAYOUTS)]
        bucket = f"bench-fleet-{i // per_bucket:04d}"
        spec = archives.Spec(layout, f"{layout}/inst-{i:05d}", segments, backups)
        total += preload(ep, bucket, archives.objects(spec))
        specs.append((bucket, spec))
        regs.append((f"fleet-{i:05d}", "bench-fleet", f"fleet-{i:05d}", Storage(bucket, spec.prefix)))
    log(f"fleet: {instances} instances, {total} objects preloaded in {time.perf_counter() - t0:.1f}s")
    asyncio.run(register(dsn, regs))
    guids = tmp / "fleet-guids.txt"
    guids.write_text("\n".join(r[0] for r in regs) + "\n")
    first = job(env, "many", "--guids-file", str(guids))
    log(f"fleet first pass: {first}")
    idle = job(env, "many", "--guids-file", str(guids))
    log(f"fleet pass, nothing new: {idle['requests']} requests {idle['wall_s']:.1f}s")
    extra = max(1, segments // 100)
    added = 0
    for bucket, spec in specs:
        last = spec.first_segno + spec.segments - 1
        added += preload(ep, bucket, archives.wal_keys(spec, range(last + 1, last + 1 + extra)))
    new = job(env, "many", "--guids-file", str(guids))
    log(f"fleet pass, 1% new: {new['requests']} requests {new['wall_s']:.1f}s")
    return {"instances": instances, "segments": segments, "backups": backups, "per_bucket": per_bucket,
            "objects": total, "first_pass": first, "pass_idle": idle, "new_objects": added, "pass_1pct_new": new}


def http_latency(port: int, instances: int, days: int, seconds: int, warmup: int = 2,
                 connections: tuple[int, ...] = (1, 16)) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    tg = bigcatalog.targets(instances, days, 2000)
    post = load.script("POST", [(f"/spaces/{s}/clones", json.dumps({"clone-from": n, "point-in-time": t}))
                                for s, n, t in tg], "broker", "broker")
    get = load.script("GET", [(f"/spaces/{s}/services/{n}/backups", None) for s, n, _ in tg], "broker", "broker")
    out: dict[str, Any] = {}
    for label, lua in (("plan", post), ("backups", get)):
        if warmup:
            load.run(url, lua, connections=4, seconds=warmup)    # warm-up (connections, caches)
        for conns in connections:
            r = load.run(url, lua, connections=conns, seconds=seconds)
            out[f"{label}_c{conns}"] = r
            log(f"HTTP {label} c={conns}: p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms "
                f"{r['req_per_s']:.0f} req/s non2xx {r['non2xx']}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--full-size", action="store_true",
                   help="525,600-segment year, 1,000 x 1,000 fleet (default: scaled down; see README)")
    p.add_argument("--year-segments", type=int)
    p.add_argument("--year-backups", type=int, default=365)
    p.add_argument("--fleet-instances", type=int)
    p.add_argument("--fleet-segments", type=int)
    p.add_argument("--fleet-backups", type=int, default=7)
    p.add_argument("--per-bucket", type=int, default=10)
    p.add_argument("--catalog-instances", type=int, default=10_000)
    p.add_argument("--catalog-days", type=int, default=365)
    p.add_argument("--http-seconds", type=int, default=10)
    p.add_argument("--serve-workers", type=int, default=1,
                   help="backup-catalog serve --workers (1: on 2 cores shared with wrk and PostgreSQL a second "
                        "worker only adds contention)")
    p.add_argument("--stock-moto", action="store_true", help="keep moto's O(bucket) ListObjectsV2")
    p.add_argument("--skip", action="append", default=[],
                   choices=["year", "fleet", "catalog", "tools", "drills", "reports", "http", "events",
                            "walrecords"])
    p.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    p.add_argument("--smoke", action="store_true",
                   help="every phase but the drills at tiny sizes, independent phases side by side, in under a "
                        "minute (make bench-smoke, part of make test): the bench still runs and fails when something "
                        "does not work; its figures and targets mean nothing at this size")
    a = p.parse_args(argv)
    if a.smoke:
        a.year_segments, a.year_backups = a.year_segments or 500, 3
        a.fleet_instances, a.fleet_segments, a.fleet_backups, a.per_bucket = 4, 20, 2, 2
        a.catalog_instances, a.catalog_days, a.http_seconds = 60, 5, 1
        # one drill and one plain restore per tool took 109 s at load 10 (2026-12-07), more than the smoke's
        # minute; tests/test_drills_e2e.py runs drills of the same real archives
        a.skip.append("drills")
        if a.out == RESULTS / "latest.json":
            a.out = Path(tempfile.gettempdir()) / "backup-catalog-bench-smoke.json"
    year_segments = a.year_segments or (525_600 if a.full_size else 50_000)
    fleet_instances = a.fleet_instances or (1000 if a.full_size else 100)
    fleet_segments = a.fleet_segments or (1000 if a.full_size else 200)

    started = time.perf_counter()
    phase = Phases()
    if not a.stock_moto:
        fastlist.install()
    tmp = Path(tempfile.mkdtemp(prefix="bench-", dir="/tmp"))
    tmp.chmod(0o755)
    base = tmp / "pg"
    results: dict[str, Any] = {"machine": report.machine(), "started_at": datetime.now(timezone.utc).isoformat(),
                               "moto_listing": "stock" if a.stock_moto else "indexed (bench.fastlist)",
                               "args": {k: str(v) for k, v in vars(a).items()},
                               "load_avg_at_start": os.getloadavg(), "phase_s": phase.seconds}
    server: Server | None = None
    ep = MotoEndpoint()
    st: dict[str, Any] = {}          # what the phases hand on: dsn, env, the real archives' registrations
    # the smoke runs independent phases side by side (its figures mean nothing; its minute is mostly child
    # processes starting): the same code as the measured run, which runs them one after the other
    together = job.shared = a.smoke

    def setup() -> None:
        log(f"embedded catalog cluster under {base}")
        st["dsn"] = dsn = embedded.ensure_cluster(base)
        asyncio.run(_init(dsn))
        ep.start()
        st["env"] = child_env(dsn, ep.url)

    def year() -> None:
        results["year"] = instance_year(ep, st["dsn"], st["env"], year_segments, a.year_backups,
                                        instances=1 if a.smoke else 2)

    def fleet_() -> None:
        results["fleet"] = fleet(ep, st["dsn"], st["env"], tmp, fleet_instances, fleet_segments, a.fleet_backups,
                                 a.per_bucket)

    def tools_upload() -> None:
        regs = sidebyside.upload(ep)
        asyncio.run(register(st["dsn"], [(r["guid"], sidebyside.SPACE, r["name"],
                                          Storage(r["bucket"], r["prefix"], r["layout"], r["stanza"]))
                                         for r in regs.values()]))
        guids = tmp / "tools-guids.txt"
        guids.write_text("".join(r["guid"] + "\n" for r in regs.values()))
        # a process of its own even in the smoke, which thus runs both ways of starting a job
        scanned = job(st["env"], "many", "--guids-file", str(guids), "--full", fresh=True)
        if scanned["failed"]:
            raise RuntimeError(f"scans of the real archives failed: {scanned['failures']}")
        st["regs"] = regs

    def drills_() -> None:   # before the server and the big catalog: restores want the CPU
        results["drills"] = drills.measure(ep, st["dsn"], st["regs"], runs=1 if a.smoke else 3)

    def events_() -> None:   # S3 events (issue 22): its own instances, before the big catalog
        size = events.SIZES["tiny" if a.smoke else "full" if a.full_size else "default"]
        if a.smoke:
            size = {**size, "rate": 20.0}    # its PUTs in 1 s, not 4
        # in a catalog database of its own: its 10,000 instances (no scans, no facts) would otherwise double
        # the fleet the reports and /metrics are timed on (20,105 rows and a 40 s cold /metrics, 2026-12-07)
        results["events"] = events.measure(ep, asyncio.run(_database(st["dsn"], "bench_events")), log=log, **size)

    def catalog() -> None:
        t0 = time.perf_counter()
        counts = asyncio.run(bigcatalog.build(st["dsn"], a.catalog_instances, a.catalog_days))
        results["catalog"] = c = {"instances": a.catalog_instances, "days": a.catalog_days, "rows": counts,
                                  "build_s": time.perf_counter() - t0}
        log(f"large catalog: {counts} in {c['build_s']:.0f}s")
        t0 = time.perf_counter()
        n = bigcatalog.derive(st["dsn"], a.catalog_instances, workers=1 if a.smoke else 2)
        c["derive_s"] = time.perf_counter() - t0
        log(f"derived views (what each scan stores) for {n} instances in {c['derive_s']:.0f}s")

    def serve_start() -> None:
        nonlocal server
        from backup_catalog.usecases.scan import slot_for
        asyncio.run(bigcatalog.claim_slots(st["dsn"], slot_for(datetime.now(timezone.utc), SERVE_INTERVAL)))
        server = Server(st["env"], tmp / "server.log", a.serve_workers)
        results["serve_workers"] = a.serve_workers
        server.wait_idle(quiet_s=0.5 if a.smoke else 2.0)

    def reports() -> None:
        assert server is not None
        pid = server.proc.pid if a.serve_workers == 1 else server.pids()[-1]
        results["reports"] = fleetreports.measure(server.port, pid, log)

    def http() -> None:
        assert server is not None
        # the smoke: one concurrent run per route (wrk runs at least a second, and keeps the server busy)
        results["http"] = http_latency(server.port, a.catalog_instances, a.catalog_days, a.http_seconds,
                                       warmup=0 if a.smoke else 2, connections=(4,) if a.smoke else (1, 16))

    def tools() -> None:
        import base64
        assert server is not None
        auth = base64.b64encode(b"broker:broker").decode()
        results["tools"] = sidebyside.measure(ep, st["regs"], st["env"], server.port, auth,
                                              **({"repeat": 1, "http_repeat": 3} if a.smoke else {}))
        log(f"side by side: {json.dumps(results['tools'])}")

    def walrecords_() -> None:   # the WAL record decoder beside pg_waldump (bench/walrecords.py)
        results["walrecords"] = walrecords.measure(log, smoke=a.smoke)

    data = ("year", "fleet", "tools-upload", "drills", "events", "catalog")   # what the server will find
    plan: list[tuple[str, Callable[[], None], tuple[str, ...]]] = [    # the measured run's order; needs
        ("precompile", sidebyside.precompile, ()),      # as an install does: the child processes skip compiling
        ("walrecords", walrecords_, ("precompile",)),
        ("setup", setup, ("precompile",)),
        ("year", year, ("setup",)),
        ("fleet", fleet_, ("setup",)),
        ("tools-upload", tools_upload, ("setup",)),
        ("drills", drills_, ("tools-upload",)),
        ("events", events_, ("setup",)),
        ("catalog", catalog, ("setup",)),
        ("serve-start", serve_start, data),
        ("reports", reports, ("serve-start",)),
        ("http", http, ("serve-start",)),
        ("tools", tools, ("serve-start", "tools-upload")),
    ]
    needs = {"tools-upload": "tools", "drills": "tools", "reports": "catalog", "http": "catalog"}
    try:
        try:
            phase.run([p for p in plan if p[0] not in a.skip and needs.get(p[0]) not in a.skip], together)
        finally:
            with phase("teardown"):
                job.close()
                if server is not None:
                    server.stop()
                ep.stop()
    except Exception as e:  # keep what was measured; say what failed
        results["error"] = f"{type(e).__name__}: {e}"
        log(f"bench aborted: {results['error']}")
    finally:
        try:
            embedded.stop_cluster(base)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    results["total_s"] = time.perf_counter() - started
    checks = report.checks(results)
    results["checks"] = checks
    results["broken"] = report.broken(results)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1, default=str))
    report.print_table(results, checks)
    log(f"per phase: {phase.summary()}")
    log(f"results written to {a.out} ({results['total_s']:.0f}s)")
    for b in results["broken"]:
        log(f"broken: {b}")
    if "error" in results or results["broken"]:
        return 2
    if a.smoke:
        return 0      # it ran end to end; targets are for real sizes
    return 0 if all(c["met"] is not False for c in checks) else 1


async def _database(dsn: str, name: str) -> str:
    """A second catalog database beside ``dsn``'s (same cluster), its schema applied; its DSN."""
    conn = await catalog_db.connect(dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    other = dsn.replace(f"/{embedded.DATABASE}?", f"/{name}?", 1)
    assert other != dsn, dsn
    await _init(other)
    return other


async def _init(dsn: str) -> None:
    pool = await catalog_db.open_pool(dsn)
    try:
        await migrate.init_schema(pool)
    finally:
        await pool.close()


if __name__ == "__main__":
    raise SystemExit(main())
