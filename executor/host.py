"""What a restore run needs of this host: the ``postgres`` user (a root process drops to it), free ports and
socket directories, the data directory's state, processes that die with this one, and where the tools and
the server binaries are. No stage logic: the stages (:mod:`executor.fetch`, :mod:`executor.server`) use these."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from executor import clone, guard, reap
from executor.config import RestoreConfig
from executor.outcome import RestoreError
from scheduler.layouts.spec import S3Access


def _secret(v: Any) -> str | None:
    return v.get_secret_value() if v is not None else None


def s3_access(settings: RestoreConfig) -> S3Access:
    return S3Access(settings.s3_endpoint_url, _secret(settings.aws_access_key_id),
                          _secret(settings.aws_secret_access_key), settings.aws_default_region,
                          settings.s3_verify_tls, settings.s3_ca_bundle)


def as_root() -> bool:
    return os.geteuid() == 0


def owner_kwargs() -> dict[str, Any]:
    """subprocess arguments that drop to the postgres user when run as root (PostgreSQL refuses root)."""
    return {"user": "postgres", "group": "postgres", "extra_groups": []} if as_root() else {}


def chown(p: Path) -> None:
    if as_root():
        shutil.chown(p, "postgres", "postgres")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dir_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def absolute(p: Path) -> Path:
    return Path(os.path.abspath(p))


def open_log(p: Path) -> Any:
    """The server's log file (handed to the server process as its stdout/stderr), owned by postgres."""
    f = open(p, "ab")
    chown(p)
    return f


def read_lines(p: Path) -> list[str]:
    try:
        return p.read_text(errors="replace").splitlines()
    except OSError:
        return []


def dies_with_us(sig: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when this process (the thread that forks: asyncio's loop
    thread) dies, also by SIGKILL (Linux ``PR_SET_PDEATHSIG``; set after the drop to ``postgres``)."""
    return guard.pdeathsig_preexec(sig)


def guarded(argv: list[str]) -> list[str]:
    """``argv`` run under :mod:`executor.guard` (as ``postgres`` when we are root): the tool and every process
    it starts die with this process. The guard's own process group is the tool's: killing it kills all."""
    head = [sys.executable, "-I", guard.__file__, str(os.getpid())]
    if as_root():
        head += ["--user", "postgres"]
    return [*head, "--", *argv]


async def kill_group(proc: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
        await asyncio.wait_for(proc.wait(), 30)


# the tools `make setup` installs for this checkout (barman-cloud, WAL-E: scripts/setup-tools.sh)
PROJECT_TOOLS = Path(__file__).resolve().parents[1] / ".tools" / "venv" / "bin"


def tool_path(settings: RestoreConfig, caller: Mapping[str, str], project_tools: Path | None = PROJECT_TOOLS) -> str:
    """PATH for the tools and the server: RESTORE_TOOLS_PATH first, then the project's own tools (when
    ``make setup`` installed them), then the caller's PATH."""
    parts = [p for p in (settings.restore_tools_path or "").split(":") if p]
    if project_tools is not None and project_tools.is_dir() and str(project_tools) not in parts:
        parts.append(str(project_tools))
    parts += [p for p in caller.get("PATH", "/usr/bin:/bin").split(":") if p and p not in parts]
    return ":".join(parts)


def find_pg_bin(pg_version: int | None, pg_bin: Path | None) -> Path:
    if pg_bin is not None:
        d = Path(pg_bin)
        if not (d / "postgres").is_file() or not (d / "pg_ctl").is_file():
            raise RestoreError("bad_input", "input", f"--pg-bin {d}: no PostgreSQL server binaries (postgres, "
                               "pg_ctl) there")
        return d
    if pg_version is None:
        raise RestoreError("bad_input", "input", "the plan does not say which PostgreSQL major version the "
                           "archive is: name the server binaries with --pg-bin")
    d = Path(f"/usr/lib/postgresql/{pg_version}/bin")
    if not (d / "postgres").is_file():
        raise RestoreError("bad_input", "input", f"the archive is PostgreSQL {pg_version}, and its server binaries "
                           f"are not installed ({d}/postgres is missing): install PostgreSQL {pg_version} "
                           "(e.g. the postgresql-{0} package) or name its bin directory with --pg-bin"
                           .format(pg_version))
    return d


def check_pgdata(pgdata: Path, force_clean: bool = False) -> bool:
    """True when ``pgdata`` must be created; raises bad_input when it exists and is not an empty directory
    (``force_clean``: unless it is what a restore that did not finish left, named by its marker: then what
    that restore left running is stopped and the directory emptied)."""
    if not pgdata.exists() and not pgdata.is_symlink():
        return True
    if not pgdata.is_dir():
        raise RestoreError("bad_input", "input", f"--pgdata {pgdata} exists and is not a directory; nothing "
                           "was touched")
    if any(pgdata.iterdir()):
        if (pgdata / clone.MARKER).is_file():
            if force_clean:
                try:
                    reap.clean_failed_restore(pgdata)
                except reap.RestoreRunning as e:
                    raise RestoreError("bad_input", "input", f"{e}; nothing was touched") from None
                return False
            raise RestoreError("bad_input", "input", f"--pgdata {pgdata} is what a restore that did not finish "
                               f"left ({pgdata / clone.MARKER} says so); nothing was touched: add --force-clean "
                               "to remove it and restore again, or name a new directory")
        raise RestoreError("bad_input", "input", f"--pgdata {pgdata} is not empty; nothing in it was touched "
                           "(name a new or empty directory)" + (" — --force-clean only removes what a restore "
                           f"that did not finish left, marked by a {clone.MARKER} file" if force_clean else ""))
    return False


def default_socket_dir() -> str:
    """Where a clone started with plain ``pg_ctl start`` puts its socket: Debian's socket directory (owned
    by ``postgres``, where psql looks first) when it exists, else ``/tmp``."""
    d = Path("/var/run/postgresql")
    return str(d) if d.is_dir() else "/tmp"
