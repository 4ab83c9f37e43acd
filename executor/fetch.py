"""The first stage: the plan's base backup fetched with the layout's own tool, into a staging directory
beside the marker (the tools want an empty destination) and moved into place once complete; progress is the
bytes on disk, and the fetch stops at RESTORE_FETCH_TIMEOUT_SECONDS or after RESTORE_STALL_SECONDS without
progress."""
from __future__ import annotations

import asyncio
import os
import shutil
import time

from executor import clone, failfast, host, logic
from executor.outcome import RestoreError
from executor.state import Run


def meaning(out: str) -> str:
    """A tool's output for an error message: what it means in the product's settings (when known), then
    its last lines."""
    tail = " | ".join([ln for ln in out.splitlines() if ln.strip()][-12:]) or "no output"
    meaning = failfast.translate(out)
    return f": {meaning}. The tool said: {tail}" if meaning else f": {tail}"


async def base_backup(run: Run) -> None:
    """Fetch the plan's backup into ``run.pgdata``; the tool's files are then rewritten for the server's
    restore_command (naming the data directory itself)."""
    run.stage = "fetch"
    # the tool fetches into a directory of its own inside pgdata, beside the marker (the tools want an
    # empty destination); moved into place once complete
    staging = run.pgdata / clone.FETCH_DIR
    staging.mkdir(mode=0o700)
    host.chown(staging)
    cmd = logic.fetch_command(run.loc, run.doc.backup.label, str(staging), run.s3,
                              work=str(run.work))
    for sub in ("lock", "log", "spool", "sock"):
        (run.work / sub).mkdir(mode=0o700, exist_ok=True)
        host.chown(run.work / sub)
    run.sock.chmod(0o700)
    host.chown(run.sock)
    for name, text in cmd.files.items():
        p = run.work / name
        p.write_text(text)
        p.chmod(0o600)
        host.chown(p)
    env = {"PATH": run.path, "LANG": "C.UTF-8", "TZ": "UTC", "HOME": str(run.work), **cmd.env,
           **logic.passthrough(run.caller)}
    for k, v in run.caller.items():
        if k.startswith("AWS_") and k not in env and not k.startswith("AWS_ENDPOINT_URL"):
            env[k] = v
    argv = list(cmd.argv)
    argv[0] = shutil.which(argv[0], path=run.path) or argv[0]
    run.emit(stage="fetch", message=f"{cmd.label}: backup {run.doc.backup.label}")
    run.fetch_proc = await asyncio.create_subprocess_exec(
        *host.guarded(argv), env=env, cwd=str(run.work), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    assert run.fetch_proc.stdout is not None
    reader = asyncio.ensure_future(run.fetch_proc.stdout.read())
    deadline = time.monotonic() + run.settings.restore_fetch_timeout_seconds
    stall = run.settings.restore_stall_seconds
    last_change, last_bytes = time.monotonic(), -1
    while run.fetch_proc.returncode is None:
        try:
            await asyncio.wait_for(asyncio.shield(run.fetch_proc.wait()), 1.0)
        except TimeoutError:
            pass
        run.bytes = await asyncio.to_thread(host.dir_bytes, run.pgdata)
        run.emit(stage="fetch", message=cmd.label, bytes_fetched=run.bytes)
        now = time.monotonic()
        if run.bytes != last_bytes:
            last_change, last_bytes = now, run.bytes
        why = None
        if now > deadline:
            why = (f"{cmd.label} did not finish within {run.settings.restore_fetch_timeout_seconds:.0f}s "
                   "(RESTORE_FETCH_TIMEOUT_SECONDS)")
        elif stall > 0 and now - last_change > stall:
            why = (f"{cmd.label} made no progress for {stall:g} s ({run.bytes} bytes fetched; "
                   "RESTORE_STALL_SECONDS): the S3 endpoint stopped sending")
        if why is not None and run.fetch_proc.returncode is None:
            await host.kill_group(run.fetch_proc)
            out = (await reader).decode(errors="replace")
            raise RestoreError("restore_failed", "fetch", why + meaning(out))
    out = (await reader).decode(errors="replace")
    run.bytes = await asyncio.to_thread(host.dir_bytes, run.pgdata)
    if run.fetch_proc.returncode != 0:
        raise RestoreError("restore_failed", "fetch", f"{cmd.label} of backup {run.doc.backup.label} from "
                           f"s3://{run.loc.bucket}/{run.loc.prefix} exited {run.fetch_proc.returncode}"
                           + meaning(out))
    for entry in list(staging.iterdir()):
        os.rename(entry, run.pgdata / entry.name)
    staging.rmdir()
    # the tool's files as the server's restore_command uses them: naming the data directory itself
    final = logic.fetch_command(run.loc, run.doc.backup.label, str(run.pgdata), run.s3,
                                work=str(run.work))
    for name, text in final.files.items():
        (run.work / name).write_text(text)
