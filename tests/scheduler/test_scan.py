"""The scanner against archives written by the real tools, in moto server S3, into a real catalog."""
from __future__ import annotations

from typing import Any

import pytest

from backup_catalog.settings import Settings
from backup_catalog.usecases import backups
from catalog import repo
from recovery.model import BackupStatus, InstanceRef, Storage
from recovery.wal import WalSegment
from scheduler import runner
from scheduler.clients import s3_client
from tests.realarchives.plugin import fresh_archive

pytestmark = pytest.mark.realtools
SEG_EXT = (".gz", ".lz4", ".lzo", ".zst", ".bz2", ".xz", "")


class RequestCounter:
    """Counts S3 requests at the botocore layer, by operation."""

    def __init__(self, client: Any) -> None:
        self.ops: list[str] = []
        client.meta.events.register("before-call.s3", self._on)

    def _on(self, model: Any, **_: Any) -> None:
        self.ops.append(model.name)


async def _register(pool: Any, arch: Any, guid: str, name: str | None = None, space: str = "space-1") -> None:
    await repo.register_instance(pool, InstanceRef(guid, space, name or arch.tool),
                                 Storage(arch.bucket, arch.prefix, "auto", None))


def _segment_names(keys: list[str]) -> set[tuple[int, int]]:
    """(timeline, segno) of every segment object (not .partial/.backup/.history) among ``keys``."""
    out = set()
    for k in keys:
        base = k.rsplit("/", 1)[-1]
        name = base[:24]
        rest = base[24:]
        if len(name) == 24 and all(c in "0123456789ABCDEF" for c in name) and (
                rest.startswith("-") or rest in SEG_EXT or rest in tuple("." + e.lstrip(".") for e in SEG_EXT)):
            s = WalSegment.from_name(name)
            out.add((s.timeline, s.segno))
    return out


def _covered(runs: Any) -> set[tuple[int, int]]:
    return {(r.timeline, n) for r in runs for n in range(r.first, r.last + 1)}


@pytest.mark.parametrize("tool", ["pgbackrest", "barman", "walg", "wale"])
async def test_wal_coverage_equals_segment_objects(tool: str, pool: Any, client: Any, settings: Settings,
                                                   real_archives: Any) -> None:
    arch = real_archives[tool]
    await _register(pool, arch, f"g-{tool}")
    o = await runner.scan_instance(pool, client, f"g-{tool}", full=False, settings=settings)
    assert o.ok, o.message
    snap = await repo.load_snapshot(pool, f"g-{tool}")
    assert _covered(snap.runs) == _segment_names(arch.keys)
    assert snap.layout.value == tool
    state = await repo.load_scan_state(pool, f"g-{tool}")
    assert state.unknown_objects == 0, state.issues
    # every segment read at a window edge is the segment its name says: nothing is taken for corrupt
    assert snap.corrupt == () and not [i for i in state.issues if i.code == "wal_corrupt"], state.issues


async def test_pgbackrest_backups_match_pgbackrest_info(pool: Any, client: Any, settings: Settings,
                                                        real_archives: Any) -> None:
    arch = real_archives["pgbackrest"]
    await _register(pool, arch, "g-pb", "production")
    assert (await runner.scan_instance(pool, client, "g-pb", full=False, settings=settings)).ok
    doc = await backups.backups_doc(pool, "space-1", "production")
    ours = {b["label"]: b for b in doc["instances"][0]["backups"]}
    theirs = {b["label"]: b for stanza in arch.truth["backups"] for b in stanza["backup"]}
    assert set(ours) == set(theirs) and len(theirs) >= 3
    for label, t in theirs.items():
        o = ours[label]
        assert o["type"] == t["type"]
        assert o["timeline"] == int(t["archive"]["start"][:8], 16)
        assert (o["start_lsn"], o["stop_lsn"]) == (t["lsn"]["start"], t["lsn"]["stop"])
        assert o["status"] == "done"
        assert set(o["depends_on"]) == set(t.get("reference") or [])
    assert any(b["type"] == "incr" for b in ours.values())
    # the window reaches the last commit archived on each timeline path, exactly
    last_tl2 = max((c for c in arch.commits if c["tl"] == 2), key=lambda c: c["id"])
    windows = {tuple(w["timeline_path"]): w for w in doc["instances"][0]["windows"]}
    assert windows[(1, 2)]["to_is_exact"] is True
    assert windows[(1, 2)]["to"].rstrip("Z") == last_tl2["commit_time"].replace("+00:00", "")


async def test_barman_backups_match_barman_cloud_backup_list(pool: Any, client: Any, settings: Settings,
                                                             real_archives: Any) -> None:
    arch = real_archives["barman"]
    await _register(pool, arch, "g-bm", "production")
    assert (await runner.scan_instance(pool, client, "g-bm", full=False, settings=settings)).ok
    doc = await backups.backups_doc(pool, "space-1", "production")
    ours = {b["label"]: b for b in doc["instances"][0]["backups"]}
    theirs = {b["backup_id"]: b for b in arch.truth["backups"]["backups_list"]}
    assert set(ours) == set(theirs) and len(theirs) >= 2
    for bid, t in theirs.items():
        o = ours[bid]
        assert o["type"] == "full" and o["status"] == t["status"].lower()
        assert o["timeline"] == t["timeline"]
        assert (o["start_lsn"], o["stop_lsn"]) == (t["begin_xlog"], t["end_xlog"])


async def test_incremental_rescan_is_o1_and_full_notices_deletion(pool: Any, s3_endpoint: Any, client: Any,
                                                                   settings: Settings) -> None:
    arch = fresh_archive(s3_endpoint, "pgbackrest")
    await _register(pool, arch, "g-del")
    assert (await runner.scan_instance(pool, client, "g-del", full=False, settings=settings)).ok
    before = await repo.load_snapshot(pool, "g-del")

    counter = RequestCounter(client)
    for _ in range(2):
        o = await runner.scan_instance(pool, client, "g-del", full=False, settings=settings)
        assert o.ok
    assert len(counter.ops) <= 2 * 3, counter.ops        # ≤ 3 requests per incremental scan, nothing new
    assert "GetObject" not in counter.ops                  # nothing re-read
    assert (await repo.load_snapshot(pool, "g-del")).runs == before.runs   # scanning twice changes nothing

    # the document is served from the per-process snapshot cache: it must follow the next stored scan
    assert (await backups.backups_doc(pool, "space-1", "pgbackrest"))["instances"][0]["holes"] == []

    # delete one segment in the middle of timeline 1
    s3 = s3_endpoint.client()
    seg_keys = sorted(k for k in arch.keys if "/0000000100000000/00000001000000000000000" in k
                      and k.endswith(".gz") and ".backup" not in k)
    victim = seg_keys[3]
    s3.delete_object(Bucket=arch.bucket, Key=victim)
    gone = WalSegment.from_name(victim.rsplit("/", 1)[-1][:24])

    counter.ops.clear()
    assert (await runner.scan_instance(pool, client, "g-del", full=False, settings=settings)).ok
    assert counter.ops.count("ListObjectsV2") <= 3 and "GetObject" not in counter.ops
    assert _covered((await repo.load_snapshot(pool, "g-del")).runs) == _covered(before.runs), \
        "an incremental scan does not re-list what it saw, so it cannot notice the deletion"

    assert (await runner.scan_instance(pool, client, "g-del", full=True, settings=settings)).ok
    after = await repo.load_snapshot(pool, "g-del")
    assert _covered(before.runs) - _covered(after.runs) == {(gone.timeline, gone.segno)}
    doc = await backups.backups_doc(pool, "space-1", "pgbackrest")
    holes = doc["instances"][0]["holes"]
    assert {"timeline": 1, "first_missing": gone.name, "last_missing": gone.name} in holes


async def test_new_segments_picked_up_incrementally(pool: Any, s3_endpoint: Any, client: Any,
                                                    settings: Settings) -> None:
    arch = fresh_archive(s3_endpoint, "barman")
    await _register(pool, arch, "g-new")
    assert (await runner.scan_instance(pool, client, "g-new", full=False, settings=settings)).ok
    before = await repo.load_snapshot(pool, "g-new")
    last = max((r for r in before.runs if r.timeline == 2), key=lambda r: r.last)
    s3 = s3_endpoint.client()
    src = next(k for k in arch.keys if WalSegment(2, last.last).name in k and k.endswith(".gz") and ".backup" not in k)
    body = s3.get_object(Bucket=arch.bucket, Key=src)["Body"].read()
    for n in (1, 2):
        new = WalSegment(2, last.last + n).name
        s3.put_object(Bucket=arch.bucket, Key=f"{arch.prefix}/main/wals/{new[:16]}/{new}.gz", Body=body)
    counter = RequestCounter(client)
    assert (await runner.scan_instance(pool, client, "g-new", full=False, settings=settings)).ok
    after = await repo.load_snapshot(pool, "g-new")
    assert _covered(after.runs) - _covered(before.runs) == {(2, last.last + 1), (2, last.last + 2)}
    assert counter.ops.count("ListObjectsV2") <= 3


async def test_foreign_objects_are_counted_not_fatal(pool: Any, s3_endpoint: Any, client: Any,
                                                     settings: Settings) -> None:
    arch = fresh_archive(s3_endpoint, "walg")
    s3 = s3_endpoint.client()
    s3.put_object(Bucket=arch.bucket, Key=f"{arch.prefix}/wal_005/README.txt", Body=b"hello")
    s3.put_object(Bucket=arch.bucket, Key=f"{arch.prefix}/wal_005/000000010000000000000001.exe", Body=b"x")
    await _register(pool, arch, "g-foreign")
    o = await runner.scan_instance(pool, client, "g-foreign", full=False, settings=settings)
    assert o.ok and o.unknown_objects == 2
    state = await repo.load_scan_state(pool, "g-foreign")
    assert state.unknown_objects == 2
    assert {i.key.rsplit("/", 1)[-1] for i in state.issues if i.code == "foreign_object"} == \
        {"README.txt", "000000010000000000000001.exe"}


async def test_garbage_sentinel_is_a_failed_backup_and_keeps_the_rest(pool: Any, s3_endpoint: Any, client: Any,
                                                                      settings: Settings) -> None:
    arch = fresh_archive(s3_endpoint, "walg")
    await _register(pool, arch, "g-garbage")
    assert (await runner.scan_instance(pool, client, "g-garbage", full=False, settings=settings)).ok
    good = await repo.load_snapshot(pool, "g-garbage")
    s3 = s3_endpoint.client()
    sentinel = min(k for k in arch.keys if k.endswith("_backup_stop_sentinel.json"))
    s3.put_object(Bucket=arch.bucket, Key=sentinel, Body=b'{"LSN": 12, "FinishLSN": ')   # truncated JSON
    assert (await runner.scan_instance(pool, client, "g-garbage", full=True, settings=settings)).ok
    snap = await repo.load_snapshot(pool, "g-garbage")
    label = sentinel.rsplit("/", 1)[-1].removesuffix("_backup_stop_sentinel.json")
    broken = next(b for b in snap.backups if b.label == label)
    assert broken.status is BackupStatus.FAILED and "sentinel" in (broken.error or "")
    assert {b.label for b in snap.backups} == {b.label for b in good.backups}
    assert snap.runs == good.runs
    state = await repo.load_scan_state(pool, "g-garbage")
    assert any(i.code == "metadata_error" and i.key == sentinel for i in state.issues)


async def test_truncated_backup_info_falls_back_to_copy_then_refuses(pool: Any, s3_endpoint: Any, client: Any,
                                                                     settings: Settings) -> None:
    arch = fresh_archive(s3_endpoint, "pgbackrest")
    await _register(pool, arch, "g-trunc")
    s3 = s3_endpoint.client()
    key = f"{arch.prefix}/backup/main/backup.info"
    body = s3.get_object(Bucket=arch.bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=arch.bucket, Key=key, Body=body[: len(body) // 2])
    assert (await runner.scan_instance(pool, client, "g-trunc", full=False, settings=settings)).ok
    snap = await repo.load_snapshot(pool, "g-trunc")
    assert len(snap.backups) == 3 and not snap.integrity_errors       # .copy was used
    state = await repo.load_scan_state(pool, "g-trunc")
    assert any(i.code == "integrity_warning" for i in state.issues)
    s3.put_object(Bucket=arch.bucket, Key=key + ".copy", Body=body[:100])
    assert (await runner.scan_instance(pool, client, "g-trunc", full=True, settings=settings)).ok
    snap = await repo.load_snapshot(pool, "g-trunc")
    assert snap.integrity_errors, "both info files unusable: the stanza must be marked invalid"


async def test_unknown_prefix_and_unreachable_endpoint_keep_catalog(pool: Any, client: Any, settings: Settings,
                                                                    real_archives: Any, s3_endpoint: Any,
                                                                    catalog_dsn: str) -> None:
    arch = real_archives["barman"]
    await _register(pool, arch, "g-ok")
    assert (await runner.scan_instance(pool, client, "g-ok", full=False, settings=settings)).ok
    good = await repo.load_snapshot(pool, "g-ok")
    await repo.register_instance(pool, InstanceRef("g-nowhere", "space-1", "nowhere"),
                                 Storage(arch.bucket, "no/such/prefix", "auto", None))
    o = await runner.scan_instance(pool, client, "g-nowhere", full=False, settings=settings)
    assert not o.ok and o.code == "empty_prefix" and "prefix" in o.message

    dead = Settings(s3_endpoint_url="http://127.0.0.1:9", aws_access_key_id="x", aws_secret_access_key="x",
                    catalog_dsn=catalog_dsn, s3_max_attempts=1, s3_connect_timeout_seconds=1)
    async with s3_client(dead) as bad:
        o = await runner.scan_instance(pool, bad, "g-ok", full=True, settings=dead)
    assert not o.ok and o.code == "storage_unavailable"
    assert await repo.load_snapshot(pool, "g-ok") == good
    state = await repo.load_scan_state(pool, "g-ok")
    assert state.stale_since is not None and state.last_error_code == "storage_unavailable"
    assert (await runner.scan_instance(pool, client, "g-ok", full=False, settings=settings)).ok
    assert (await repo.load_scan_state(pool, "g-ok")).stale_since is None


async def test_duplicate_segments_identical_deduped_different_conflict(pool: Any, s3_endpoint: Any, client: Any,
                                                                       settings: Settings) -> None:
    """RELIABILITY 9: the same segment twice — identical content is silent, different content blocks planning."""
    import lz4.frame
    import zstandard

    arch = fresh_archive(s3_endpoint, "walg")
    s3 = s3_endpoint.client()
    seg_keys = sorted(k for k in arch.keys if "/wal_005/00000001" in k and k.endswith(".lz4") and ".history" not in k)
    # conflict right after the first backup's own WAL (its window must end there); identical copy later on
    other = next(k for k in seg_keys if "/000000010000000000000003." in k)
    same = next(k for k in seg_keys if "/000000010000000000000005." in k)
    raw = lz4.frame.decompress(s3.get_object(Bucket=arch.bucket, Key=same)["Body"].read())
    s3.put_object(Bucket=arch.bucket, Key=same[: -len(".lz4")] + ".zst", Body=zstandard.ZstdCompressor().compress(raw))
    tampered = bytearray(lz4.frame.decompress(s3.get_object(Bucket=arch.bucket, Key=other)["Body"].read()))
    tampered[5000] ^= 0xFF
    s3.put_object(Bucket=arch.bucket, Key=other[: -len(".lz4")] + ".zst",
                  Body=zstandard.ZstdCompressor().compress(bytes(tampered)))
    await _register(pool, arch, "g-dup")
    assert (await runner.scan_instance(pool, client, "g-dup", full=True, settings=settings)).ok
    snap = await repo.load_snapshot(pool, "g-dup")
    conflicted = WalSegment.from_name(other.rsplit("/", 1)[-1][:24])
    assert snap.conflicts == ((conflicted.timeline, conflicted.segno),)
    assert _covered(snap.runs) == _segment_names(arch.keys)      # duplicates add no coverage
    doc = await backups.backups_doc(pool, "space-1", "walg")
    assert doc["instances"][0]["conflicts"] == [{"timeline": 1, "segment": conflicted.name}]
    # replay cannot pass the conflicting segment: a window ends exactly there (later backups are unaffected)
    cut = [w for w in doc["instances"][0]["windows"] if w["ends_at"] == "conflict"]
    assert cut and all(w["to_lsn"] == str(conflicted.start_lsn) for w in cut)
