"""The README's "After the demo: your first restore", run as written (issue 23 item 1): `demo --keep`, the
exports it gives, `backups`, `restore ... --keep-running`, and a query answered by the running, promoted clone.

The commands are taken from the README's code block, not restated here; only the embedded catalog's home
(BACKUP_CATALOG_HOME) is private to the test, so the run leaves nothing of the developer's behind or in place.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.tools import missing

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.realtools
PGDATA = Path("/tmp/first-clone")


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"## After the demo: your first restore\n.*?```sh\n(.*?)```", text, re.DOTALL)
    assert m, "the README has no 'After the demo' section with a sh block"
    return [ln for ln in m.group(1).replace("\\\n", " ").splitlines() if ln.strip()]


def _stop_clone() -> None:
    if (PGDATA / "postmaster.pid").exists():
        subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c",
                        f"/usr/lib/postgresql/15/bin/pg_ctl -D {PGDATA} stop -m immediate -w"], capture_output=True)
    shutil.rmtree(PGDATA, ignore_errors=True)


@pytest.mark.timeout(900)
def test_after_the_demo_commands_end_in_a_running_clone() -> None:
    if shutil.which("psql") is None:
        missing("psql is absent (Debian postgresql-client-15)")
    cmds = readme_commands()
    assert cmds[0].startswith(".venv/bin/backup-catalog demo --keep") and cmds[-1].startswith("psql ")
    home = Path(tempfile.mkdtemp(prefix="bc-readme-"))
    os.chmod(home, 0o755)          # the postgres user reaches the embedded catalog and the kept S3's CA
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AWS_", "CATALOG_", "PGBACKREST_"))}
    env["BACKUP_CATALOG_HOME"] = str(home)
    _stop_clone()
    script = "set -euo pipefail\n" + "\n".join(cmds) + "\n"
    try:
        p = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=840)
        out = p.stdout + p.stderr
        assert p.returncode == 0, out[-4000:]
        assert "restored and verified" in out, out[-3000:]
        counts = re.findall(r"^\s*(\d+)\s*$", p.stdout, re.MULTILINE)      # psql's answer: the rows of the clone
        assert counts and int(counts[-1]) > 0, p.stdout[-2000:]
        assert not (PGDATA / "recovery.signal").exists()
        auto = (PGDATA / "postgresql.auto.conf").read_text()
        assert "restore_command" not in auto and "recovery_target" not in auto, auto
    finally:
        _stop_clone()
        subprocess.run([str(ROOT / ".venv/bin/backup-catalog"), "demo", "--stop"], cwd=ROOT, env=env,
                       capture_output=True, timeout=60)
        subprocess.run([str(ROOT / ".venv/bin/backup-catalog"), "demo", "--reset", "--yes"], cwd=ROOT, env=env,
                       capture_output=True, timeout=120)
        shutil.rmtree(home, ignore_errors=True)
