"""S3 events end to end: moto server delivers the bucket's notifications to SQS in the same process, the
archives are the ones the real tools wrote (uploaded in the order they wrote them), and the product's
consumer turns the events into the catalog a full scan would build, without listing.

Moto's events carry no ``sequencer``; the shuffled test also runs with sequencers added, as S3 sends them.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections import Counter
from typing import Any

import pytest

from backup_catalog.settings import Settings
from backup_catalog.usecases.event_stream import Stream
from backup_catalog.usecases.events import Consumer, Index
from catalog import repo
from recovery.model import InstanceRef, Storage
from sandbox.cache import CachedObject, ensure_cache, load_truth
from sandbox.s3 import MotoEndpoint
from scheduler import runner
from scheduler.sqs import SqsQueue
from tests.scheduler.test_scan import RequestCounter
from tests.support import events as ev
from tests.support.faultproxy import FaultProxy

pytestmark = pytest.mark.realtools
_seq = itertools.count(1)


class Recorder:
    """The consumer's observer (as ApiMetrics, but a test can read it)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.errors: Counter[str] = Counter()
        self.lags: list[float] = []
        self.drifted = 0

    def event(self, what: str, reason: str) -> None:
        self.counts[(what, reason)] += 1

    def lag(self, seconds: float) -> None:
        self.lags.append(seconds)

    def consumer_error(self, kind: str) -> None:
        self.errors[kind] += 1

    def drift(self, objects: int) -> None:
        self.drifted += objects

    def total(self, what: str) -> int:
        return sum(n for (w, _), n in self.counts.items() if w == what)


def _cut(tool: str, objs: list[CachedObject]) -> int:
    """Just after the first backup finished: the initial scan sees an archive, the events the rest."""
    done = "/backup.manifest" if tool == "pgbackrest" else "/backup.info"
    return next(i for i, o in enumerate(objs) if (o.key.endswith(done) and "/base/" in o.key) or
                (tool == "pgbackrest" and o.key.endswith(done))) + 1


async def _instance(pool: Any, client: Any, settings: Settings, ep: MotoEndpoint, tool: str,
                    guid: str) -> tuple[str, str, list[CachedObject]]:
    """A fresh bucket with the archive up to its first backup, registered and scanned once (full)."""
    truth = load_truth(ensure_cache())[tool]
    bucket = f"events-{tool}-{next(_seq)}-{ep.port}"
    ep.ensure_bucket(bucket)
    objs = ev.in_write_order(tool)
    cut = _cut(tool, objs)
    ev.upload(ep, bucket, tool, objs[:cut])
    await repo.register_instance(pool, InstanceRef(guid, "space-ev", guid), Storage(bucket, truth["prefix"], "auto", None))
    assert (await runner.scan_instance(pool, client, guid, full=True, settings=settings)).ok
    return bucket, truth["prefix"], objs[cut:]


async def _full_scan_view(pool: Any, client: Any, settings: Settings, guid: str) -> ev.CatalogView:
    assert (await runner.scan_instance(pool, client, guid, full=True, settings=settings)).ok
    return ev.view(await repo.load_snapshot(pool, guid))


@pytest.mark.parametrize("tool", ["pgbackrest", "barman"])
async def test_events_build_what_a_full_scan_builds_without_listing(pool: Any, client: Any, settings: Settings,
                                                                   s3_endpoint: MotoEndpoint, tool: str) -> None:
    guid = f"ev-{tool}"
    bucket, prefix, rest = await _instance(pool, client, settings, s3_endpoint, tool, guid)
    url, _dlq = await ev.setup_events(s3_endpoint, bucket, f"q-{bucket}", [prefix])
    before = ev.view(await repo.load_snapshot(pool, guid))
    ev.upload(s3_endpoint, bucket, tool, rest)          # the tools keep writing; S3 (moto) notifies
    assert ev.queue_depth(s3_endpoint, url) == len(rest)

    rec = Recorder()
    counter = RequestCounter(client)
    async with ev.aio_clients(s3_endpoint) as (_s3, sqs):
        consumer = Consumer(pool, client, settings, "test-holder", Index(pool), rec)
        await ev.drain(consumer, SqsQueue(sqs, url))
    assert ev.queue_depth(s3_endpoint, url) == 0
    assert "ListObjectsV2" not in counter.ops and "ListObjects" not in counter.ops, Counter(counter.ops)
    assert rec.total("received") == len(rest) and not rec.errors, (rec.counts, rec.errors)
    assert rec.counts[("applied", "segment")] >= 3 and rec.total("dropped") == 0, rec.counts
    by_events = ev.view(await repo.load_snapshot(pool, guid))
    assert by_events != before                            # the events taught the catalog something
    assert len(by_events.backups) == 3 and by_events.windows
    await ev.assert_views_current(pool, guid)
    assert by_events == await _full_scan_view(pool, client, settings, guid)
    state = await repo.load_scan_state(pool, guid)
    assert state is not None


@pytest.mark.parametrize("tool", ["pgbackrest", "barman"])
async def test_events_one_at_a_time_follow_the_derived_views(pool: Any, client: Any, settings: Settings,
                                                             s3_endpoint: MotoEndpoint, tool: str) -> None:
    """Each event in its own round, in the order the tool wrote the objects: a segment after the run's end
    moves the windows, the Backups document and the coverage facts without recomputing them
    (recovery.viewdelta); what the consumer leaves equals what a recompute gives, and the catalog a full scan."""
    guid = f"ev1-{tool}"
    bucket, prefix, rest = await _instance(pool, client, settings, s3_endpoint, tool, guid)
    url, _dlq = await ev.setup_events(s3_endpoint, bucket, f"q-{bucket}", [prefix])
    ev.upload(s3_endpoint, bucket, tool, rest)
    async with ev.aio_clients(s3_endpoint) as (_s3, sqs):
        consumer = Consumer(pool, client, settings, "test-holder", Index(pool), Recorder())
        q = SqsQueue(sqs, url)
        got = sorted(await ev.receive_all(q), key=lambda m: (m.sent_at or 0, m.id))
        for m in got:
            res = await consumer.process([m])
            await q.delete(list(res.delete))
            await ev.assert_views_current(pool, guid)
    assert consumer.followed > 0, (consumer.followed, consumer.recomputed)
    assert ev.view(await repo.load_snapshot(pool, guid)) == await _full_scan_view(pool, client, settings, guid)


def _with_sequencers(bodies: list[str], scrambled: bool) -> list[str]:
    """S3's per-key sequencers (increasing in upload order), which moto leaves out; ``scrambled``: in no
    order at all (a store whose sequencers mean nothing per key, e.g. MinIO's across nodes)."""
    out = []
    rnd = random.Random(7)
    for n, b in enumerate(bodies):
        doc = json.loads(b)
        for r in doc["Records"]:
            r["s3"]["object"]["sequencer"] = f"{rnd.randrange(1 << 60) if scrambled else n + 1:016X}"
        out.append(json.dumps(doc))
    return out


@pytest.mark.parametrize("tool,sequencers", [("barman", "none"), ("barman", "ordered"), ("barman", "scrambled"),
                                             ("pgbackrest", "none")])
async def test_every_event_three_times_shuffled(pool: Any, client: Any, settings: Settings, s3_endpoint: MotoEndpoint,
                                                tool: str, sequencers: str) -> None:
    guid = f"ev3-{tool}-{sequencers}"
    bucket, prefix, rest = await _instance(pool, client, settings, s3_endpoint, tool, guid)
    url, _ = await ev.setup_events(s3_endpoint, bucket, f"q-{bucket}", [prefix], visibility_timeout=30)
    ev.upload(s3_endpoint, bucket, tool, rest)
    sqs = ev.sqs_sync(s3_endpoint)
    async with ev.aio_clients(s3_endpoint) as (_s3, asqs):
        q = SqsQueue(asqs, url)
        got = await ev.receive_all(q)
        assert len(got) == len(rest)
        await q.delete([m.receipt for m in got])
        bodies = [m.body for m in sorted(got, key=lambda m: m.sent_at or 0)]
        if sequencers != "none":
            bodies = _with_sequencers(bodies, scrambled=sequencers == "scrambled")
        triple = bodies * 3
        random.Random(22).shuffle(triple)
        for i in range(0, len(triple), 10):
            sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": b}
                                                          for n, b in enumerate(triple[i:i + 10])])
        rec = Recorder()
        consumer = Consumer(pool, client, settings, "test-holder", Index(pool), rec,
                            trust_sequencer=sequencers != "scrambled")     # S3_EVENTS_TRUST_SEQUENCER=false
        await ev.drain(consumer, q)
    assert rec.total("received") == 3 * len(rest) and not rec.errors, rec.errors
    assert rec.total("ignored") > 0
    await ev.assert_views_current(pool, guid)
    assert ev.view(await repo.load_snapshot(pool, guid)) == await _full_scan_view(pool, client, settings, guid)


async def test_poison_message_goes_to_the_dead_letter_queue(pool: Any, client: Any, settings: Settings,
                                                            s3_endpoint: MotoEndpoint) -> None:
    guid = "ev-poison"
    bucket, prefix, rest = await _instance(pool, client, settings, s3_endpoint, "barman", guid)
    url, dlq = await ev.setup_events(s3_endpoint, bucket, f"q-{bucket}", [prefix], max_receives=2,
                                     visibility_timeout=1)
    sqs = ev.sqs_sync(s3_endpoint)
    sqs.send_message(QueueUrl=url, MessageBody="this is not an S3 event")
    ev.upload(s3_endpoint, bucket, "barman", rest)
    rec = Recorder()
    async with ev.aio_clients(s3_endpoint) as (_s3, asqs):
        consumer = Consumer(pool, client, settings, "test-holder", Index(pool), rec, max_receives=2)
        q = SqsQueue(asqs, url)
        for _ in range(8):                       # the poison message comes back after each visibility timeout
            await ev.drain(consumer, q, rounds=1)
            if ev.queue_depth(s3_endpoint, dlq) == 1:
                break
            await asyncio.sleep(1.1)
        await ev.drain(consumer, q, rounds=1)     # the receive that moves it
    assert ev.queue_depth(s3_endpoint, dlq) == 1
    assert ev.queue_depth(s3_endpoint, url) == 0
    (m,) = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    assert m["Body"] == "this is not an S3 event"
    assert rec.errors["bad_message"] == 2 and rec.counts[("dropped", "dead_letter")] == 1, rec.errors
    assert rec.total("received") == len(rest)           # the good events went through meanwhile
    assert ev.view(await repo.load_snapshot(pool, guid)) == await _full_scan_view(pool, client, settings, guid)


async def test_killed_between_apply_and_delete_has_no_double_effect(pool: Any, client: Any, settings: Settings,
                                                                    s3_endpoint: MotoEndpoint) -> None:
    guid = "ev-kill"
    bucket, prefix, rest = await _instance(pool, client, settings, s3_endpoint, "barman", guid)
    url, _ = await ev.setup_events(s3_endpoint, bucket, f"q-{bucket}", [prefix], visibility_timeout=1)
    ev.upload(s3_endpoint, bucket, "barman", rest)
    rec = Recorder()
    async with ev.aio_clients(s3_endpoint) as (_s3, asqs):
        q = SqsQueue(asqs, url)
        consumer = Consumer(pool, client, settings, "test-holder", Index(pool), rec)
        got = await ev.receive_all(q)
        res = await consumer.process(got)          # applied and committed ... and the process dies: no delete
        assert len(res.delete) == len(got)
        applied = ev.view(await repo.load_snapshot(pool, guid))
        segments = rec.counts[("applied", "segment")]
        await asyncio.sleep(1.2)                   # the messages become visible again: a new consumer
        again = Recorder()
        await ev.drain(Consumer(pool, client, settings, "other-holder", Index(pool), again), q)
    assert again.total("received") == len(got)
    assert again.counts[("applied", "segment")] == 0 and again.counts[("ignored", "duplicate")] == segments
    assert ev.view(await repo.load_snapshot(pool, guid)) == applied
    assert applied == await _full_scan_view(pool, client, settings, guid)


async def test_queue_unreachable_then_reconcile_reports_drift(pool: Any, client: Any, settings: Settings,
                                                              s3_endpoint: MotoEndpoint) -> None:
    from backup_catalog.service import jobs
    guid = "ev-gap"
    bucket, prefix, rest = await _instance(pool, client, settings, s3_endpoint, "barman", guid)
    url, _ = await ev.setup_events(s3_endpoint, bucket, f"q-{bucket}", [prefix], visibility_timeout=1)
    proxy = await FaultProxy(s3_endpoint.url).start()
    rec = Recorder()
    reconciles: list[int] = []
    try:
        proxied = url.replace(s3_endpoint.url, proxy.url)
        async with ev.aio_clients(s3_endpoint) as (_s3, _):
            import aioboto3

            from sandbox.s3 import ACCESS_KEY, REGION, SECRET_KEY
            sess = aioboto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                                    region_name=REGION)
            async with sess.client("sqs", endpoint_url=proxy.url) as psqs:
                consumer = Consumer(pool, client, settings, "test-holder", Index(pool), rec)

                async def on_gap(_url: str) -> None:
                    outs = await jobs.reconcile_now(pool, settings, client, "test-holder", on_drift=rec.drift,
                                                    grace=0.0)
                    reconciles.append(len(outs))

                stream = Stream(consumer, [SqsQueue(psqs, proxied)], receivers=2, wait_seconds=1, on_gap=on_gap,
                                backoff_cap=0.5)
                task = asyncio.create_task(stream.run())
                proxy.down = True                      # the queue is unreachable for a while ...
                ev.upload(s3_endpoint, bucket, "barman", rest)
                ev.sqs_sync(s3_endpoint).purge_queue(QueueUrl=url)    # ... long enough to lose the events
                await asyncio.sleep(1.5)
                assert rec.errors, "the consumer noticed nothing"
                proxy.down = False
                for _ in range(100):
                    if reconciles:
                        break
                    await asyncio.sleep(0.1)
                stream.stop()
                await asyncio.wait_for(task, 10)
    finally:
        await proxy.stop()
    assert reconciles == [1]
    truth_segments = sum(1 for o in rest if "/wals/" in o.key and ".backup" not in o.key
                         and ".history" not in o.key)
    assert rec.drifted >= truth_segments > 0, (rec.drifted, truth_segments)
    assert rec.total("received") == 0
    assert ev.view(await repo.load_snapshot(pool, guid)) == await _full_scan_view(pool, client, settings, guid)


async def test_serve_consumes_the_queue_and_says_so(pool: Any, client: Any, settings: Settings,
                                                    s3_endpoint: MotoEndpoint) -> None:
    """``serve`` with S3_EVENTS_QUEUE_URL: the consumer runs beside the API, /metrics counts the events, the
    coverage row is fresh as of the last event, and the catalog is what a full scan builds."""
    from aiohttp.test_utils import TestClient, TestServer

    from backup_catalog.service.app import create_app
    from backup_catalog.usecases import coverage
    from tests.api.conftest import AS_OPERATOR

    guid = "ev-serve"
    bucket, prefix, rest = await _instance(pool, client, settings, s3_endpoint, "barman", guid)
    url, _ = await ev.setup_events(s3_endpoint, bucket, f"q-{bucket}", [prefix], visibility_timeout=5)
    live = settings.model_copy(update={"s3_events_queue_url": url, "reconcile_interval_seconds": 86400})
    app = create_app(live, pool=pool, s3=client, start_scheduler=True, holder="serve-1")
    async with TestClient(TestServer(app)) as http:
        ev.upload(s3_endpoint, bucket, "barman", rest)
        text = ""
        for _ in range(150):
            text = await (await http.get("/metrics", headers=AS_OPERATOR)).text()
            if ev.queue_depth(s3_endpoint, url) == 0 and 'backup_catalog_events_total{outcome="applied"' in text:
                break
            await asyncio.sleep(0.2)
        assert ev.queue_depth(s3_endpoint, url) == 0
        line = 'backup_catalog_events_total{outcome="received",reason="created"} '
        received = float(text.split(line, 1)[1].split()[0])
        assert received >= len(rest), text      # a batch left for a while (lease held by a scan) is received again
        assert "backup_catalog_event_queue_lag_seconds_count" in text
        assert "backup_catalog_event_drift_objects_total 0.0" in text
    (row,) = [r for r in await coverage.all_rows(pool, live) if r["instance_guid"] == guid]
    state = await repo.load_scan_state(pool, guid)
    assert row["fresh_as_of"] is not None and state.last_scan is not None
    assert row["fresh_as_of"] >= state.last_scan.isoformat().replace("+00:00", "Z")[:19]
    assert ev.view(await repo.load_snapshot(pool, guid)) == await _full_scan_view(pool, client, settings, guid)


async def test_serve_sigkilled_mid_stream_then_restarted_has_no_double_effect(
        pool: Any, client: Any, settings: Settings, s3_endpoint: MotoEndpoint, catalog_dsn: str) -> None:
    """A real ``serve`` consuming the pgBackRest archive's events is SIGKILLed while it applies them (effects
    committed, messages not yet deleted, for the batches in hand); a new ``serve`` takes the queue over. The
    catalog ends as one full scan builds it."""
    import signal

    from sandbox.s3 import free_port
    from tests.test_serve_credentials import clean_env, serve, stop, wait_up

    guid = "ev-sigkill"
    bucket, prefix, rest = await _instance(pool, client, settings, s3_endpoint, "pgbackrest", guid)
    # the killed serve's lease on the instance expires within EVENTS_LEASE_TTL (30 s): its messages must not
    # reach the dead-letter queue before (5 receives x 10 s)
    url, dlq = await ev.setup_events(s3_endpoint, bucket, f"q-{bucket}", [prefix], visibility_timeout=10,
                                     max_receives=5)
    ev.upload(s3_endpoint, bucket, "pgbackrest", rest)
    env = clean_env(CATALOG_DSN=catalog_dsn, S3_ENDPOINT_URL=s3_endpoint.url, AWS_ACCESS_KEY_ID="testing",
                    AWS_SECRET_ACCESS_KEY="testing", S3_EVENTS_QUEUE_URL=url, S3_EVENTS_RECEIVERS="2",
                    DRILL_ENABLED="false", BROKER_PASSWORD="b-pw", OPERATOR_PASSWORD="o-pw")
    port = free_port()
    first = serve(env, "127.0.0.1", port)
    try:
        wait_up(first, port)
        for _ in range(600):                   # some events applied, most still queued
            if await pool.fetchval("SELECT count(*) FROM event_keys WHERE instance_guid = $1", guid):
                break
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    left = ev.queue_depth(s3_endpoint, url)
    assert left > 0, "the first serve finished before it was killed"
    second = serve(env, "127.0.0.1", port)
    try:
        wait_up(second, port)
        for _ in range(1800):
            if ev.queue_depth(s3_endpoint, url) == 0:
                break
            await asyncio.sleep(0.1)
        assert ev.queue_depth(s3_endpoint, url) == 0
    finally:
        stop(second)
    assert ev.queue_depth(s3_endpoint, dlq) == 0
    assert ev.view(await repo.load_snapshot(pool, guid)) == await _full_scan_view(pool, client, settings, guid)


async def test_two_replicas_consume_one_queue(pool: Any, client: Any, settings: Settings,
                                              s3_endpoint: MotoEndpoint) -> None:
    """Two consumers (two replicas' holders, each with its receives in flight) share one queue: SQS spreads
    the messages, each instance's writes are serialised by its lease, and the catalog is a full scan's."""
    guid = "ev-replicas"
    bucket, prefix, rest = await _instance(pool, client, settings, s3_endpoint, "pgbackrest", guid)
    url, dlq = await ev.setup_events(s3_endpoint, bucket, f"q-{bucket}", [prefix], visibility_timeout=5,
                                     max_receives=10)
    ev.upload(s3_endpoint, bucket, "pgbackrest", rest)
    recs = [Recorder(), Recorder()]
    async with ev.aio_clients(s3_endpoint) as (_s3, asqs):
        streams = [Stream(Consumer(pool, client, settings, f"replica-{n}", Index(pool), recs[n]),
                          [SqsQueue(asqs, url)], receivers=2, wait_seconds=1) for n in range(2)]
        tasks = [asyncio.create_task(s.run()) for s in streams]
        for _ in range(1200):
            if ev.queue_depth(s3_endpoint, url) == 0:
                break
            await asyncio.sleep(0.1)
        for s in streams:
            s.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert ev.queue_depth(s3_endpoint, url) == 0 and ev.queue_depth(s3_endpoint, dlq) == 0
    assert all(r.total("received") > 0 for r in recs), [r.counts for r in recs]     # both took a share
    assert sum(r.total("received") for r in recs) >= len(rest)
    assert ev.view(await repo.load_snapshot(pool, guid)) == await _full_scan_view(pool, client, settings, guid)


async def test_events_for_an_instance_never_scanned_run_its_first_scan(pool: Any, client: Any, settings: Settings,
                                                                       s3_endpoint: MotoEndpoint) -> None:
    guid = "ev-first"
    truth = load_truth(ensure_cache())["barman"]
    bucket = f"events-first-{next(_seq)}-{s3_endpoint.port}"
    s3_endpoint.ensure_bucket(bucket)
    await repo.register_instance(pool, InstanceRef(guid, "space-ev", guid), Storage(bucket, truth["prefix"], "auto", None))
    url, _ = await ev.setup_events(s3_endpoint, bucket, f"q-{bucket}", [truth["prefix"]])
    objs = ev.in_write_order("barman")
    ev.upload(s3_endpoint, bucket, "barman", objs)
    rec = Recorder()
    async with ev.aio_clients(s3_endpoint) as (_s3, sqs):
        await ev.drain(Consumer(pool, client, settings, "test-holder", Index(pool), rec), SqsQueue(sqs, url))
    assert rec.counts[("applied", "reconcile")] >= 1 and not rec.errors, (rec.counts, rec.errors)
    got = ev.view(await repo.load_snapshot(pool, guid))
    assert len(got.backups) == 3
    assert got == await _full_scan_view(pool, client, settings, guid)
