"""S3 events bench (issue 22): freshness, consumer throughput, requests and cost per instance per day.

(a) freshness: one WAL-G instance in moto with notifications to SQS (moto delivers them in process); segment
    PUTs at a steady pace; the product's consumer (``Stream``, 2 receives in flight, long polling) runs beside
    them; a watcher reads the instance's run end in the catalog every 10 ms. Freshness of a segment = the
    first time the catalog's run end reaches it minus the end of its PUT. The polling design's figure is the
    scan interval (expected half of it, worst all of it), beside it.
(b) throughput: ``instances`` instances as a scan leaves them (one WAL run with its end's last commit,
    ``backups`` daily backups, their derived views), every one's WAL prefix in one bucket; ``events`` S3 event
    messages (one record each, as S3 sends them) for segments that exist, valid WAL as ``archive_timeout``
    leaves it (``bench.walsegments``: a few commits, a switch, zeros; lz4 as WAL-G writes it); one consumer
    process (the product's stream and consumer, fed from memory: ``bench.eventfleet``) applies them all;
    events applied per second (wall), its CPU per event and moto's, and how many replicas 1,667/s (100,000
    instances archiving a segment a minute) needs at that rate.
(c) requests per instance per day and cost at 100,000 instances at list prices: polling (the requests of an
    incremental scan with nothing new, measured, every ``scan_interval``) vs events (measured per event:
    S3 GETs, SQS receives and deletes; one event per segment, a segment a minute; plus the daily reconcile).

Moto is the store and the queue here, on the same 2 cores as the consumer and PostgreSQL: wall figures are
upper bounds for a real S3/SQS, request counts are exact.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aioboto3

from backup_catalog.settings import Settings
from backup_catalog.usecases import events_setup
from backup_catalog.usecases.event_stream import Stream
from backup_catalog.usecases.events import Consumer, Index, NullObserver
from bench import eventfleet
from catalog import db as catalog_db
from catalog import migrate
from sandbox.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoEndpoint
from scheduler import runner
from scheduler.clients import s3_client
from scheduler.sqs import SqsQueue

# list prices (us-east-1, standard): S3 LIST/PUT $0.005 per 1,000, GET/HEAD $0.0004 per 1,000; SQS standard
# $0.40 per million requests (each 64 KB of payload is one request; S3 -> SQS deliveries are SendMessage)
PRICE = {"s3_list": 0.005 / 1000, "s3_get": 0.0004 / 1000, "sqs": 0.40 / 1_000_000}
FLEET = 100_000
SEGMENTS_PER_DAY = 1440             # one segment a minute
NEEDED_RATE = FLEET * SEGMENTS_PER_DAY / 86400   # 1,667 events/s


# ``make bench`` (default), ``--full-size``, and the smoke size (``python -m bench.events --tiny``)
SIZES: dict[str, dict[str, Any]] = {"tiny": {"puts": 20, "instances": 100, "events": 100, "backups": 3},
                                    "default": {"puts": 1000, "instances": 10_000, "events": 5000, "backups": 30},
                                    "full": {"puts": 1000, "instances": 10_000, "events": 10_000, "backups": 30}}



def _session() -> aioboto3.Session:
    return aioboto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)


def _settings(ep: MotoEndpoint, dsn: str, **kw: Any) -> Settings:
    from pydantic import SecretStr
    return Settings(catalog_dsn=SecretStr(dsn), s3_endpoint_url=ep.url, aws_access_key_id=SecretStr(ACCESS_KEY),
                    aws_secret_access_key=SecretStr(SECRET_KEY), **kw)


async def freshness(ep: MotoEndpoint, dsn: str, puts: int, rate: float, log: Callable[[str], None]) -> dict[str, Any]:
    bucket, prefix, guid = "bench-events-fresh", "fresh/walg", "bench-fresh"
    ep.ensure_bucket(bucket)
    s3sync = ep.client()
    s3sync.put_object(Bucket=bucket, Key=eventfleet.key_of(prefix, 1), Body=eventfleet.segment(1, eventfleet.T_BASE))
    await eventfleet.build_catalog(dsn, [(guid, bucket, prefix)], 1)
    pool = await catalog_db.open_pool(dsn)
    put_done: dict[int, float] = {}
    seen: dict[int, float] = {}
    try:
        async with _session().client("s3", endpoint_url=ep.url) as s3, \
                _session().client("sqs", endpoint_url=ep.url) as sqs:
            url = (await sqs.create_queue(QueueName="bench-fresh"))["QueueUrl"]
            attrs, existing = await events_setup.read_current(s3, sqs, bucket, url)
            plan = events_setup.plan_setup(bucket, url, attrs, [prefix], existing, max_receives=5,
                                           visibility_timeout=60)
            await events_setup.apply_setup(s3, sqs, plan)
            await sqs.purge_queue(QueueUrl=url)
            # the consumer in its own process, as serve runs it (moto, the uploader and the watcher stay here)
            ready = Path(tempfile.mkdtemp(prefix="bench-events-ready-", dir="/tmp")) / "ready"
            child = _spawn_consumer(dsn, ep.url, url, puts, 2, guid_prefix=guid, wait_seconds=1, ready=str(ready))
            for _ in range(600):                     # the consumer is up and polling
                if ready.exists():
                    break
                await asyncio.sleep(0.05)
            shutil.rmtree(ready.parent, ignore_errors=True)

            def uploader() -> None:
                t_next = time.perf_counter()
                bodies = {n: eventfleet.segment(n, eventfleet.T_BASE + timedelta(minutes=n)) for n in range(2, puts + 2)}
                for n in range(2, puts + 2):
                    t_next += 1.0 / rate
                    s3sync.put_object(Bucket=bucket, Key=eventfleet.key_of(prefix, n), Body=bodies[n])
                    put_done[n] = time.perf_counter()
                    time.sleep(max(0.0, t_next - time.perf_counter()))

            th = threading.Thread(target=uploader, daemon=True)
            t0 = time.perf_counter()
            th.start()
            last = 1
            deadline = time.perf_counter() + puts / rate + 120
            while last < puts + 1 and time.perf_counter() < deadline:
                end = await pool.fetchval("SELECT max(last_segno) FROM wal_runs WHERE instance_guid = $1", guid)
                now = time.perf_counter()
                for n in range(last + 1, int(end or 1) + 1):
                    seen[n] = now
                last = max(last, int(end or 1))
                await asyncio.sleep(0.01)
            th.join(timeout=5)
            wall = time.perf_counter() - t0
            done, _cpu = await asyncio.to_thread(_reap, child)
    finally:
        await pool.close()
    lat = sorted(seen[n] - put_done[n] for n in seen if n in put_done)
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else lat * 99
    sqs_ops = {k: v / max(1, len(lat)) for k, v in done["requests"].items() if k.startswith("sqs:")}
    out = {"puts": puts, "rate_per_s": rate, "seen": len(lat), "p50_s": q[49], "p99_s": q[98], "max_s": lat[-1],
           "sqs_requests_per_event": sqs_ops,
           "wall_s": wall, "polling_interval_s": 300, "polling_expected_s": 150, "target_p99_s": 5.0}
    log(f"events freshness: {json.dumps(out)}")
    return out


def throughput(dsn: str, s3_url: str, path: str, instances: int, events: int, receivers: int,
               log: Callable[[str], None]) -> dict[str, Any]:
    """One consumer process applies every message: events applied per second."""
    # the consumer in its own process (as serve would run it): moto in this one does not share its GIL
    import resource
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    child, child_cpu = _reap(_spawn_consumer(dsn, s3_url, path, events, receivers, direct=True))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    moto_cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)     # this process: moto's threads
    shutil.rmtree(Path(path).parent, ignore_errors=True)
    wall, applied, ops = child["wall_s"], child["applied"], child["requests"]
    child_cpu = child.get("cpu_s", child_cpu)          # the applying alone, not the process's start-up
    rate = applied / wall if wall else 0.0
    cpu_rate = 1000 / (1000 * child_cpu / max(1, applied)) if child_cpu else 0.0
    out = {"instances": instances, "events": events, "applied": applied, "receivers": receivers, "wall_s": wall,
           "rounds": child.get("rounds"), "views_followed": child.get("views_followed"),
           "views_recomputed": child.get("views_recomputed"),
           "consumer_cpu_s": child_cpu, "consumer_cpu_ms_per_event": 1000 * child_cpu / max(1, applied),
           "moto_cpu_ms_per_event": 1000 * moto_cpu / max(1, applied), "load_avg": os.getloadavg(),
           "events_per_s": rate, "events_per_cpu_s": cpu_rate, "target_per_s": 1000,
           "needed_at_100k_per_s": NEEDED_RATE,
           "replicas_for_100k": (int(NEEDED_RATE // rate) + 1) if rate else None,
           "cores_for_100k_cpu_bound": (int(NEEDED_RATE // cpu_rate) + 1) if cpu_rate else None,
           "requests": dict(sorted(ops.items())),
           "requests_per_event": {k: v / max(1, applied) for k, v in sorted(ops.items())}}
    log(f"events throughput: {json.dumps(out)}")
    return out


async def idle_scan_requests(ep: MotoEndpoint, dsn: str) -> int:
    """Requests of one incremental scan with nothing new (the polling design's cost per tick)."""
    guid = "bench-fresh"
    pool = await catalog_db.open_pool(dsn)
    try:
        async with _session().client("s3", endpoint_url=ep.url) as s3:
            o = await runner.scan_instance(pool, s3, guid, full=False, settings=_settings(ep, dsn))
            o = await runner.scan_instance(pool, s3, guid, full=False, settings=_settings(ep, dsn))
            return o.requests
    finally:
        await pool.close()


def cost(idle_requests: int, per_event: dict[str, float], sqs_per_event: dict[str, float],
         scan_interval: int = 300) -> dict[str, Any]:
    """Requests per instance per day and the daily bill at 100,000 instances, both designs.

    Events: S3's SendMessage per event, plus the consumer's receives and deletes. At 100,000 instances (1,667
    events/s) every receive comes back full: 0.1 ReceiveMessage and 0.1 DeleteMessageBatch per event (the
    headline); as measured by the freshness run (one instance, 5 events/s: about one receive and one delete
    per event), the bound for a quiet queue, beside it."""
    polls = 86400 / scan_interval
    poll = {"s3_list": polls * idle_requests, "s3_get": float(SEGMENTS_PER_DAY) / 1}   # edges read per new run end
    poll["s3_get"] = min(poll["s3_get"], polls)       # a scan reads the run end once per tick at most
    ev_get = per_event.get("s3:GetObject", 0.0) + per_event.get("s3:HeadObject", 0.0)

    def events_at(receive: float, delete: float) -> dict[str, float]:
        return {"s3_list": float(idle_requests),        # the daily reconcile
                "s3_get": SEGMENTS_PER_DAY * ev_get, "sqs": SEGMENTS_PER_DAY * (1.0 + receive + delete)}
    events = events_at(0.1, 0.1)
    quiet = events_at(sqs_per_event.get("sqs:ReceiveMessage", 1.0), sqs_per_event.get("sqs:DeleteMessageBatch", 1.0))

    def bill(r: dict[str, float]) -> float:
        return FLEET * sum(PRICE[k] * v for k, v in r.items())
    return {"per_instance_per_day": {"polling": poll, "events": events, "events_quiet_queue": quiet},
            "requests_per_instance_per_day": {"polling": sum(poll.values()), "events": sum(events.values()),
                                              "events_quiet_queue": sum(quiet.values())},
            "usd_per_day_at_100k": {"polling": round(bill(poll), 2), "events": round(bill(events), 2),
                                    "events_quiet_queue": round(bill(quiet), 2)},
            "prices": PRICE, "assumptions": f"{SEGMENTS_PER_DAY} segments/instance/day; scan every {scan_interval}s; "
                                             "SQS requests: S3's SendMessage + the consumer's receive/delete per event "
                                             "(full receives at fleet rate; measured on a quiet queue beside); "
                                             "reconcile daily"}


def measure(ep: MotoEndpoint, dsn: str, *, puts: int = 1000, rate: float = 5.0, instances: int = 10_000,
            events: int = 5000, backups: int = 30, receivers: int = 4,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    fresh = asyncio.run(freshness(ep, dsn, puts, rate, log))
    path = asyncio.run(eventfleet.prepare_fleet(ep, dsn, instances, events, log, backups))
    thr = throughput(dsn, ep.url, path, instances, events, receivers, log)
    idle = asyncio.run(idle_scan_requests(ep, dsn))
    out = {"freshness": fresh, "throughput": thr, "idle_scan_requests": idle,
           "cost": cost(idle, thr["requests_per_event"], fresh["sqs_requests_per_event"])}
    log(f"events cost: {json.dumps(out['cost'])}")
    return out


def _spawn_consumer(dsn: str, s3_url: str, queue_url: str, events: int, receivers: int, *,
                    guid_prefix: str = "ev-", wait_seconds: int = 1, direct: bool = False,
                    ready: str = "") -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.Popen([sys.executable, "-m", "bench.events", "consume", "--dsn", dsn, "--s3", s3_url,
                             "--queue", queue_url, "--events", str(events), "--receivers", str(receivers),
                             "--guid-prefix", guid_prefix, "--wait", str(wait_seconds), "--ready", ready]
                            + (["--direct"] if direct else []),
                            stdout=subprocess.PIPE, text=True, env=env)


def _reap(proc: subprocess.Popen[str]) -> tuple[dict[str, Any], float]:
    """The child's JSON line and its own CPU seconds (wait4)."""
    assert proc.stdout is not None
    text = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"bench.events consume failed: {text[-1000:]}")
    return json.loads(text.strip().splitlines()[-1]), ru.ru_utime + ru.ru_stime


async def consume(dsn: str, s3_url: str, queue_url: str, events: int, receivers: int, guid_prefix: str = "ev-",
                  wait_seconds: int = 1, ready: str = "") -> dict[str, Any]:
    """The consumer alone (a child process): drain ``queue_url`` until ``events`` fleet events are applied."""
    from pydantic import SecretStr
    settings = Settings(catalog_dsn=SecretStr(dsn), s3_endpoint_url=s3_url, aws_access_key_id=SecretStr(ACCESS_KEY),
                        aws_secret_access_key=SecretStr(SECRET_KEY))
    reqs = eventfleet.Requests()
    pool = await catalog_db.open_pool(dsn, max_size=8)
    try:
        async with s3_client(settings) as s3, _session().client("sqs", endpoint_url=s3_url) as sqs:
            reqs.attach(s3, "s3")
            reqs.attach(sqs, "sqs")
            stream = Stream(Consumer(pool, s3, settings, "bench", Index(pool), NullObserver()),
                            [SqsQueue(sqs, queue_url)], receivers=receivers, wait_seconds=wait_seconds)
            t0 = time.perf_counter()
            task = asyncio.create_task(stream.run())
            await asyncio.sleep(0.2)
            if ready:
                await asyncio.to_thread(Path(ready).touch)
            applied = 0
            while time.perf_counter() - t0 < 900:
                applied = int(await pool.fetchval(
                    "SELECT count(*) FROM event_keys WHERE starts_with(instance_guid, $1)", guid_prefix))
                if applied >= events:
                    break
                await asyncio.sleep(0.05)
            wall = time.perf_counter() - t0
            stream.stop()
            await asyncio.wait_for(task, 10)
    finally:
        await pool.close()
    return {"wall_s": wall, "applied": applied, "requests": reqs.ops}


def checks(e: dict[str, Any], row: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """bench.report's rows for this measurement (``row`` is report._c)."""
    f, t, c = e["freshness"], e["throughput"], e["cost"]
    sec = f"S3 events ({f['puts']:,} PUTs; {t['instances']:,}-instance catalog, {t['events']:,} events)"
    usd = c["usd_per_day_at_100k"]
    req = c["requests_per_instance_per_day"]
    return [
        row(sec, "freshness PUT -> run end, p50", f["p50_s"], "", None, "s"),
        row(sec, "freshness PUT -> run end, p99", f["p99_s"], "<= 5 s", f["p99_s"] <= 5.0, "s"),
        row(sec, "polling interval (expected staleness half of it)", f["polling_interval_s"], "", None, "s"),
        row(sec, "events applied per second, one consumer", t["events_per_s"], ">= 1,000/s", t["events_per_s"] >= 1000),
        row(sec, "consumer CPU per event", t["consumer_cpu_ms_per_event"], "", None, "ms"),
        row(sec, "replicas for 1,667 events/s (100,000 instances)", t["replicas_for_100k"], "", None),
        row(sec, "requests/instance/day: polling", req["polling"], "", None),
        row(sec, "requests/instance/day: events", req["events"], "", None),
        row(sec, "USD/day at 100,000 instances: polling", usd["polling"], "", None),
        row(sec, "USD/day at 100,000 instances: events", usd["events"], "< polling", usd["events"] < usd["polling"]),
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.events [--tiny]``: the events bench alone, on a private catalog cluster and moto."""
    if (argv is None and len(sys.argv) > 1 and sys.argv[1] == "consume") or (argv and argv[0] == "consume"):
        c = argparse.ArgumentParser(prog="bench.events consume")
        for name in ("--dsn", "--s3", "--queue"):
            c.add_argument(name, required=True)
        c.add_argument("--events", type=int, required=True)
        c.add_argument("--receivers", type=int, default=4)
        c.add_argument("--guid-prefix", default="ev-")
        c.add_argument("--wait", type=int, default=1)
        c.add_argument("--direct", action="store_true", help="--queue is a file of message bodies")
        c.add_argument("--ready", default="", help="a file to create once polling")
        ca = c.parse_args((argv or sys.argv[1:])[1:])
        if os.environ.get("BENCH_EVENTS_DEBUG"):
            import logging
            logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
            logging.getLogger("backup_catalog.usecases.events").setLevel(logging.DEBUG)
        if ca.direct:
            bodies = [b for b in Path(ca.queue).read_text().splitlines() if b]
            print(json.dumps(asyncio.run(eventfleet.consume_direct(ca.dsn, ca.s3, bodies, ca.receivers))))
        else:
            print(json.dumps(asyncio.run(consume(ca.dsn, ca.s3, ca.queue, ca.events, ca.receivers, ca.guid_prefix,
                                                 ca.wait, ca.ready))))
        return 0
    from catalog import embedded
    p = argparse.ArgumentParser(prog="bench.events")
    p.add_argument("--tiny", action="store_true", help="bench-smoke size: 20 PUTs, 100 instances, 100 events")
    p.add_argument("--out", type=Path)
    for name in ("puts", "instances", "events", "backups", "receivers"):
        p.add_argument(f"--{name}", type=int, help=f"override the size's {name}")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-events-", dir="/tmp"))
    tmp.chmod(0o755)
    try:
        dsn = embedded.ensure_cluster(tmp / "pg")

        async def init() -> None:
            pool = await catalog_db.open_pool(dsn)
            await migrate.init_schema(pool)
            await pool.close()
        asyncio.run(init())
        with MotoEndpoint() as ep:
            kw = dict(SIZES["tiny" if a.tiny else "default"])
            kw.update({k: v for k in ("puts", "instances", "events", "backups", "receivers")
                       if (v := getattr(a, k)) is not None})
            out = measure(ep, dsn, log=lambda m: print(m, file=sys.stderr, flush=True), **kw)
    finally:
        embedded.stop_cluster(tmp / "pg")
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(out, indent=1, default=str)
    if a.out:
        a.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
