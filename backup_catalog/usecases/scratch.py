"""Scratch directories of drills, and removing what a dead drill left behind.

Each drill restores into ``<root>/drill-<id>/`` (``id`` is the catalog row's, unique across replicas and
hosts). A drill cleans up after itself; when its process is killed (SIGKILL) its supervisor, or the next
drill on the host, calls :func:`remove_drill_dir`: it stops any PostgreSQL server whose data directory is
inside (``postmaster.pid``; ``pg_ctl`` detaches the postmaster into its own session, so killing the
worker's process group does not reach it), kills every other process working inside the directory, and
removes it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

_DIR_RE = re.compile(r"^drill-(\d+)$")


def scratch_root(configured: str | None) -> Path:
    """``DRILL_SCRATCH_DIR``, or ``<tmp>/backup-catalog-drills``; created (mode 0755: the PostgreSQL
    server runs as the ``postgres`` user and must reach the data directory below)."""
    root = Path(configured) if configured else Path(tempfile.gettempdir()) / "backup-catalog-drills"
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        root.chmod(0o755)
    return root


def drill_dir(root: Path, drill_id: int) -> Path:
    return root / f"drill-{drill_id}"


def drill_dirs(root: Path) -> dict[int, Path]:
    """The drill directories under ``root`` by drill id."""
    out: dict[int, Path] = {}
    with contextlib.suppress(FileNotFoundError):
        for p in root.iterdir():
            m = _DIR_RE.match(p.name)
            if m and p.is_dir():
                out[int(m.group(1))] = p
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _inside(pid: int, d: Path) -> bool:
    """Does process ``pid`` work inside ``d`` (its cwd, or a command-line argument naming a path there)?"""
    base = str(d.resolve())
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        if cwd == base or cwd.startswith(base + "/"):
            return True
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(base.encode() in a for a in args)


def processes_inside(d: Path) -> list[int]:
    """Processes (other than ours) working inside directory ``d``."""
    out: list[int] = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and _inside(int(entry.name), d):
            out.append(int(entry.name))
    return out


def _postmasters(d: Path) -> list[int]:
    pids: list[int] = []
    for pidfile in d.rglob("postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pidfile.read_text().splitlines()[0])
            if pid > 1 and _alive(pid):
                pids.append(pid)
    return pids


def kill_inside(d: Path, grace: float = 5.0) -> int:
    """Stop every process working in ``d``: PostgreSQL servers first (SIGQUIT: immediate shutdown, its
    children with it), then SIGKILL whatever is left. Returns how many processes were signalled."""
    if not d.exists():
        return 0
    hit = 0
    for pid in _postmasters(d):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
            hit += 1
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in _postmasters(d)):
        time.sleep(0.1)
    for _ in range(3):
        left = processes_inside(d)
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                hit += 1
        time.sleep(0.2)
    return hit


def remove_drill_dir(d: Path) -> None:
    """Kill what runs in ``d`` and remove it (idempotent)."""
    if not d.exists():
        return
    n = kill_inside(d)
    if n:
        log.warning("stopped %d leftover process(es) in %s", n, d)
    shutil.rmtree(d, ignore_errors=True)
    if d.exists():   # a process raced a file into it: once more
        kill_inside(d, grace=1.0)
        shutil.rmtree(d, ignore_errors=True)


def sweep(root: Path, keep: set[int], upto: int) -> list[int]:
    """Remove the drill directories under ``root`` of ids up to ``upto`` except those in ``keep`` (drills
    still active in the catalog, read together with ``upto``: a drill created after that read is newer).
    Returns the removed ids."""
    gone = []
    for drill_id, d in drill_dirs(root).items():
        if drill_id <= upto and drill_id not in keep:
            remove_drill_dir(d)
            gone.append(drill_id)
    return gone
