"""A real ``backup-catalog serve`` process for tests: started, waited for (``/healthz``), stopped with SIGTERM.

Its output goes to a pipe the caller reads after the stop (:func:`stop`); keep the number of requests that
log (not the probes) small, or read the pipe while it runs.
"""
from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest


async def wait_healthy(port: int, proc: asyncio.subprocess.Process | None = None, seconds: float = 90) -> None:
    """Until ``/healthz`` answers 200: a loaded machine (the suite runs in parallel) may take a while to
    import and migrate; a process that exited fails at once."""
    deadline = asyncio.get_running_loop().time() + seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        while asyncio.get_running_loop().time() < deadline:
            if proc is not None and proc.returncode is not None:
                out = await proc.stdout.read() if proc.stdout else b""
                pytest.fail(f"serve exited {proc.returncode} before it was healthy: "
                            f"{out.decode(errors='replace')[-2000:]}")
            try:
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return
            except (TimeoutError, aiohttp.ClientConnectionError):
                pass
            await asyncio.sleep(0.1)
    pytest.fail(f"serve did not come up within {seconds:g} s")


async def stop(proc: asyncio.subprocess.Process) -> bytes:
    """SIGTERM the serve process, wait for it, and check it exited 0; returns its output."""
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    return out


@asynccontextmanager
async def serving(env: dict[str, str], port: int, *extra: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``serve --host 127.0.0.1 --port PORT`` with ``env``, healthy on entry; killed if still running on exit."""
    exe = Path(sys.executable).with_name("backup-catalog")
    proc = await asyncio.create_subprocess_exec(str(exe), "serve", "--host", "127.0.0.1", "--port", str(port),
                                                *extra, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        await wait_healthy(port, proc)
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
