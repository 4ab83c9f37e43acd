"""End-to-end PITR check: restore a base backup with the real tool, apply a plan's recovery settings,
let PostgreSQL recover, and return the rows of ``ticks`` it ended with.

The planner's ``restore_command`` is used **verbatim**. It runs in the server's environment, which this
module prepares so that the tools' plain commands reach the session's moto:

- pgBackRest: ``PGBACKREST_CONFIG`` points at a pgbackrest.conf for the session's TLS front, bucket and
  ``repo1-path=/<prefix>``, so ``pgbackrest --stanza=main archive-get %f "%p"`` works as emitted;
- barman-cloud: ``PATH`` starts with ``<repo>/.tools/venv/bin``, the AWS credential variables are set, and
  ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3`` name the session's moto, so
  ``barman-cloud-wal-restore --no-partial s3://<bucket>/<prefix> main %f %p`` works with or without
  ``--endpoint-url``.

WAL-E and WAL-G fixtures hold synthetic base backups without data, so they cannot be restored.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Mapping

from sandbox.pg import PG_BIN, Cluster, ClusterError, as_postgres, make_postgres_dir
from sandbox.s3 import MotoEndpoint
from sandbox.tool_barman import TOOLS_BIN, aws_env, barman_restore, quote_conf
from sandbox.tool_pgbackrest import pgbackrest_conf, write_conf

_RECOVERY_KEYS = ("restore_command", "recovery_target", "recovery_target_", "recovery_end_command",
                  "archive_cleanup_command", "primary_conninfo", "primary_slot_name")


class RestoreFailed(RuntimeError):
    """PostgreSQL refused the recovery; ``fatal`` is the FATAL line from its log."""

    def __init__(self, fatal: str, log_tail: str = "") -> None:
        super().__init__(fatal)
        self.fatal = fatal
        self.log_tail = log_tail


def _strip_recovery_settings(text: str) -> str:
    """Comment out recovery settings a backup may carry in postgresql.auto.conf."""
    out = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip().lower()
        out.append(f"# (removed by realarchives) {line}" if key.startswith(_RECOVERY_KEYS) else line)
    return "\n".join(out) + "\n"


def _render(recovery: Mapping[str, str]) -> dict[str, str]:
    """Settings dict or rendered files dict -> files to write into the data dir."""
    if any(k.endswith((".conf", ".signal")) for k in recovery):
        return dict(recovery)
    text = "".join(f"{k} = {quote_conf(v)}\n" for k, v in recovery.items())
    return {"postgresql.auto.conf": text, "recovery.signal": ""}


def restore_and_query(tool: str, bucket: str, prefix: str, stanza: str | None, backup_label: str,
                      recovery_settings: Mapping[str, str], pg_version: int = 15, *,
                      endpoint: MotoEndpoint, timeout: float = 180) -> list[tuple[int, int]]:
    """Restore ``backup_label`` with the real tool, recover with ``recovery_settings``, return (id, tl) rows.

    ``recovery_settings`` is either ``{"restore_command": ..., "recovery_target_time": ...}`` (quoted and
    appended to postgresql.auto.conf, plus an empty recovery.signal) or a rendered files dict such as
    ``{"postgresql.auto.conf": "...", "recovery.signal": ""}`` (auto.conf text appended, others written).
    With ``recovery_target_action = 'pause'`` the rows are read while paused.

    :raises RestoreFailed: PostgreSQL stopped or refused (e.g. "recovery ended before configured
        recovery target was reached").
    """
    if pg_version != 15:
        raise ValueError("fixtures are PostgreSQL 15 clusters")
    if tool not in ("pgbackrest", "barman"):
        raise ValueError(f"{tool}: only pgbackrest and barman archives hold restorable base backups")
    work = make_postgres_dir("pitr-restore-")
    cluster = Cluster(work)
    cluster.sock.mkdir()
    shutil.chown(cluster.sock, "postgres", "postgres")
    cluster.data.mkdir(mode=0o700)
    shutil.chown(cluster.data, "postgres", "postgres")
    env = {"PATH": f"{TOOLS_BIN}:/usr/bin:/bin", **aws_env(),
           "AWS_ENDPOINT_URL": endpoint.url, "AWS_ENDPOINT_URL_S3": endpoint.url}
    try:
        if tool == "pgbackrest":
            conf = write_conf(work, pgbackrest_conf(bucket=bucket, tls_port=endpoint.tls_port, work=work,
                                                    pg_path=cluster.data, repo_path="/" + prefix.strip("/"),
                                                    stanza=stanza or "main"))
            env["PGBACKREST_CONFIG"] = str(conf)
            as_postgres(["pgbackrest", f"--config={conf}", f"--stanza={stanza or 'main'}", f"--set={backup_label}",
                         "--type=none", "restore"], timeout=timeout)
            for stale in ("recovery.signal", "standby.signal"):
                (cluster.data / stale).unlink(missing_ok=True)
        else:
            barman_restore(endpoint.url, bucket, backup_label, cluster.data, prefix=prefix.strip("/"),
                           server=stanza or "main")
        auto = cluster.data / "postgresql.auto.conf"
        existing = auto.read_text() if auto.exists() else ""
        files = _render(recovery_settings)
        files["postgresql.auto.conf"] = _strip_recovery_settings(existing) + "\n" + \
            files.get("postgresql.auto.conf", "")
        for name, text in files.items():
            p = cluster.data / name
            p.write_text(text)
            shutil.chown(p, "postgres", "postgres")
            p.chmod(0o600)
        opts = (f"-c port={cluster.port} -c listen_addresses='' -c unix_socket_directories='{cluster.sock}' "
                "-c archive_mode=off -c hot_standby=on")
        proc = as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(cluster.data), "-l", str(cluster.log), "-o", opts,
                            "-w", "-t", str(int(timeout)), "start"], env=env, check=False, timeout=timeout + 10)
        cluster.running = proc.returncode == 0
        if not cluster.running:
            raise RestoreFailed(cluster.fatal_line(), cluster.tail_log(30))
        _wait_recovery_settled(cluster, timeout)
        return cluster.ticks()
    finally:
        cluster.stop("immediate")
        shutil.rmtree(work, ignore_errors=True)


def _wait_recovery_settled(cluster: Cluster, timeout: float) -> None:
    """Until promoted, or paused at the target; a server that stops is a refusal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not cluster.is_up():
            raise RestoreFailed(cluster.fatal_line(), cluster.tail_log(30))
        try:
            state = cluster.sql("SELECT CASE WHEN pg_is_in_recovery() "
                                "THEN 'true ' || pg_get_wal_replay_pause_state() ELSE 'false -' END")
        except ClusterError:
            time.sleep(0.2)
            continue
        in_recovery, pause = state.split(" ", 1)
        if in_recovery == "false" or pause == "paused":
            return
        time.sleep(0.2)
    raise RestoreFailed(f"recovery did not settle within {timeout}s", cluster.tail_log(30))
