"""Executing a plan (the adapter around :mod:`executor.logic`): fetch the base backup with the layout's real
tool, write the plan's settings, start PostgreSQL as ``postgres`` on a private socket (no TCP listener),
follow replay, verify it reached what the plan promised, optionally run a check query, and shut down.

Every failure and every cancellation (``asyncio.CancelledError``, which the CLI raises on SIGTERM) stops the
tool and the server it started and removes the data directory it made (unless ``keep_failed``). A SIGKILL
cannot be caught: the tool runs under :mod:`executor.guard` and the server gets SIGQUIT when this process dies
(``PR_SET_PDEATHSIG``), and the directory carries the ``RESTORE_INCOMPLETE`` marker (:mod:`executor.clone`)
until the clone is verified and has its own settings (issue 24). The S3 endpoint is checked before any tool
runs (:mod:`executor.preflight`).

Longer than 400 lines: one run's stages (fetch, prepare, recover, verify, make ready) share the run's state
and read best in order; what is not a stage lives beside it (clone, failfast, preflight, reap, guard).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg

from executor import clone, failfast, guard, logic, preflight, reap
from executor.config import RestoreConfig
from recovery.docjson import document_json
from recovery.lsn import Lsn
from recovery.plandoc import PlanBackup, PlanDoc, PlanDocError, PlanReplay, PlanTarget
from recovery.timefmt import iso, iso_offset
from scheduler.layouts.spec import S3Access, StorageLoc

EXIT_CODES = {"bad_input": 2, "refused": 3, "restore_failed": 4}


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """``stage``: fetch | start | recover | verify | check | shutdown | done."""

    stage: str
    message: str = ""
    bytes_fetched: int = 0
    replay_lsn: str | None = None
    end_lsn: str | None = None
    fraction: float | None = None     # replay progress between the backup's stop LSN and end_lsn


class RestoreError(Exception):
    """A restore that did not produce a verified clone. ``code``: restore_failed | bad_input | refused |
    cancelled | error; ``stage``: input | fetch | recover | verify | check | shutdown."""

    def __init__(self, code: str, stage: str, message: str, *, segment: str | None = None,
                 postgres_log: list[str] | None = None, refusal: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.stage, self.message = code, stage, message
        self.segment = segment
        self.postgres_log = list(postgres_log or [])
        self.refusal = refusal

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.code, 1)

    def to_json(self) -> dict[str, Any]:
        if self.refusal is not None:
            return self.refusal
        return {"error": {"code": self.code, "stage": self.stage, "message": self.message,
                          "segment": self.segment, "postgres_log": self.postgres_log}}


@dataclass(frozen=True, slots=True)
class RestoreResult:
    pgdata: Path
    backup: PlanBackup
    target: PlanTarget
    timeline: int
    reached_lsn: str
    last_commit_time: str | None
    duration_s: float
    fetch_s: float
    replay_s: float
    bytes_fetched: int
    warnings: list[str] = field(default_factory=list)
    check_result: str | None = None
    postgres_log: list[str] = field(default_factory=list)
    running: bool = False
    start_command: list[str] = field(default_factory=list)
    port: int | None = None
    socket_dir: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"state": "restored", "pgdata": str(self.pgdata), "backup": document_json(self.backup),
                "target": document_json(self.target),
                "timeline": self.timeline,
                "reached": {"lsn": self.reached_lsn, "last_commit_time": self.last_commit_time},
                "duration_s": round(self.duration_s, 3), "fetch_s": round(self.fetch_s, 3),
                "replay_s": round(self.replay_s, 3), "bytes_fetched": self.bytes_fetched,
                "running": self.running, "check_result": self.check_result, "warnings": list(self.warnings),
                "start_command": clone.shell_line(self.start_command) if self.start_command else None,
                "port": self.port, "socket_dir": self.socket_dir}


# -- helpers ------------------------------------------------------------------------------------------------

def _secret(v: Any) -> str | None:
    return v.get_secret_value() if v is not None else None


def s3_access(settings: RestoreConfig) -> S3Access:
    return S3Access(settings.s3_endpoint_url, _secret(settings.aws_access_key_id),
                          _secret(settings.aws_secret_access_key), settings.aws_default_region,
                          settings.s3_verify_tls, settings.s3_ca_bundle)


def _as_root() -> bool:
    return os.geteuid() == 0


def _owner_kwargs() -> dict[str, Any]:
    """subprocess arguments that drop to the postgres user when run as root (PostgreSQL refuses root)."""
    return {"user": "postgres", "group": "postgres", "extra_groups": []} if _as_root() else {}


def _chown(p: Path) -> None:
    if _as_root():
        shutil.chown(p, "postgres", "postgres")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dir_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def _absolute(p: Path) -> Path:
    return Path(os.path.abspath(p))


def _open_log(p: Path) -> Any:
    """The server's log file (handed to the server process as its stdout/stderr), owned by postgres."""
    f = open(p, "ab")
    _chown(p)
    return f


def _read_lines(p: Path) -> list[str]:
    try:
        return p.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _dies_with_us(sig: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when this process (the thread that forks: asyncio's loop
    thread) dies, also by SIGKILL (Linux ``PR_SET_PDEATHSIG``; set after the drop to ``postgres``)."""
    return guard.pdeathsig_preexec(sig)


def guarded(argv: list[str]) -> list[str]:
    """``argv`` run under :mod:`executor.guard` (as ``postgres`` when we are root): the tool and every process
    it starts die with this process. The guard's own process group is the tool's: killing it kills all."""
    head = [sys.executable, "-I", guard.__file__, str(os.getpid())]
    if _as_root():
        head += ["--user", "postgres"]
    return [*head, "--", *argv]


async def _kill_group(proc: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
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


def _check_pgdata(pgdata: Path, force_clean: bool = False) -> bool:
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


def _meaning(out: str) -> str:
    """A tool's output for an error message: what it means in the product's settings (when known), then
    its last lines."""
    tail = " | ".join([ln for ln in out.splitlines() if ln.strip()][-12:]) or "no output"
    meaning = failfast.translate(out)
    return f": {meaning}. The tool said: {tail}" if meaning else f": {tail}"


# -- the executor -----------------------------------------------------------------------------------------------

async def execute_plan(plan: PlanDoc, pgdata: Path, settings: RestoreConfig, *, pg_bin: Path | None = None,
                       keep_running: bool = False, keep_failed: bool = False,
                       progress: Callable[[ProgressEvent], None] | None = None,
                       check_query: str | None = None,
                       environ: Mapping[str, str] | None = None, port: int = 5432, socket_dir: str | None = None,
                       force_clean: bool = False,
                       on_server: Callable[[int, Path], Awaitable[None]] | None = None,
                       inspect: Callable[[Path, int], Awaitable[None]] | None = None) -> RestoreResult:
    """Restore ``plan`` into ``pgdata`` and verify it; see the module docstring and DESIGN.md.

    ``port``/``socket_dir``: the clone's own, written into it once it is verified (the recovery run uses a
    private socket and no TCP). ``on_server(pid, pgdata)`` is awaited when the recovery server started (a
    drill records it in its row for the reaper).

    ``environ`` (default ``os.environ``) is the caller's environment: its ``PATH``, and the
    ``PGBACKREST_*``/``WALG_*``/``WALE_*``/``AWS_*`` variables passed to the tools and the server.
    ``inspect(socket_dir, port)`` runs against the verified server before it is shut down (drills read
    relation maps there)."""
    exp = plan.replay
    try:
        loc = logic.storage_of(plan)
    except PlanDocError as e:
        raise RestoreError("bad_input", "input", f"not an executable plan: {e}") from None
    doc = plan
    pgdata = _absolute(pgdata)
    pg_version = doc.pg_version
    bindir = find_pg_bin(pg_version, pg_bin) if (pg_bin is not None or pg_version is not None) else None
    s3 = s3_access(settings)
    caller = dict(os.environ if environ is None else environ)
    path = tool_path(settings, caller)
    work_placeholder = "/nonexistent"
    cmd = logic.fetch_command(loc, doc.backup.label, str(pgdata), s3, work=work_placeholder)
    if shutil.which(cmd.argv[0], path=path) is None:
        raise RestoreError("bad_input", "input", f"{cmd.argv[0]} ({cmd.label}) is not installed or not on PATH "
                           "(RESTORE_TOOLS_PATH adds directories)")
    problem = await preflight.check(loc.layout, s3, caller, max(2.0, settings.s3_connect_timeout_seconds))
    if problem is not None:
        raise RestoreError("bad_input", "input", problem)
    created = _check_pgdata(pgdata, force_clean)
    run = _Run(doc, loc, exp, pgdata, created, settings, s3, path, progress, keep_failed, caller)
    run.port, run.socket_dir, run.on_server = port, socket_dir or default_socket_dir(), on_server
    try:
        return await run.go(bindir, keep_running, check_query, inspect)
    except BaseException as e:
        await run.abort()
        if isinstance(e, RestoreError):
            raise
        if isinstance(e, asyncio.CancelledError):
            raise
        raise RestoreError("error", run.stage, f"{type(e).__name__}: {e}",
                           postgres_log=logic.relevant_log(_read_lines(run.log))) from e


class _Run:
    def __init__(self, doc: PlanDoc, loc: StorageLoc, exp: PlanReplay, pgdata: Path,
                 created: bool, settings: RestoreConfig, s3: S3Access, path: str,
                 progress: Callable[[ProgressEvent], None] | None, keep_failed: bool,
                 caller: dict[str, str]) -> None:
        self.caller = caller
        self.doc, self.loc, self.exp, self.pgdata, self.created = doc, loc, exp, pgdata, created
        self.settings, self.s3, self.path, self.keep_failed = settings, s3, path, keep_failed
        self.progress = progress or (lambda e: None)
        self.stage = "fetch"
        # the work directory (tool config, socket, server log): RESTORE_WORK_DIR (a drill: its scratch
        # directory), else inside the data directory, so that a killed restore leaves one directory, marked
        self.work = Path(tempfile.mkdtemp(prefix="backup-catalog-restore-", dir=settings.restore_work_dir)) \
            if settings.restore_work_dir else pgdata / ".restore-work"
        sock = self.work / "sock"
        # a unix socket path is at most 107 bytes: a deep directory gets a short one of its own
        self.sock = sock if len(str(sock)) <= 90 else Path(tempfile.mkdtemp(prefix="bc-sock-"))
        self.log = self.work / "postgres.log"
        self.fetch_proc: asyncio.subprocess.Process | None = None
        self.server: asyncio.subprocess.Process | None = None
        self.bytes = 0
        self.warnings: list[str] = []
        self.kept_running = False
        self.port = 5432                  # the clone's own (recovery: self.private_port)
        self.socket_dir = "/tmp"
        self.on_server: Callable[[int, Path], Awaitable[None]] | None = None
        self.marker_facts: dict[str, object] = {}

    def emit(self, **kw: Any) -> None:
        with contextlib.suppress(Exception):
            self.progress(ProgressEvent(**kw))

    async def go(self, bindir: Path | None, keep_running: bool, check_query: str | None,
                 inspect: Callable[[Path, int], Awaitable[None]] | None = None) -> RestoreResult:
        t0 = time.monotonic()
        if self.created:
            self.pgdata.mkdir(parents=True, mode=0o700)
        _chown(self.pgdata)
        self.pgdata.chmod(0o700)
        self.work.mkdir(mode=0o700, exist_ok=True)
        self.work.chmod(0o700)
        _chown(self.work)
        self.marker_facts = {"restore_pid": os.getpid(), "host": socket.gethostname(),
                             "started": iso(datetime.now(timezone.utc).replace(microsecond=0)),
                             "backup": self.doc.backup.label, "work": str(self.work)}
        self.mark()
        await self.fetch()
        fetch_s = time.monotonic() - t0
        bindir = self.prepare(bindir)
        t1 = time.monotonic()
        reached, last_commit, timeline = await self.recover(bindir)
        replay_s = time.monotonic() - t1
        check = await self.check(check_query) if check_query else None
        if inspect is not None:
            await inspect(self.sock, self.private_port)
        (self.work / "pgbackrest.conf").unlink(missing_ok=True)    # its credentials: not needed after promotion
        await self.shutdown()
        start = self.make_ready(bindir)
        lines = _read_lines(self.log)
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.sock, ignore_errors=True)
        (self.pgdata / clone.MARKER).unlink(missing_ok=True)       # a verified clone, ready to start
        running = await self.start_kept(start) if keep_running else False
        self.emit(stage="done", message="restored and verified", bytes_fetched=self.bytes, replay_lsn=str(reached))
        return RestoreResult(self.pgdata, self.doc.backup, self.doc.target, timeline, str(reached),
                             last_commit, time.monotonic() - t0, fetch_s, replay_s, self.bytes,
                             [*self.doc.warnings, *self.warnings], check,
                             logic.relevant_log(lines), running, start, self.port, self.socket_dir)

    def mark(self, **facts: object) -> None:
        """(Re)write the marker: this directory is a restore in progress, not a database."""
        self.marker_facts.update(facts)
        p = self.pgdata / clone.MARKER
        p.write_text(clone.marker_text(self.marker_facts))
        _chown(p)

    def make_ready(self, bindir: Path) -> list[str]:
        """After a clean shutdown: the clone's own settings (recovery ones removed, its port and socket
        directory, no source-only settings); returns the one command that starts it."""
        d = self.pgdata
        auto = d / "postgresql.auto.conf"
        auto.write_text(clone.ready_auto_conf(auto.read_text(errors="replace") if auto.exists() else "",
                                              port=self.port, socket_dir=self.socket_dir))
        conf = d / "postgresql.conf"
        if conf.is_file():
            text = conf.read_text(errors="replace")
            ready = clone.ready_postgresql_conf(text)
            if ready != text:
                conf.write_text(ready)
        logdir = d / "log"
        logdir.mkdir(exist_ok=True)
        for p in (auto, conf, logdir):
            if p.exists():
                _chown(p)
        return clone.start_command(str(bindir / "pg_ctl"), str(d), logfile=str(logdir / "pg_ctl-start.log"),
                                   as_root=_as_root())

    async def start_kept(self, argv: list[str]) -> bool:
        """``--keep-running``: start the clone with its own start command (a server of its own, not tied to
        this process). A failure to start is a warning: the clone is verified and stays."""
        self.stage = "start"
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                    cwd="/", start_new_session=True)
        out, _ = await proc.communicate()
        if proc.returncode == 0:
            self.warnings.append(f"the server keeps running: port {self.port}, socket directory {self.socket_dir}")
            return True
        tail = " | ".join(_read_lines(self.pgdata / "log" / "pg_ctl-start.log")[-5:]) or out.decode(errors="replace")
        self.warnings.append(f"the clone is restored and verified, but it did not start ({clone.shell_line(argv)} "
                             f"exited {proc.returncode}): {tail}")
        return False

    # -- fetch -------------------------------------------------------------------------------------------------
    async def fetch(self) -> None:
        self.stage = "fetch"
        # the tool fetches into a directory of its own inside pgdata, beside the marker (the tools want an
        # empty destination); moved into place once complete
        staging = self.pgdata / clone.FETCH_DIR
        staging.mkdir(mode=0o700)
        _chown(staging)
        cmd = logic.fetch_command(self.loc, self.doc.backup.label, str(staging), self.s3,
                                  work=str(self.work))
        for sub in ("lock", "log", "spool", "sock"):
            (self.work / sub).mkdir(mode=0o700, exist_ok=True)
            _chown(self.work / sub)
        self.sock.chmod(0o700)
        _chown(self.sock)
        for name, text in cmd.files.items():
            p = self.work / name
            p.write_text(text)
            p.chmod(0o600)
            _chown(p)
        env = {"PATH": self.path, "LANG": "C.UTF-8", "TZ": "UTC", "HOME": str(self.work), **cmd.env,
               **logic.passthrough(self.caller)}
        for k, v in self.caller.items():
            if k.startswith("AWS_") and k not in env and not k.startswith("AWS_ENDPOINT_URL"):
                env[k] = v
        argv = list(cmd.argv)
        argv[0] = shutil.which(argv[0], path=self.path) or argv[0]
        self.emit(stage="fetch", message=f"{cmd.label}: backup {self.doc.backup.label}")
        self.fetch_proc = await asyncio.create_subprocess_exec(
            *guarded(argv), env=env, cwd=str(self.work), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        assert self.fetch_proc.stdout is not None
        reader = asyncio.ensure_future(self.fetch_proc.stdout.read())
        deadline = time.monotonic() + self.settings.restore_fetch_timeout_seconds
        stall = self.settings.restore_stall_seconds
        last_change, last_bytes = time.monotonic(), -1
        while self.fetch_proc.returncode is None:
            try:
                await asyncio.wait_for(asyncio.shield(self.fetch_proc.wait()), 1.0)
            except TimeoutError:
                pass
            self.bytes = await asyncio.to_thread(_dir_bytes, self.pgdata)
            self.emit(stage="fetch", message=cmd.label, bytes_fetched=self.bytes)
            now = time.monotonic()
            if self.bytes != last_bytes:
                last_change, last_bytes = now, self.bytes
            why = None
            if now > deadline:
                why = (f"{cmd.label} did not finish within {self.settings.restore_fetch_timeout_seconds:.0f}s "
                       "(RESTORE_FETCH_TIMEOUT_SECONDS)")
            elif stall > 0 and now - last_change > stall:
                why = (f"{cmd.label} made no progress for {stall:g} s ({self.bytes} bytes fetched; "
                       "RESTORE_STALL_SECONDS): the S3 endpoint stopped sending")
            if why is not None and self.fetch_proc.returncode is None:
                await _kill_group(self.fetch_proc)
                out = (await reader).decode(errors="replace")
                raise RestoreError("restore_failed", "fetch", why + _meaning(out))
        out = (await reader).decode(errors="replace")
        self.bytes = await asyncio.to_thread(_dir_bytes, self.pgdata)
        if self.fetch_proc.returncode != 0:
            raise RestoreError("restore_failed", "fetch", f"{cmd.label} of backup {self.doc.backup.label} from "
                               f"s3://{self.loc.bucket}/{self.loc.prefix} exited {self.fetch_proc.returncode}"
                               + _meaning(out))
        for entry in list(staging.iterdir()):
            os.rename(entry, self.pgdata / entry.name)
        staging.rmdir()
        # the tool's files as the server's restore_command uses them: naming the data directory itself
        final = logic.fetch_command(self.loc, self.doc.backup.label, str(self.pgdata), self.s3,
                                    work=str(self.work))
        for name, text in final.files.items():
            (self.work / name).write_text(text)

    # -- settings --------------------------------------------------------------------------------------------
    def prepare(self, bindir: Path | None) -> Path:
        self.stage = "recover"
        d = self.pgdata
        version_file = d / "PG_VERSION"
        if not version_file.is_file():
            raise RestoreError("restore_failed", "fetch", f"the fetched backup has no PG_VERSION in {d}: not a "
                               "PostgreSQL data directory")
        try:
            major = int(version_file.read_text().strip().split(".")[0])
        except ValueError:
            raise RestoreError("restore_failed", "fetch", f"unreadable PG_VERSION in {d}") from None
        planned = self.doc.pg_version
        if planned is not None and planned != major:
            self.warnings.append(f"the plan says PostgreSQL {planned}, the fetched backup is PostgreSQL {major}")
        if bindir is None or (planned is not None and planned != major):
            bindir = find_pg_bin(major, None)
        for stale in logic.STALE_FILES:
            (d / stale).unlink(missing_ok=True)
        (d / "pg_wal").mkdir(exist_ok=True)
        auto = d / "postgresql.auto.conf"
        existing = auto.read_text(errors="replace") if auto.exists() else ""
        for name, text in logic.settings_files(self.doc.files, existing).items():
            p = d / name
            p.write_text(text)
            p.chmod(0o600)
        hba = self.work / "pg_hba.conf"
        hba.write_text(logic.PRIVATE_HBA)
        hba.chmod(0o600)
        for root, dirs, files in os.walk(d):
            for n in dirs + files:
                p = Path(root) / n
                if not p.is_symlink():
                    _chown(p)
                    p.chmod((p.stat().st_mode & 0o700) | (0o700 if p.is_dir() else 0o600))
        _chown(hba)
        _chown(d)
        d.chmod(0o700)
        return bindir

    # -- recovery ------------------------------------------------------------------------------------------------
    async def recover(self, bindir: Path) -> tuple[Lsn, str | None, int]:
        self.private_port = _free_port()
        sock = self.sock
        env = logic.server_env(self.loc, self.s3, work=str(self.work), caller_env=self.caller, path=self.path)
        env["HOME"] = str(self.work)
        opts = logic.server_options(port=self.private_port, socket_dir=str(sock), hba_file=str(self.work / "pg_hba.conf"))
        logf = _open_log(self.log)
        try:
            self.server = await asyncio.create_subprocess_exec(
                str(bindir / "postgres"), "-D", str(self.pgdata), *opts, env=env, cwd=str(self.work),
                stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
                preexec_fn=_dies_with_us(signal.SIGQUIT), **_owner_kwargs())
        finally:
            logf.close()
        self.mark(server_pid=self.server.pid, server_pgdata=str(self.pgdata))
        if self.on_server is not None:
            try:
                await self.on_server(self.server.pid, self.pgdata)
            except Exception as e:     # the marker and pdeathsig still hold; recording is a second net
                self.warnings.append(f"the recovery server could not be recorded: {type(e).__name__}: {e}")
        self.emit(stage="start", message=f"PostgreSQL {bindir} started (pid {self.server.pid}), replaying",
                  bytes_fetched=self.bytes)
        end = self.exp.end
        start_lsn = logic.lsn_or_none(self.doc.backup.stop_lsn)
        deadline = time.monotonic() + self.settings.restore_recovery_timeout_seconds
        promoted = False
        reached: Lsn | None = None
        last_commit: str | None = None
        while True:
            if self.server.returncode is not None:
                break
            if time.monotonic() > deadline:
                raise RestoreError("restore_failed", "recover", "recovery did not finish within "
                                   f"{self.settings.restore_recovery_timeout_seconds:.0f}s "
                                   "(RESTORE_RECOVERY_TIMEOUT_SECONDS)", postgres_log=logic.relevant_log(
                                       _read_lines(self.log)))
            row = await self.query("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                                   "CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END, "
                                   "pg_last_xact_replay_timestamp()")
            if row is not None:
                in_rec, lsn_text, pause, lct = row
                reached = logic.lsn_or_none(lsn_text) or reached
                last_commit = iso_offset(lct) or last_commit
                frac = None
                if reached is not None and end is not None and start_lsn is not None and end > start_lsn:
                    frac = max(0.0, min(1.0, (reached.value - start_lsn.value) / (end.value - start_lsn.value)))
                self.emit(stage="recover", message="replaying", bytes_fetched=self.bytes,
                          replay_lsn=str(reached) if reached else None, end_lsn=str(end) if end else None,
                          fraction=frac)
                if not in_rec:
                    promoted = True
                    break
                if pause == "paused":
                    await self.query("SELECT pg_wal_replay_resume()")
            await asyncio.sleep(0.3)
        self.stage = "verify"
        timeline = 0
        if promoted:
            row = await self.query("SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(), "
                                   "(SELECT timeline_id FROM pg_control_checkpoint())")
            if row is not None:
                reached = logic.lsn_or_none(row[0]) or reached
                last_commit = iso_offset(row[1]) or last_commit
                timeline = int(row[2])
        lines = _read_lines(self.log)
        facts = logic.parse_log(lines)
        timeline = facts.new_timeline or timeline
        verdict = logic.judge(self.exp, facts, promoted=promoted, reached=reached,
                              timeline_path=self.doc.timeline_path)
        if not verdict.ok:
            raise RestoreError("restore_failed", "recover" if not promoted else "verify", verdict.message,
                               segment=verdict.segment, postgres_log=logic.relevant_log(lines))
        self.emit(stage="verify", message=verdict.message, bytes_fetched=self.bytes,
                  replay_lsn=str(reached) if reached else None, end_lsn=str(end) if end else None, fraction=1.0)
        assert reached is not None or facts.redo_done is not None
        return (reached or facts.redo_done or Lsn(0)), last_commit, timeline

    async def query(self, sql: str) -> tuple[Any, ...] | None:
        """One row over the private socket, or None while the server does not accept connections yet."""
        try:
            conn = await asyncpg.connect(host=str(self.sock), port=self.private_port, user="postgres",
                                         database="postgres", timeout=5, command_timeout=30)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None
        try:
            r = await conn.fetchrow(sql)
            return tuple(r) if r is not None else ()
        except asyncpg.CannotConnectNowError:
            return None
        finally:
            await conn.close()

    async def check(self, sql: str) -> str:
        self.stage = "check"
        try:
            conn = await asyncpg.connect(host=str(self.sock), port=self.private_port, user="postgres",
                                         database="postgres", timeout=10, command_timeout=300)
            try:
                v = await conn.fetchval(sql)
            finally:
                await conn.close()
        except (TimeoutError, OSError, asyncpg.PostgresError) as e:
            raise RestoreError("restore_failed", "check", f"the check query failed: {e}") from None
        self.emit(stage="check", message=f"check query: {v}")
        return json.dumps(v, default=str) if not isinstance(v, str) else v

    async def shutdown(self) -> None:
        self.stage = "shutdown"
        srv = self.server
        if srv is None or srv.returncode is not None:
            return
        self.emit(stage="shutdown", message="clean shutdown", bytes_fetched=self.bytes)
        with contextlib.suppress(ProcessLookupError):
            srv.send_signal(signal.SIGINT)      # fast shutdown: a shutdown checkpoint, then exit
        try:
            await asyncio.wait_for(srv.wait(), self.settings.restore_stop_timeout_seconds)
        except TimeoutError:
            await _kill_group(srv)
            raise RestoreError("restore_failed", "shutdown", "the server did not shut down within "
                               f"{self.settings.restore_stop_timeout_seconds:.0f}s") from None
        if srv.returncode != 0:
            raise RestoreError("restore_failed", "shutdown", f"the server exited {srv.returncode} on shutdown",
                               postgres_log=logic.relevant_log(_read_lines(self.log)))
        if (self.pgdata / "recovery.signal").exists():
            raise RestoreError("restore_failed", "shutdown", "recovery.signal is still there after promotion")

    async def abort(self) -> None:
        """Stop whatever runs, remove what was made (unless keep_failed). Shielded from a second cancel."""
        async def _abort() -> None:
            for proc in (self.fetch_proc, self.server):
                if proc is not None and proc.returncode is None:
                    if proc is self.server:
                        with contextlib.suppress(ProcessLookupError):
                            proc.send_signal(signal.SIGQUIT)   # immediate shutdown: children go too
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(proc.wait(), 10)
                    await _kill_group(proc)
            shutil.rmtree(self.work, ignore_errors=True)     # its log lines travel with the error
            shutil.rmtree(self.sock, ignore_errors=True)
            if not self.keep_failed:
                if self.created:
                    shutil.rmtree(self.pgdata, ignore_errors=True)
                elif self.pgdata.is_dir():
                    for p in self.pgdata.iterdir():
                        if p.is_dir() and not p.is_symlink():
                            shutil.rmtree(p, ignore_errors=True)
                        else:
                            p.unlink(missing_ok=True)
        task = asyncio.ensure_future(_abort())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise


