"""Settings read from files, as container secrets are mounted: ``NAME_FILE=/run/secrets/x`` instead of
``NAME=value`` (the convention of the official postgres and many other images).

Pure and import-light (no pydantic): :class:`backup_catalog.settings.Settings` reads these through a
pydantic-settings source.

Rules: names are case-insensitive like every setting; giving both ``NAME`` and ``NAME_FILE`` is an
error (which one wins would be a guess); the file's content is the value, less one trailing line
break (``echo secret > file`` and most secret stores add one); a missing, unreadable, empty or
non-UTF-8 file is an error naming the setting and the path, never a silent default.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

# settings that may come from a file (credentials and the DSN, which usually carries a password)
FILE_SETTINGS = (
    "catalog_dsn",
    "aws_access_key_id", "aws_secret_access_key",
    "purge_aws_access_key_id", "purge_aws_secret_access_key",
    "events_aws_access_key_id", "events_aws_secret_access_key",
    "broker_username", "broker_password",
    "operator_username", "operator_password",
    "cf_client_id", "cf_client_secret",
)
SUFFIX = "_file"
MAX_BYTES = 64 * 1024     # a secret, not a data file: a wrong path to something big is caught early


class SettingsFileError(ValueError):
    """A ``*_FILE`` setting that cannot be used; the message names the variable and the path."""

    code = "bad_settings"


def _lower(environ: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in environ.items()}


def read_setting_file(variable: str, path: str) -> str:
    """The value held in ``path`` for the environment variable ``variable`` (e.g. BROKER_PASSWORD_FILE)."""
    if not path.strip():
        raise SettingsFileError(f"{variable} is set but empty: it must name a file holding the value")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SettingsFileError(f"{variable}={path}: no such file") from None
    except IsADirectoryError:
        raise SettingsFileError(f"{variable}={path}: is a directory, not a file") from None
    except PermissionError:
        raise SettingsFileError(f"{variable}={path}: permission denied (the file must be readable by "
                                f"user id {os.geteuid()})") from None
    except OSError as e:
        raise SettingsFileError(f"{variable}={path}: cannot be read: {e.strerror or e}") from None
    if len(raw) > MAX_BYTES:
        raise SettingsFileError(f"{variable}={path}: larger than {MAX_BYTES // 1024} KiB; not a secret file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsFileError(f"{variable}={path}: not UTF-8 text") from None
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not text:
        raise SettingsFileError(f"{variable}={path}: the file is empty")
    return text


def file_values(environ: Mapping[str, str] | None = None,
                names: tuple[str, ...] = FILE_SETTINGS) -> dict[str, str]:
    """``{setting: value}`` for every ``NAME_FILE`` given in ``environ`` (default: the process environment).

    >>> file_values({"PATH": "/bin"})
    {}
    """
    env = _lower(os.environ if environ is None else environ)
    out: dict[str, str] = {}
    for name in names:
        path = env.get(name + SUFFIX)
        if path is None:
            continue
        if name in env:
            raise SettingsFileError(f"both {name.upper()} and {name.upper()}{SUFFIX.upper()} are set: "
                                    f"set only one")
        out[name] = read_setting_file(f"{name.upper()}{SUFFIX.upper()}", path)
    return out


def setting(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """One plain string setting by the same rules as :class:`~backup_catalog.settings.Settings`
    (``NAME`` or, for :data:`FILE_SETTINGS`, ``NAME_FILE``); None when unset.

    >>> setting("s3_endpoint_url", {"S3_ENDPOINT_URL": "http://127.0.0.1:9000"})
    'http://127.0.0.1:9000'
    """
    env = _lower(os.environ if environ is None else environ)
    if name in FILE_SETTINGS:
        from_file = file_values(env, (name,))
        if name in from_file:
            return from_file[name]
    return env.get(name)
