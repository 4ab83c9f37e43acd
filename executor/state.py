"""One restore run's state, shared by its stages (:mod:`executor.fetch`, :mod:`executor.server`): what it
was given, where it works (its work directory, socket and server log), what it started (for the abort),
what it fetched and warns about, and the marker that says the data directory is a restore in progress."""
from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from executor import clone, host
from executor.config import RestoreConfig
from executor.outcome import ProgressEvent
from recovery.plandoc import PlanDoc, PlanReplay
from scheduler.layouts.spec import S3Access, StorageLoc


class Run:
    """A run in progress (:func:`executor.run.execute_plan` makes one); ``stage`` is where an error is reported."""

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
        self.private_port = 0             # the recovery server's, on its private socket (no TCP)
        self.socket_dir = "/tmp"
        self.on_server: Callable[[int, Path], Awaitable[None]] | None = None
        self.marker_facts: dict[str, object] = {}

    def emit(self, **kw: Any) -> None:
        with contextlib.suppress(Exception):
            self.progress(ProgressEvent(**kw))

    def mark(self, **facts: object) -> None:
        """(Re)write the marker: this directory is a restore in progress, not a database."""
        self.marker_facts.update(facts)
        p = self.pgdata / clone.MARKER
        p.write_text(clone.marker_text(self.marker_facts))
        host.chown(p)
