"""What a restore run reports: its progress events, its result, and the error that ends it (with the
CLI's exit code for each kind of error)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from executor import clone
from recovery.docjson import document_json
from recovery.plandoc import PlanBackup, PlanTarget

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
