"""barman-cloud readers; backup.info is LAYOUTS.md §2.2's observed sample, verbatim, plus variants."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.errors import MetadataError
from recovery.lsn import Lsn
from recovery.model import BackupStatus, BackupType, WalKind, WalObject
from recovery.wal import segment_name
from scheduler.layouts import barman
from scheduler.layouts.common import ForeignObject, MetaObject

SAMPLE = (Path(__file__).parent / "data" / "barman" / "backup.info").read_text()
SEG = 16 * 1024 * 1024


def variant(**fields: str) -> str:
    lines = []
    for line in SAMPLE.splitlines():
        key = line.partition("=")[0]
        if key in fields:
            if fields[key] != "<drop>":
                lines.append(f"{key}={fields[key]}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def test_sample_backup_info() -> None:
    b = barman.parse_backup_info(SAMPLE, "20260101T120000", "barman/main/base/20260101T120000/backup.info")
    assert b.label == "20260101T120000"          # from the path, not server_name=cloud
    assert (b.type, b.status, b.timeline) == (BackupType.FULL, BackupStatus.DONE, 1)
    assert b.start_lsn == Lsn.parse("0/30000D8") and b.stop_lsn == Lsn.parse("0/4000050")
    assert b.start_time == datetime(2026, 1, 1, 12, 0, 0, 611893, tzinfo=timezone.utc)
    assert b.stop_time == datetime(2026, 1, 1, 12, 0, 2, 822410, tzinfo=timezone.utc)
    assert b.stop_time_exact
    assert b.pg_version == 150018 and b.system_id == 7590361637496755758
    assert b.seg_size == SEG and b.size_bytes == 31009840 and b.repo_size_bytes is None
    assert b.depends_on == () and b.parent is None and b.error is None and b.usable
    assert b.metadata_key == "barman/main/base/20260101T120000/backup.info"
    # begin_offset is the decimal offset of begin_xlog in its segment
    assert b.start_lsn.value % SEG == 216


@pytest.mark.parametrize("status, expected", [
    ("DONE", BackupStatus.DONE), ("FAILED", BackupStatus.FAILED), ("STARTED", BackupStatus.RUNNING),
    ("EMPTY", BackupStatus.RUNNING), ("WAITING_FOR_WALS", BackupStatus.RUNNING), ("SYNCING", BackupStatus.RUNNING),
])
def test_status_mapping(status: str, expected: BackupStatus) -> None:
    assert barman.parse_backup_info(variant(status=status), "x", "s").status is expected


def test_failed_with_error_and_started_without_end() -> None:
    failed = barman.parse_backup_info(variant(status="FAILED", error="failure uploading data (connection reset)"),
                                      "x", "s")
    assert failed.status is BackupStatus.FAILED and failed.error == "failure uploading data (connection reset)"
    started = barman.parse_backup_info(variant(status="STARTED", end_time="None", end_xlog="None",
                                               end_wal="None"), "x", "s")
    assert started.status is BackupStatus.RUNNING and started.stop_lsn is None and started.stop_time is None
    assert not started.usable


def test_unknown_status_is_failed_with_note() -> None:
    b = barman.parse_backup_info(variant(status="MYSTERY"), "x", "s")
    assert b.status is BackupStatus.FAILED and "MYSTERY" in (b.error or "")


def test_naive_times_taken_as_utc_and_flagged() -> None:
    b = barman.parse_backup_info(variant(begin_time="2026-01-01 12:00:00.611893",
                                         end_time="2026-01-01 12:00:02.822410"), "x", "s")
    assert b.stop_time == datetime(2026, 1, 1, 12, 0, 2, 822410, tzinfo=timezone.utc)
    assert b.stop_time_exact is False


def test_other_zone_normalised_to_utc() -> None:
    b = barman.parse_backup_info(variant(end_time="2026-01-01 13:00:02.822410+01:00"), "x", "s")
    assert b.stop_time == datetime(2026, 1, 1, 12, 0, 2, 822410, tzinfo=timezone.utc)
    assert b.stop_time.tzinfo is timezone.utc


def test_other_segment_size_and_big_system_id() -> None:
    b = barman.parse_backup_info(variant(xlog_segment_size=str(64 << 20), systemid="18446744073709551615"), "x", "s")
    assert b.seg_size == 64 << 20 and b.system_id == 2**64 - 1


def test_incremental_backup_parent() -> None:
    b = barman.parse_backup_info(variant(parent_backup_id="20251231T120000"), "x", "s")
    assert b.type is BackupType.INCR and b.parent == "20251231T120000" and b.depends_on == ("20251231T120000",)


@pytest.mark.parametrize("fields", [
    {"status": "<drop>"},
    {"begin_xlog": "0/XYZ"},
    {"end_time": "yesterday"},
    {"timeline": "one"},
    {"xlog_segment_size": "1000"},
    {"systemid": "abc"},
])
def test_bad_values(fields: dict[str, str]) -> None:
    with pytest.raises(MetadataError) as e:
        barman.parse_backup_info(variant(**fields), "x", "barman/main/base/x/backup.info")
    assert "barman/main/base/x/backup.info" in str(e.value)


@pytest.mark.parametrize("text", ["", "\n", "just some words\n", "[section]\nkey=value\n", "\x00\x01"])
def test_garbage(text: str) -> None:
    with pytest.raises(MetadataError):
        barman.parse_backup_info(text, "x", "s")


@pytest.mark.parametrize("marker", ["end_xlog=0/40", "status=DO", "version=1500", "xlog_segment_size=167"])
def test_truncated_mid_line(marker: str) -> None:
    key = marker.partition("=")[0]
    cut = SAMPLE[: SAMPLE.index(key + "=") + len(marker)]
    with pytest.raises(MetadataError) as e:
        barman.parse_backup_info(cut, "x", "base/x/backup.info")
    assert e.value.code == "truncated" and "base/x/backup.info" in str(e.value)


def test_truncated_at_line_boundary_before_required_fields() -> None:
    cut = SAMPLE[: SAMPLE.index("begin_time=")]
    with pytest.raises(MetadataError):        # status is lost too
        barman.parse_backup_info(cut, "x", "s")
    with pytest.raises(MetadataError, match="no end_time"):
        barman.parse_backup_info(variant(end_time="<drop>"), "x", "s")


# --- keys --------------------------------------------------------------------------------------

@pytest.mark.parametrize("rel, kind, name, tli, segno, comp", [
    ("0000000100000000/000000010000000000000001.gz", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "gz"),
    ("0000000100000000/000000010000000000000001", WalKind.SEGMENT, "000000010000000000000001", 1, 1, None),
    ("0000000100000000/000000010000000000000001.bz2", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "bz2"),
    ("0000000100000000/000000010000000000000001.xz", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "xz"),
    ("0000000100000000/000000010000000000000001.snappy", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "snappy"),
    ("0000000100000000/000000010000000000000001.zst", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "zst"),
    ("0000000100000000/000000010000000000000001.lz4", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "lz4"),
    ("0000000100000000/000000010000000000000003.000000D8.backup.gz", WalKind.BACKUP_LABEL,
     "000000010000000000000003.000000D8.backup", 1, 3, "gz"),
    ("0000000100000000/000000010000000000000003.partial.gz", WalKind.PARTIAL,
     "000000010000000000000003.partial", 1, 3, "gz"),
    ("00000002.history.gz", WalKind.HISTORY, "00000002.history", 2, None, "gz"),
    ("00000002.history", WalKind.HISTORY, "00000002.history", 2, None, None),
])
def test_wal_keys(rel: str, kind: WalKind, name: str, tli: int, segno: int | None, comp: str | None) -> None:
    assert barman.classify_wal_key(rel, SEG) == WalObject(kind, name, tli, segno, comp, None)


@pytest.mark.parametrize("rel", [
    "0000000100000000/000000010000000000000001.gz.gz",      # two suffixes
    "0000000100000000/000000010000000000000001.lzo",        # not barman's
    "0000000100000000/000000010000000000000001.tmp",
    "0000000100000000/00000001000000000000000a.gz",         # lower case
    "0000000100000001/000000010000000000000001.gz",         # wrong hash dir
    "000000010000000000000001.gz",                          # segment at the root
    "0000000100000000/00000002.history.gz",                 # history inside a hash dir
    "0000000100000000/x/000000010000000000000001.gz",
    "../wals/0000000100000000/000000010000000000000001.gz",
    "0000000100000000/000000010000000000000100.gz",         # out of range at 16 MiB
    "0000000100000000/",
    "README",
])
def test_foreign_wal_keys(rel: str) -> None:
    out = barman.classify_wal_key(rel, SEG)
    assert isinstance(out, ForeignObject) and out.reason


@pytest.mark.parametrize("rel, kind", [
    ("20260101T120000/backup.info", "backup_info"),
    ("20260101T120000/data.tar", "payload"),
    ("20260101T120000/data.tar.gz", "payload"),
    ("20260101T120000/data_0001.tar.gz", "payload"),
    ("20260101T120000/16385.tar.bz2", "payload"),
    ("20260101T120000/16385_0002.tar.snappy", "payload"),
    ("20260101T120000/annotations/keep", "annotation"),
    ("20260101T120000/", "backup_dir"),
])
def test_base_keys(rel: str, kind: str) -> None:
    assert barman.classify_base_key(rel) == MetaObject(rel, kind, "20260101T120000")


@pytest.mark.parametrize("rel", ["2026-01-01/backup.info", "20260101T120000/backup.info.tmp",
                                 "20260101T120000/data.zip", "20260101T120000/a/b/c", "backup.info",
                                 "20260101T120000/../x/backup.info"])
def test_foreign_base_keys(rel: str) -> None:
    assert isinstance(barman.classify_base_key(rel), ForeignObject)


@given(st.integers(1, 0xFFFFFFFF), st.integers(0, 2**40), st.sampled_from([1 << 20, 16 << 20, 1 << 30]),
       st.sampled_from([None, "gz", "bz2", "xz", "snappy", "zst", "lz4"]),
       st.sampled_from(["", ".partial"]))
def test_wal_key_round_trip(tli: int, segno: int, seg_size: int, ext: str | None, tail: str) -> None:
    segno %= 2**64 // seg_size
    name = segment_name(tli, segno, seg_size) + tail
    rel = f"{name[:16]}/{name}" + (f".{ext}" if ext else "")
    w = barman.classify_wal_key(rel, seg_size)
    assert isinstance(w, WalObject) and (w.name, w.timeline, w.segno, w.compression) == (name, tli, segno, ext)


@given(st.text(max_size=80))
def test_classify_never_raises(rel: str) -> None:
    assert isinstance(barman.classify_wal_key(rel, SEG), (WalObject, ForeignObject))
    assert isinstance(barman.classify_base_key(rel), (MetaObject, ForeignObject))


@given(st.text(max_size=300))
def test_parse_never_raises_foreign_errors(text: str) -> None:
    try:
        barman.parse_backup_info(text, "x", "s")
    except MetadataError:
        pass
