"""Test helpers around the executor: settings/environment that reach the session's moto (pgBackRest through
its TLS front, named by ``PGBACKREST_*`` variables, which win as pgBackRest defines), and a restored data
directory started with plain ``pg_ctl start`` as ``postgres`` to read its ``ticks`` rows."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from backup_catalog.settings import Settings
from recovery.plandoc import PlanDoc
from sandbox.pg import PG_BIN, PSQL, as_postgres
from sandbox.s3 import free_port
from sandbox.tool_barman import TOOLS_BIN
from tests.support.fixtures import Row, make_settings


def restore_settings(s3_endpoint: Any, catalog_dsn: str, **kw: Any) -> Settings:
    return make_settings(s3_endpoint, catalog_dsn, restore_tools_path=str(TOOLS_BIN),
                         restore_recovery_timeout_seconds=180, restore_fetch_timeout_seconds=180, **kw)


def restore_environ(s3_endpoint: Any) -> dict[str, str]:
    """The caller's environment for a restore in this session: the TLS front for pgBackRest."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_ENDPOINT_URL", "PGBACKREST_"))}
    env["PGBACKREST_REPO1_STORAGE_PORT"] = str(s3_endpoint.tls_port)
    env["PGBACKREST_REPO1_STORAGE_VERIFY_TLS"] = "n"
    env["PGBACKREST_REPO1_S3_ENDPOINT"] = "127.0.0.1"
    return env


def scratch_dir(prefix: str = "restore-test-") -> Path:
    """A postgres-traversable parent directory for --pgdata."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)
    return d


def start_and_read(pgdata: Path) -> list[Row]:
    """``pg_ctl start`` (socket and port of our own: the source's socket directory is gone), read the
    ``ticks`` rows, check it is not in recovery, stop."""
    sock = Path(tempfile.mkdtemp(prefix="restored-sock-"))
    shutil.chown(sock, "postgres", "postgres")
    port = free_port()
    log = sock / "log"
    opts = f"-c port={port} -c unix_socket_directories={sock} -c listen_addresses=''"
    try:
        as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(pgdata), "-l", str(log), "-o", opts, "-w", "-t", "60",
                     "start"])
        argv = [str(PSQL), "-X", "-At", "-h", str(sock), "-p", str(port), "-U", "postgres", "-d", "postgres", "-c",
                "SELECT pg_is_in_recovery()", "-c", "SELECT id, tl FROM ticks ORDER BY id"]
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
        assert out[0] == "f", "the restored cluster is still in recovery"
        return [(int(a), int(b)) for a, b in (ln.split("|") for ln in out[1:] if ln)]
    finally:
        as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"], check=False)
        shutil.rmtree(sock, ignore_errors=True)


def arm_archive_commands(real_archives: Any) -> None:
    """Make the pgBackRest backups' own ``archive_command`` (``pgbackrest --config=<build dir>/pgbackrest.conf
    ... archive-push %p``, with ``archive_mode = on``) work again: its config file is put back where the build
    had it (the session's TLS port comes from ``PGBACKREST_*`` in the server's environment). Checked with
    ``pgbackrest info`` through that very config: a restore that archived would write into the source."""
    truth = real_archives["pgbackrest"].truth
    conf_text = str(truth["config"])
    lock = next(ln.split("=", 1)[1] for ln in conf_text.splitlines() if ln.startswith("lock-path="))
    base = Path(lock).parent
    for p in (base.parent, base):
        p.mkdir(exist_ok=True)
        p.chmod(0o755)
    for sub in ("lock", "log", "spool"):
        (base / sub).mkdir(exist_ok=True)
        shutil.chown(base / sub, "postgres", "postgres")
    conf = base / "pgbackrest.conf"
    conf.write_text(conf_text)
    conf.chmod(0o644)
    port = real_archives.endpoint.tls_port
    as_postgres(["pgbackrest", f"--config={conf}", "--stanza=main", "info"],
                env={"PGBACKREST_REPO1_STORAGE_PORT": str(port)})


def hand_plan(arch: Any, label: str, auto_conf: str, last_segment: str) -> PlanDoc:
    """A plan document written by hand (for restores the planner would not make, e.g. past the archive):
    an older service's plan (no replay member: read from its files), through the one plan type."""
    return PlanDoc.from_json({
        "source": {"instance_guid": "hand", "space_guid": "hand", "name": "hand", "layout": arch.tool},
        "backup": {"label": label, "type": "full", "status": "done", "timeline": 1, "depends_on": []},
        "target": {"kind": "latest", "value": None, "inclusive": True, "timeline": "latest", "action": "promote"},
        "timeline_path": [1, 2], "wal": {"first_segment": None, "last_segment": last_segment, "segments": 0},
        "window": {"latest_is_exact": False, "earliest_lsn": "0/0", "latest_lsn": "0/0"},
        "restore_command": "", "files": {"postgresql.auto.conf": auto_conf, "recovery.signal": ""},
        "storage": {"layout": arch.tool, "bucket": arch.bucket, "prefix": arch.prefix, "stanza": arch.stanza},
        "pg_version": 15, "warnings": []})
