"""pgBackRest 2.45 (Debian) against moto through the stunnel TLS front: config text and the fork scenario."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sandbox.pg import Cluster, as_postgres, make_postgres_dir
from sandbox.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoEndpoint
from sandbox.scenario import fork_truth, run_fork_scenario

STANZA = "main"
REPO_PATH = "/pgbackrest"
PREFIX = "pgbackrest"
BUCKET = "pg-archive-pgbackrest"


def pgbackrest_conf(*, bucket: str, tls_port: int, work: Path, pg_path: Path | None = None,
                    socket_dir: Path | None = None, pg_port: int | None = None, repo_path: str = REPO_PATH,
                    stanza: str = STANZA) -> str:
    """pgbackrest.conf for a moto bucket behind the TLS front; ``work`` holds lock/log/spool dirs."""
    lines = [
        "[global]",
        "repo1-type=s3",
        "repo1-s3-endpoint=127.0.0.1",
        f"repo1-storage-port={tls_port}",
        "repo1-s3-uri-style=path",
        "repo1-storage-verify-tls=n",
        f"repo1-s3-region={REGION}",
        f"repo1-s3-bucket={bucket}",
        f"repo1-s3-key={ACCESS_KEY}",
        f"repo1-s3-key-secret={SECRET_KEY}",
        f"repo1-path={repo_path}",
        "repo1-retention-full=9",
        f"lock-path={work / 'lock'}",
        f"log-path={work / 'log'}",
        f"spool-path={work / 'spool'}",
        "log-level-console=warn",
        "log-level-stderr=error",
        "log-level-file=off",
        "start-fast=y",
        "process-max=4",
        "compress-type=gz",
        "compress-level=1",
        "",
        f"[{stanza}]",
    ]
    if pg_path is not None:
        lines.append(f"pg1-path={pg_path}")
    if socket_dir is not None:
        lines.append(f"pg1-socket-path={socket_dir}")
    if pg_port is not None:
        lines.append(f"pg1-port={pg_port}")
    return "\n".join(lines) + "\n"


def write_conf(work: Path, text: str) -> Path:
    for sub in ("lock", "log", "spool"):
        (work / sub).mkdir(exist_ok=True)
        shutil.chown(work / sub, "postgres", "postgres")
    conf = work / "pgbackrest.conf"
    conf.write_text(text)
    conf.chmod(0o644)
    return conf


class PgBackRest:
    name = "pgbackrest"

    def __init__(self, ep: MotoEndpoint, workdir: Path, bucket: str = BUCKET) -> None:
        self.ep, self.bucket = ep, bucket
        self.work = make_postgres_dir("pgbr-conf-", str(workdir))
        self.conf: Path | None = None
        self.conf_text = ""

    def _run(self, *args: str, timeout: float = 300) -> str:
        assert self.conf is not None
        return as_postgres(["pgbackrest", f"--config={self.conf}", f"--stanza={STANZA}", *args],
                           timeout=timeout).stdout

    def archive_command(self, cluster: Cluster) -> str:
        self.conf_text = pgbackrest_conf(bucket=self.bucket, tls_port=self.ep.tls_port, work=self.work,
                                         pg_path=cluster.data, socket_dir=cluster.sock, pg_port=cluster.port)
        self.conf = write_conf(self.work, self.conf_text)
        return f"pgbackrest --config={self.conf} --stanza={STANZA} archive-push %p"

    def setup(self, cluster: Cluster) -> None:
        self.ep.ensure_bucket(self.bucket)
        self._run("stanza-create")

    def backup(self, cluster: Cluster, kind: str) -> str:
        self._run(f"--type={kind}", "backup")
        info = self.info()
        return str(info[0]["backup"][-1]["label"])

    def restore(self, cluster: Cluster, label: str, target_time: str) -> None:
        self._run(f"--set={label}", "--type=time", f"--target={target_time}", "--target-action=promote",
                  "restore")

    def info(self) -> Any:
        return json.loads(self._run("--output=json", "info"))


def build_pgbackrest(ep: MotoEndpoint, workdir: Path) -> dict[str, Any]:
    tool = PgBackRest(ep, workdir)
    try:
        r = run_fork_scenario(tool, workdir, ("full", "incr", "incr"))
    finally:
        shutil.rmtree(tool.work, ignore_errors=True)
    truth = {
        "tool": "pgbackrest", "synthetic": False, "bucket": tool.bucket, "prefix": PREFIX,
        "repo_path": REPO_PATH, "stanza": STANZA, "layout": "pgbackrest",
        "tool_version": as_postgres(["pgbackrest", "version"]).stdout.strip(),
        "backups": r.tool_info,  # `pgbackrest --output=json info`, verbatim
        "config": tool.conf_text,
        "config_note": "repo1-storage-port, pg1-* and *-path values are from the build run; "
                       "sandbox.tool_pgbackrest.pgbackrest_conf() renders one for a session",
        "archive_id": f"{r.server_version_num // 10000}-1",
    }
    truth.update(fork_truth(r))
    return truth
