"""The two readings of the settings agree: Settings (pydantic) and the terminal-speed reading of the four that
``backups`` and ``plan`` use (backup_catalog.settings.light): same defaults, same values, same refusals."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from backup_catalog.settings import Settings, light
from backup_catalog.settings.files import SettingsFileError

NAMES = ("catalog_dsn", "s3_endpoint_url", "deleted_retention_days", "purge_grace_hours")


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in NAMES:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name.upper() + "_FILE", raising=False)
    return monkeypatch


def _plain(v: object) -> object:
    return v.get_secret_value() if hasattr(v, "get_secret_value") else v


def both() -> tuple[dict[str, object], dict[str, object]]:
    full, quick = Settings(), light.plan_settings()
    return ({n: _plain(getattr(full, n)) for n in NAMES}, {n: _plain(getattr(quick, n)) for n in NAMES})


def test_defaults_agree(clean: pytest.MonkeyPatch) -> None:
    full, quick = both()
    assert full == quick
    assert quick["deleted_retention_days"] == 30.0 and quick["purge_grace_hours"] == 24.0


@pytest.mark.parametrize("env", [
    {"CATALOG_DSN": "postgresql://u@h/db", "S3_ENDPOINT_URL": "http://127.0.0.1:9000"},
    {"deleted_retention_days": "0", "PURGE_GRACE_HOURS": "1.5"},
    {"DELETED_RETENTION_DAYS": "7", "purge_grace_hours": "0"},
])
def test_values_agree(clean: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for k, v in env.items():
        clean.setenv(k, v)
    full, quick = both()
    assert full == quick
    assert any(full[n.lower()] not in (None, 30.0, 24.0) for n in env)


def test_dsn_file_agrees(clean: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "dsn"
    f.write_text("postgresql://from-file@h/db\n")
    clean.setenv("CATALOG_DSN_FILE", str(f))
    full, quick = both()
    assert full == quick and quick["catalog_dsn"] == "postgresql://from-file@h/db"


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "soon"])
def test_bad_undo_values_are_refused_by_both(clean: pytest.MonkeyPatch, bad: str) -> None:
    clean.setenv("PURGE_GRACE_HOURS", bad)
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(SettingsFileError, match="PURGE_GRACE_HOURS"):
        light.plan_settings()


def test_the_secret_is_not_printed(clean: pytest.MonkeyPatch) -> None:
    clean.setenv("CATALOG_DSN", "postgresql://u:hunter2@h/db")
    assert "hunter2" not in repr(light.plan_settings())


def test_the_package_loads_no_pydantic_until_settings_are_used() -> None:
    code = ("import sys; import backup_catalog.settings as s, backup_catalog.settings.light; "
            "a = 'pydantic' in sys.modules; s.Settings; print(a, 'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
