"""Settings read from the environment (one pydantic-settings model, no second reader): names in any case, ``NAME_FILE``, keyword
arguments over the environment, refusals naming the variable, and no pydantic until Settings is used."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from backup_catalog.settings import Settings
from backup_catalog.settings.files import SettingsFileError

NAMES = ("catalog_dsn", "s3_endpoint_url", "deleted_retention_days", "purge_grace_hours", "s3_verify_tls",
         "scan_interval_seconds", "log_level", "drill_enabled")


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in NAMES:
        for var in (name.upper(), name.upper() + "_FILE", name):
            monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_defaults(clean: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert (s.catalog_dsn, s.s3_endpoint_url, s.deleted_retention_days, s.purge_grace_hours) == (None, None, 30.0, 24.0)
    assert s.s3_verify_tls is True and s.drill_enabled is None and s.log_level == "INFO"


@pytest.mark.parametrize(("env", "want"), [
    ({"CATALOG_DSN": "postgresql://u@h/db", "S3_ENDPOINT_URL": "http://127.0.0.1:9000"},
     {"catalog_dsn": "postgresql://u@h/db", "s3_endpoint_url": "http://127.0.0.1:9000"}),
    ({"deleted_retention_days": "0", "PURGE_GRACE_HOURS": "1.5"},
     {"deleted_retention_days": 0.0, "purge_grace_hours": 1.5}),
    ({"S3_VERIFY_TLS": "false", "Scan_Interval_Seconds": "60", "DRILL_ENABLED": "1", "LOG_LEVEL": "debug"},
     {"s3_verify_tls": False, "scan_interval_seconds": 60, "drill_enabled": True, "log_level": "DEBUG"}),
])
def test_names_in_any_case_typed_values(clean: pytest.MonkeyPatch, env: dict[str, str],
                                        want: dict[str, object]) -> None:
    for k, v in env.items():
        clean.setenv(k, v)
    s = Settings()
    got = {n: getattr(s, n) for n in want}
    assert {n: v.get_secret_value() if hasattr(v, "get_secret_value") else v for n, v in got.items()} == want


def test_keyword_arguments_win_over_the_environment(clean: pytest.MonkeyPatch) -> None:
    clean.setenv("SCAN_INTERVAL_SECONDS", "60")
    clean.setenv("S3_ENDPOINT_URL", "http://env")
    s = Settings(scan_interval_seconds=5)
    assert s.scan_interval_seconds == 5 and s.s3_endpoint_url == "http://env"
    assert s.model_copy(update={"scan_interval_seconds": 7}).scan_interval_seconds == 7


def test_dsn_from_a_file(clean: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "dsn"
    f.write_text("postgresql://from-file@h/db\n")
    clean.setenv("CATALOG_DSN_FILE", str(f))
    s = Settings()
    assert s.catalog_dsn is not None and s.catalog_dsn.get_secret_value() == "postgresql://from-file@h/db"
    clean.setenv("CATALOG_DSN", "postgresql://env@h/db")
    with pytest.raises(SettingsFileError, match="both CATALOG_DSN and CATALOG_DSN_FILE"):
        Settings()


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "soon"])
def test_bad_undo_values_are_refused_naming_the_setting(clean: pytest.MonkeyPatch, bad: str) -> None:
    clean.setenv("PURGE_GRACE_HOURS", bad)
    with pytest.raises(ValidationError) as e:
        Settings()
    assert [err["loc"] for err in e.value.errors()] == [("purge_grace_hours",)]


def test_the_secret_is_not_printed(clean: pytest.MonkeyPatch) -> None:
    clean.setenv("CATALOG_DSN", "postgresql://u:hunter2@h/db")
    assert "hunter2" not in repr(Settings()) and "hunter2" not in str(Settings().model_dump())


def test_the_package_loads_no_pydantic_until_settings_are_used() -> None:
    code = ("import sys; import backup_catalog.settings as s; "
            "a = 'pydantic' in sys.modules; s.Settings; print(a, 'pydantic' in sys.modules, "
            "'pydantic_settings' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True"]


def test_a_renamed_setting_is_still_read_by_its_former_name(clean: pytest.MonkeyPatch) -> None:
    for var in ("SCAN_CACHE_BACKUPS", "SNAPSHOT_CACHE_BACKUPS"):
        clean.delenv(var, raising=False)
    clean.setenv("SNAPSHOT_CACHE_BACKUPS", "500")
    assert Settings().scan_cache_backups == 500
    clean.setenv("SCAN_CACHE_BACKUPS", "700")           # the current name wins
    assert Settings().scan_cache_backups == 700
    assert Settings(scan_cache_backups=9).scan_cache_backups == 9
