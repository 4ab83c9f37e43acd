"""The tools `make setup` installed are found without RESTORE_TOOLS_PATH, which still comes first."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from backup_catalog.settings import Settings
from executor.host import PROJECT_TOOLS, tool_path


def test_project_tools_follow_restore_tools_path_and_precede_the_callers_path(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    path = tool_path(Settings(restore_tools_path="/opt/a:/opt/b"), {"PATH": "/usr/bin:/bin"}, own)
    assert path.split(":") == ["/opt/a", "/opt/b", str(own), "/usr/bin", "/bin"]
    assert tool_path(Settings(), {"PATH": "/usr/bin"}, own).split(":") == [str(own), "/usr/bin"]
    # not installed (no make setup): nothing is added
    assert tool_path(Settings(), {"PATH": "/usr/bin"}, tmp_path / "absent") == "/usr/bin"


@pytest.mark.skipif(not (PROJECT_TOOLS / "barman-cloud-restore").exists(), reason="make setup has not run")
def test_after_make_setup_restore_finds_barman_cloud_and_wal_e_without_restore_tools_path() -> None:
    path = tool_path(Settings(restore_tools_path=None), {"PATH": "/usr/bin:/bin"})
    for tool in ("barman-cloud-restore", "barman-cloud-wal-restore", "wal-e"):
        found = shutil.which(tool, path=path)
        assert found is not None and Path(found).parent == PROJECT_TOOLS, (tool, path)
    # RESTORE_TOOLS_PATH still comes first
    first = tool_path(Settings(restore_tools_path="/opt/mine"), {"PATH": "/usr/bin"}).split(":")
    assert first[:2] == ["/opt/mine", str(PROJECT_TOOLS)]
