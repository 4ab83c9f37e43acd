"""Scratch directories of drills, and removing what a dead drill left behind.

Each drill restores into ``<root>/drill-<id>/`` (``id`` is the catalog row's, unique across replicas and
hosts). A drill cleans up after itself; when its process is killed (SIGKILL) its supervisor, or the next
drill's reaper, calls :func:`remove_drill_dir`: it stops any PostgreSQL server whose data directory is
inside (``postmaster.pid``, or the pid recorded in the drill's row — checked to be that data directory's
server first), kills every other process working inside the directory (:mod:`executor.reap`), and removes it.
"""
from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
from pathlib import Path

from executor import reap

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


def remove_drill_dir(d: Path, server_pid: int | None = None) -> list[str]:
    """Stop what runs in ``d`` (its PostgreSQL server first — the recorded ``server_pid`` too, once checked
    to be a server of a data directory there), remove it (idempotent). Returns what was cleaned."""
    if not d.exists():
        return []
    done = reap.kill_in(d, also=(server_pid,) if server_pid else ())
    if done:
        log.warning("drill directory %s: %s", d, "; ".join(done))
    shutil.rmtree(d, ignore_errors=True)
    if d.exists():   # a process raced a file into it: once more
        reap.kill_in(d, grace=1.0)
        shutil.rmtree(d, ignore_errors=True)
    return [*done, f"removed {d}"]


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


def processes_inside(d: Path) -> list[int]:
    """Processes (other than ours) working inside directory ``d``."""
    return reap.processes_in(d)
