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


async def wait_healthy(port: int, tries: int = 150) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(tries):
            try:
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail("serve did not come up")


async def stop(proc: asyncio.subprocess.Process) -> bytes:
    """SIGTERM the serve process, wait for it, and check it exited 0; returns its output."""
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
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
        await wait_healthy(port)
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
