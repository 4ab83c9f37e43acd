"""Sanity of the real-archive fixtures: the objects say what truth.json says."""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import shutil
import socket
import subprocess
from datetime import datetime, timedelta
from typing import Any

import lz4.frame
import pytest

from executor import RestoreError, execute_plan
from recovery.lsn import Lsn
from recovery.timeline import parse_history
from recovery.wal import WalSegment, parse_seg_size_from_page
from sandbox.s3 import MotoEndpoint, list_all
from sandbox.tool_wale import LZOP_MAGIC
from tests.realarchives.plugin import RealArchives, fresh_archive, fresh_bucket
from tests.support.fixtures import Row
from tests.support.restore import (
    hand_plan,
    restore_environ,
    restore_settings,
    scratch_dir,
    start_and_read,
)

pytestmark = pytest.mark.realtools


def get(ep: MotoEndpoint, bucket: str, key: str) -> bytes:
    return bytes(ep.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def lzop_decompress(data: bytes) -> bytes:
    return subprocess.run(["lzop", "-d", "-c", "-q"], input=data, capture_output=True, check=True).stdout


# -- the endpoint ----------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_endpoint_serves_http_and_tls(s3_endpoint: MotoEndpoint) -> None:
    s3_endpoint.ensure_bucket("endpoint-probe")
    s3_endpoint.client().put_object(Bucket="endpoint-probe", Key="k", Body=b"v")
    import boto3

    tls = boto3.client("s3", endpoint_url=s3_endpoint.tls_url, verify=False, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    assert tls.get_object(Bucket="endpoint-probe", Key="k")["Body"].read() == b"v"


def test_endpoint_stops_everything() -> None:
    ep = MotoEndpoint().start()
    port, tls = ep.port, ep.tls_port
    pid = ep._stunnel.pid if ep._stunnel else None
    ep.stop()
    assert pid is not None
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0
    for p in (port, tls):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", p), timeout=0.5).close()


# -- cache vs session bucket -----------------------------------------------------------------------------
def test_uploaded_objects_match_cache(real_archives: RealArchives) -> None:
    for a in real_archives:
        listed = {o["Key"]: o["Size"] for o in list_all(real_archives.endpoint.client(), a.bucket)}
        cached = {o["key"]: o["size"] for o in json.loads((a.cache_dir / a.tool / "objects.json").read_text())}
        assert listed == cached, a.tool
        assert all(k.startswith(a.prefix + "/") for k in listed), a.tool


def test_fresh_bucket_is_independent(real_archives: RealArchives) -> None:
    ep = real_archives.endpoint
    bucket, prefix = fresh_bucket(ep, "wale")
    assert bucket != real_archives["wale"].bucket and prefix == "wale"
    keys = [o["Key"] for o in list_all(ep.client(), bucket)]
    assert sorted(keys) == sorted(real_archives["wale"].keys)
    ep.client().delete_object(Bucket=bucket, Key=keys[0])
    assert len(list_all(ep.client(), real_archives["wale"].bucket)) == len(keys)
    assert fresh_archive(ep, "wale").bucket != bucket


# -- ground truth shared by the fork scenarios -----------------------------------------------------------
@pytest.mark.parametrize("tool", ["pgbackrest", "barman", "walg"])
def test_commits_span_both_timelines(real_archives: RealArchives, tool: str) -> None:
    t = real_archives[tool].truth
    commits = t["commits"]
    assert [c["id"] for c in commits] == list(range(1, 18))
    assert {c["tl"] for c in commits} == {1, 2}
    times = [datetime.fromisoformat(c["commit_time"]) for c in commits]
    assert all(ts.utcoffset() == timedelta(0) for ts in times)
    tl1 = [ts for ts, c in zip(times, commits) if c["tl"] == 1]
    assert tl1 == sorted(tl1) and len(set(tl1)) == len(tl1)
    fork = datetime.fromisoformat(t["fork_time"])
    assert times[8] < fork < times[9]
    assert t["restored_ids_at_fork"] == list(range(1, 10))
    # TL2 commits come after the switch point; TL1 commits after the fork are past it too
    switch = Lsn.parse(t["switch_lsn"])
    assert all(Lsn.parse(c["commit_lsn"]) > switch for c in commits if c["id"] >= 10)
    assert all(Lsn.parse(c["commit_lsn"]) <= switch for c in commits if c["id"] <= 9)


def _history_key(tool: str, keys: list[str]) -> str:
    suffix = {"pgbackrest": "/00000002.history", "barman": "/00000002.history.gz",
              "walg": "/wal_005/00000002.history.lz4"}[tool]
    [key] = [k for k in keys if k.endswith(suffix)]
    return key


@pytest.mark.parametrize("tool", ["pgbackrest", "barman", "walg"])
def test_history_file_in_archive_matches_truth(real_archives: RealArchives, tool: str) -> None:
    a = real_archives[tool]
    raw = get(real_archives.endpoint, a.bucket, _history_key(tool, a.keys))
    text = {"pgbackrest": bytes, "barman": gzip.decompress, "walg": lz4.frame.decompress}[tool](raw).decode()
    assert text == a.truth["history_00000002"]
    [switch] = parse_history(text)
    assert switch.parent == 1 and str(switch.switchpoint) == a.truth["switch_lsn"]


@pytest.mark.parametrize("tool", ["pgbackrest", "barman"])
def test_old_timeline_continues_past_the_fork(real_archives: RealArchives, tool: str) -> None:
    a = real_archives[tool]
    switch_seg = Lsn.parse(a.truth["switch_lsn"]).segno(a.truth["seg_size"])
    tl1 = {WalSegment.from_name(k.rsplit("/", 1)[1][:24]).segno for k in a.keys
           if "/0000000100000000/" in k and ".backup" not in k}
    assert max(tl1) > switch_seg  # a whole TL1 segment lies beyond the switch point


# -- pgBackRest ------------------------------------------------------------------------------------------
def test_pgbackrest_info_lists_full_and_incr_on_two_timelines(real_archives: RealArchives) -> None:
    t = real_archives["pgbackrest"].truth
    [stanza] = t["backups"]
    assert stanza["name"] == "main" and stanza["status"]["code"] == 0
    backups = stanza["backup"]
    assert [b["type"] for b in backups] == ["full", "incr", "incr"]
    assert [b["label"] for b in backups] == [t["scenario_backups"][r] for r in ("B1", "B2", "B3")]
    assert backups[1]["reference"] == [backups[0]["label"]]
    assert [b["archive"]["start"][:8] for b in backups] == ["00000001", "00000001", "00000002"]
    assert str(stanza["db"][0]["system-id"]) == t["system_id"]


def test_pgbackrest_segment_hash_matches_content(real_archives: RealArchives) -> None:
    a = real_archives["pgbackrest"]
    seg_keys = [k for k in a.keys if k.endswith(".gz") and "/archive/" in k]
    assert len(seg_keys) >= 8
    key = seg_keys[0]
    data = gzip.decompress(get(real_archives.endpoint, a.bucket, key))
    assert hashlib.sha1(data).hexdigest() == key.rsplit("-", 1)[1][:40]
    assert len(data) == a.truth["seg_size"] == parse_seg_size_from_page(data[:40])


# -- barman-cloud ----------------------------------------------------------------------------------------
def test_barman_backup_list_has_three_done_backups(real_archives: RealArchives) -> None:
    t = real_archives["barman"].truth
    rows = sorted(t["backups"]["backups_list"], key=lambda b: b["backup_id"])
    assert [b["backup_id"] for b in rows] == [t["scenario_backups"][r] for r in ("B1", "B2", "B3")]
    assert [b["status"] for b in rows] == ["DONE"] * 3
    assert [b["timeline"] for b in rows] == [1, 1, 2]
    assert all(b["systemid"] == t["system_id"] for b in rows)
    keys = real_archives["barman"].keys
    assert all(f"barman/main/base/{b['backup_id']}/backup.info" in keys for b in rows)


# -- WAL-E -----------------------------------------------------------------------------------------------
def test_wale_objects_are_lzop_and_sentinel_matches(real_archives: RealArchives) -> None:
    a = real_archives["wale"]
    ep = real_archives.endpoint
    wal = [k for k in a.keys if "/wal_005/" in k]
    assert len(wal) >= 4 and all(k.endswith(".lzo") for k in wal)
    for k in wal:
        assert get(ep, a.bucket, k).startswith(LZOP_MAGIC)
    seg = lzop_decompress(get(ep, a.bucket, next(k for k in wal if len(k.rsplit("/", 1)[1]) == 28)))
    assert parse_seg_size_from_page(seg[:40]) == a.truth["seg_size"]
    [b] = a.truth["backups"]
    sentinel = json.loads(get(ep, a.bucket, f"wale/basebackups_005/{b['name']}_backup_stop_sentinel.json"))
    stop = WalSegment.from_name(sentinel["wal_segment_backup_stop"]).start_lsn + \
        int(sentinel["wal_segment_offset_backup_stop"], 10)
    assert str(stop) == b["stop_lsn"]
    start_seg, start_off = b["name"][5:].split("_")
    assert str(WalSegment.from_name(start_seg).start_lsn + int(start_off, 10)) == b["start_lsn"]
    assert a.truth["synthetic"] is True


# -- WAL-G -----------------------------------------------------------------------------------------------
def test_walg_sentinels_and_lz4_segments(real_archives: RealArchives) -> None:
    a = real_archives["walg"]
    ep = real_archives.endpoint
    sentinels = sorted(k for k in a.keys if k.endswith("_backup_stop_sentinel.json"))
    assert len(sentinels) == 3
    dtos = [json.loads(get(ep, a.bucket, k)) for k in sentinels]
    deltas = [d for d in dtos if "DeltaFrom" in d]
    assert len(deltas) == 1 and "_D_" in sentinels[[d is deltas[0] for d in dtos].index(True)]
    for d in dtos:
        assert d["Version"] == 2 and isinstance(d["LSN"], int) and isinstance(d["FinishLSN"], int)
        assert d["FinishLSN"] > d["LSN"] and d["SystemIdentifier"] == int(a.truth["system_id"])
    seg_key = next(k for k in a.keys if k.endswith("000000010000000000000002.lz4"))
    seg = lz4.frame.decompress(get(ep, a.bucket, seg_key))
    assert len(seg) == a.truth["seg_size"] == parse_seg_size_from_page(seg[:40])
    assert int.from_bytes(seg[24:32], "little") == int(a.truth["system_id"])


# -- end-to-end restores with the real tools (through the executor, with hand-written recovery settings) ------
async def _restore_rows(a: Any, s3_endpoint: MotoEndpoint, label: str, conf: str, last_segment: str) -> list[Row]:
    d = scratch_dir()
    try:
        await execute_plan(hand_plan(a, label, conf, last_segment), d / "data",
                           restore_settings(s3_endpoint, "postgresql://unused"), environ=restore_environ(s3_endpoint))
        return await asyncio.to_thread(start_and_read, d / "data")
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def test_pgbackrest_restore_to_fork_time(real_archives: RealArchives, s3_endpoint: MotoEndpoint) -> None:
    a = real_archives["pgbackrest"]
    rows = await _restore_rows(a, s3_endpoint, a.truth["scenario_backups"]["B2"],
                               "restore_command = 'pgbackrest --stanza=main archive-get %f \"%p\"'\n"
                               f"recovery_target_time = '{a.truth['fork_target']}'\n"
                               "recovery_target_timeline = '1'\nrecovery_target_action = 'promote'\n",
                               a.truth["last_archived"]["tl1"])
    assert rows == [(i, 1) for i in range(1, 10)]


async def test_barman_restore_latest_follows_timeline_2(real_archives: RealArchives,
                                                        s3_endpoint: MotoEndpoint) -> None:
    a = real_archives["barman"]
    rows = await _restore_rows(a, s3_endpoint, a.truth["scenario_backups"]["B1"],
                               f"restore_command = 'barman-cloud-wal-restore --no-partial s3://{a.bucket}/{a.prefix} "
                               "main %f %p'\nrecovery_target_timeline = 'latest'\n"
                               "recovery_target_action = 'promote'\n", a.truth["last_archived"]["tl2"])
    assert rows == [(i, 1) for i in range(1, 10)] + [(i, 2) for i in range(13, 18)]


async def test_restore_past_the_archive_is_refused(real_archives: RealArchives, s3_endpoint: MotoEndpoint) -> None:
    a = real_archives["barman"]
    late = datetime.fromisoformat(a.truth["commits"][-1]["commit_time"]) + timedelta(hours=1)
    with pytest.raises(RestoreError) as err:
        await _restore_rows(a, s3_endpoint, a.truth["scenario_backups"]["B3"],
                            f"restore_command = 'barman-cloud-wal-restore --no-partial s3://{a.bucket}/{a.prefix} "
                            f"main %f %p'\nrecovery_target_time = '{late.strftime('%Y-%m-%d %H:%M:%S.%f+00')}'\n"
                            "recovery_target_action = 'promote'\n", a.truth["last_archived"]["tl2"])
    assert err.value.code == "restore_failed" and err.value.stage == "recover"
    assert "recovery ended before configured recovery target was reached" in err.value.message


def test_tls_front_started_once_under_concurrent_use() -> None:
    """Restores run concurrently: first uses of ``tls_port`` from threads must share one stunnel (none orphaned).
    Counts only this endpoint's stunnels (its own TLS dir): other sessions on the machine run theirs."""
    from concurrent.futures import ThreadPoolExecutor

    def stunnels(tls_dir: str) -> set[str]:
        return set(subprocess.run(["pgrep", "-f", tls_dir], capture_output=True, text=True).stdout.split())

    ep = MotoEndpoint().start()
    tls_dir = ""
    try:
        with ThreadPoolExecutor(4) as pool:
            ports = set(pool.map(lambda _: ep.tls_port, range(4)))
        assert len(ports) == 1
        tls_dir = str(ep._tls_dir)
        assert len(stunnels(tls_dir)) == 1
    finally:
        ep.stop()
    assert stunnels(tls_dir) == set(), "an stunnel was orphaned"
