"""`serve` refuses the built-in credentials off loopback; credentials (and the DSN) may come from files."""
from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from backup_catalog.settings import Settings
from backup_catalog.settings.files import (
    SettingsFileError,
    file_values,
    read_setting_file,
    setting,
)
from sandbox.s3 import free_port

CRED_VARS = ("BROKER_USERNAME", "BROKER_PASSWORD", "OPERATOR_USERNAME", "OPERATOR_PASSWORD")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(CRED_VARS) and not k.upper().startswith("CATALOG_DSN")}
    env.update(extra)
    return env


def serve(env: dict[str, str], host: str, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "backup_catalog.cli", "serve", "--host", host, "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def get(port: int, path: str, user: str, password: str) -> int:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def wait_up(proc: subprocess.Popen[str], port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not answer /healthz")


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", ""])
def test_serve_off_loopback_with_built_in_credentials_refuses_to_start(host: str) -> None:
    p = subprocess.run([sys.executable, "-m", "backup_catalog.cli", "serve", "--host", host, "--port", "1"],
                       env=clean_env(CATALOG_DSN="postgresql://nobody@127.0.0.1:1/none"),
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 2, p.stderr
    assert "built-in broker and operator credentials" in p.stderr
    assert "BROKER_PASSWORD (or BROKER_PASSWORD_FILE)" in p.stderr and "OPERATOR_PASSWORD" in p.stderr
    assert "Traceback" not in p.stderr


def test_one_default_password_left_is_named() -> None:
    p = subprocess.run([sys.executable, "-m", "backup_catalog.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
                       env=clean_env(BROKER_PASSWORD="a-real-one"), capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 2 and "built-in operator credentials" in p.stderr, p.stderr
    assert "BROKER_PASSWORD" not in p.stderr


def test_serve_starts_off_loopback_with_credentials_set(catalog_dsn: str, pool: Any) -> None:
    port = free_port()
    env = clean_env(CATALOG_DSN=catalog_dsn, BROKER_PASSWORD="br-pw-1", OPERATOR_PASSWORD="op-pw-1",
                    S3_ENDPOINT_URL="http://127.0.0.1:9", SCAN_INTERVAL_SECONDS="86400")
    proc = serve(env, "0.0.0.0", port)
    try:
        wait_up(proc, port)
        assert get(port, "/instances", "operator", "op-pw-1") == 200
        assert get(port, "/instances", "operator", "operator") == 401
    finally:
        assert stop(proc) == 0


def test_serve_starts_with_credentials_and_dsn_from_files(catalog_dsn: str, pool: Any, tmp_path: Path) -> None:
    secrets = {"broker-user": "broker-from-file", "broker-pw": "br pw from file", "op-user": "op-from-file",
               "op-pw": "op-pw-from-file", "dsn": catalog_dsn}
    for name, value in secrets.items():
        (tmp_path / name).write_text(value + "\n")       # as `echo value > file` writes it
    port = free_port()
    env = clean_env(BROKER_USERNAME_FILE=str(tmp_path / "broker-user"), BROKER_PASSWORD_FILE=str(tmp_path / "broker-pw"),
                    OPERATOR_USERNAME_FILE=str(tmp_path / "op-user"), OPERATOR_PASSWORD_FILE=str(tmp_path / "op-pw"),
                    CATALOG_DSN_FILE=str(tmp_path / "dsn"), S3_ENDPOINT_URL="http://127.0.0.1:9",
                    SCAN_INTERVAL_SECONDS="86400")
    proc = serve(env, "0.0.0.0", port)
    try:
        wait_up(proc, port)
        assert get(port, "/instances", "op-from-file", "op-pw-from-file") == 200
        assert get(port, "/instances", "broker-from-file", "br pw from file") == 403     # broker role: known
        assert get(port, "/instances", "op-from-file", "op-pw-from-file\n") == 401       # newline not kept
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize("setup, message", [
    (lambda d: {"OPERATOR_PASSWORD_FILE": str(d / "missing")}, "OPERATOR_PASSWORD_FILE=%s/missing: no such file"),
    (lambda d: {"BROKER_PASSWORD_FILE": str(d)}, "BROKER_PASSWORD_FILE=%s: is a directory"),
    (lambda d: {"CATALOG_DSN_FILE": str(d / "empty")}, "CATALOG_DSN_FILE=%s/empty: the file is empty"),
    (lambda d: {"BROKER_PASSWORD": "x", "BROKER_PASSWORD_FILE": str(d / "pw")},
     "both BROKER_PASSWORD and BROKER_PASSWORD_FILE are set"),
])
def test_unusable_setting_files_are_clear_errors(tmp_path: Path, setup: Any, message: str) -> None:
    (tmp_path / "empty").write_text("")
    (tmp_path / "pw").write_text("pw")
    p = subprocess.run([sys.executable, "-m", "backup_catalog.cli", "instances", "list", "--json"],
                       env=clean_env(**setup(tmp_path)), capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    assert '"code": "bad_settings"' in p.stdout and (message.replace("%s", str(tmp_path)) in p.stdout), p.stdout
    assert "Traceback" not in p.stderr


def test_file_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "s"
    f.write_bytes(b"p\xc3\xa4ss word\r\n")
    assert read_setting_file("X_FILE", str(f)) == "päss word"
    f.write_bytes(b"two\nlines\n\n")
    assert read_setting_file("X_FILE", str(f)) == "two\nlines\n"        # only one line break is dropped
    f.write_bytes(b"\xff\xfe")
    with pytest.raises(SettingsFileError, match="not UTF-8"):
        read_setting_file("X_FILE", str(f))
    with pytest.raises(SettingsFileError, match="set but empty"):
        read_setting_file("X_FILE", " ")
    f.write_text("from-file")
    assert file_values({"operator_password_file": str(f), "OTHER_FILE": "/nope"}) == {"operator_password": "from-file"}
    assert setting("catalog_dsn", {"CATALOG_DSN_FILE": str(f)}) == "from-file"
    assert setting("catalog_dsn", {"CATALOG_DSN": "direct"}) == "direct"
    for k in list(os.environ):
        if k.upper().startswith(CRED_VARS):
            monkeypatch.delenv(k)
    monkeypatch.setenv("OPERATOR_PASSWORD_FILE", str(f))
    s = Settings()
    assert s.operator_password.get_secret_value() == "from-file" and s.default_credentials() == ["broker"]
