"""The executor's pure parts: plan checks, fetch command lines per layout, settings text, log verdicts."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor import logic
from executor.logic import S3Access, StorageLoc
from recovery.lsn import Lsn
from recovery.plandoc import PlanDocError, PlanReplay
from scheduler.layouts import pgbackrest as pbr
from tests.support.plans import plan, raw_plan

S3 = S3Access("http://127.0.0.1:9000", "AK", "SK", "eu-west-1")
PGBR = StorageLoc("pgbackrest", "bkt", "pgbackrest", "main")


# -- the plan's archive ------------------------------------------------------------------------------------------

def test_storage_from_an_older_plan() -> None:
    assert logic.storage_of(plan()) == StorageLoc("pgbackrest", "bkt", "pgbackrest", "main")
    doc = plan(storage=None, source={**raw_plan()["source"], "layout": "barman"},
               restore_command="barman-cloud-wal-restore --endpoint-url http://h:1 --no-partial s3://b/x/y main %f %p")
    assert logic.storage_of(doc) == StorageLoc("barman", "b", "x/y", "main")
    with pytest.raises(PlanDocError, match="no storage member"):
        plan(storage=None)
    assert plan(storage={"layout": None, "bucket": "b", "prefix": "p", "stanza": None}).storage.layout == "pgbackrest"
    with pytest.raises(PlanDocError, match=r"storage\.layout is unknown"):
        logic.storage_of(plan(storage={"layout": None, "bucket": "b", "prefix": "p", "stanza": None},
                              source={**raw_plan()["source"], "layout": None}))


# -- fetch command lines ------------------------------------------------------------------------------------------

def test_pgbackrest_fetch_is_type_none_with_a_private_config() -> None:
    c = logic.fetch_command(PGBR, "L", "/data", S3, work="/w")
    assert c.argv == ("pgbackrest", "--stanza=main", "--set=L", "--type=none", "--pg1-path=/data", "restore")
    assert c.env["PGBACKREST_CONFIG"] == "/w/pgbackrest.conf"
    conf = c.files["pgbackrest.conf"]
    for line in ("repo1-type=s3", "repo1-s3-bucket=bkt", "repo1-path=/pgbackrest", "repo1-s3-endpoint=127.0.0.1",
                 "repo1-storage-port=9000", "repo1-s3-uri-style=path", "repo1-s3-region=eu-west-1",
                 "repo1-s3-key=AK", "repo1-s3-key-secret=SK", "[main]", "pg1-path=/data", "lock-path=/w/lock"):
        assert line in conf.splitlines(), line
    # nothing the environment should be able to override is on the command line
    assert not any(a.startswith("--repo1") for a in c.argv)


def test_pgbackrest_conf_variants() -> None:
    conf = pbr.pgbackrest_conf(PGBR, S3Access(None, None, None, "us-east-2", False, "/ca.pem"),
                                 pgdata="/d", work="/w").splitlines()
    assert "repo1-s3-endpoint=s3.us-east-2.amazonaws.com" in conf
    assert "repo1-storage-verify-tls=n" in conf and "repo1-storage-ca-file=/ca.pem" in conf
    assert not any(ln.startswith(("repo1-s3-key", "repo1-s3-uri-style", "repo1-storage-port")) for ln in conf)
    other = pbr.pgbackrest_conf(StorageLoc("pgbackrest", "b", "", None), S3, pgdata="/d", work="/w")
    assert "repo1-path=/" in other.splitlines() and "[main]" in other.splitlines()


def test_barman_fetch() -> None:
    c = logic.fetch_command(StorageLoc("barman", "b", "pre/fix", "srv"), "20260101T000000", "/d", S3, work="/w")
    assert c.argv == ("barman-cloud-restore", "--endpoint-url", "http://127.0.0.1:9000", "s3://b/pre/fix", "srv",
                      "20260101T000000", "/d")
    assert c.env["AWS_ACCESS_KEY_ID"] == "AK" and c.env["AWS_DEFAULT_REGION"] == "eu-west-1"
    c2 = logic.fetch_command(StorageLoc("barman", "b", "", "srv"), "X", "/d", S3Access(), work="/w")
    assert c2.argv == ("barman-cloud-restore", "s3://b", "srv", "X", "/d") and "AWS_ACCESS_KEY_ID" not in c2.env
    with pytest.raises(PlanDocError, match="server name"):
        logic.fetch_command(StorageLoc("barman", "b", "p", None), "X", "/d", S3, work="/w")


def test_wale_fetch() -> None:
    c = logic.fetch_command(StorageLoc("wale", "b", "wale", None), "base_000000010000000000000002_00000040", "/d",
                            S3, work="/w")
    assert c.argv == ("wal-e", "backup-fetch", "/d", "base_000000010000000000000002_00000040")
    assert c.env["WALE_S3_PREFIX"] == "s3://b/wale" and c.env["WALE_S3_ENDPOINT"] == "http+path://127.0.0.1:9000"
    c2 = logic.fetch_command(StorageLoc("wale", "b", "w", None), "L", "/d", S3Access("https://s3.x"), work="/w")
    assert c2.env["WALE_S3_ENDPOINT"] == "https+path://s3.x:443"


def test_walg_fetch_from_its_documented_cli() -> None:
    c = logic.fetch_command(StorageLoc("walg", "b", "walg", None), "base_000000010000000000000002", "/d",
                            S3Access("http://127.0.0.1:9000", "AK", "SK", ca_bundle="/ca"), work="/w")
    assert c.argv == ("wal-g", "backup-fetch", "/d", "base_000000010000000000000002")
    assert c.env["WALG_S3_PREFIX"] == "s3://b/walg" and c.env["AWS_ENDPOINT"] == "http://127.0.0.1:9000"
    assert c.env["AWS_S3_FORCE_PATH_STYLE"] == "true" and c.env["WALG_S3_CA_CERT_FILE"] == "/ca"
    assert "not installed here" in c.label
    with pytest.raises(PlanDocError):
        logic.fetch_command(StorageLoc("tar", "b", "p", None), "L", "/d", S3, work="/w")


def test_server_env_passthrough_wins() -> None:
    caller = {"PGBACKREST_REPO1_STORAGE_PORT": "4433", "PGBACKREST_CONFIG": "/etc/mine.conf",
              "AWS_SESSION_TOKEN": "tok", "AWS_ACCESS_KEY_ID": "caller", "AWS_ENDPOINT_URL": "http://x:9",
              "WALG_S3_PREFIX": "s3://w", "HOME": "/root", "CATALOG_DSN": "postgresql://secret"}
    env = logic.server_env(PGBR, S3, work="/w", caller_env=caller, path="/tools:/usr/bin")
    assert env["PGBACKREST_CONFIG"] == "/etc/mine.conf" and env["PGBACKREST_REPO1_STORAGE_PORT"] == "4433"
    assert env["AWS_ACCESS_KEY_ID"] == "AK"           # the settings' credentials, not the caller's
    assert env["AWS_SESSION_TOKEN"] == "tok"          # what the settings do not say comes from the caller
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"    # the settings' endpoint, not the caller's
    assert "CATALOG_DSN" not in env and "HOME" not in env
    assert env["WALG_S3_PREFIX"] == "s3://w" and env["PATH"] == "/tools:/usr/bin"
    plain = logic.server_env(PGBR, S3, work="/w", caller_env={}, path="/usr/bin")
    assert plain["PGBACKREST_CONFIG"] == "/w/pgbackrest.conf"
    assert "PGBACKREST_CONFIG" not in logic.server_env(StorageLoc("barman", "b", "p", "m"), S3, work="/w",
                                                        caller_env={}, path="/usr/bin")


# -- settings after the fetch ------------------------------------------------------------------------------------

def test_neutralize_recovery_comments_exactly_recovery_and_archive_mode() -> None:
    text = ("port = 5432\nrestore_command='cp %f %p'\n  recovery_target_time = 'x'\nprimary_conninfo = 'h'\n"
            "archive_mode = on\narchive_command = 'pgbackrest archive-push %p'\n# restore_command = 'old'\n"
            "shared_buffers = 1GB\n")
    out = logic.neutralize_recovery(text).splitlines()
    assert out[0] == "port = 5432" and out[-1] == "shared_buffers = 1GB"
    assert out[1].startswith("# (backup-catalog restore) restore_command")
    assert out[2].startswith("# (backup-catalog restore)") and out[3].startswith("# (backup-catalog restore)")
    assert out[4] == "# (backup-catalog restore) archive_mode = on"
    assert out[5] == "archive_command = 'pgbackrest archive-push %p'"   # harmless with archive_mode off
    assert out[6] == "# restore_command = 'old'"
    assert logic.neutralize_recovery("") == ""


def test_settings_files_pg12_and_pg11() -> None:
    files = logic.settings_files({"postgresql.auto.conf": "restore_command = 'x'\n", "recovery.signal": ""},
                                 "archive_mode = 'on'\n")
    auto = files["postgresql.auto.conf"]
    assert auto.index("archive_mode = 'off'") < auto.index("restore_command = 'x'")
    assert [ln for ln in auto.splitlines() if logic.conf_key(ln) == "archive_mode"] == ["archive_mode = 'off'"]
    assert files["recovery.signal"] == ""
    old = logic.settings_files({"recovery.conf": "restore_command = 'x'\n"}, "")
    assert old["recovery.conf"] == "restore_command = 'x'\n" and "archive_mode = 'off'" in old["postgresql.auto.conf"]
    assert "recovery.signal" not in old


def test_server_options_never_listen_on_tcp() -> None:
    opts = logic.server_options(port=5, socket_dir="/s", hba_file="/h")
    pairs = dict(o.split("=", 1) for o in opts[1::2])
    assert pairs["listen_addresses"] == "" and pairs["archive_mode"] == "off"
    assert pairs["unix_socket_directories"] == "/s" and pairs["hba_file"] == "/h"


# -- PostgreSQL's log ---------------------------------------------------------------------------------------------

PREFIX = "2026-12-01 03:00:00.123 UTC [4242] "
LATEST_OK = [PREFIX + ln for ln in (
    "LOG:  starting point-in-time recovery to latest",
    'LOG:  restored log file "00000002.history" from archive',
    'LOG:  restored log file "000000020000000000000009" from archive',
    "LOG:  redo starts at 0/9000028",
    "LOG:  consistent recovery state reached at 0/9000100",
    'LOG:  restored log file "00000002000000000000000A" from archive',
    "LOG:  redo done at 0/AFFFF88 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.71 s",
    "LOG:  last completed transaction was at log time 2026-12-01 02:47:08.492547+00",
    "LOG:  selected new timeline ID: 3",
    "LOG:  archive recovery complete",
    "LOG:  database system is ready to accept connections")]
DAMAGED = [PREFIX + ln for ln in (
    'LOG:  restored log file "000000020000000000000009" from archive',
    "LOG:  redo starts at 0/9000028",
    'LOG:  restored log file "00000002000000000000000A" from archive',
    "LOG:  unexpected pageaddr 0/9000000 in log segment 00000002000000000000000A, offset 0",
    "LOG:  redo done at 0/9FFFFD8 system usage: CPU: user: 0.00 s",
    "LOG:  selected new timeline ID: 3")]
TARGET_FATAL = [PREFIX + ln for ln in (
    'LOG:  restored log file "000000010000000000000005" from archive',
    "LOG:  invalid record length at 0/60000A0: wanted 24, got 0",
    "FATAL:  recovery ended before configured recovery target was reached",
    "LOG:  startup process (PID 1) exited with exit code 1")]


def test_parse_latest_log() -> None:
    f = logic.parse_log(LATEST_OK)
    assert f.redo_done == Lsn.parse("0/AFFFF88") and f.new_timeline == 3 and f.stop is None
    assert f.last_restored == "00000002000000000000000A" and f.bad_segments == () and f.severe == ()
    assert f.last_txn_time == "2026-12-01 02:47:08.492547+00"


@pytest.mark.parametrize(("line", "segment"), [
    ("LOG:  invalid magic number 0000 in log segment 000000010000000000000006, offset 0", "000000010000000000000006"),
    ("LOG:  unexpected pageaddr 0/5000000 in log segment 000000010000000000000006, offset 0",
     "000000010000000000000006"),
    ("LOG:  invalid info bits 0003 in log segment 000000010000000000000007, offset 8192", "000000010000000000000007"),
    (("LOG:  WAL file is from different database system: WAL file database system identifier is 1, pg_control "
      "database system identifier is 2 in log segment 000000010000000000000008, offset 0"),
     "000000010000000000000008"),
])
def test_bad_segment_lines(line: str, segment: str) -> None:
    f = logic.parse_log([PREFIX + line])
    assert [s for s, _ in f.bad_segments] == [segment]


def test_stop_lines_and_severe() -> None:
    for ln in ("LOG:  recovery stopping before commit of transaction 735, time 2026-12-01 02:46:55.1+00",
               "LOG:  recovery stopping after commit of transaction 735, time 2026-12-01 02:46:55.1+00",
               'LOG:  recovery stopping after WAL location (LSN) "0/7000540"',
               "LOG:  recovery stopping after reaching consistency"):
        assert logic.parse_log([PREFIX + ln]).reached_target
    f = logic.parse_log(TARGET_FATAL)
    assert f.severe == (TARGET_FATAL[2].strip(),) and f.invalid_records


def test_judge_end_of_wal() -> None:
    exp = PlanReplay("end_of_wal", "0/A000001", "00000002000000000000000A", None)
    ok = logic.judge(exp, logic.parse_log(LATEST_OK), promoted=True, reached=Lsn.parse("0/B000000"),
                     timeline_path=[1, 2])
    assert ok.ok and "0/B000000" in ok.message
    bad = logic.judge(exp, logic.parse_log(DAMAGED), promoted=True, reached=Lsn.parse("0/A000000"),
                      timeline_path=[1, 2])
    assert not bad.ok and bad.segment == "00000002000000000000000A"
    assert "00000002000000000000000A" in bad.message and "unexpected pageaddr" in bad.message
    # the replay LSN unknown: the "redo done" line decides
    assert not logic.judge(exp, logic.parse_log(DAMAGED), promoted=True, reached=None, timeline_path=[1, 2]).ok
    # a missing segment (no content line): the one after the last restored
    missing = [ln for ln in DAMAGED if "pageaddr" not in ln and "0000000A" not in ln]
    v = logic.judge(exp, logic.parse_log(missing), promoted=True, reached=Lsn.parse("0/9FFFFF0"),
                    timeline_path=[1, 2])
    assert not v.ok and v.segment == "00000002000000000000000A"
    assert not logic.judge(exp, logic.LogFacts(), promoted=True, reached=None, timeline_path=[1]).ok


def test_an_end_lsn_at_a_segment_boundary_needs_a_record_of_that_segment() -> None:
    exp = PlanReplay("end_of_wal", "0/A000000", "00000002000000000000000A", None)
    facts = logic.parse_log(DAMAGED)
    assert not logic.judge(exp, facts, promoted=True, reached=Lsn.parse("0/A000000"), timeline_path=[1, 2]).ok
    assert logic.judge(exp, facts, promoted=True, reached=Lsn.parse("0/A000028"), timeline_path=[1, 2]).ok
    inner = PlanReplay("end_of_wal", "0/A000120", None, None)
    assert logic.judge(inner, facts, promoted=True, reached=Lsn.parse("0/A000120"), timeline_path=[1, 2]).ok


def test_judge_target() -> None:
    exp = PlanReplay("target", None, None, None)
    stop = [PREFIX + "LOG:  recovery stopping before commit of transaction 9, time 2026-01-01 00:00:00+00"]
    assert logic.judge(exp, logic.parse_log(stop), promoted=True, reached=Lsn(1), timeline_path=[1]).ok
    v = logic.judge(exp, logic.parse_log(LATEST_OK), promoted=True, reached=Lsn(1), timeline_path=[1])
    assert not v.ok and "recovery target" in v.message
    v = logic.judge(exp, logic.parse_log(TARGET_FATAL), promoted=False, reached=None, timeline_path=[1])
    assert not v.ok and "recovery ended before configured recovery target" in v.message
    assert v.segment == "000000010000000000000006"
    v = logic.judge(exp, logic.LogFacts(), promoted=False, reached=None, timeline_path=[])
    assert not v.ok and "stopped before it promoted" in v.message and v.segment is None


def test_our_connection_attempts_are_not_the_failure() -> None:
    noise = [PREFIX + "FATAL:  the database system is starting up",
             PREFIX + "FATAL:  the database system is not yet accepting connections",
             PREFIX + "DETAIL:  Consistent recovery state has not been yet reached."]
    f = logic.parse_log(noise + TARGET_FATAL + noise)
    assert f.severe == (TARGET_FATAL[2].strip(),)
    assert logic.relevant_log(noise + DAMAGED + noise) == [ln.rstrip() for ln in DAMAGED]
    v = logic.judge(PlanReplay("target", None, None, None), logic.parse_log(noise), promoted=False, reached=None,
                    timeline_path=[1])
    assert "stopped before it promoted" in v.message


def test_relevant_log_and_next_segment() -> None:
    assert logic.relevant_log(DAMAGED, 2) == [DAMAGED[4].rstrip(), DAMAGED[5].rstrip()]
    assert logic.relevant_log(["noise", DAMAGED[3], "more noise"]) == [DAMAGED[3]]
    assert logic.relevant_log(["a", "b", "c"], 2) == ["b", "c"]
    assert logic.next_segment("00000001000000000000000A") == "00000001000000000000000B"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=200), max_size=30))
def test_parse_log_never_raises(lines: list[str]) -> None:
    f = logic.parse_log(lines)
    logic.judge(PlanReplay("end_of_wal", "0/1", None, None), f, promoted=True, reached=None, timeline_path=[1])


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_neutralized_text_sets_no_recovery_setting(text: str) -> None:
    out = logic.neutralize_recovery(text)
    keys = [logic.conf_key(ln) for ln in out.splitlines()]
    assert not any(k.startswith(logic.RECOVERY_KEYS) or k == "archive_mode" for k in keys)


XID_STOP = "LOG:  recovery stopping before commit of transaction 748, time 2026-12-07 10:00:00.123456+00"
POINT_STOP = 'LOG:  recovery stopping at restore point "before-migration", time 2026-12-07 10:00:00.5+00'
LSN_STOP = 'LOG:  recovery stopping after WAL location (LSN) "0/7000200"'


@pytest.mark.parametrize("stop, line, ok, needle", [
    ({"kind": "before_xid", "xid": 748}, XID_STOP, True, "transaction 748"),
    ({"kind": "before_xid", "xid": 749}, XID_STOP, False, "not before commit of transaction 749"),
    ({"kind": "before_xid", "xid": 748},
     "LOG:  recovery stopping before abort of transaction 748, time 2026-12-07 10:00:00+00", False, "abort"),
    ({"kind": "before_xid", "xid": 748}, POINT_STOP, False, "at restore point"),
    ({"kind": "restore_point", "name": "before-migration"}, POINT_STOP, True, "before-migration"),
    ({"kind": "restore_point", "name": "before"}, POINT_STOP, False, 'not at restore point "before"'),
    ({"kind": "restore_point", "name": "x"}, XID_STOP, False, "before commit of transaction 748"),
    ({"kind": "after_lsn", "lsn": "0/7000200", "name": "n"}, LSN_STOP, True, "0/7000200"),
    ({"kind": "after_lsn", "lsn": "0/7000300", "name": "n"}, LSN_STOP, False, "not after WAL location 0/7000300"),
])
def test_judge_exact_stop(stop: dict[str, object], line: str, ok: bool, needle: str) -> None:
    full = {"lsn": None, "time": "2026-12-07T10:00:00Z", **stop}
    exp = plan(replay={"mode": "target", "end_lsn": "0/7000200", "end_segment": None, "last_commit_time": None,
                       "stop": full}).replay
    v = logic.judge(exp, logic.parse_log([PREFIX + line]), promoted=True, reached=Lsn(1), timeline_path=[1])
    assert v.ok is ok and needle in v.message


def test_a_restore_point_stop_is_a_recovery_stop() -> None:
    assert logic.parse_log([PREFIX + POINT_STOP]).reached_target


def test_replay_stop_must_be_known() -> None:
    with pytest.raises(PlanDocError, match=r"replay\.stop\.kind 'sometime' is not one of before_xid"):
        plan(replay={"mode": "target", "end_lsn": None, "end_segment": None, "last_commit_time": None,
                     "stop": {"kind": "sometime", "lsn": None, "time": None}})
