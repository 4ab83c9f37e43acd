"""One measured job, run in its own process (``python -m bench.job MODE ...``) so that its CPU time and
peak RSS are the client's alone (moto serves from the parent process). Prints one JSON line.

Modes: ``list`` (bare paginated ListObjectsV2 with the scanner's aioboto3 client), ``scan`` (one
instance through ``service.scan_instance``: listing, parsing, catalog save), ``many`` (a scheduler pass:
``service.scan_many``). Configuration from the environment (CATALOG_DSN, S3_ENDPOINT_URL, AWS_*).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from typing import Any

from backup_catalog import service
from backup_catalog.s3 import s3_client
from backup_catalog.settings import Settings
from catalog import db as catalog_db
from scheduler import runner


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
        outs = await service.scan_many(pool, settings, guids, full=full, concurrency=concurrency)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await pool.close()
    failed = [o for o in outs if not o.ok]
    return {"instances": len(outs), "failed": len(failed),
            "failures": sorted({f"{o.code}: {o.message[:160]}" for o in failed})[:5],
            "requests": sum(o.requests for o in outs), "wall_s": wall, "cpu_s": cpu}


def main() -> None:
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
    a = p.parse_args()
    settings = Settings()
    if a.mode == "list":
        out = asyncio.run(bare_list(settings, a.bucket, a.prefix))
    elif a.mode == "scan":
        out = asyncio.run(scan_one(settings, a.guid, a.full))
    else:
        with open(a.guids_file) as f:
            guids = [g.strip() for g in f if g.strip()]
        out = asyncio.run(scan_fleet(settings, guids, a.full, a.concurrency))
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
