"""Test side of S3 events: queues in the session's moto (which delivers S3 notifications to SQS in the same
process), the product's own ``events setup`` applied to a bucket, the real archives uploaded in the order the
tools wrote them, and draining a queue through the product's consumer."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aioboto3
import boto3

from backup_catalog.usecases import events_setup
from backup_catalog.usecases.events import BatchResult, Consumer
from recovery.grading import facts_of
from recovery.jsonout import archive_to_dict, windows_to_json
from recovery.model import ArchiveSnapshot
from recovery.windows import all_windows
from sandbox.cache import CachedObject, ensure_cache, load_objects, object_path
from sandbox.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoEndpoint
from scheduler.sqs import Message, SqsQueue


def sqs_sync(ep: MotoEndpoint) -> Any:
    return boto3.client("sqs", endpoint_url=ep.url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY)


@asynccontextmanager
async def aio_clients(ep: MotoEndpoint) -> AsyncIterator[tuple[Any, Any]]:
    s = aioboto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)
    async with s.client("s3", endpoint_url=ep.url) as s3, s.client("sqs", endpoint_url=ep.url) as sqs:
        yield s3, sqs


async def setup_events(ep: MotoEndpoint, bucket: str, queue: str, prefixes: list[str], *, max_receives: int = 3,
                       visibility_timeout: int = 1) -> tuple[str, str]:
    """A queue for ``bucket``'s events, configured by the product's ``events setup`` (applied); returns
    (queue URL, dead-letter queue URL)."""
    sqs = sqs_sync(ep)
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    async with aio_clients(ep) as (s3, asqs):
        attrs, existing = await events_setup.read_current(s3, asqs, bucket, url)
        plan = events_setup.plan_setup(bucket, url, attrs, prefixes, existing, max_receives=max_receives,
                                       visibility_timeout=visibility_timeout)
        await events_setup.apply_setup(s3, asqs, plan)
    assert plan.dead_letter_queue
    dlq = sqs.get_queue_url(QueueName=plan.dead_letter_queue)["QueueUrl"]
    purge_test_events(ep, url)
    return url, dlq


def purge_test_events(ep: MotoEndpoint, url: str) -> None:
    sqs = sqs_sync(ep)
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return
        for m in got:
            assert json.loads(m["Body"]).get("Event") == "s3:TestEvent", m["Body"]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def in_write_order(tool: str) -> list[CachedObject]:
    """The cached objects of ``tool`` in the order the tool wrote them (build LastModified, then key)."""
    return sorted(load_objects(ensure_cache(), tool), key=lambda o: (o.last_modified, o.key))


def upload(ep: MotoEndpoint, bucket: str, tool: str, objs: list[CachedObject]) -> None:
    c = ep.client()
    d = ensure_cache()
    for o in objs:
        c.put_object(Bucket=bucket, Key=o.key, Body=object_path(d, tool, o.key).read_bytes())


def queue_depth(ep: MotoEndpoint, url: str) -> int:
    a = sqs_sync(ep).get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                                         "ApproximateNumberOfMessagesNotVisible"])
    return sum(int(v) for v in a["Attributes"].values())


async def receive_all(q: SqsQueue, *, rounds: int = 3) -> list[Message]:
    """Everything visible now (several empty receives in a row end it)."""
    out: list[Message] = []
    empty = 0
    while empty < rounds:
        got = await q.receive(wait_seconds=0)
        empty = 0 if got else empty + 1
        out += got
    return out


async def drain(consumer: Consumer, q: SqsQueue, *, until: Callable[[], bool] | None = None,
                rounds: int = 3) -> list[BatchResult]:
    """Receive, process and delete (as the serve loop does) until the queue stays empty."""
    results: list[BatchResult] = []
    empty = 0
    while empty < rounds and not (until and until()):
        got = await q.receive(wait_seconds=0)
        if not got:
            empty += 1
            continue
        empty = 0
        res = await consumer.process(got)
        if res.delete:
            await q.delete(list(res.delete))
        results.append(res)
    return results


@dataclass(frozen=True, slots=True)
class CatalogView:
    """What a user sees of one instance: backups, runs, edges, histories, blocked segments, windows."""

    backups: tuple[Any, ...]
    runs: tuple[Any, ...]
    edges: tuple[Any, ...]
    histories: tuple[Any, ...]
    blocked: tuple[Any, ...]
    windows: tuple[Any, ...]
    integrity_errors: tuple[str, ...]


def view(s: ArchiveSnapshot) -> CatalogView:
    return CatalogView(tuple(sorted(s.backups, key=lambda b: b.label)), tuple(sorted(s.runs, key=repr)),
                       tuple(sorted(s.edges, key=lambda e: (e.timeline, e.segno))), tuple(sorted(s.histories.items())),
                       (tuple(s.conflicts), tuple(s.corrupt)),
                       tuple(sorted((k, tuple(v)) for k, v in all_windows(s).items())), s.integrity_errors)


async def assert_views_current(pool: Any, guid: str) -> None:
    """The derived views stored for the instance's current scan (windows, Backups document, coverage facts)
    are there and equal those recomputed from its snapshot: the consumer followed or recomputed them."""
    from catalog import repo, scancache
    dv = await pool.fetchrow(f"SELECT sc.windows, sc.archive FROM scan_cache sc JOIN scan_state s ON "
                             f"{repo.CURRENT_SCAN_CACHE} WHERE sc.instance_guid = $1", guid)
    f = await pool.fetchrow(f"SELECT f.* FROM scan_cache_facts f JOIN scan_state s ON {scancache.CURRENT_FACTS} "
                            "WHERE f.instance_guid = $1", guid)
    assert dv is not None and f is not None, "the derived views are not those of the current scan"
    _version, snap = await repo.load_versioned_snapshot(pool, guid)
    windows = all_windows(snap)
    sep = (",", ":")
    assert dv["archive"] == json.dumps(archive_to_dict(snap, windows), separators=sep)
    assert dv["windows"] == json.dumps(windows_to_json(windows), separators=sep)
    assert scancache.row_to_facts(f) == facts_of(snap, [w for ws in windows.values() for w in ws])
