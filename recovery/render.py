"""Turn a RecoveryPlan into the files PostgreSQL reads (LAYOUTS §8.3, §9). Pure text, no I/O.

PG >= 12: ``postgresql.auto.conf`` settings plus an empty ``recovery.signal``.
PG <= 11: ``recovery.conf`` (where ``recovery_target_timeline = 'current'`` cannot be written and
the default is current, so ``latest`` must be explicit).
"""
from __future__ import annotations

import shlex
from datetime import datetime, timezone

from recovery.errors import PlanningError
from recovery.lsn import Lsn
from recovery.model import Layout
from recovery.plan import RecoveryPlan, pg_major


def restore_command(layout: Layout | str, *, bucket: str, prefix: str, stanza: str | None,
                    endpoint_url: str | None = None) -> str:
    """The ``restore_command`` of the tool that wrote the archive (LAYOUTS §9).

    >>> restore_command("pgbackrest", bucket="b", prefix="/pgbackrest/", stanza="main")
    'pgbackrest --stanza=main archive-get %f "%p"'
    >>> restore_command("barman", bucket="pg-archive", prefix="barman/", stanza="main")
    'barman-cloud-wal-restore --no-partial s3://pg-archive/barman main %f %p'
    """
    try:
        kind = Layout(layout)
    except ValueError:
        raise PlanningError("unsupported_layout", f"no restore_command for layout {layout!r}") from None
    if kind is Layout.PGBACKREST:
        return f'pgbackrest --stanza={shlex.quote(stanza or "main")} archive-get %f "%p"'
    if kind is Layout.BARMAN:
        if not stanza:
            raise PlanningError("unsupported_layout", "barman-cloud needs the server name")
        p = prefix.strip("/")
        url = f"s3://{bucket}/{p}" if p else f"s3://{bucket}"
        ep = f"--endpoint-url {shlex.quote(endpoint_url)} " if endpoint_url else ""
        return f"barman-cloud-wal-restore {ep}--no-partial {shlex.quote(url)} {shlex.quote(stanza)} %f %p"
    if kind is Layout.WALG:
        return 'wal-g wal-fetch "%f" "%p"'
    return 'envdir /etc/wal-e.d/env wal-e wal-fetch "%f" "%p"'


def conf_time(t: datetime) -> str:
    """A timestamptz PostgreSQL and pgBackRest read unambiguously.

    >>> conf_time(datetime(2016, 9, 28, 10, 0, tzinfo=timezone.utc))
    '2016-09-28 10:00:00.000000+00'
    """
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f") + "+00"


def quote(value: str) -> str:
    """A postgresql.conf string literal: backslashes and quotes escaped (guc-file.l GUC_scanstr).

    >>> print(quote("it's a\\\\path"))
    'it''s a\\\\path'
    """
    escaped = (value.replace("\\", "\\\\").replace("'", "''")
               .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return f"'{escaped}'"


def conf_value(value: object) -> str:
    if isinstance(value, bool):
        return quote("true" if value else "false")
    if isinstance(value, datetime):
        return quote(conf_time(value))
    if isinstance(value, (Lsn, int, str)):
        return quote(str(value))
    raise TypeError(f"cannot render setting value {value!r}")


def settings_for(plan: RecoveryPlan, restore_cmd: str, pg_version: int | None) -> list[tuple[str, str]]:
    """Ordered (name, rendered value) lines for a PostgreSQL major version."""
    major = pg_major(pg_version if pg_version is not None else plan.pg_version)
    old = major is not None and major <= 11
    out = [("restore_command", quote(restore_cmd))]
    for name, value in plan.recovery_settings:
        if name == "recovery_target_timeline" and old and value == "current":
            continue   # PG <= 11: the default, and it cannot be written explicitly
        out.append((name, conf_value(value)))
    return out


def render_files(plan: RecoveryPlan, restore_cmd: str, pg_version: int | None = None) -> dict[str, str]:
    """File name -> content to place in the restored data directory (unknown version: PG >= 12)."""
    major = pg_major(pg_version if pg_version is not None else plan.pg_version)
    label = " ".join(plan.backup.label.split())
    header = (f"# backup-catalog recovery settings: backup {label}, "
              f"timeline path {'->'.join(map(str, plan.timeline_path))}\n")
    body = header + "".join(f"{k} = {v}\n" for k, v in settings_for(plan, restore_cmd, major))
    if major is not None and major <= 11:
        return {"recovery.conf": body}
    return {"postgresql.auto.conf": body, "recovery.signal": ""}
