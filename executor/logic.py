"""The executor's pure parts (no I/O): where a plan's archive is, the settings written into a fetched data
directory, and the verdict read from PostgreSQL's log. The tools' command lines are the layouts' own
(:mod:`scheduler.layouts`).

Everything here is a function of its arguments, so it is tested exhaustively without a tool or a server;
:mod:`executor.run` is the thin adapter that runs these command lines and reads the log.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from recovery.errors import BadLsn
from recovery.lsn import Lsn
from recovery.plandoc import PlanDoc, PlanDocError, PlanReplay, PlanStop, conf_key
from recovery.wal import DEFAULT_SEG_SIZE, WalSegment
from scheduler.layouts import spec_of
from scheduler.layouts.spec import Command, S3Access, StorageLoc, aws_env

# recovery settings a fetched backup may carry (postgresql.auto.conf, e.g. written by the tool's own
# restore or left by the source): commented out so only the plan's settings apply
RECOVERY_KEYS = ("restore_command", "recovery_target", "recovery_end_command", "archive_cleanup_command",
                 "primary_conninfo", "primary_slot_name", "recovery_min_apply_delay", "promote_trigger_file")
# environment variables of the tools that pass through to the fetch and to the server, and win
PASSTHROUGH_PREFIXES = ("PGBACKREST_", "WALG_", "WALE_")


# -- the plan document (read by recovery.plandoc.PlanDoc.from_json) -------------------------------------------

def storage_of(doc: PlanDoc) -> StorageLoc:
    """The archive the plan restores from."""
    st = doc.storage
    if st.layout is None:
        raise PlanDocError("the plan's storage.layout is unknown (the archive was never scanned)")
    return StorageLoc(st.layout, st.bucket, st.prefix, st.stanza)


def lsn_or_none(v: object) -> Lsn | None:
    """An LSN from a JSON value or a query result; None when absent or not an LSN."""
    if not isinstance(v, str):
        return None
    try:
        return Lsn.parse(v)
    except BadLsn:
        return None


# -- fetch command lines (the layout's module: scheduler.layouts) ---------------------------------------

def fetch_command(loc: StorageLoc, label: str, pgdata: str, s3: S3Access, *, work: str) -> Command:
    """The layout's real tool restoring backup ``label`` (and what it depends on) into ``pgdata``.

    >>> from recovery.model import Layout
    >>> c = fetch_command(StorageLoc(Layout.BARMAN, "b", "barman", "main"), "20260101T000000", "/d",
    ...                   S3Access("http://127.0.0.1:9000"), work="/w")
    >>> c.argv
    ('barman-cloud-restore', '--endpoint-url', 'http://127.0.0.1:9000', 's3://b/barman', 'main', '20260101T000000', '/d')
    """
    try:
        return spec_of(loc.layout).fetch_command(loc, label, pgdata, s3, work)
    except ValueError as e:     # LayoutArgumentError, or not a layout
        raise PlanDocError(str(e)) from None


def server_env(loc: StorageLoc, s3: S3Access, *, work: str, caller_env: Mapping[str, str],
               path: str) -> dict[str, str]:
    """The environment the server (and so its restore_command) runs with: the tool's access derived from the
    settings, then the caller's own ``AWS_*`` where the settings left a gap, then ``PGBACKREST_*``/``WALG_*``/
    ``WALE_*`` from the caller, which win.

    >>> e = server_env(StorageLoc("pgbackrest", "b", "p", "main"), S3Access(), work="/w",
    ...                caller_env={"PGBACKREST_REPO1_STORAGE_PORT": "4433", "HOME": "/root"}, path="/usr/bin")
    >>> e["PGBACKREST_CONFIG"], e["PGBACKREST_REPO1_STORAGE_PORT"], "HOME" in e
    ('/w/pgbackrest.conf', '4433', False)
    """
    env = {"PATH": path, "LANG": "C.UTF-8", "TZ": "UTC"}
    env.update(aws_env(s3))
    env.update(spec_of(loc.layout).server_env(work))
    for k, v in caller_env.items():
        if k.startswith("AWS_") and k not in env and not k.startswith("AWS_ENDPOINT_URL"):
            env[k] = v
    env.update(passthrough(caller_env))
    return env


def passthrough(caller_env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in caller_env.items() if k.startswith(PASSTHROUGH_PREFIXES)}


# -- settings written after the fetch ------------------------------------------------------------------------

def neutralize_recovery(text: str) -> str:
    """Comment out recovery settings (and archive_mode) a fetched backup carries in a configuration file.

    >>> print(neutralize_recovery("port = 5432\\nrestore_command = 'cp %p'\\narchive_mode = on\\n"), end="")
    port = 5432
    # (backup-catalog restore) restore_command = 'cp %p'
    # (backup-catalog restore) archive_mode = on
    """
    out = []
    for line in text.splitlines():
        k = conf_key(line)
        if k and (k.startswith(RECOVERY_KEYS) or k == "archive_mode"):
            out.append(f"# (backup-catalog restore) {line}")
        else:
            out.append(line)
    return "\n".join(out) + ("\n" if out else "")


CLONE_HEADER = ("\n# backup-catalog restore: this clone never archives into its source;\n"
                "# configure its own archive before setting archive_mode = on\narchive_mode = 'off'\n")


def settings_files(plan_files: Mapping[str, str], existing_auto_conf: str) -> dict[str, str]:
    """The files to write into the fetched data directory: the backup's postgresql.auto.conf with its
    recovery settings commented out, ``archive_mode = 'off'``, then the plan's own files (for PG >= 12
    ``postgresql.auto.conf`` settings + ``recovery.signal``; for PG <= 11 ``recovery.conf``).

    >>> f = settings_files({"postgresql.auto.conf": "restore_command = 'x'\\n", "recovery.signal": ""},
    ...                    "restore_command = 'old'\\n")
    >>> print(f["postgresql.auto.conf"], end="")
    # (backup-catalog restore) restore_command = 'old'
    <BLANKLINE>
    # backup-catalog restore: this clone never archives into its source;
    # configure its own archive before setting archive_mode = on
    archive_mode = 'off'
    restore_command = 'x'
    >>> sorted(f)
    ['postgresql.auto.conf', 'recovery.signal']
    """
    auto = neutralize_recovery(existing_auto_conf) + CLONE_HEADER + plan_files.get("postgresql.auto.conf", "")
    out = {"postgresql.auto.conf": auto}
    for name, text in plan_files.items():
        if name != "postgresql.auto.conf":
            out[name] = text
    return out


STALE_FILES = ("recovery.signal", "standby.signal", "recovery.conf", "postmaster.pid", "postmaster.opts")


def server_options(*, port: int, socket_dir: str, hba_file: str) -> tuple[str, ...]:
    """``postgres -c`` options for the recovery run: private socket, no TCP listener, no archiving,
    a private pg_hba (local trust on the private socket only).

    >>> server_options(port=5433, socket_dir="/s", hba_file="/w/hba")[:4]
    ('-c', 'port=5433', '-c', 'listen_addresses=')
    """
    return ("-c", f"port={port}", "-c", "listen_addresses=", "-c", f"unix_socket_directories={socket_dir}",
            "-c", "archive_mode=off", "-c", "hot_standby=on", "-c", f"hba_file={hba_file}",
            "-c", "logging_collector=off", "-c", "log_min_messages=info")


PRIVATE_HBA = "# backup-catalog restore: only the private socket, during recovery\nlocal all all trust\n"


# -- reading PostgreSQL's log ----------------------------------------------------------------------------------

_LSN = r"([0-9A-Fa-f]+/[0-9A-Fa-f]+)"
_SEG = r"([0-9A-F]{24})"
RE_REDO_DONE = re.compile(rf"redo done at {_LSN}")
RE_STOP = re.compile(r"recovery stopping (before|after|at) (.*)")
RE_STOP_XID = re.compile(r"recovery stopping before commit of transaction ([0-9]+), time (.+)$")
RE_STOP_POINT = re.compile(r'recovery stopping at restore point "(.*)", time (.+)$')
RE_STOP_LSN = re.compile(rf'recovery stopping after WAL location \(LSN\) "{_LSN}"')
RE_BAD_SEGMENT = re.compile(rf"(invalid magic number [0-9A-Fa-f]+|unexpected pageaddr {_LSN}|"
                            rf"invalid (?:info bits|page header|contrecord)[^,]*|"
                            rf"WAL file is from different database system.*?) in log segment {_SEG}")
RE_INVALID_RECORD = re.compile(rf"(invalid record length at {_LSN}|invalid resource manager ID [0-9]+ at "
                               rf"{_LSN}|record with incorrect prev-link [0-9A-F/]+ at {_LSN}|"
                               rf"incorrect resource manager data checksum in record at {_LSN})")
RE_RESTORED = re.compile(rf'restored log file "{_SEG}" from archive')
RE_LAST_TXN = re.compile(r"last completed transaction was at log time (.+)$")
RE_NEW_TLI = re.compile(r"selected new timeline ID: ([0-9]+)")
RE_SEVERE = re.compile(r"\b(FATAL|PANIC):")
# what our own connection attempts during recovery make the server log: not about the recovery
RE_CONNECT_NOISE = re.compile(r"the database system is (starting up|not yet accepting connections|shutting down)|"
                              r"Consistent recovery state has not been yet reached")


@dataclass(frozen=True, slots=True)
class LogFacts:
    redo_done: Lsn | None = None
    stop: str | None = None                    # the "recovery stopping ..." line
    bad_segments: tuple[tuple[str, str], ...] = ()   # (segment, line) for content PostgreSQL rejected
    invalid_records: tuple[str, ...] = ()
    last_restored: str | None = None           # last segment restored from the archive
    last_txn_time: str | None = None
    new_timeline: int | None = None
    severe: tuple[str, ...] = ()               # FATAL / PANIC lines

    @property
    def reached_target(self) -> bool:
        return self.stop is not None


def parse_log(lines: Iterable[str]) -> LogFacts:
    """Facts from PostgreSQL's log lines (any log_line_prefix).

    >>> f = parse_log(["LOG:  unexpected pageaddr 0/6000000 in log segment 000000020000000000000007, offset 0",
    ...                "LOG:  redo done at 0/6FFFF88 system usage: CPU: user: 0.00 s",
    ...                "LOG:  selected new timeline ID: 3"])
    >>> f.bad_segments[0][0], str(f.redo_done), f.new_timeline
    ('000000020000000000000007', '0/6FFFF88', 3)
    """
    redo: Lsn | None = None
    stop: str | None = None
    bad: list[tuple[str, str]] = []
    invalid: list[str] = []
    last_restored: str | None = None
    last_txn: str | None = None
    tli: int | None = None
    severe: list[str] = []
    for raw in lines:
        line = raw.rstrip("\n")
        if RE_CONNECT_NOISE.search(line):
            continue
        if m := RE_REDO_DONE.search(line):
            redo = lsn_or_none(m.group(1))
        if m := RE_STOP.search(line):
            stop = line.strip()
        if m := RE_BAD_SEGMENT.search(line):
            bad.append((m.group(m.lastindex or 1), line.strip()))
        if RE_INVALID_RECORD.search(line):
            invalid.append(line.strip())
        if m := RE_RESTORED.search(line):
            last_restored = m.group(1)
        if m := RE_LAST_TXN.search(line):
            last_txn = m.group(1).strip()
        if m := RE_NEW_TLI.search(line):
            tli = int(m.group(1))
        if RE_SEVERE.search(line):
            severe.append(line.strip())
    return LogFacts(redo, stop, tuple(bad), tuple(invalid), last_restored, last_txn, tli, tuple(severe))


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    message: str
    segment: str | None = None


def next_segment(name: str, seg_size: int = DEFAULT_SEG_SIZE) -> str:
    """
    >>> next_segment("0000000100000000000000FF")
    '000000010000000100000000'
    """
    s = WalSegment.from_name(name, seg_size)
    return WalSegment(s.timeline, s.segno + 1, seg_size).name


def stopped_segment(facts: LogFacts, reached: Lsn | None, timeline_path: Sequence[int],
                    seg_size: int = DEFAULT_SEG_SIZE) -> str | None:
    """The segment replay could not get through: one PostgreSQL rejected (the last named), else the one
    after the last segment restored from the archive, else the segment holding the reached LSN."""
    if facts.bad_segments:
        return facts.bad_segments[-1][0]
    if facts.last_restored:
        return next_segment(facts.last_restored, seg_size)
    if reached is not None and timeline_path:
        return WalSegment.of_lsn(timeline_path[-1], reached, seg_size).name
    return None


def judge(exp: PlanReplay, facts: LogFacts, *, promoted: bool, reached: Lsn | None,
          timeline_path: Sequence[int], seg_size: int = DEFAULT_SEG_SIZE) -> Verdict:
    """Did replay reach what the plan promised?

    - target: the server promoted and logged a recovery stop;
    - end of WAL: the server promoted and replay reached at least ``exp.end`` (the end of the last
      replayed record, else the "redo done at" LSN).

    >>> e = PlanReplay("end_of_wal", "0/7000001", "000000020000000000000007", None)
    >>> f = parse_log(["LOG:  unexpected pageaddr 0/6000000 in log segment 000000020000000000000007, offset 0"])
    >>> v = judge(e, f, promoted=True, reached=Lsn.parse("0/7000000"), timeline_path=[1, 2])
    >>> v.ok, v.segment
    (False, '000000020000000000000007')
    """
    got = reached if reached is not None else facts.redo_done
    seg = stopped_segment(facts, got, timeline_path, seg_size)
    if not promoted:
        why = facts.severe[-1] if facts.severe else "the server stopped before it promoted"
        where = f" (replay stopped in segment {seg})" if seg and (facts.bad_segments or exp.mode == "target") else ""
        return Verdict(False, f"recovery failed: {_strip_prefix(why)}{where}", seg)
    if exp.mode == "target":
        if facts.stop is None:
            return Verdict(False, "the server promoted without reaching the plan's recovery target "
                                  f"(no 'recovery stopping' line); replay ended at {got}", seg)
        if exp.stop is not None and (wrong := stop_mismatch(exp.stop, facts.stop)) is not None:
            return Verdict(False, wrong, seg)
        return Verdict(True, _strip_prefix(facts.stop))
    end = exp.end
    if end is None:
        return Verdict(True, f"replayed to the end of the archived WAL at {got}")
    if got is None:
        return Verdict(False, "could not tell how far replay got (no replay LSN, no 'redo done' line)", seg)
    # an end LSN at a segment boundary (the start of the plan's last segment) is reached only by replaying a
    # record of that segment: a switch record before it ends exactly at the boundary
    short = got <= end if end.value % seg_size == 0 else got < end
    if short:
        detail = f"; PostgreSQL: {_strip_prefix(facts.bad_segments[-1][1])}" if facts.bad_segments else ""
        return Verdict(False, f"replay stopped short at {got}, before {end} which the plan promised "
                              f"(the archive's WAL up to {exp.end_segment or 'its end'}): segment {seg} could "
                              f"not be replayed{detail}; the commits after {got} would be missing", seg)
    return Verdict(True, f"replayed to {got} (plan: at least {end})")


def stop_mismatch(stop: PlanStop, line: str) -> str | None:
    """Why PostgreSQL's "recovery stopping" line is not the exact stop the plan promised (None: it is).

    >>> stop_mismatch(PlanStop(kind="before_xid", xid=748, lsn=None, time=None),
    ...               "LOG:  recovery stopping before commit of transaction 748, time 2026-12-07 10:00:00.1+00")
    >>> stop_mismatch(PlanStop(kind="restore_point", name="a", lsn=None, time=None),
    ...               'LOG:  recovery stopping at restore point "b", time x')
    'recovery stopped at restore point "b", time x, not at restore point "a" as the plan promised'
    """
    m0 = RE_STOP.search(line)
    said = f"{m0.group(1)} {m0.group(2)}" if m0 else line.strip()
    if stop.kind == "before_xid":
        m = RE_STOP_XID.search(line)
        ok = m is not None and int(m.group(1)) == stop.xid
        want = f"before commit of transaction {stop.xid}"
    elif stop.kind == "restore_point":
        m = RE_STOP_POINT.search(line)
        ok = m is not None and m.group(1) == stop.name
        want = f'at restore point "{stop.name}"'
    else:
        m = RE_STOP_LSN.search(line)
        ok = m is not None and lsn_or_none(m.group(1)) == lsn_or_none(stop.lsn)
        want = f'after WAL location {stop.lsn} (restore point "{stop.name}")'
    return None if ok else f"recovery stopped {said}, not {want} as the plan promised"


def _strip_prefix(line: str) -> str:
    m = re.search(r"\b(LOG|FATAL|PANIC|ERROR|WARNING):\s+(.*)", line)
    return f"{m.group(1)}: {m.group(2)}" if m else line


def relevant_log(lines: Sequence[str], n: int = 40) -> list[str]:
    """The log lines worth showing with a failure: recovery, segment and severe lines, then the tail."""
    keys = ("redo", "recovery", "segment", "FATAL", "PANIC", "ERROR", "invalid", "unexpected pageaddr",
            "timeline", "consistent", "restored log file")
    kept = [ln.rstrip() for ln in lines if not RE_CONNECT_NOISE.search(ln)]
    picked = [ln for ln in kept if any(k in ln for k in keys)]
    return picked[-n:] if picked else kept[-n:]
