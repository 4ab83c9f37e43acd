"""The settings reference (``docs/settings.md``), generated from the settings model: every variable with its
type, default, range, the commands that read it, whether it is a secret (and may come from ``NAME_FILE``),
and its description (the field's ``description``, else the comment on its line in the model's source).
``python -m backup_catalog.settings.reference > docs/settings.md`` refreshes it (``make docs-settings``);
``tests/test_settings_reference.py`` fails when the checked-in file drifts, or when a setting has no entry in
:data:`READERS`. Also what ``backup-catalog config check`` prints: :func:`effective`, secrets masked.
"""
from __future__ import annotations

import inspect
import io
import tokenize
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from backup_catalog.settings.files import FILE_SETTINGS
from backup_catalog.settings.model import Settings

_CATALOG = ("db", "instances", "scan", "backups", "plan", "changes", "restore", "drill", "purge", "report",
            "events", "serve", "demo")
_S3 = ("scan", "restore", "drill", "purge", "events", "serve", "demo")
#: which commands read a setting: the first matching name prefix wins (a new setting must be added here)
READERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("catalog_dsn", _CATALOG),
    ("log_", ("serve",)),
    ("s3_events_", ("serve", "events")),
    ("events_aws_", ("serve",)),
    ("reconcile_interval", ("serve",)),
    ("aws_", _S3),
    ("s3_", _S3),
    ("scan_cache", ("serve",)),              # before scan_: not read by scan
    ("scan_", ("scan", "serve")),
    ("full_scan_every", ("scan", "serve")),
    ("broker_", ("serve",)),
    ("operator_", ("serve",)),
    ("uaa_", ("serve",)),
    ("user_access_", ("serve",)),
    ("cc_timeout", ("serve",)),
    ("cf_", ("serve",)),
    ("external_url", ("serve",)),
    ("coverage_", ("report", "serve")),
    ("drill_", ("drill", "serve")),
    ("changes_", ("changes", "serve")),
    ("deleted_retention_days", ("backups", "plan", "purge", "report", "serve")),
    ("purge_grace_hours", ("backups", "plan", "purge", "report", "serve")),
    ("purge_", ("purge", "serve")),
    ("wal_index_", ("serve",)),
    ("restore_", ("restore", "drill", "serve", "demo")),
)
# what the source says nothing about
_NOTES = {
    "s3_endpoint_url": "S3 endpoint (unset: AWS); also the SQS endpoint of a non-AWS queue URL's host",
    "aws_access_key_id": "the scanner-restorer principal (deploy/iam/scanner-restorer.json)",
    "aws_secret_access_key": "the scanner-restorer principal's secret",
    "aws_default_region": "region of S3 (and SQS, unless the queue URL names one)",
    "s3_verify_tls": "verify the S3 endpoint's certificate",
    "s3_max_attempts": "attempts per S3 request (retries with backoff)",
    "s3_connect_timeout_seconds": "S3 connect timeout",
    "s3_read_timeout_seconds": "S3 read timeout",
    "scan_deadline_seconds": "a scan that runs longer is cancelled (nothing saved)",
    "scan_interval_seconds": "how often serve scans every instance",
    "purge_aws_secret_access_key": "the purger principal's secret",
    "broker_username": "the broker role (service broker: clone requests)",
    "broker_password": "the broker role's password (the built-in one is refused off loopback)",
    "operator_username": "the operator role (reports, purges, metrics)",
    "operator_password": "the operator role's password (the built-in one is refused off loopback)",
    "cf_api_url": "Cloud Controller API (names of service instances, end users' authorisation)",
    "cf_client_id": "UAA client of the name sync",
    "cf_client_secret": "UAA client secret of the name sync",
    "cf_discovery_root": "root under CF_DISCOVERY_BUCKET",
    "cf_sync_interval_seconds": "how often serve syncs names from the Cloud Controller",
    "coverage_warning_rpo_seconds": "RPO (last archived commit to now) above this: warning",
    "coverage_critical_rpo_seconds": "RPO above this: critical (and the BackupCatalogWindowStale alert)",
    "coverage_warning_backup_age_seconds": "newest backup older than this: warning",
    "coverage_critical_backup_age_seconds": "newest backup older than this: critical",
    "drill_check_query": "SQL run on a drill's promoted clone",
    "drill_history_per_instance": "drills kept per instance",
    "drill_warning_age_seconds": "no passed drill for this long: warning (and the BackupCatalogDrillOverdue alert)",
    "restore_fetch_timeout_seconds": "a fetch that runs longer fails",
    "restore_recovery_timeout_seconds": "a recovery that runs longer fails",
    "restore_stop_timeout_seconds": "how long stopping a restored server may take",
    "events_aws_access_key_id": "the events consumer principal (deploy/iam/events-consumer.json); unset: AWS_*",
    "events_aws_secret_access_key": "the events consumer principal's secret",
    "log_level": "what serve logs",
    "log_format": "json, text, or auto (text on a terminal, else JSON lines)",
}


def readers(name: str) -> tuple[str, ...]:
    for prefix, commands in READERS:
        if name.startswith(prefix):
            return commands
    raise KeyError(f"setting {name!r} has no entry in backup_catalog.settings.reference.READERS")


def _comments() -> dict[str, str]:
    """The comment on each field's line(s) in the model's source (continuation lines included)."""
    src = inspect.getsource(Settings)
    by_line: dict[int, str] = {}
    own_line: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            by_line[tok.start[0]] = tok.string.lstrip("#").strip()
            if tok.line[:tok.start[1]].strip() == "":
                own_line.add(tok.start[0])
    lines = src.splitlines()
    out: dict[str, str] = {}
    for no, line in enumerate(lines, 1):
        head = line.strip().split(":", 1)[0]
        if line.startswith("    ") and not line.startswith("     ") and head in Settings.model_fields:
            text = [by_line[no]] if no in by_line and no not in own_line else []
            nxt = no + 1     # a comment-only line right below, indented past the field: its continuation
            while text and nxt in own_line and lines[nxt - 1].startswith("     "):
                text.append(by_line[nxt])
                nxt += 1
            if text:
                out[head] = " ".join(text)
    return out


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = " \\| ".join(_type(a) for a in args)
        return inner + (" (optional)" if len(args) < len(typing.get_args(annotation)) else "")
    if annotation is SecretStr:
        return "string (secret)"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, str(annotation))


def _default(name: str, field: FieldInfo) -> str:
    d = field.default
    if d is None:
        return "unset"
    if isinstance(d, SecretStr):
        return "built-in (masked)"
    if isinstance(d, bool):
        return "true" if d else "false"
    if isinstance(d, str):
        return f"`{d}`" if d else "empty"
    return f"`{d}`"


def _range(field: FieldInfo) -> str:
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = []
    for m in field.metadata:
        for attr, sym in words.items():
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sym} {v}")
    return ", ".join(parts)


def is_secret(name: str) -> bool:
    ann = Settings.model_fields[name].annotation
    return ann is SecretStr or SecretStr in typing.get_args(ann)


def rows() -> Iterable[dict[str, str]]:
    comments = _comments()
    for name, field in Settings.model_fields.items():
        var = name.upper()
        secret = "secret" if is_secret(name) else ""
        if name in FILE_SETTINGS:
            secret = (secret + "; " if secret else "") + f"or `{var}_FILE`"
        yield {"variable": f"`{var}`", "type": _type(field.annotation), "default": _default(name, field),
               "range": _range(field), "read by": ", ".join(readers(name)), "secret": secret,
               "description": (field.description or comments.get(name) or _NOTES.get(name, "")).replace("|", "\\|")}


HEADER = """# Settings reference

Every setting is an environment variable (names are case-insensitive). Generated from the settings model
(`backup_catalog/settings/model.py`) by `make docs-settings`; a test fails when this file drifts.
`backup-catalog config check` validates the environment and prints the effective settings, secrets masked.
Secrets, the catalog DSN and the credentials may come from files instead (`NAME_FILE=/run/secrets/...`, the
file's content is the value; giving both `NAME` and `NAME_FILE` is an error). Which principal's keys go where:
[operations.md](operations.md#least-privilege-three-principals). `backups` and `plan` read only
`CATALOG_DSN`, `S3_ENDPOINT_URL`, `DELETED_RETENTION_DAYS` and `PURGE_GRACE_HOURS`.

"""


def reference() -> str:
    cols = ("variable", "type", "default", "range", "read by", "secret", "description")
    out = [HEADER, "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows():
        out.append("| " + " | ".join(r[c] for c in cols) + " |")
    out.append("\nTraces are configured by OpenTelemetry's own variables, not by this model: "
               "`OTEL_EXPORTER_OTLP_ENDPOINT` turns them on ([operations.md](operations.md#traces-opentelemetry-opt-in)).")
    return "\n".join(out) + "\n"


def effective(settings: Settings) -> dict[str, str]:
    """Every setting's effective value as text, secrets masked (``***`` when set)."""
    out = {}
    for name in Settings.model_fields:
        v = getattr(settings, name)
        if v is None:
            out[name.upper()] = ""
        elif isinstance(v, SecretStr):
            out[name.upper()] = "***" if v.get_secret_value() else ""
        else:
            out[name.upper()] = str(v)
    return out


if __name__ == "__main__":
    print(reference(), end="")
