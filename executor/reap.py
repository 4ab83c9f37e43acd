"""Finishing what a killed restore or drill left (issue 24): stop the PostgreSQL server it started (only
after checking that the pid is a server of that very data directory: a recorded pid may have been reused),
kill every other process still working in its directories, and remove them.

Normally nothing is left: the tools run under :mod:`executor.guard` and the recovery server gets SIGQUIT
when the executor dies (``PR_SET_PDEATHSIG``). This is the second net, used by the drill reaper
(:mod:`backup_catalog.usecases.scratch`) and by ``restore --force-clean``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from pathlib import Path

from executor import clone


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent) is gone for our purposes
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _real(p: Path | str) -> str:
    return os.path.realpath(p)


def works_in(pid: int, d: Path | str) -> bool:
    """Does process ``pid`` work inside ``d`` (its cwd there, or an argument naming a path there)?"""
    base = _real(d)
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        if cwd == base or cwd.startswith(base + "/"):
            return True
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    b = base.encode()
    return any(_names(a, b) for a in args)


def _names(arg: bytes, base: bytes) -> bool:
    """Does a command-line argument name ``base`` or a path below it (alone, or as ``--opt=PATH``)? Not a
    sibling sharing its prefix (``drill-1`` is not ``drill-12``).

    >>> [_names(a, b"/s/drill-1") for a in (b"/s/drill-1", b"/s/drill-1/pg", b"--x=/s/drill-1/pg", b"/s/drill-12",
    ...                                      b"--x=/s/drill-12/pg", b"-c", b"k=/s/drill-1")]
    [True, True, True, False, False, False, True]
    """
    for value in (arg, arg.split(b"=", 1)[1] if b"=" in arg else None):
        if value is not None and (value == base or value.startswith(base + b"/")):
            return True
    return False


def is_server_of(pid: int, pgdata: Path | str) -> bool:
    """Is ``pid`` a live PostgreSQL server process of data directory ``pgdata`` (it chdirs there)?"""
    if pid <= 1 or not alive(pid):
        return False
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return cwd == _real(pgdata) and os.path.basename(exe).startswith(b"postgres")


def processes_in(d: Path | str) -> list[int]:
    """Processes (other than ours) working inside directory ``d``."""
    me = os.getpid()
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and works_in(int(entry.name), d) and alive(int(entry.name)):
            out.append(int(entry.name))
    return out


def postmaster_pids(d: Path) -> list[tuple[int, Path]]:
    """(pid, data directory) of the live servers whose data directory is ``d`` or below it."""
    out = []
    for pidfile in [d / "postmaster.pid", *d.rglob("*/postmaster.pid")] if d.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pidfile.read_text().splitlines()[0])
            if is_server_of(pid, pidfile.parent):
                out.append((pid, pidfile.parent))
    return out


def stop_server(pid: int, pgdata: Path | str, grace: float = 10.0) -> bool:
    """Immediate shutdown (SIGQUIT: its children with it) of the server ``pid`` if it is ``pgdata``'s;
    SIGKILL after ``grace``. True when a server was stopped."""
    if not is_server_of(pid, pgdata):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGQUIT)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return True


def kill_in(d: Path, grace: float = 5.0, also: tuple[int, ...] = ()) -> list[str]:
    """Stop every server of a data directory in ``d`` (and the recorded ``also`` pids, if they are servers
    there), then SIGKILL whatever else works in ``d``. Returns what was done, for the record."""
    done: list[str] = []
    servers = postmaster_pids(d)
    for pid in also:            # a recorded server: one of a data directory in ``d`` (its postmaster.pid may be gone)
        with contextlib.suppress(OSError):
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
            if works_in(pid, d) and is_server_of(pid, cwd) and all(pid != s for s, _ in servers):
                servers.append((pid, cwd))
    for pid, pgdata in servers:
        if stop_server(pid, pgdata, grace):
            done.append(f"stopped server {pid} of {pgdata}")
    killed: set[int] = set()
    deadline = time.monotonic() + max(grace, 1.0)
    while time.monotonic() < deadline:      # until none is left (a killed process takes a moment to go)
        left = processes_in(d)
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed.update(left)
        time.sleep(0.1)
    if killed:
        done.append(f"killed {len(killed)} process(es) working in {d}")
    return done


class RestoreRunning(Exception):
    """The marked directory's restore is still running on this host: nothing is touched."""


def restore_running(facts: dict[str, str]) -> bool:
    """Is the restore a marker names still running (on this host, a backup-catalog process)?"""
    pid = facts.get("restore_pid", "")
    if facts.get("host") != socket.gethostname() or not pid.isdigit() or not alive(int(pid)):
        return False
    try:
        return b"backup" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def clean_failed_restore(pgdata: Path) -> list[str]:
    """``restore --force-clean``: what the marked restore left is stopped (its recorded server, anything
    working in the directory or its work directory), its work directory removed, ``pgdata`` emptied."""
    facts = clone.parse_marker((pgdata / clone.MARKER).read_text(errors="replace"))
    if restore_running(facts):
        raise RestoreRunning(f"the restore that marked {pgdata} (pid {facts['restore_pid']}) is still running")
    recorded = tuple(int(facts["server_pid"]) for _ in (0,) if facts.get("server_pid", "").isdigit())
    done = kill_in(pgdata, also=recorded)
    work = facts.get("work")
    if work and "backup-catalog-restore-" in os.path.basename(work) and os.path.isdir(work):
        done += kill_in(Path(work))
        shutil.rmtree(work, ignore_errors=True)
        done.append(f"removed its work directory {work}")
    for p in pgdata.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    done.append(f"emptied {pgdata}")
    return done
