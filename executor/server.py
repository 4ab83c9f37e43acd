"""The stages on the recovery server: the plan's settings written into the fetched data directory
(:func:`prepare`), PostgreSQL started as ``postgres`` on a private socket with no TCP listener, replay followed
to promotion and verified against the plan (:func:`recover`), the optional check query, the clean shutdown,
and, once verified, the clone's own settings (:func:`make_ready`; :func:`start_kept` for ``--keep-running``)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg

from executor import clone, host, logic
from executor.outcome import RestoreError
from executor.state import Run
from recovery.lsn import Lsn
from recovery.timefmt import iso_offset


def prepare(run: Run, bindir: Path | None) -> Path:
    run.stage = "recover"
    d = run.pgdata
    version_file = d / "PG_VERSION"
    if not version_file.is_file():
        raise RestoreError("restore_failed", "fetch", f"the fetched backup has no PG_VERSION in {d}: not a "
                           "PostgreSQL data directory")
    try:
        major = int(version_file.read_text().strip().split(".")[0])
    except ValueError:
        raise RestoreError("restore_failed", "fetch", f"unreadable PG_VERSION in {d}") from None
    planned = run.doc.pg_version
    if planned is not None and planned != major:
        run.warnings.append(f"the plan says PostgreSQL {planned}, the fetched backup is PostgreSQL {major}")
    if bindir is None or (planned is not None and planned != major):
        bindir = host.find_pg_bin(major, None)
    for stale in logic.STALE_FILES:
        (d / stale).unlink(missing_ok=True)
    (d / "pg_wal").mkdir(exist_ok=True)
    auto = d / "postgresql.auto.conf"
    existing = auto.read_text(errors="replace") if auto.exists() else ""
    for name, text in logic.settings_files(run.doc.files, existing).items():
        p = d / name
        p.write_text(text)
        p.chmod(0o600)
    hba = run.work / "pg_hba.conf"
    hba.write_text(logic.PRIVATE_HBA)
    hba.chmod(0o600)
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            p = Path(root) / n
            if not p.is_symlink():
                host.chown(p)
                p.chmod((p.stat().st_mode & 0o700) | (0o700 if p.is_dir() else 0o600))
    host.chown(hba)
    host.chown(d)
    d.chmod(0o700)
    return bindir


async def recover(run: Run, bindir: Path) -> tuple[Lsn, str | None, int]:
    run.private_port = host.free_port()
    sock = run.sock
    env = logic.server_env(run.loc, run.s3, work=str(run.work), caller_env=run.caller, path=run.path)
    env["HOME"] = str(run.work)
    opts = logic.server_options(port=run.private_port, socket_dir=str(sock), hba_file=str(run.work / "pg_hba.conf"))
    logf = host.open_log(run.log)
    try:
        run.server = await asyncio.create_subprocess_exec(
            str(bindir / "postgres"), "-D", str(run.pgdata), *opts, env=env, cwd=str(run.work),
            stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
            preexec_fn=host.dies_with_us(signal.SIGQUIT), **host.owner_kwargs())
    finally:
        logf.close()
    run.mark(server_pid=run.server.pid, server_pgdata=str(run.pgdata))
    if run.on_server is not None:
        try:
            await run.on_server(run.server.pid, run.pgdata)
        except Exception as e:     # the marker and pdeathsig still hold; recording is a second net
            run.warnings.append(f"the recovery server could not be recorded: {type(e).__name__}: {e}")
    run.emit(stage="start", message=f"PostgreSQL {bindir} started (pid {run.server.pid}), replaying",
              bytes_fetched=run.bytes)
    end = run.exp.end
    start_lsn = logic.lsn_or_none(run.doc.backup.stop_lsn)
    deadline = time.monotonic() + run.settings.restore_recovery_timeout_seconds
    promoted = False
    reached: Lsn | None = None
    last_commit: str | None = None
    while True:
        if run.server.returncode is not None:
            break
        if time.monotonic() > deadline:
            raise RestoreError("restore_failed", "recover", "recovery did not finish within "
                               f"{run.settings.restore_recovery_timeout_seconds:.0f}s "
                               "(RESTORE_RECOVERY_TIMEOUT_SECONDS)", postgres_log=logic.relevant_log(
                                   host.read_lines(run.log)))
        row = await query(run, "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                               "CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END, "
                               "pg_last_xact_replay_timestamp()")
        if row is not None:
            in_rec, lsn_text, pause, lct = row
            reached = logic.lsn_or_none(lsn_text) or reached
            last_commit = iso_offset(lct) or last_commit
            frac = None
            if reached is not None and end is not None and start_lsn is not None and end > start_lsn:
                frac = max(0.0, min(1.0, (reached.value - start_lsn.value) / (end.value - start_lsn.value)))
            run.emit(stage="recover", message="replaying", bytes_fetched=run.bytes,
                      replay_lsn=str(reached) if reached else None, end_lsn=str(end) if end else None,
                      fraction=frac)
            if not in_rec:
                promoted = True
                break
            if pause == "paused":
                await query(run, "SELECT pg_wal_replay_resume()")
        await asyncio.sleep(0.3)
    run.stage = "verify"
    timeline = 0
    if promoted:
        row = await query(run, "SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(), "
                               "(SELECT timeline_id FROM pg_control_checkpoint())")
        if row is not None:
            reached = logic.lsn_or_none(row[0]) or reached
            last_commit = iso_offset(row[1]) or last_commit
            timeline = int(row[2])
    lines = host.read_lines(run.log)
    facts = logic.parse_log(lines)
    timeline = facts.new_timeline or timeline
    verdict = logic.judge(run.exp, facts, promoted=promoted, reached=reached,
                          timeline_path=run.doc.timeline_path)
    if not verdict.ok:
        raise RestoreError("restore_failed", "recover" if not promoted else "verify", verdict.message,
                           segment=verdict.segment, postgres_log=logic.relevant_log(lines))
    run.emit(stage="verify", message=verdict.message, bytes_fetched=run.bytes,
              replay_lsn=str(reached) if reached else None, end_lsn=str(end) if end else None, fraction=1.0)
    assert reached is not None or facts.redo_done is not None
    return (reached or facts.redo_done or Lsn(0)), last_commit, timeline


async def query(run: Run, sql: str) -> tuple[Any, ...] | None:
    """One row over the private socket, or None while the server does not accept connections yet."""
    try:
        conn = await asyncpg.connect(host=str(run.sock), port=run.private_port, user="postgres",
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


async def check(run: Run, sql: str) -> str:
    run.stage = "check"
    try:
        conn = await asyncpg.connect(host=str(run.sock), port=run.private_port, user="postgres",
                                     database="postgres", timeout=10, command_timeout=300)
        try:
            v = await conn.fetchval(sql)
        finally:
            await conn.close()
    except (TimeoutError, OSError, asyncpg.PostgresError) as e:
        raise RestoreError("restore_failed", "check", f"the check query failed: {e}") from None
    run.emit(stage="check", message=f"check query: {v}")
    return json.dumps(v, default=str) if not isinstance(v, str) else v


async def shutdown(run: Run) -> None:
    run.stage = "shutdown"
    srv = run.server
    if srv is None or srv.returncode is not None:
        return
    run.emit(stage="shutdown", message="clean shutdown", bytes_fetched=run.bytes)
    with contextlib.suppress(ProcessLookupError):
        srv.send_signal(signal.SIGINT)      # fast shutdown: a shutdown checkpoint, then exit
    try:
        await asyncio.wait_for(srv.wait(), run.settings.restore_stop_timeout_seconds)
    except TimeoutError:
        await host.kill_group(srv)
        raise RestoreError("restore_failed", "shutdown", "the server did not shut down within "
                           f"{run.settings.restore_stop_timeout_seconds:.0f}s") from None
    if srv.returncode != 0:
        raise RestoreError("restore_failed", "shutdown", f"the server exited {srv.returncode} on shutdown",
                           postgres_log=logic.relevant_log(host.read_lines(run.log)))
    if (run.pgdata / "recovery.signal").exists():
        raise RestoreError("restore_failed", "shutdown", "recovery.signal is still there after promotion")


def make_ready(run: Run, bindir: Path) -> list[str]:
    """After a clean shutdown: the clone's own settings (recovery ones removed, its port and socket
    directory, no source-only settings); returns the one command that starts it."""
    d = run.pgdata
    auto = d / "postgresql.auto.conf"
    auto.write_text(clone.ready_auto_conf(auto.read_text(errors="replace") if auto.exists() else "",
                                          port=run.port, socket_dir=run.socket_dir))
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
            host.chown(p)
    return clone.start_command(str(bindir / "pg_ctl"), str(d), logfile=str(logdir / "pg_ctl-start.log"),
                               as_root=host.as_root())


async def start_kept(run: Run, argv: list[str]) -> bool:
    """``--keep-running``: start the clone with its own start command (a server of its own, not tied to
    this process). A failure to start is a warning: the clone is verified and stays."""
    run.stage = "start"
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                cwd="/", start_new_session=True)
    out, _ = await proc.communicate()
    if proc.returncode == 0:
        run.warnings.append(f"the server keeps running: port {run.port}, socket directory {run.socket_dir}")
        return True
    tail = " | ".join(host.read_lines(run.pgdata / "log" / "pg_ctl-start.log")[-5:]) or out.decode(errors="replace")
    run.warnings.append(f"the clone is restored and verified, but it did not start ({clone.shell_line(argv)} "
                         f"exited {proc.returncode}): {tail}")
    return False
