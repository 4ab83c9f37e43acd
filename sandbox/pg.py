"""Throw-away PostgreSQL 15 clusters run as ``postgres`` (PostgreSQL refuses root), for archive fixtures.

Clusters listen on a unix socket in their own temp dir only (``listen_addresses=''``); psql runs as root with
``-U postgres`` under trust authentication.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from recovery.timefmt import iso_offset
from sandbox.s3 import free_port

PG_VERSION = 15
PG_BIN = Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")
PSQL = PG_BIN / "psql"


class ClusterError(RuntimeError):
    """PostgreSQL refused to start, recover or archive; carries the relevant log lines."""


def as_postgres(argv: list[str], *, env: dict[str, str] | None = None, check: bool = True,
                timeout: float = 300, cwd: str = "/tmp") -> subprocess.CompletedProcess[str]:
    """Run argv as the postgres user with a clean environment plus ``env``."""
    base = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8", "HOME": "/var/lib/postgresql",
            "TZ": "UTC"}
    base.update(env or {})
    cmd = ["runuser", "-u", "postgres", "--", "env", "-i", *(f"{k}={v}" for k, v in base.items()), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(argv[:3])}... exited {proc.returncode}\n"
                           f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}")
    return proc


def make_postgres_dir(prefix: str, parent: str | None = None) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    shutil.chown(d, "postgres", "postgres")
    d.chmod(0o755)
    return d


def utc_iso(text: str) -> str:
    """psql timestamptz text (TZ=UTC) -> ISO 8601 with microseconds, e.g. 2026-01-01T12:00:00.015625+00:00."""
    return iso_offset(parse_ts(text), micro=True)


def parse_ts(text: str) -> datetime:
    t = text.strip()
    if t.endswith("+00"):
        t = t[:-3] + "+00:00"
    return datetime.fromisoformat(t).astimezone(timezone.utc)


@dataclass(frozen=True, slots=True)
class Commit:
    """A known transaction: one INSERT into ticks, committed on its own."""

    id: int
    tl: int
    commit_time: str  # pg_xact_commit_timestamp(xmin), UTC ISO with microseconds
    commit_lsn: str   # pg_current_wal_insert_lsn() right after the commit (>= the commit record's end)
    note: str

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "tl": self.tl, "commit_time": self.commit_time,
                "commit_lsn": self.commit_lsn, "note": self.note}


class Cluster:
    """One PostgreSQL data directory plus its socket dir; ``start``/``stop``/``sql`` helpers."""

    def __init__(self, base: Path, *, archive_command: str = "", port: int | None = None) -> None:
        self.base = base
        self.data = base / "data"
        self.sock = base / "sock"
        self.log = base / "postgres.log"
        self.port = port or free_port()
        self.archive_command = archive_command
        self.running = False

    # -- lifecycle -------------------------------------------------------------------------------------
    def initdb(self, extra_conf: str = "") -> None:
        self.sock.mkdir(exist_ok=True)
        shutil.chown(self.sock, "postgres", "postgres")
        as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                     "--no-sync", "-E", "UTF8", "--locale=C"])
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(self.base_conf() + extra_conf)

    def base_conf(self) -> str:
        ac = self.archive_command.replace("'", "''")
        return (
            "\n# realarchives fixture settings\n"
            f"port = {self.port}\n"
            "listen_addresses = ''\n"
            f"unix_socket_directories = '{self.sock}'\n"
            "wal_level = replica\n"
            "archive_mode = on\n"
            f"archive_command = '{ac}'\n"
            "archive_timeout = 0\n"
            "track_commit_timestamp = on\n"
            "fsync = off\n"
            "synchronous_commit = on\n"
            "full_page_writes = on\n"
            "wal_recycle = off\n"
            "shared_buffers = 16MB\n"
            "max_wal_senders = 2\n"
            "timezone = 'UTC'\n"
            "log_timezone = 'UTC'\n"
            "logging_collector = off\n"
        )

    def start(self, *, wait_recovery_end: bool = False, timeout: float = 120) -> None:
        proc = as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                            "-w", "-t", str(int(timeout)), "start"], check=False, timeout=timeout + 10)
        if proc.returncode != 0:
            raise ClusterError(f"PostgreSQL did not start: {self.fatal_line() or proc.stdout[-500:]}")
        self.running = True
        if wait_recovery_end:
            self.wait_recovery_end(timeout)

    def wait_recovery_end(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_up():
                raise ClusterError(f"PostgreSQL stopped during recovery: {self.fatal_line()}")
            try:
                if self.sql("SELECT pg_is_in_recovery()") == "f":
                    return
            except ClusterError:
                pass
            time.sleep(0.2)
        raise ClusterError(f"recovery did not end within {timeout}s: {self.fatal_line()}")

    def is_up(self) -> bool:
        r = as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"], check=False)
        return r.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        if not self.data.exists():
            self.running = False
            return
        if self.is_up():
            as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"],
                        check=False, timeout=90)
        self.running = False

    def fatal_line(self) -> str:
        if not self.log.exists():
            return ""
        lines = self.log.read_text(errors="replace").splitlines()
        fatal = [ln for ln in lines if "FATAL" in ln or "PANIC" in ln]
        return fatal[-1] if fatal else "\n".join(lines[-5:])

    # -- SQL -------------------------------------------------------------------------------------------
    def sql(self, *statements: str, timeout: float = 120) -> str:
        """Each statement runs in its own transaction on one connection; returns the last output (-At)."""
        argv = [str(PSQL), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(self.sock), "-p", str(self.port),
                "-U", "postgres", "-d", "postgres"]
        for s in statements:
            argv += ["-c", s]
        env = {**os.environ, "TZ": "UTC", "PGTZ": "UTC", "PGCONNECT_TIMEOUT": "5"}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            raise ClusterError(f"psql failed: {proc.stderr.strip()[-1000:]}")
        return proc.stdout.strip()

    def create_ticks(self) -> None:
        self.sql("CREATE TABLE ticks(id int PRIMARY KEY, tl int NOT NULL, note text)")

    def commit(self, tick_id: int, tl: int, note: str = "") -> Commit:
        out = self.sql(
            f"INSERT INTO ticks(id, tl, note) VALUES ({tick_id}, {tl}, '{note}')",
            "SELECT pg_current_wal_insert_lsn()",
            f"SELECT pg_xact_commit_timestamp(xmin) FROM ticks WHERE id = {tick_id}",
        )
        lsn, ts = out.splitlines()[-2:]
        return Commit(tick_id, tl, utc_iso(ts), lsn, note)

    def commits(self, ids: range, tl: int, note: str, gap: float = 0.06) -> list[Commit]:
        out = []
        for i in ids:
            out.append(self.commit(i, tl, note))
            time.sleep(gap)
        return out

    def ticks(self) -> list[tuple[int, int]]:
        out = self.sql("SELECT id, tl FROM ticks ORDER BY id")
        return [(int(a), int(b)) for a, b in (ln.split("|") for ln in out.splitlines() if ln)]

    def system_id(self) -> str:
        return self.sql("SELECT system_identifier FROM pg_control_system()")

    def timeline(self) -> int:
        return int(self.sql("SELECT timeline_id FROM pg_control_checkpoint()"))

    def server_version_num(self) -> int:
        return int(self.sql("SHOW server_version_num"))

    def seg_size(self) -> int:
        return int(self.sql("SELECT setting::int * 1 FROM pg_settings WHERE name = 'wal_segment_size'"))

    def switch_wal_and_wait(self, timeout: float = 120) -> str:
        """pg_switch_wal(), then wait until the segment holding the switch is archived; returns its name."""
        name = self.sql("SELECT pg_walfile_name(pg_switch_wal())")
        self.wait_archived(name, timeout)
        return name

    def wait_archived(self, name: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            out = self.sql("SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') "
                           "FROM pg_stat_archiver")
            last, failed = (out.split("|") + [""])[:2]
            seg = last.split(".")[0]
            if len(seg) == 24 and seg[8:] >= name[8:] and seg[:8] >= name[:8]:
                return
            time.sleep(0.1)
        raise ClusterError(f"{name} not archived within {timeout}s (last archived {last!r}); "
                           f"log: {self.tail_log()}")

    def tail_log(self, n: int = 15) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
