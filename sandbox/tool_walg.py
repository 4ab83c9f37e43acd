"""WAL-G, *synthetic*: objects in WAL-G's documented layout (shared LAYOUTS.md §3), not written by wal-g.

WAL-G is not installable here. The WAL is real: every file the barman-cloud scenario archived (segments,
``00000002.history``, ``.backup``, ``.partial``), decompressed and re-compressed as lz4 frames under
``wal_005/``. Base backups mirror barman's B1/B2/B3 positions and times: B1 full, B2 a delta (``_D_``) of B1,
B3 (timeline 2) full; each gets metadata.json, files_metadata.json, a tiny tar part, then the V2 sentinel.
So barman's commits, fork time and history are also WAL-G's ground truth.
"""
from __future__ import annotations

import ast
import gzip
import io
import json
import tarfile
from datetime import datetime, timedelta
from typing import Any

import lz4.frame

from recovery.lsn import Lsn
from recovery.timefmt import iso_micro
from recovery.wal import WalSegment
from sandbox.s3 import MotoEndpoint, list_all

PREFIX = "walg"
BUCKET = "pg-archive-walg"
DATE_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"
HOSTNAME = "fixture-db1"


def rfc3339(ts: datetime) -> str:
    return iso_micro(ts)


def _barman_backups(listing: Any) -> list[dict[str, Any]]:
    rows = listing.get("backups_list", []) if isinstance(listing, dict) else listing
    return sorted(rows, key=lambda b: b["backup_id"])


def build_walg(ep: MotoEndpoint, barman_truth: dict[str, Any]) -> dict[str, Any]:
    src_bucket, src_prefix = barman_truth["bucket"], barman_truth["prefix"]
    server = barman_truth["server"]
    c = ep.client()
    ep.ensure_bucket(BUCKET)

    # 1. WAL: barman wals/**.gz -> wal_005/<name>.lz4 (real bytes)
    wal_keys: list[str] = []
    for obj in list_all(c, src_bucket, f"{src_prefix}/{server}/wals/"):
        name = obj["Key"].rsplit("/", 1)[1]
        raw = c.get_object(Bucket=src_bucket, Key=obj["Key"])["Body"].read()
        if name.endswith(".gz"):
            name, raw = name[:-3], gzip.decompress(raw)
        key = f"{PREFIX}/wal_005/{name}.lz4"
        c.put_object(Bucket=BUCKET, Key=key, Body=lz4.frame.compress(raw))
        wal_keys.append(key)

    # 2. base backups from barman's positions
    seg_size = int(barman_truth["seg_size"])
    system_id = int(barman_truth["system_id"])
    vnum = int(barman_truth["server_version_num"])
    roles = barman_truth["scenario_backups"]
    by_id = {b["backup_id"]: b for b in _barman_backups(barman_truth["backups"])}
    plan = [("B1", None), ("B2", "B1"), ("B3", None)]
    names: dict[str, str] = {}
    listing: list[dict[str, Any]] = []
    for role, parent in plan:
        b = by_id[roles[role]]
        tli = int(b["timeline"])
        start, stop = Lsn.parse(b["begin_xlog"]), Lsn.parse(b["end_xlog"])
        name = "base_" + WalSegment.of_lsn(tli, start, seg_size).name
        sentinel: dict[str, Any] = {"LSN": int(start), "Timeline": tli}
        if parent is not None:
            pname = names[parent]
            pb = by_id[roles[parent]]
            name += "_D_" + pname[len("base_"):]
            sentinel.update({"DeltaLSN": int(Lsn.parse(pb["begin_xlog"])), "DeltaFrom": pname,
                             "DeltaFullName": pname, "DeltaCount": 1})
        names[role] = name
        start_time = datetime.fromisoformat(b["begin_time_iso"])
        stop_time = datetime.fromisoformat(b["end_time_iso"])
        finish_time = stop_time + timedelta(seconds=2, microseconds=123456)  # after upload (LAYOUTS §3.2)
        size = int(b.get("cluster_size") or 0)
        label_text = ast.literal_eval(b["backup_label"]) if str(b["backup_label"]).startswith("'") \
            else str(b["backup_label"])
        tar_buf = io.BytesIO()
        with tarfile.open(fileobj=tar_buf, mode="w") as tf:
            ti = tarfile.TarInfo("backup_label")
            ti.size = len(label_text.encode())
            tf.addfile(ti, io.BytesIO(label_text.encode()))
        part = lz4.frame.compress(tar_buf.getvalue())
        sentinel.update({
            "PgVersion": vnum, "FinishLSN": int(stop), "SystemIdentifier": system_id,
            "UncompressedSize": size, "CompressedSize": len(part), "DataCatalogSize": size, "Spec": None,
            "Version": 2, "StartTime": rfc3339(start_time), "FinishTime": rfc3339(finish_time),
            "DateFmt": DATE_FMT, "Hostname": HOSTNAME, "DataDir": "/var/lib/postgresql/15/main",
            "IsPermanent": False,
        })
        meta = {"start_time": rfc3339(start_time), "finish_time": rfc3339(finish_time), "date_fmt": DATE_FMT,
                "hostname": HOSTNAME, "data_dir": "/var/lib/postgresql/15/main", "pg_version": vnum,
                "start_lsn": int(start), "finish_lsn": int(stop), "is_permanent": False,
                "system_identifier": system_id, "timeline": tli, "uncompressed_size": size,
                "compressed_size": len(part)}
        files_meta = {"Files": {"backup_label": {"IsIncremented": False, "IsSkipped": False,
                                                 "MTime": rfc3339(start_time)}},
                      "TarFileSets": {"part_001.tar.lz4": ["backup_label"]}}
        root = f"{PREFIX}/basebackups_005"
        # write order of WAL-G's uploadMetadata: metadata.json, files_metadata.json, sentinel last
        c.put_object(Bucket=BUCKET, Key=f"{root}/{name}/tar_partitions/part_001.tar.lz4", Body=part)
        c.put_object(Bucket=BUCKET, Key=f"{root}/{name}/metadata.json", Body=json.dumps(meta).encode())
        c.put_object(Bucket=BUCKET, Key=f"{root}/{name}/files_metadata.json", Body=json.dumps(files_meta).encode())
        c.put_object(Bucket=BUCKET, Key=f"{root}/{name}_backup_stop_sentinel.json",
                     Body=json.dumps(sentinel).encode())
        listing.append({"backup_name": name, "wal_file_name": name[5:29], "storage_name": "default", **meta,
                        "role": role, "stop_lsn_text": str(stop), "start_lsn_text": str(start),
                        "sentinel": sentinel, "derived_from_barman_backup": b["backup_id"]})

    truth = {k: barman_truth[k] for k in ("system_id", "pg_version", "server_version_num", "seg_size", "commits",
                                          "fork_time", "fork_target", "history_00000002", "switch_lsn",
                                          "restored_ids_at_fork", "last_archived", "commit_lsn_note")}
    truth.update({
        "tool": "walg", "synthetic": True, "bucket": BUCKET, "prefix": PREFIX, "stanza": None, "layout": "walg",
        "tool_version": "none (WAL-G layout from its source, LAYOUTS.md §3)",
        "synthetic_note": "objects written by the builder in WAL-G's layout; WAL bytes are barman's real archive "
                          "re-compressed as lz4 frames; backups mirror barman's B1 (full), B2 (delta of B1), "
                          "B3 (full, TL2)",
        "backups": listing,  # shaped like `wal-g backup-list --detail --json` plus fixture extras
        "scenario_backups": names,
        "scenario_backup_kinds": {"B1": "full", "B2": "delta", "B3": "full"},
        "wal_keys": sorted(wal_keys),
        "config": {"restore_command": 'wal-g wal-fetch "%f" "%p"', "WALG_S3_PREFIX": f"s3://{BUCKET}/{PREFIX}"},
    })
    return truth
