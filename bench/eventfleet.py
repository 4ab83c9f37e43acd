"""The events bench's fleet (``bench.events`` (b)): instances as a scan leaves them, in bulk, the segments
their events name, and the product's stream and consumer fed those events from memory.
"""
from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from backup_catalog.settings import Settings
from backup_catalog.usecases.event_stream import Stream
from backup_catalog.usecases.events import Consumer, Index, NullObserver
from bench.walsegments import segment_lz4
from catalog import db as catalog_db
from recovery.wal import DEFAULT_SEG_SIZE, segment_name
from sandbox.s3 import ACCESS_KEY, SECRET_KEY, MotoEndpoint
from scheduler.clients import s3_client

RUN_END = 100          # the bench instances' WAL: one run, segments 1..100, its last commit read (as a scan leaves it)
T_BASE = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Requests:
    """Requests by service and operation, counted at the botocore layer (what AWS bills)."""

    def __init__(self) -> None:
        self.ops: dict[str, int] = {}

    def attach(self, client: Any, service: str) -> None:
        def on(model: Any, **_: Any) -> None:
            k = f"{service}:{model.name}"
            self.ops[k] = self.ops.get(k, 0) + 1
        client.meta.events.register(f"before-call.{service}", on)


def key_of(prefix: str, segno: int) -> str:
    return f"{prefix}/wal_005/{segment_name(1, segno, DEFAULT_SEG_SIZE)}.lz4"


async def build_catalog(dsn: str, rows: list[tuple[str, str, str]], runs_upto: int, backups: int = 0) -> None:
    """Instances as a scan leaves them (layout known, one WAL run 1..``runs_upto`` with its end's last commit,
    ``backups`` daily full backups, the derived views of that scan), inserted in bulk. Every instance holds
    the same archive, so its derived views are computed once (``catalog.scancache``) and copied."""
    from catalog import scancache
    from recovery.lsn import Lsn
    pool = await catalog_db.open_pool(dsn)
    try:
        now = datetime.now(timezone.utc)
        s = DEFAULT_SEG_SIZE
        step = max(1, (runs_upto - 2) // max(1, backups))
        async with pool.acquire() as c, c.transaction():
            await c.executemany(
                "INSERT INTO instances (instance_guid, space_guid, bucket, prefix, layout, detected_layout, seg_size,"
                " registered_at) VALUES ($1, 'bench-events', $2, $3, 'walg', 'walg', $4, $5)",
                [(g, b, p, s, now) for g, b, p in rows])
            await c.executemany("INSERT INTO scan_state (instance_guid, last_scan, last_full_scan) VALUES ($1, $2, $2)",
                                [(g, now) for g, _, _ in rows])
            await c.copy_records_to_table("wal_runs", columns=["instance_guid", "timeline", "first_segno", "last_segno"],
                                          records=[(g, 1, 1, runs_upto) for g, _, _ in rows])
            await c.copy_records_to_table(
                "window_edges", columns=["instance_guid", "timeline", "segno", "last_commit_time", "last_commit_lsn",
                                         "exact"],
                records=[(g, 1, runs_upto, T_BASE + timedelta(minutes=runs_upto), Lsn(runs_upto * s + 0x100), True)
                         for g, _, _ in rows])
            bk = [(1 + i * step, f"base_{segment_name(1, 1 + i * step, s)}") for i in range(backups)]
            await c.copy_records_to_table(
                "backups", columns=["instance_guid", "label", "type", "status", "timeline", "start_lsn", "stop_lsn",
                                    "start_time", "stop_time", "size_bytes", "system_id", "seg_size"],
                records=[(g, label, "full", "done", 1, Lsn(n * s + 0x28), Lsn(n * s + 0x138),
                          T_BASE + timedelta(minutes=n - 0.5), T_BASE + timedelta(minutes=n), 1 << 30, 7, s)
                         for g, _, _ in rows for n, label in bk])
        if rows:
            first = rows[0][0]
            await scancache.refresh(pool, first)
            for table in ("scan_cache", "scan_cache_facts"):
                cols = [r["column_name"] for r in await pool.fetch(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
                    "AND column_name NOT IN ('instance_guid', 'generation', 'last_scan')", table)]
                sel = ", ".join(f"d.{c}" for c in cols)
                await pool.execute(
                    f"INSERT INTO {table} (instance_guid, generation, last_scan, {', '.join(cols)}) "
                    f"SELECT s.instance_guid, s.generation, s.last_scan, {sel} FROM scan_state s, {table} d "
                    f"WHERE d.instance_guid = $1 AND s.instance_guid = ANY($2::text[]) AND s.instance_guid <> $1",
                    first, [g for g, _, _ in rows])
    finally:
        await pool.close()


def segment(segno: int, t: datetime) -> bytes:
    """Segment ``segno`` of timeline 1 as WAL-G uploads it: two commits, the last at ``t``."""
    return segment_lz4(1, segno, DEFAULT_SEG_SIZE, [t - timedelta(seconds=30), t])


async def prepare_fleet(ep: MotoEndpoint, dsn: str, instances: int, events: int,
                        log: Callable[[str], None], backups: int = 0) -> str:
    """``instances`` registered, ``events`` segments stored and their S3 event messages written to a file
    (one body a line); its path. Moto's SQS (a linear scan and a deep copy of the queue per receive) would be
    what is measured: the consumer is fed the bodies directly, in batches of 10, as receives deliver them."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    bucket = "bench-events-fleet"
    ep.ensure_bucket(bucket)
    be = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    rows = [(f"ev-{i:06d}", bucket, f"fleet/{i:06d}") for i in range(instances)]
    t0 = time.perf_counter()
    await build_catalog(dsn, rows, RUN_END, backups)
    msgs: list[str] = []
    now = datetime.now(timezone.utc)
    for k in range(events):
        g, _, p = rows[k % instances]
        segno = RUN_END + 1 + k // instances
        key = key_of(p, segno)
        be.put_object(bucket, key, segment(segno, T_BASE + timedelta(minutes=segno)))  # no notification here
        msgs.append(json.dumps({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "eventTime": (now + timedelta(milliseconds=k)).isoformat().replace("+00:00", "Z"),
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 0, "sequencer": f"{k + 1:016X}"}}}]}))
    log(f"events throughput: {instances} instances ({backups} backups each), {events} events prepared in "
        f"{time.perf_counter() - t0:.0f}s")
    path = Path(tempfile.mkdtemp(prefix="bench-events-msgs-", dir="/tmp")) / "messages.jsonl"
    path.write_text("\n".join(msgs) + "\n")
    return str(path)


class MemoryQueue:
    """The queue of the throughput bench: message bodies in memory, handed out 10 at a time as receives fill
    up at fleet rates; deletes are counted. (Moto's SQS, a linear scan and a deep copy of the queue per
    receive, would be what is measured.)"""

    def __init__(self, bodies: list[str]) -> None:
        from scheduler.sqs import Message
        self.url = "memory://bench"
        self._todo = [Message(str(i), f"r{i}", b, 1, None) for i, b in enumerate(bodies)]
        self.deleted = 0
        self.done = asyncio.Event()
        self.total = len(bodies)

    async def receive(self, *, wait_seconds: int = 20, max_messages: int = 10,
                      visibility_timeout: int | None = None) -> list[Any]:
        await asyncio.sleep(0)
        if not self._todo:
            await asyncio.sleep(0.05)
            return []
        got, self._todo = self._todo[:max_messages], self._todo[max_messages:]
        return got

    async def delete(self, receipts: list[str]) -> int:
        self.deleted += len(receipts)
        if self.deleted >= self.total:
            self.done.set()
        return len(receipts)


async def consume_direct(dsn: str, s3_url: str, bodies: list[str], receivers: int) -> dict[str, Any]:
    """The product's stream and consumer, fed the message ``bodies`` by :class:`MemoryQueue`: events applied
    (messages deleted) per second."""
    from pydantic import SecretStr
    settings = Settings(catalog_dsn=SecretStr(dsn), s3_endpoint_url=s3_url, aws_access_key_id=SecretStr(ACCESS_KEY),
                        aws_secret_access_key=SecretStr(SECRET_KEY))
    reqs = Requests()
    pool = await catalog_db.open_pool(dsn, max_size=8)
    q = MemoryQueue(bodies)
    try:
        async with s3_client(settings) as s3:          # the product's client, as serve's
            reqs.attach(s3, "s3")
            consumer = Consumer(pool, s3, settings, "bench", Index(pool), NullObserver())
            stream = Stream(consumer, [q], receivers=receivers, wait_seconds=1)
            t0, c0 = time.perf_counter(), time.process_time()
            task = asyncio.create_task(stream.run())
            await asyncio.wait_for(q.done.wait(), timeout=1800)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            stream.stop()
            await asyncio.wait_for(task, 10)
    finally:
        await pool.close()
    return {"wall_s": wall, "cpu_s": cpu, "applied": q.deleted, "rounds": stream.batches, "requests": reqs.ops,
            "views_followed": getattr(consumer, "followed", None), "views_recomputed": getattr(consumer, "recomputed", None)}
