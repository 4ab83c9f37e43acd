"""docs/settings.md is generated from the settings model (a test fails when it drifts); `config check` validates
the environment and prints the effective settings with every secret masked (issue 21)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from backup_catalog.settings import Settings
from backup_catalog.settings.reference import READERS, is_secret, readers, reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def test_settings_reference_is_current() -> None:
    have = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert have == reference(), "docs/settings.md differs from the settings model: run `make docs-settings`"


def test_every_setting_is_documented_with_its_readers_and_secrets_marked() -> None:
    text = reference()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `")}
    assert set(rows) == {n.upper() for n in Settings.model_fields}
    for name in Settings.model_fields:
        row = rows[name.upper()]
        assert readers(name) and ", ".join(readers(name)) in row
        assert ("| secret" in row) == is_secret(name), row
        cells = re.split(r"(?<!\\)\|", row)
        assert len(cells) == 9 and cells[7].strip(), f"{name.upper()} has no description: {row}"
    assert is_secret("purge_aws_secret_access_key") and is_secret("catalog_dsn") and not is_secret("log_level")
    assert "`CATALOG_DSN_FILE`" in rows["CATALOG_DSN"]
    assert len(READERS) == len({p for p, _ in READERS})


def config_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.upper().startswith(("AWS_", "PURGE_", "EVENTS_AWS", "BROKER_", "OPERATOR_", "CATALOG_DSN",
                                          "S3_", "COVERAGE_"))}
    return subprocess.run([sys.executable, "-m", "backup_catalog.cli", "config", "check", "--json"],
                          env={**base, **env}, capture_output=True, text=True, timeout=60, check=False)


def test_config_check_prints_the_effective_settings_with_secrets_masked(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("op-password-sentinel\n")
    p = config_check({"AWS_ACCESS_KEY_ID": "AKIA-SCANNER", "AWS_SECRET_ACCESS_KEY": "aws-secret-sentinel",
                      "PURGE_AWS_ACCESS_KEY_ID": "AKIA-PURGER", "PURGE_AWS_SECRET_ACCESS_KEY": "purge-sentinel",
                      "BROKER_PASSWORD": "broker-sentinel", "OPERATOR_PASSWORD_FILE": str(tmp_path / "pw"),
                      "CATALOG_DSN": "postgresql://u:dsn-sentinel@db.example/cat", "SCAN_INTERVAL_SECONDS": "60"})
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(p.stdout)
    assert doc["ok"] is True and doc["problems"] == []
    assert "sentinel" not in p.stdout + p.stderr
    s = doc["settings"]
    assert s["AWS_SECRET_ACCESS_KEY"] == s["OPERATOR_PASSWORD"] == s["CATALOG_DSN"] == s["BROKER_PASSWORD"] == "***"
    assert s["AWS_ACCESS_KEY_ID"] == "***" and s["SCAN_INTERVAL_SECONDS"] == "60"
    assert s["S3_MAX_ATTEMPTS"] == "5" and s["EVENTS_AWS_ACCESS_KEY_ID"] == ""
    assert set(s) == {n.upper() for n in Settings.model_fields}


def test_config_check_names_each_problem_and_exits_2() -> None:
    p = config_check({"PURGE_AWS_ACCESS_KEY_ID": "AKIA-PURGER", "S3_CA_BUNDLE": "/nonexistent/ca.pem",
                      "COVERAGE_WARNING_RPO_SECONDS": "7200", "S3_EVENTS_QUEUE_URL": "not a url"})
    assert p.returncode == 2, p.stdout + p.stderr
    problems = json.loads(p.stdout)["problems"]
    assert problems == ["PURGE_AWS_ACCESS_KEY_ID is set but PURGE_AWS_SECRET_ACCESS_KEY is not",
                        "S3_CA_BUNDLE=/nonexistent/ca.pem: no such file",
                        "COVERAGE_WARNING_RPO_SECONDS is above COVERAGE_CRITICAL_RPO_SECONDS",
                        "S3_EVENTS_QUEUE_URL=not a url: not an http(s) URL"]
    p = config_check({"S3_MAX_ATTEMPTS": "many"})
    assert p.returncode == 2 and "S3_MAX_ATTEMPTS" in json.loads(p.stdout)["error"]["message"]
    assert "Traceback" not in p.stderr
