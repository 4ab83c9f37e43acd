"""``backup-catalog config check``: what the settings model cannot say about one field alone — credentials
given by halves, files and directories that are not there, thresholds in the wrong order, one principal's keys
reused for another — as problems (exit 2) and warnings."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pydantic import SecretStr

from backup_catalog.settings.model import Settings


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _set(v: SecretStr | None) -> bool:
    return v is not None and bool(v.get_secret_value())


def check(s: Settings) -> Findings:
    f = Findings()
    pairs = (("AWS", s.aws_access_key_id, s.aws_secret_access_key),
             ("PURGE_AWS", s.purge_aws_access_key_id, s.purge_aws_secret_access_key),
             ("EVENTS_AWS", s.events_aws_access_key_id, s.events_aws_secret_access_key))
    for prefix, key, secret in pairs:
        if _set(key) != _set(secret):
            given, missing = ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY") if _set(key) else ("SECRET_ACCESS_KEY",
                                                                                       "ACCESS_KEY_ID")
            f.problems.append(f"{prefix}_{given} is set but {prefix}_{missing} is not")
    purge_key, scan_key = s.purge_aws_access_key_id, s.aws_access_key_id
    if purge_key is not None and scan_key is not None and _set(purge_key) and \
            purge_key.get_secret_value() == scan_key.get_secret_value():
        f.warnings.append("PURGE_AWS_ACCESS_KEY_ID is the scanner's AWS_ACCESS_KEY_ID: the scanner can then delete "
                          "(give the purger its own principal, deploy/iam/purger.json)")
    if s.s3_ca_bundle and not os.path.isfile(s.s3_ca_bundle):
        f.problems.append(f"S3_CA_BUNDLE={s.s3_ca_bundle}: no such file")
    for name, path in (("DRILL_SCRATCH_DIR", s.drill_scratch_dir), ("RESTORE_WORK_DIR", s.restore_work_dir)):
        if path and not os.path.isdir(path):
            f.problems.append(f"{name}={path}: no such directory")
    for d in (s.restore_tools_path or "").split(os.pathsep):
        if d and not os.path.isdir(d):
            f.warnings.append(f"RESTORE_TOOLS_PATH entry {d}: no such directory")
    if s.coverage_warning_rpo_seconds > s.coverage_critical_rpo_seconds:
        f.problems.append("COVERAGE_WARNING_RPO_SECONDS is above COVERAGE_CRITICAL_RPO_SECONDS")
    if s.coverage_warning_backup_age_seconds > s.coverage_critical_backup_age_seconds:
        f.problems.append("COVERAGE_WARNING_BACKUP_AGE_SECONDS is above COVERAGE_CRITICAL_BACKUP_AGE_SECONDS")
    for url, name in ((s.external_url, "EXTERNAL_URL"), (s.s3_endpoint_url, "S3_ENDPOINT_URL"),
                      (s.cf_api_url, "CF_API_URL"), (s.uaa_url, "UAA_URL"),
                      *((u, "S3_EVENTS_QUEUE_URL") for u in s.event_queue_urls())):
        if url:
            u = urlsplit(url)
            if u.scheme not in ("http", "https") or not u.netloc:
                f.problems.append(f"{name}={url}: not an http(s) URL")
    if s.catalog_dsn is None:
        f.warnings.append("CATALOG_DSN is unset: the catalog is the embedded private cluster of this host")
    for role in s.default_credentials():
        f.warnings.append(f"the {role} password is the built-in one: serve refuses it off loopback "
                          f"({role.upper()}_PASSWORD or {role.upper()}_PASSWORD_FILE)")
    if not _set(s.purge_aws_access_key_id):
        f.warnings.append("PURGE_AWS_* unset: purge run refuses (purge plan works)")
    return f
