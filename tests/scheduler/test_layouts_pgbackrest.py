"""pgBackRest readers, tested on real pgBackRest 2.45 files (tests/scheduler/data/pgbackrest/)."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.errors import MetadataError
from recovery.lsn import Lsn
from recovery.model import BackupStatus, BackupType, WalKind, WalObject
from recovery.wal import segment_name
from scheduler.layouts import pgbackrest as pb
from scheduler.layouts.common import ForeignObject, MetaObject, decode_text

DATA = Path(__file__).parent / "data" / "pgbackrest"
SEG = 16 * 1024 * 1024
SHA = "e71f2be7f1adcbb68b7b4af606646c230276e314"
SYSID = 7712073161737709304


def read(name: str) -> str:
    return (DATA / name).read_text()


def with_checksum(text: str) -> str:
    """Re-sign edited info text the way pgBackRest would (parser computes the actual checksum)."""
    body = text.rsplit("[backrest]\nbackrest-checksum=", 1)[0]
    parts: list[str] = []
    last = section = None
    for line in body.split("\n"):
        if not line:
            continue
        if line.startswith("["):
            section = line[1:-1]
            continue
        key, _, raw = line.partition("=")
        if key == "pg_data/a":   # the one test key that contains '='
            key, raw = "pg_data/a=b", raw[2:]
        parts.append(("}," if last else "") + f'"{section}":{{' if section != last else ",")
        parts.append(f"{json.dumps(key)}:{raw}")
        last = section
    digest = hashlib.sha1(("{" + "".join(parts) + "}}").encode()).hexdigest()
    return body + f'[backrest]\nbackrest-checksum="{digest}"\n'


# --- info files and checksums -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["backup.info", "archive.info", "backup.manifest.incr"])
def test_real_files_checksum_verifies(name: str) -> None:
    info = pb.parse_info(read(name), name)
    assert info.checksum_ok
    assert info.checksum_actual == info.checksum_expected
    assert info.format == 5 and info.version == "2.45"


def test_checksum_rendering_matches_documented_json() -> None:
    """The hash input is pgBackRest's JSON rendering: sections in order, raw values, no checksum."""
    text = read("archive.info")
    rendering = ('{"backrest":{"backrest-format":5,"backrest-version":"2.45"},'
                 f'"db":{{"db-id":1,"db-system-id":{SYSID},"db-version":"15"}},'
                 f'"db:history":{{"1":{{"db-id":{SYSID},"db-version":"15"}}}}}}')
    assert pb.parse_info(text, "a").checksum_expected == hashlib.sha1(rendering.encode()).hexdigest()


@pytest.mark.parametrize("name", ["backup.info", "archive.info"])
def test_flipped_byte_fails_checksum(name: str) -> None:
    text = read(name)
    pos = text.index(str(SYSID)) + 3
    flipped = text[:pos] + ("1" if text[pos] != "1" else "2") + text[pos + 1:]
    info = pb.parse_info(flipped, name)
    assert not info.checksum_ok
    assert info.checksum_expected != info.checksum_actual


def test_checksum_mismatch_reported_by_typed_parsers() -> None:
    text = read("backup.info").replace('"backup-info-size":23213929', '"backup-info-size":23213920')
    assert pb.parse_backup_info(text, "b").checksum_ok is False
    assert pb.parse_backup_info(read("backup.info"), "b").checksum_ok is True


@pytest.mark.parametrize("cut", [0.2, 0.5, 0.9, 0.999])
def test_truncated_file_is_metadata_error(cut: int) -> None:
    text = read("backup.info")
    with pytest.raises(MetadataError) as e:
        pb.parse_info(text[: int(len(text) * cut)], "repo/backup/main/backup.info")
    assert "repo/backup/main/backup.info" in str(e.value)


def test_truncated_at_line_boundary_names_line() -> None:
    lines = read("backup.info").split("\n")
    with pytest.raises(MetadataError, match=r"backup.info: .*line 12") as e:
        pb.parse_info("\n".join(lines[:12]) + "\n", "backup.info")
    assert e.value.code == "truncated"


def test_truncated_mid_value_names_line() -> None:
    text = read("backup.info")
    cut = text.index('"backup-lsn-stop":"0/4000138"')
    with pytest.raises(MetadataError, match=r"line 7: invalid JSON value") as e:
        pb.parse_info(text[:cut], "backup.info")
    assert e.value.code == "format_error"


@pytest.mark.parametrize("garbage", ["", "\n\n", "hello world\n", "key=1\n", "[backrest]\nno equals\n",
                                     "[]\n", "[db]\n=1\n", "\x00\x01\x02\x03"])
def test_garbage_is_metadata_error(garbage: str) -> None:
    with pytest.raises(MetadataError):
        pb.parse_info(garbage, "x")


def test_wrong_format() -> None:
    text = with_checksum(read("archive.info").replace("backrest-format=5", "backrest-format=4"))
    with pytest.raises(MetadataError) as e:
        pb.parse_info(text, "archive.info")
    assert e.value.code == "format_error" and "found 4" in str(e.value)


def test_encrypted_file_refused() -> None:
    data = (DATA / "backup.info.encrypted").read_bytes()
    assert data.startswith(b"Salted__")
    with pytest.raises(MetadataError) as e:
        decode_text(data, "backup.info")
    assert e.value.code == "encrypted"
    with pytest.raises(MetadataError) as e:
        pb.parse_info(data.decode("latin-1"), "backup.info")
    assert e.value.code == "encrypted"


def test_key_with_equals_sign_and_repeated_section() -> None:
    text = with_checksum('[backrest]\nbackrest-format=5\n\n[target:file]\npg_data/a=b={"size":1}\n'
                         '[backrest]\nbackrest-version="2.45"\n')
    info = pb.parse_info(text, "x")
    assert info.checksum_ok
    assert info.sections["target:file"] == {"pg_data/a=b": {"size": 1}}
    assert info.sections["backrest"]["backrest-version"] == "2.45"


# --- backup.info ------------------------------------------------------------------------------

def test_backup_info_real() -> None:
    bi = pb.parse_backup_info(read("backup.info"), "pgbackrest/backup/main/backup.info")
    assert bi.checksum_ok and bi.system_id == SYSID and bi.pg_version == 150000
    assert bi.db_history == {1: ("15", SYSID)}
    full, incr, diff = bi.backups
    assert (full.label, full.type, full.status) == ("20261125-114240F", BackupType.FULL, BackupStatus.DONE)
    assert full.start_lsn == Lsn.parse("0/2000028") and full.stop_lsn == Lsn.parse("0/2000100")
    assert full.start_time == datetime(2026, 11, 25, 11, 42, 40, tzinfo=timezone.utc)
    assert full.stop_time == datetime(2026, 11, 25, 11, 42, 43, tzinfo=timezone.utc)
    assert full.depends_on == () and full.parent is None and full.timeline == 1
    assert full.size_bytes == 23213929 and full.repo_size_bytes == 3062631
    assert full.system_id == SYSID and full.pg_version == 150000 and full.usable
    assert incr.type is BackupType.INCR and incr.depends_on == ("20261125-114240F",)
    assert incr.parent == "20261125-114240F" and incr.stop_lsn == Lsn.parse("0/4000138")
    assert diff.type is BackupType.DIFF and diff.parent == "20261125-114240F"
    assert all(b.metadata_key == "pgbackrest/backup/main/backup.info" for b in bi.backups)


def _entry(**over: object) -> str:
    e: dict[str, object] = {
        "backrest-format": 5, "backup-archive-start": "000000030000000A000000FF",
        "backup-archive-stop": "000000030000000B00000000", "backup-lsn-start": "A/FF000028",
        "backup-lsn-stop": "B/100", "backup-timestamp-start": 1767268800, "backup-timestamp-stop": 1767268825,
        "backup-type": "incr", "db-id": 2, "backup-error": True,
        "backup-prior": "20260101-120000F_20260101-120010D",
        "backup-reference": ["20260101-120000F", "20260101-120000F_20260101-120010D"],
    }
    e.update(over)
    return json.dumps(e, separators=(",", ":"))


def _backup_info(entry: str, label: str = "20260101-120000F_20260101-120030I") -> str:
    return with_checksum(
        '[backrest]\nbackrest-format=5\nbackrest-version="2.45"\n\n'
        f"[backup:current]\n{label}={entry}\n\n"
        '[db]\ndb-catalog-version=202307071\ndb-control-version=1300\ndb-id=2\n'
        'db-system-id=18446744073709551615\ndb-version="16"\n\n'
        '[db:history]\n1={"db-catalog-version":201608131,"db-control-version":960,'
        '"db-system-id":9007199254740993,"db-version":"9.6"}\n'
        '2={"db-catalog-version":202307071,"db-control-version":1300,'
        '"db-system-id":18446744073709551615,"db-version":"16"}\n')


def test_backup_info_history_timeline_and_big_system_ids() -> None:
    bi = pb.parse_backup_info(_backup_info(_entry()), "b")
    (b,) = bi.backups
    assert bi.checksum_ok and bi.system_id == 2**64 - 1 and bi.pg_version == 160000
    assert bi.db_history == {1: ("9.6", 2**53 + 1), 2: ("16", 2**64 - 1)}
    assert b.timeline == 3 and b.system_id == 2**64 - 1 and b.pg_version == 160000
    assert b.depends_on == ("20260101-120000F", "20260101-120000F_20260101-120010D")
    assert b.error is not None and b.status is BackupStatus.DONE
    assert pb.parse_backup_info(_backup_info(_entry(**{"db-id": 1})), "b").backups[0].pg_version == 90600


def test_backup_info_without_lsns_is_not_usable() -> None:
    entry = json.loads(_entry())
    del entry["backup-lsn-start"], entry["backup-lsn-stop"]
    (b,) = pb.parse_backup_info(_backup_info(json.dumps(entry)), "b").backups
    assert b.start_lsn is None and b.stop_lsn is None and not b.usable


@pytest.mark.parametrize("over, label", [
    ({"backup-type": "snapshot"}, None),
    ({"backup-lsn-stop": "nonsense"}, None),
    ({"backup-archive-start": "00000001000000000000000g"}, None),
    ({"backup-timestamp-stop": "yesterday"}, None),
    ({"backup-reference": "20260101-120000F"}, None),
    ({}, "not-a-label"),
])
def test_backup_info_bad_entries(over: dict[str, object], label: str | None) -> None:
    text = _backup_info(_entry(**over), label or "20260101-120000F_20260101-120030I")
    with pytest.raises(MetadataError) as e:
        pb.parse_backup_info(text, "repo/backup.info")
    assert "repo/backup.info" in str(e.value)


# --- archive.info -----------------------------------------------------------------------------

def test_archive_info_real() -> None:
    ai = pb.parse_archive_info(read("archive.info"), "archive.info")
    assert ai == pb.ArchiveInfo(("15-1",), SYSID, 150000, True)


def test_archive_info_all_history_entries_in_key_order() -> None:
    text = with_checksum('[backrest]\nbackrest-format=5\nbackrest-version="2.45"\n\n'
                         '[db]\ndb-id=10\ndb-system-id=2\ndb-version="10"\n\n'
                         '[db:history]\n1={"db-id":1,"db-version":"9.6"}\n'
                         '2={"db-id":2,"db-version":"10"}\n10={"db-id":2,"db-version":"10"}\n')
    ai = pb.parse_archive_info(text, "archive.info")
    assert ai.archive_ids == ("9.6-1", "10-2", "10-10")
    assert ai.pg_version == 100000 and ai.system_id == 2


# --- backup.manifest --------------------------------------------------------------------------

def test_manifest_header_real_matches_backup_info() -> None:
    m = pb.parse_manifest_header(read("backup.manifest.incr"), "m")
    (_, incr, _) = pb.parse_backup_info(read("backup.info"), "b").backups
    assert m.label == incr.label and m.type is BackupType.INCR and m.status is BackupStatus.DONE
    for field in ("start_lsn", "stop_lsn", "start_time", "stop_time", "depends_on", "parent", "timeline",
                  "system_id", "pg_version", "size_bytes", "repo_size_bytes"):
        assert getattr(m, field) == getattr(incr, field), field


def test_manifest_copy_only_is_running() -> None:
    m = pb.parse_manifest_header(read("backup.manifest.incr"), "m.copy", final=False)
    assert m.status is BackupStatus.RUNNING and not m.usable


def test_manifest_without_stop_is_running() -> None:
    text = read("backup.manifest.incr").replace('backup-lsn-stop="0/4000138"\n', "")
    m = pb.parse_manifest_header(with_checksum(text), "m")
    assert m.status is BackupStatus.RUNNING and m.stop_lsn is None


def test_manifest_checksum_mismatch_raises() -> None:
    text = read("backup.manifest.incr").replace('"size":3,', '"size":4,', 1)
    assert text != read("backup.manifest.incr")
    with pytest.raises(MetadataError) as e:
        pb.parse_manifest_header(text, "m")
    assert e.value.code == "checksum_mismatch"


# --- keys --------------------------------------------------------------------------------------

def test_real_archive_listing_classifies() -> None:
    names = read("archive-listing.txt").split()
    out = [pb.classify_archive_key(f"0000000100000000/{n}", SEG) for n in names]
    assert all(isinstance(o, WalObject) for o in out), out
    kinds = [o.kind for o in out if isinstance(o, WalObject)]
    assert kinds.count(WalKind.SEGMENT) == 8 and kinds.count(WalKind.BACKUP_LABEL) == 3


@pytest.mark.parametrize("rel, kind, name, tli, segno, comp, checksum", [
    (f"0000000100000000/000000010000000000000001-{SHA}.gz", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "gz", SHA),
    (f"0000000100000000/000000010000000000000001-{SHA}", WalKind.SEGMENT, "000000010000000000000001", 1, 1, None, SHA),
    (f"0000000200000000/00000002000000000000000B-{SHA}.lz4", WalKind.SEGMENT, "00000002000000000000000B", 2, 11, "lz4", SHA),
    (f"0000000100000001/000000010000000100000002-{SHA}.zst", WalKind.SEGMENT, "000000010000000100000002", 1, 258, "zst", SHA),
    (f"0000000100000000/000000010000000000000001-{SHA}.bz2", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "bz2", SHA),
    (f"0000000100000000/000000010000000000000001-{SHA}.xz", WalKind.SEGMENT, "000000010000000000000001", 1, 1, "xz", SHA),
    (f"0000000100000000/000000010000000000000003.partial-{SHA}.gz", WalKind.PARTIAL, "000000010000000000000003.partial", 1, 3, "gz", SHA),
    ("0000000100000000/000000010000000000000003.000000D8.backup", WalKind.BACKUP_LABEL, "000000010000000000000003.000000D8.backup", 1, 3, None, None),
    ("00000002.history", WalKind.HISTORY, "00000002.history", 2, None, None, None),
    ("0000000A.history", WalKind.HISTORY, "0000000A.history", 10, None, None, None),
])
def test_archive_keys(rel: str, kind: WalKind, name: str, tli: int, segno: int | None,
                      comp: str | None, checksum: str | None) -> None:
    assert pb.classify_archive_key(rel, SEG) == WalObject(kind, name, tli, segno, comp, checksum)


@pytest.mark.parametrize("rel", [
    "0000000100000000/000000010000000000000001.gz",                        # no hash
    f"0000000100000000/000000010000000000000001-{SHA}.snappy",             # unknown suffix
    f"0000000100000000/000000010000000000000001-{SHA}.gz.gz",
    f"0000000100000000/000000010000000000000001-{SHA.upper()}.gz",         # upper-case sha
    f"0000000100000000/000000010000000000000001-{SHA[:39]}.gz",            # short sha
    f"0000000100000000/00000001000000000000000a-{SHA}.gz",                 # lower-case name
    f"0000000100000001/000000010000000000000001-{SHA}.gz",                 # wrong directory
    f"0000000100000000/000000010000000000000100-{SHA}.gz",                 # seg out of range
    f"000000010000000/000000010000000000000001-{SHA}.gz",                  # short directory
    f"0000000100000000/x/000000010000000000000001-{SHA}.gz",               # too deep
    f"000000010000000000000001-{SHA}.gz",                                  # segment at root
    "0000000100000000/00000002.history",                                   # history in a directory
    "00000002.history.gz",                                                 # compressed history
    "0000000100000000/000000010000000000000003.000000D8.backup.gz",
    f"0000000100000000/../0000000100000000/000000010000000000000001-{SHA}.gz",
    "archive.info",
    "0000000100000000/README",
    "",
])
def test_foreign_archive_keys(rel: str) -> None:
    out = pb.classify_archive_key(rel, SEG)
    assert isinstance(out, ForeignObject) and out.key == rel and out.reason


def test_archive_key_respects_segment_size() -> None:
    rel = f"0000000100000000/000000010000000000000040-{SHA}.gz"
    assert isinstance(pb.classify_archive_key(rel, 16 * 1024 * 1024), WalObject)
    assert isinstance(pb.classify_archive_key(rel, 64 * 1024 * 1024), ForeignObject)
    w = pb.classify_archive_key(f"0000000100000001/000000010000000100000003-{SHA}", 64 * 1024 * 1024)
    assert isinstance(w, WalObject) and w.segno == 64 + 3


@pytest.mark.parametrize("name, kind, label", [
    ("20260101-120000F/", "backup_dir", "20260101-120000F"),
    ("20260101-120000F_20260101-120030I/", "backup_dir", "20260101-120000F_20260101-120030I"),
    ("20260101-120000F_20260102-000000D/", "backup_dir", "20260101-120000F_20260102-000000D"),
    ("backup.info", "backup_info", None),
    ("backup.info.copy", "backup_info_copy", None),
    ("backup.history/", "backup_history", None),
    ("latest", "latest_link", None),
])
def test_backup_root_entries(name: str, kind: str, label: str | None) -> None:
    assert pb.classify_backup_root_entry(name) == MetaObject(name, kind, label)


@pytest.mark.parametrize("name", ["20260101-120000F", "20260101-120000I/", "2026010-120000F/",
                                  "20260101-120000F_20260101-120030F/", "backup.info.bak", "tmp/", ""])
def test_backup_root_foreign(name: str) -> None:
    assert isinstance(pb.classify_backup_root_entry(name), ForeignObject)


def test_real_backup_root_listing() -> None:
    keys = read("repo-keys.txt").split()
    entries = {k.split("/")[3] + ("/" if k.count("/") > 3 else "") for k in keys if k.startswith("./backup/main/")}
    out = {e: pb.classify_backup_root_entry(e) for e in entries}
    assert all(isinstance(o, MetaObject) for o in out.values()), out
    assert sum(o.kind == "backup_dir" for o in out.values()) == 3


@pytest.mark.parametrize("name, kind", [("archive.info", "archive_info"), ("archive.info.copy", "archive_info_copy"),
                                        ("15-1/", "archive_id"), ("9.6-1/", "archive_id"), ("16-12/", "archive_id")])
def test_archive_root_entries(name: str, kind: str) -> None:
    assert isinstance(o := pb.classify_archive_root_entry(name), MetaObject) and o.kind == kind


@pytest.mark.parametrize("name", ["15-0/", "15/", "15-1", "x-1/", "archive.info.bak"])
def test_archive_root_foreign(name: str) -> None:
    assert isinstance(pb.classify_archive_root_entry(name), ForeignObject)


@pytest.mark.parametrize("label, t, full", [
    ("20260101-120000F", BackupType.FULL, "20260101-120000F"),
    ("20260101-120000F_20260101-120030I", BackupType.INCR, "20260101-120000F"),
    ("20260101-120000F_20260101-120030D", BackupType.DIFF, "20260101-120000F"),
    ("20260101-120000X", None, None),
])
def test_labels(label: str, t: BackupType | None, full: str | None) -> None:
    assert pb.label_type(label) == t and pb.label_full(label) == full and pb.is_label(label) == (t is not None)


# --- properties -------------------------------------------------------------------------------

seg_sizes = st.sampled_from([1 << 20, 16 << 20, 64 << 20, 1 << 30])


@given(st.integers(1, 0xFFFFFFFF), st.integers(0, 2**40), seg_sizes,
       st.sampled_from([None, "gz", "lz4", "zst", "bz2"]), st.binary(min_size=20, max_size=20))
def test_segment_key_round_trip(tli: int, segno: int, seg_size: int, ext: str | None, digest: bytes) -> None:
    segno %= (2**64 // seg_size)
    name = segment_name(tli, segno, seg_size)
    sha = digest.hex()
    rel = f"{name[:16]}/{name}-{sha}" + (f".{ext}" if ext else "")
    w = pb.classify_archive_key(rel, seg_size)
    assert w == WalObject(WalKind.SEGMENT, name, tli, segno, ext, sha)


@given(st.text(max_size=80))
def test_classify_never_raises(rel: str) -> None:
    out = pb.classify_archive_key(rel, SEG)
    assert isinstance(out, (WalObject, ForeignObject))
    assert isinstance(pb.classify_backup_root_entry(rel), (MetaObject, ForeignObject))


@given(st.text(max_size=300))
def test_parse_info_never_raises_foreign_errors(text: str) -> None:
    try:
        pb.parse_info(text, "x")
    except MetadataError:
        pass


@pytest.mark.parametrize("name", ["backup.info", "archive.info", "backup.manifest.incr"])
def test_independent_signer_reproduces_real_files(name: str) -> None:
    """The test oracle (with_checksum) signs real files exactly as pgBackRest 2.45 did."""
    assert with_checksum(read(name)) == read(name)
