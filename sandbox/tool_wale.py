"""WAL-E 1.1.1: real ``wal-push`` segments (.lzo); a base-backup sentinel written by us in WAL-E's format.

WAL-E's ``backup-push`` calls ``pg_start_backup()``, which PostgreSQL 15 removed, so the backup entry is
*synthetic*: its start/stop positions come from a real non-exclusive ``pg_backup_start``/``pg_backup_stop``
on the same cluster (whose ``.backup`` history file WAL-E does push for real), and the keys follow
WAL-E's ``basebackups_005`` format (shared LAYOUTS.md §4).
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from sandbox.pg import Cluster, Commit, make_postgres_dir
from sandbox.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoEndpoint
from sandbox.tool_barman import TOOLS_BIN

PREFIX = "wale"
BUCKET = "pg-archive-wale"
LZOP_MAGIC = bytes.fromhex("894C5A4F000D0A1A0A")


def wale_env(endpoint_url: str, bucket: str, prefix: str = PREFIX) -> dict[str, str]:
    port = endpoint_url.rsplit(":", 1)[1].rstrip("/")
    return {"WALE_S3_PREFIX": f"s3://{bucket}/{prefix}", "WALE_S3_ENDPOINT": f"http+path://127.0.0.1:{port}",
            "WALE_LOG_DESTINATION": "stderr", "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION, "PATH": "/usr/bin:/bin"}


def wale_command(endpoint_url: str, bucket: str, verb: str, prefix: str = PREFIX) -> str:
    """``env ... wal-e <verb>`` with WAL-E's variables inline (``wal-push %p`` / ``wal-fetch "%f" "%p"``)."""
    env = " ".join(f"{k}={v}" for k, v in wale_env(endpoint_url, bucket, prefix).items())
    return f"env {env} {TOOLS_BIN / 'wal-e'} {verb}"


def lzop(data: bytes) -> bytes:
    return subprocess.run(["lzop", "-c", "-q"], input=data, capture_output=True, check=True).stdout


def build_wale(ep: MotoEndpoint, workdir: Path) -> dict[str, Any]:
    bucket = BUCKET
    ep.ensure_bucket(bucket)
    base = make_postgres_dir("wale-", str(workdir))
    cluster = Cluster(base, archive_command=wale_command(ep.url, bucket, "wal-push %p"))
    commits: list[Commit] = []
    try:
        cluster.initdb()
        cluster.start()
        cluster.create_ticks()
        commits += cluster.commits(range(1, 3), 1, "before backup")
        cluster.switch_wal_and_wait()
        # one session: non-exclusive backup start/stop (what backup-push would do on PG < 15)
        out = cluster.sql(
            "SELECT pg_backup_start('wal-e fixture', true)",
            "SELECT lsn FROM pg_backup_stop(true)",
        ).splitlines()
        start_lsn, stop_lsn = out[0], out[-1]
        start_seg, start_off = cluster.sql(
            f"SELECT file_name || ' ' || lpad(file_offset::text, 8, '0') FROM pg_walfile_name_offset('{start_lsn}')"
        ).split()
        stop_seg, stop_off = cluster.sql(
            f"SELECT file_name || ' ' || lpad(file_offset::text, 8, '0') FROM pg_walfile_name_offset('{stop_lsn}')"
        ).split()
        size = int(cluster.sql("SELECT sum(pg_database_size(oid))::bigint FROM pg_database"))
        version_text = cluster.sql("SELECT version()")
        commits += cluster.commits(range(3, 5), 1, "after backup")
        cluster.switch_wal_and_wait()
        commits += cluster.commits(range(5, 7), 1, "last")
        last = cluster.switch_wal_and_wait()
        system_id, vnum, seg_size = cluster.system_id(), cluster.server_version_num(), cluster.seg_size()
        cluster.stop()
    finally:
        cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)

    # the synthetic base backup, in WAL-E 1.1.1's layout; sentinel uploaded last
    name = f"base_{start_seg}_{start_off}"
    root = f"{PREFIX}/basebackups_005"
    label = f"START WAL LOCATION: {start_lsn} (file {start_seg})\nLABEL: wal-e fixture\nSTART TIMELINE: 1\n"
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w") as tf:
        info = tarfile.TarInfo("backup_label")
        info.size = len(label.encode())
        tf.addfile(info, io.BytesIO(label.encode()))
    sentinel = {"wal_segment_backup_stop": stop_seg, "wal_segment_offset_backup_stop": stop_off,
                "expanded_size_bytes": size, "spec": {"base_prefix": "", "tablespaces": []}}
    c = ep.client()
    c.put_object(Bucket=bucket, Key=f"{root}/{name}/extended_version.txt", Body=version_text.encode())
    c.put_object(Bucket=bucket, Key=f"{root}/{name}/tar_partitions/part_00000000.tar.lzo",
                 Body=lzop(tar_buf.getvalue()))
    c.put_object(Bucket=bucket, Key=f"{root}/{name}_backup_stop_sentinel.json",
                 Body=json.dumps(sentinel).encode())

    return {
        "tool": "wale", "synthetic": True, "bucket": bucket, "prefix": PREFIX, "stanza": None, "layout": "wale",
        "tool_version": "wal-e 1.1.1",
        "synthetic_note": "WAL segments and the .backup history file are real wal-push uploads; the base backup "
                          "(sentinel, extended_version.txt, one tiny tar part) is written by the builder in "
                          "WAL-E's format from a real pg_backup_start/pg_backup_stop (backup-push fails on PG15)",
        "backups": [{"name": name, "start_lsn": start_lsn, "stop_lsn": stop_lsn,
                     "wal_segment_backup_start": start_seg, "wal_segment_offset_backup_start": start_off,
                     "wal_segment_backup_stop": stop_seg, "wal_segment_offset_backup_stop": stop_off,
                     "expanded_size_bytes": size, "sentinel": sentinel, "synthetic": True}],
        "system_id": system_id, "pg_version": vnum // 10000, "server_version_num": vnum, "seg_size": seg_size,
        "commits": [x.as_json() for x in commits], "last_archived": {"tl1": last},
        "config": {"archive_command": "wal-e wal-push %p", "restore_command": 'wal-e wal-fetch "%f" "%p"',
                   "env": {k: v for k, v in wale_env(ep.url, bucket).items() if k != "WALE_S3_ENDPOINT"}},
        "commit_lsn_note": "commit_lsn = pg_current_wal_insert_lsn() right after the commit (>= commit record end)",
    }
