"""Synthetic archives in the four tools' real key layouts and metadata formats (zero-byte WAL objects).

Each writer yields ``(key, body)`` for one instance: ``segments`` WAL segments on timeline 1 from segment 1,
one archived a minute from ``T0``; ``backups`` backups spread evenly over them; ``holes`` segment numbers
left out (each splits a run). Metadata is the tools' own format (pgBackRest info files with a valid
checksum, barman backup.info, WAL-G V2 sentinels, WAL-E sentinels), so the scanner parses it for real.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from recovery.lsn import Lsn
from recovery.timefmt import iso_micro
from recovery.wal import DEFAULT_SEG_SIZE, segment_name
from scheduler.layouts.pgbackrest_ini import parse_info

SEG = DEFAULT_SEG_SIZE
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
SYSID = 7712075212762715131
PG_NUM = 150020
LAYOUTS = ("walg", "barman", "pgbackrest", "wale")


@dataclass(frozen=True, slots=True)
class Spec:
    """One synthetic instance's archive: ``prefix`` is the tool's repository root (no trailing slash)."""

    layout: str
    prefix: str
    segments: int
    backups: int
    first_segno: int = 1
    holes: frozenset[int] = frozenset()

    def segnos(self, upto: int | None = None) -> Iterator[int]:
        last = self.first_segno + self.segments - 1 if upto is None else upto
        return (s for s in range(self.first_segno, last + 1) if s not in self.holes)

    def backup_segnos(self) -> list[int]:
        step = max(1, self.segments // max(1, self.backups))
        return [self.first_segno + i * step for i in range(self.backups)]


def at(segno: int) -> datetime:
    return T0 + timedelta(minutes=segno)


def wal_keys(spec: Spec, segnos: Iterable[int]) -> Iterator[tuple[str, bytes]]:
    """The WAL object keys of ``segnos`` in the spec's layout (empty bodies)."""
    p = spec.prefix
    for s in segnos:
        name = segment_name(1, s, SEG)
        if spec.layout == "walg":
            yield f"{p}/wal_005/{name}.lz4", b""
        elif spec.layout == "wale":
            yield f"{p}/wal_005/{name}.lzo", b""
        elif spec.layout == "barman":
            yield f"{p}/main/wals/{name[:16]}/{name}.gz", b""
        else:
            sha = hashlib.sha1(name.encode()).hexdigest()
            yield f"{p}/archive/main/15-1/{name[:16]}/{name}-{sha}.gz", b""


def objects(spec: Spec) -> Iterator[tuple[str, bytes]]:
    """Every object of the instance: backup metadata, then WAL."""
    yield from {"walg": _walg, "wale": _wale, "barman": _barman, "pgbackrest": _pgbackrest}[spec.layout](spec)
    yield from wal_keys(spec, spec.segnos())


def _walg(spec: Spec) -> Iterator[tuple[str, bytes]]:
    for s in spec.backup_segnos():
        name = "base_" + segment_name(1, s, SEG)
        start, stop = s * SEG + 0x28, s * SEG + 0x138
        sentinel = {"LSN": start, "FinishLSN": stop, "PgVersion": PG_NUM, "SystemIdentifier": SYSID,
                    "UncompressedSize": 2604967632, "CompressedSize": 858502390, "DataCatalogSize": 2604000000,
                    "Spec": None, "UserData": None, "FilesMetadataDisabled": False, "ChkpNum": 0, "DeltaChkpNum": 0,
                    "Version": 2, "StartTime": iso_micro(at(s)),
                    "FinishTime": iso_micro(at(s) + timedelta(seconds=40)),
                    "DateFmt": "%Y-%m-%dT%H:%M:%S.%fZ", "Hostname": "db1",
                    "DataDir": "/var/lib/postgresql/15/main", "IsPermanent": False}
        meta = {"start_time": iso_micro(at(s)), "finish_time": iso_micro(at(s) + timedelta(seconds=40)),
                "date_fmt": "%Y-%m-%dT%H:%M:%S.%fZ", "hostname": "db1", "data_dir": "/var/lib/postgresql/15/main",
                "pg_version": PG_NUM, "start_lsn": start, "finish_lsn": stop, "is_permanent": False,
                "system_identifier": SYSID, "uncompressed_size": 2604967632, "compressed_size": 858502390}
        yield f"{spec.prefix}/basebackups_005/{name}/metadata.json", json.dumps(meta).encode()
        yield f"{spec.prefix}/basebackups_005/{name}_backup_stop_sentinel.json", json.dumps(sentinel).encode()


def _wale(spec: Spec) -> Iterator[tuple[str, bytes]]:
    for s in spec.backup_segnos():
        name = f"base_{segment_name(1, s, SEG)}_{0x28:08d}"
        sentinel = {"wal_segment_backup_stop": segment_name(1, s, SEG), "wal_segment_offset_backup_stop": "00000312",
                    "expanded_size_bytes": 31009840, "spec": {"base_prefix": "pg_data", "tablespaces": []}}
        yield f"{spec.prefix}/basebackups_005/{name}/extended_version.txt", b"PostgreSQL 15.20\n"
        yield f"{spec.prefix}/basebackups_005/{name}_backup_stop_sentinel.json", json.dumps(sentinel).encode()


def barman_id(s: int) -> str:
    return at(s).strftime("%Y%m%dT%H%M%S")


def _barman(spec: Spec) -> Iterator[tuple[str, bytes]]:
    for s in spec.backup_segnos():
        bid = barman_id(s)
        start, stop = Lsn(s * SEG + 0xD8), Lsn(s * SEG + 0x1F8)
        seg = segment_name(1, s, SEG)
        text = (
            f"backup_label='START WAL LOCATION: {start} (file {seg})\\nCHECKPOINT LOCATION: {start}\\n"
            f"BACKUP METHOD: streamed\\nBACKUP FROM: primary\\nSTART TIME: {at(s):%Y-%m-%d %H:%M:%S} UTC\\n"
            f"LABEL: Barman backup cloud {bid}\\nSTART TIMELINE: 1\\n'\n"
            f"backup_name=None\nbegin_offset={0xD8}\nbegin_time={at(s).isoformat()}\nbegin_wal={seg}\n"
            f"begin_xlog={start}\nchildren_backup_ids=None\ncluster_size=31009840\ncompression=gzip\n"
            "config_file=/var/lib/postgresql/15/main/postgresql.conf\ncopy_stats=None\ndata_checksums=off\n"
            "deduplicated_size=None\nencryption=None\n"
            f"end_offset={0x1F8}\nend_time={(at(s) + timedelta(seconds=40)).isoformat()}\nend_wal={seg}\n"
            f"end_xlog={stop}\nerror=None\nmode=None\nparent_backup_id=None\n"
            "pgdata=/var/lib/postgresql/15/main\nserver_name=cloud\nsize=3062631\nstatus=DONE\n"
            f"summarize_wal=None\nsystemid={SYSID}\ntablespaces=None\ntimeline=1\nversion={PG_NUM}\n"
            f"xlog_segment_size={SEG}\n")
        yield f"{spec.prefix}/main/base/{bid}/backup.info", text.encode()


def pgbackrest_label(s: int, full: str | None) -> str:
    stamp = at(s).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}F" if full is None else f"{full}_{stamp}I"


def _signed(body: str) -> str:
    """An info file's text with the checksum pgBackRest would write (computed by our own parser)."""
    draft = body + '\n[backrest]\nbackrest-checksum="0000000000000000000000000000000000000000"\n'
    actual = parse_info(draft, "bench").checksum_actual
    return draft.replace("0" * 40, actual)


def _pgbackrest(spec: Spec) -> Iterator[tuple[str, bytes]]:
    lines: list[str] = []
    full: str | None = None
    labels: list[str] = []
    for i, s in enumerate(spec.backup_segnos()):
        is_full = i % 7 == 0
        label = pgbackrest_label(s, None if is_full else full)
        if is_full:
            full = label
        seg = segment_name(1, s, SEG)
        entry: dict[str, object] = {
            "backrest-format": 5, "backrest-version": "2.45", "backup-archive-start": seg, "backup-archive-stop": seg,
            "backup-error": False, "backup-info-repo-size": 3062631, "backup-info-repo-size-delta": 208332,
            "backup-info-size": 23213929, "backup-info-size-delta": 1851658,
            "backup-lsn-start": str(Lsn(s * SEG + 0x28)), "backup-lsn-stop": str(Lsn(s * SEG + 0x100)),
        }
        if not is_full:
            entry.update({"backup-prior": labels[-1], "backup-reference": [full]})
        entry.update({"backup-timestamp-start": int(at(s).timestamp()),
                      "backup-timestamp-stop": int(at(s).timestamp()) + 40,
                      "backup-type": "full" if is_full else "incr", "db-id": 1, "option-archive-check": True,
                      "option-archive-copy": False, "option-backup-standby": False, "option-checksum-page": False,
                      "option-compress": True, "option-hardlink": False, "option-online": True})
        lines.append(f"{label}={json.dumps(entry, separators=(',', ':'))}")
        labels.append(label)
    db = (f'[db]\ndb-catalog-version=202209061\ndb-control-version=1300\ndb-id=1\ndb-system-id={SYSID}\n'
          f'db-version="15"\n\n[db:history]\n1={{"db-catalog-version":202209061,"db-control-version":1300,'
          f'"db-system-id":{SYSID},"db-version":"15"}}\n')
    binfo = _signed('[backrest]\nbackrest-format=5\nbackrest-version="2.45"\n\n[backup:current]\n'
                    + "\n".join(lines) + "\n\n" + db).encode()
    ainfo = _signed(f'[backrest]\nbackrest-format=5\nbackrest-version="2.45"\n\n[db]\ndb-id=1\n'
                    f'db-system-id={SYSID}\ndb-version="15"\n\n[db:history]\n'
                    f'1={{"db-id":{SYSID},"db-version":"15"}}\n').encode()
    b = f"{spec.prefix}/backup/main/"
    yield b + "backup.info", binfo
    yield b + "backup.info.copy", binfo
    for label in labels:
        yield f"{b}{label}/backup.manifest", b""
        yield f"{b}{label}/backup.manifest.copy", b""
    a = f"{spec.prefix}/archive/main/"
    yield a + "archive.info", ainfo
    yield a + "archive.info.copy", ainfo
