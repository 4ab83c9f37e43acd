"""The demo's local S3, kept running after ``backup-catalog demo --keep`` (issue 23): moto's server with its
TLS front, in a process of its own that outlives the demo, so that the commands the demo prints next
(``backups``, ``restore``) find the archive it wrote.

``python -m sandbox.s3serve DIR`` starts it and writes ``DIR/endpoint.json`` (pid, http and https URLs, the CA
bundle: the TLS front's self-signed certificate, readable by the ``postgres`` user whose pgBackRest checks
it); SIGTERM stops it and removes the file. :func:`ensure` starts one unless it runs; :func:`stop` ends it.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sandbox.s3 import MotoEndpoint

STATE = "endpoint.json"


def read_state(d: Path) -> dict[str, Any] | None:
    """The running endpoint's state, or None (no file, or its process is gone)."""
    try:
        state: dict[str, Any] = json.loads((d / STATE).read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return state


def ensure(d: Path, timeout: float = 60.0) -> dict[str, Any]:
    """The kept endpoint under ``d``: the running one, or a new detached one."""
    state = read_state(d)
    if state is not None:
        return state
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    (d / STATE).unlink(missing_ok=True)
    with open(d / "s3.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sandbox.s3serve", str(d)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(d)
        if state is not None:
            return state
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = (d / "s3.log").read_text(errors="replace")[-1000:] if (d / "s3.log").exists() else ""
    raise RuntimeError(f"the local S3 did not start (log {d / 's3.log'}): {tail}")


def stop(d: Path, timeout: float = 20.0) -> bool:
    """Stop the kept endpoint under ``d``. True if one was running."""
    state = read_state(d)
    if state is None:
        return False
    pid = int(state["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and read_state(d) is not None:
        time.sleep(0.2)
    return True


def _serve(d: Path) -> None:
    ep = MotoEndpoint().start()
    try:
        tls_url = ep.tls_url
        ca = d / "ca.pem"
        shutil.copyfile(ep.cert_path, ca)
        os.chmod(ca, 0o644)
        state = {"pid": os.getpid(), "http_url": ep.url, "tls_url": tls_url, "ca_bundle": str(ca)}
        (d / (STATE + ".tmp")).write_text(json.dumps(state))
        os.replace(d / (STATE + ".tmp"), d / STATE)
        done = False

        def on_term(*_: object) -> None:
            nonlocal done
            done = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        while not done:
            time.sleep(0.5)
    finally:
        (d / STATE).unlink(missing_ok=True)
        ep.stop()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]))
