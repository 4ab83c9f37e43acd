"""One measured job, run in its own process (``python -m bench.job MODE ...``) so that its CPU time and
peak RSS are the client's alone (moto serves from the parent process). Prints one JSON line; its
``peak_rss_mb`` is this process's own peak RSS, the figure to report (``rusage_maxrss_mb``, like the
parent's ``wait4`` maxrss, includes the parent's peak: see ``own_peak_rss_mb``).

Modes: ``list`` (bare paginated ListObjectsV2 with the scanner's aioboto3 client), ``scan`` (one
instance through ``scheduler.runner.scan_instance``: listing, parsing, catalog save), ``many`` (a scheduler pass:
``backup_catalog.usecases.scan.scan_listed``); ``serve`` answers such jobs one after another (``make
bench-smoke``). Configuration from the environment (CATALOG_DSN, S3_ENDPOINT_URL, AWS_*).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
import traceback
from typing import Any

from backup_catalog.settings import Settings
from backup_catalog.usecases.scan import scan_listed
from catalog import db as catalog_db
from scheduler import runner
from scheduler.clients import s3_client


def own_peak_rss_mb() -> float:
    """This process's own peak RSS since it exec'd (VmHWM of its address space), in MB.

    Not ``ru_maxrss``: Linux carries the high-water RSS of the address space a process exec'd *from*
    into the new program's ``ru_maxrss`` (subprocess spawns via vfork, so that is the parent's peak: the
    bench parent holding the whole moto bucket). ``wait4``'s and ``getrusage``'s maxrss of this child are
    therefore at least the parent's peak, whatever the child does; VmHWM belongs to this program alone.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


async def bare_list(settings: Settings, bucket: str, prefix: str) -> dict[str, Any]:
    keys = pages = 0
    async with s3_client(settings) as client:
        t0, c0 = time.perf_counter(), time.process_time()
        kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
        while True:
            page = await client.list_objects_v2(**kw)
            pages += 1
            keys += len(page.get("Contents", ()))
            if not page.get("IsTruncated"):
                break
            kw["ContinuationToken"] = page["NextContinuationToken"]
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"keys": keys, "requests": pages, "wall_s": wall, "cpu_s": cpu}


async def scan_one(settings: Settings, guid: str, full: bool) -> dict[str, Any]:
    dsn = settings.catalog_dsn.get_secret_value() if settings.catalog_dsn else ""
    pool = await catalog_db.open_pool(dsn, min_size=1, max_size=2)
    try:
        async with s3_client(settings) as client:
            t0, c0 = time.perf_counter(), time.process_time()
            o = await runner.scan_instance(pool, client, guid, full=full, settings=settings)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await pool.close()
    return {"ok": o.ok, "code": o.code, "message": o.message if not o.ok else "", "requests": o.requests,
            "wal_runs": o.wal_runs, "backups": o.backups, "issues": o.issues, "wall_s": wall, "cpu_s": cpu}


async def scan_fleet(settings: Settings, guids: list[str], full: bool, concurrency: int) -> dict[str, Any]:
    dsn = settings.catalog_dsn.get_secret_value() if settings.catalog_dsn else ""
    pool = await catalog_db.open_pool(dsn, min_size=1, max_size=concurrency + 2)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        outs = await scan_listed(pool, settings, guids, full=full, concurrency=concurrency)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await pool.close()
    failed = [o for o in outs if not o.ok]
    return {"instances": len(outs), "failed": len(failed),
            "failures": sorted({f"{o.code}: {o.message[:160]}" for o in failed})[:5],
            "requests": sum(o.requests for o in outs), "wall_s": wall, "cpu_s": cpu}


def run(argv: list[str]) -> dict[str, Any]:
    """One job (``MODE ARGS``); its result with this process's own peak RSS."""
    p = argparse.ArgumentParser(prog="bench.job")
    sub = p.add_subparsers(dest="mode", required=True)
    lp = sub.add_parser("list")
    lp.add_argument("--bucket", required=True)
    lp.add_argument("--prefix", required=True)
    sp = sub.add_parser("scan")
    sp.add_argument("--guid", required=True)
    sp.add_argument("--full", action="store_true")
    mp = sub.add_parser("many")
    mp.add_argument("--guids-file", required=True)
    mp.add_argument("--full", action="store_true")
    mp.add_argument("--concurrency", type=int, default=8)
    a = p.parse_args(argv)
    settings = Settings()
    if a.mode == "list":
        out = asyncio.run(bare_list(settings, a.bucket, a.prefix))
    elif a.mode == "scan":
        out = asyncio.run(scan_one(settings, a.guid, a.full))
    else:
        with open(a.guids_file) as f:
            guids = [g.strip() for g in f if g.strip()]
        out = asyncio.run(scan_fleet(settings, guids, a.full, a.concurrency))
    out["peak_rss_mb"] = own_peak_rss_mb()
    out["rusage_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def serve() -> None:
    """``python -m bench.job serve``: job after job, one JSON argument list a line on stdin, one JSON result
    a line on stdout (``{"error": ...}`` for a job that failed), until stdin closes. The smoke's way to start
    one interpreter instead of one per job; its peak RSS is that of every job so far."""
    for line in sys.stdin:
        try:
            out = run(json.loads(line))
        except BaseException as e:      # SystemExit from argparse too: the caller reads the line
            out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-1500:]}
        print(json.dumps(out), flush=True)


def main() -> None:
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        print(json.dumps(run(sys.argv[1:])))


if __name__ == "__main__":
    main()
