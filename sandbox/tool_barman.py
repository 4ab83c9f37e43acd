"""barman-cloud 3.19 (PyPI, in <repo>/.tools/venv) against moto over plain HTTP: the fork scenario."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from sandbox.pg import Cluster, as_postgres
from sandbox.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoEndpoint
from sandbox.scenario import fork_truth, run_fork_scenario

SERVER = "main"
PREFIX = "barman"
BUCKET = "pg-archive-barman"
REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS_BIN = REPO_ROOT / ".tools" / "venv" / "bin"


def aws_env() -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}


def env_prefix() -> str:
    """``env K=V ...`` prefix so archive/restore commands carry their own (dummy) credentials."""
    return "env " + " ".join(f"{k}={v}" for k, v in aws_env().items())


def source_url(bucket: str, prefix: str = PREFIX) -> str:
    return f"s3://{bucket}/{prefix}"


def wal_restore_command(endpoint_url: str, bucket: str, prefix: str = PREFIX, server: str = SERVER) -> str:
    """restore_command for PostgreSQL: barman-cloud-wal-restore with credentials and --no-partial."""
    return (f"{env_prefix()} {TOOLS_BIN / 'barman-cloud-wal-restore'} --endpoint-url {endpoint_url} "
            f"--no-partial {source_url(bucket, prefix)} {server} %f %p")


def backup_list(endpoint_url: str, bucket: str, prefix: str = PREFIX, server: str = SERVER) -> Any:
    out = as_postgres([str(TOOLS_BIN / "barman-cloud-backup-list"), "--endpoint-url", endpoint_url,
                       "--format", "json", source_url(bucket, prefix), server], env=aws_env()).stdout
    return json.loads(out)


def backup_ids(listing: Any) -> list[str]:
    rows = listing.get("backups_list", []) if isinstance(listing, dict) else listing
    return sorted(str(b["backup_id"]) for b in rows)


def barman_restore(endpoint_url: str, bucket: str, backup_id: str, dest: Path, *, prefix: str = PREFIX,
                   server: str = SERVER) -> None:
    """barman-cloud-restore as postgres into an empty ``dest`` (data files only; recovery settings are ours)."""
    as_postgres([str(TOOLS_BIN / "barman-cloud-restore"), "--endpoint-url", endpoint_url,
                 source_url(bucket, prefix), server, backup_id, str(dest)], env=aws_env())
    (dest / "pg_wal").mkdir(exist_ok=True)
    as_postgres(["chmod", "-R", "u+rwX,go-rwx", str(dest)])


class BarmanCloud:
    name = "barman"

    def __init__(self, ep: MotoEndpoint, bucket: str = BUCKET) -> None:
        self.ep, self.bucket = ep, bucket
        self.url = source_url(bucket)

    def archive_command(self, cluster: Cluster) -> str:
        return (f"{env_prefix()} {TOOLS_BIN / 'barman-cloud-wal-archive'} --endpoint-url {self.ep.url} "
                f"--gzip {self.url} {SERVER} %p")

    def setup(self, cluster: Cluster) -> None:
        self.ep.ensure_bucket(self.bucket)

    def backup(self, cluster: Cluster, kind: str) -> str:
        assert kind == "full", "barman-cloud backups are always full"
        before = set(backup_ids(self.info()))
        as_postgres([str(TOOLS_BIN / "barman-cloud-backup"), "--endpoint-url", self.ep.url, "--gzip",
                     "--immediate-checkpoint", "-h", str(cluster.sock), "-p", str(cluster.port), "-U", "postgres",
                     "-d", "postgres", self.url, SERVER], env=aws_env())
        new = sorted(set(backup_ids(self.info())) - before)
        if len(new) != 1:
            raise RuntimeError(f"barman-cloud-backup made {new!r}")
        return new[0]

    def restore(self, cluster: Cluster, label: str, target_time: str) -> None:
        barman_restore(self.ep.url, self.bucket, label, cluster.data)
        settings = {
            "restore_command": wal_restore_command(self.ep.url, self.bucket),
            "recovery_target_time": target_time,
            "recovery_target_action": "promote",
        }
        append_recovery_settings(cluster.data, settings)

    def info(self) -> Any:
        return backup_list(self.ep.url, self.bucket)


def quote_conf(value: str) -> str:
    """A postgresql.conf string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def append_recovery_settings(data: Path, settings: dict[str, str]) -> None:
    text = "\n# recovery settings (realarchives)\n" + "".join(f"{k} = {quote_conf(v)}\n" for k, v in settings.items())
    as_postgres(["sh", "-c", f"cat >> {shlex.quote(str(data / 'postgresql.auto.conf'))} <<'EOF'\n{text}EOF\n"
                             f"touch {shlex.quote(str(data / 'recovery.signal'))}"])


def build_barman(ep: MotoEndpoint, workdir: Path) -> dict[str, Any]:
    tool = BarmanCloud(ep)
    r = run_fork_scenario(tool, workdir, ("full", "full", "full"))
    version = as_postgres([str(TOOLS_BIN / "barman-cloud-backup"), "--version"]).stdout.strip()
    truth = {
        "tool": "barman", "synthetic": False, "bucket": tool.bucket, "prefix": PREFIX, "server": SERVER,
        "stanza": SERVER, "layout": "barman", "tool_version": version,
        "source_url": tool.url,
        "backups": r.tool_info,  # `barman-cloud-backup-list --format json`, verbatim
        "config": {"archive_command": "barman-cloud-wal-archive --endpoint-url <url> --gzip "
                                      f"{tool.url} {SERVER} %p",
                   "restore_command": "barman-cloud-wal-restore --endpoint-url <url> --no-partial "
                                      f"{tool.url} {SERVER} %f %p"},
    }
    truth.update(fork_truth(r))
    return truth
