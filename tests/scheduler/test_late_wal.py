"""Late WAL on an older timeline: the old primary keeps archiving on timeline 1 after the switch to 2.

The archive is the real pgBackRest one (timeline 1 to segment 8, the switch at 0/7000540, timeline 2 from 7
to A). After a first scan, two more timeline-1 segments arrive in the real format: the bytes of a real
segment of the same number (timeline 2's 9 and A, whose page addresses are those of segments 9 and A)
with the page headers' timeline set to 1, gzip'd and named with their SHA-1 as pgBackRest names them.
An incremental scan must notice them, and a scan with nothing new must stay a few requests.
"""
from __future__ import annotations

import gzip
import hashlib
import struct
from typing import Any

import pytest

from backup_catalog.settings import Settings
from backup_catalog.usecases import plan
from catalog import repo
from recovery.model import InstanceRef, Storage
from sandbox.cache import ensure_cache, object_path
from scheduler import runner
from tests.realarchives.plugin import fresh_archive
from tests.scheduler.test_scan import RequestCounter
from tests.support.clones import clone_request

pytestmark = pytest.mark.realtools
PAGE = 8192                 # XLOG_BLCKSZ of the fixture cluster
XLP_TLI = struct.Struct("<I")   # XLogPageHeaderData.xlp_tli, at offset 4 (after xlp_magic, xlp_info)


def as_timeline_1(segment: bytes) -> bytes:
    """A real timeline-2 segment as the same segment written on timeline 1 (page headers carry the TLI)."""
    out = bytearray(segment)
    magic = out[:2]                          # XLOG_PAGE_MAGIC of the first page; unused pages are zeros
    patched = 0
    for off in range(0, len(out), PAGE):
        if out[off:off + 2] == magic:
            assert XLP_TLI.unpack_from(out, off + 4)[0] == 2, off
            XLP_TLI.pack_into(out, off + 4, 1)
            patched += 1
        else:
            assert not any(out[off:off + 16]), off
    assert patched >= 1
    return bytes(out)


def tl1_objects(arch: Any) -> dict[str, bytes]:
    d = ensure_cache()
    out = {}
    for key in arch.keys:
        base = key.rsplit("/", 1)[-1]
        if base[:24] in ("000000020000000000000009", "00000002000000000000000A") and base.endswith(".gz"):
            raw = as_timeline_1(gzip.decompress(object_path(d, "pgbackrest", key).read_bytes()))
            name = "00000001" + base[8:24]
            new_key = key.replace("/0000000200000000/", "/0000000100000000/").rsplit("/", 1)[0]
            out[f"{new_key}/{name}-{hashlib.sha1(raw).hexdigest()}.gz"] = gzip.compress(raw)
    assert len(out) == 2, list(arch.keys)
    return out


async def test_incremental_scan_notices_late_wal_on_an_older_timeline(pool: Any, s3_endpoint: Any, client: Any,
                                                                      settings: Settings) -> None:
    # a short lookback, so that the resume point is on timeline 2 as in any archive of real length (with the
    # default 32 this 10-segment archive would be listed from its start every time)
    settings = settings.model_copy(update={"scan_lookback_segments": 2})
    arch = fresh_archive(s3_endpoint, "pgbackrest")
    await repo.register_instance(pool, InstanceRef("g-late", "space-late", "late"),
                                 Storage(arch.bucket, arch.prefix, "auto", None))
    assert (await runner.scan_instance(pool, client, "g-late", full=False, settings=settings)).ok
    runs = {r.timeline: (r.first, r.last) for r in (await repo.load_snapshot(pool, "g-late")).runs}
    assert runs[1][1] == 8 and runs[2] == (7, 10), runs

    # nothing new: the main listing plus one probe of timeline 1
    counter = RequestCounter(client)
    assert (await runner.scan_instance(pool, client, "g-late", full=False, settings=settings)).ok
    assert counter.ops == ["ListObjectsV2"] * len(counter.ops) and len(counter.ops) <= 4, counter.ops

    s3 = s3_endpoint.client()
    for key, body in tl1_objects(arch).items():
        s3.put_object(Bucket=arch.bucket, Key=key, Body=body)

    counter.ops.clear()
    o = await runner.scan_instance(pool, client, "g-late", full=False, settings=settings)
    assert o.ok, o
    runs = {r.timeline: (r.first, r.last) for r in (await repo.load_snapshot(pool, "g-late")).runs}
    assert runs[1][1] == 10, runs                     # 9 and A on timeline 1, found by the incremental scan
    assert runs[2] == (7, 10), runs
    assert counter.ops.count("ListObjectsV2") <= 4, counter.ops
    doc = (await plan.plan_doc(pool, settings, "space-late",
                               clone_request({"clone-from": "late", "latest": True, "timeline": 1}))).to_json()
    assert doc["timeline_path"] == [1] and doc["wal"]["last_segment"] == "00000001000000000000000A", doc["wal"]

    # and the next scan with nothing new is cheap again, and changes nothing
    before = (await repo.load_snapshot(pool, "g-late")).runs
    counter.ops.clear()
    assert (await runner.scan_instance(pool, client, "g-late", full=False, settings=settings)).ok
    assert len(counter.ops) <= 4 and "GetObject" not in counter.ops, counter.ops
    assert (await repo.load_snapshot(pool, "g-late")).runs == before
