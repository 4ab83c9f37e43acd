"""The CLI's progress reporter: rich on a terminal, structured lines otherwise (no real restore needed)."""
from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from backup_catalog.cli import restore as cmd_restore
from executor import ProgressEvent

EVENTS = [ProgressEvent("fetch", "pgBackRest restore --type=none", 0),
          ProgressEvent("fetch", "pgBackRest restore --type=none", 10 * 2**20),
          ProgressEvent("start", "PostgreSQL started", 23 * 2**20),
          ProgressEvent("recover", "replaying", 23 * 2**20, "0/9000100", "0/A000001", 0.5),
          ProgressEvent("verify", "replayed to 0/B000000", 23 * 2**20, "0/B000000", "0/A000001", 1.0),
          ProgressEvent("done", "restored and verified", 23 * 2**20, "0/B000000")]


def test_terminal_progress_renders_every_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr(cmd_restore, "err", Console(file=buf, force_terminal=True, width=120))
    r = cmd_restore._Reporter(enabled=True)
    r.tty = True
    with r:
        for ev in EVENTS:
            r(ev)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())
    assert "start: PostgreSQL started" in text and "verify: replayed to 0/B000000" in text
    assert "replay 0/9000100 of 0/A000001 (50%)" in text and "24.1/? MB" in text


def test_plain_progress_is_one_line_per_step(capsys: pytest.CaptureFixture[str]) -> None:
    r = cmd_restore._Reporter(enabled=True)
    r.tty = False
    with r:
        for ev in EVENTS:
            r(ev)
    lines = capsys.readouterr().err.splitlines()
    assert [ln.split()[1] for ln in lines] == ['stage="fetch"', 'stage="start"', 'stage="recover"',
                                               'stage="verify"', 'stage="done"']
    assert 'replay_lsn="0/9000100"' in lines[2] and 'end_lsn="0/A000001"' in lines[2]
