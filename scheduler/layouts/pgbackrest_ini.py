"""pgBackRest info files (backup.info, archive.info, backup.manifest): INI with JSON values.

Reading follows pgBackRest's strict INI mode (``src/common/ini.c``, ``src/info/info.c``):
- a line ``[name]`` opens a section; sections may repeat (the trailing ``[backrest]`` holds the
  checksum) and their keys merge;
- ``key=value``: the value is the text after the first ``=`` that leaves valid JSON (a key may
  itself contain ``=``); nothing is trimmed; blank lines are skipped;
- ``backrest-checksum`` is the SHA-1 of the file rendered as one JSON object,
  ``{"section":{"key":<raw value>,...},...}``: sections in file order (a new object each time
  the section name changes), keys JSON-quoted, values verbatim, the checksum itself left out.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recovery.errors import MetadataError

REPOSITORY_FORMAT = 5
SECTION_BACKREST = "backrest"
KEY_CHECKSUM = "backrest-checksum"
KEY_FORMAT = "backrest-format"


@dataclass(frozen=True, slots=True)
class InfoFile:
    """A parsed info file. ``sections[section][key]`` holds decoded JSON values (ints stay exact)."""

    sections: Mapping[str, Mapping[str, Any]]
    checksum_ok: bool
    format: int
    checksum_expected: str = ""
    checksum_actual: str = ""
    version: str | None = None

    def section(self, name: str) -> Mapping[str, Any]:
        return self.sections.get(name, {})


def _json_value(raw: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return False, None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def parse_info(text: str, source: str) -> InfoFile:
    """Parse and checksum an info file's text; ``source`` names it in errors.

    :raises MetadataError: encrypted, not INI, invalid JSON value (with the line number),
        missing checksum (truncated file), or ``backrest-format`` other than 5 (code ``format_error``).
    """
    if text.startswith("Salted__"):
        raise MetadataError(source, "encrypted (OpenSSL 'Salted__' header); repository cipher is not supported",
                            code="encrypted")
    sections: dict[str, dict[str, Any]] = {}
    sha = hashlib.sha1()
    sha.update(b"{")
    section: str | None = None
    last_hashed: str | None = None
    expected: str | None = None
    last_line = 0
    for lineno, line in enumerate(text.split("\n"), 1):
        if line == "":
            continue
        last_line = lineno
        if line[0] == "[" and line[-1] == "]":
            section = line[1:-1]
            if not section:
                raise MetadataError(source, f"line {lineno}: empty section name", code="format_error")
            sections.setdefault(section, {})
            continue
        if section is None:
            raise MetadataError(source, f"line {lineno}: key/value outside of a section: {line[:80]!r}",
                                code="format_error")
        key, raw, value = _split_key_value(line, lineno, source)
        sections[section][key] = value
        if section == SECTION_BACKREST and key == KEY_CHECKSUM:
            if not isinstance(value, str):
                raise MetadataError(source, f"line {lineno}: checksum is not a string", code="format_error")
            expected = value
            continue
        if section != last_hashed:
            if last_hashed is not None:
                sha.update(b"},")
            sha.update(b'"' + section.encode() + b'":{')
            last_hashed = section
        else:
            sha.update(b",")
        sha.update(json.dumps(key, ensure_ascii=False).encode() + b":" + raw.encode())
    sha.update(b"}}")
    if not sections:
        raise MetadataError(source, "empty file", code="format_error")
    if expected is None:
        raise MetadataError(source, f"no backrest-checksum found (file truncated after line {last_line}?)",
                            code="truncated")
    fmt = sections.get(SECTION_BACKREST, {}).get(KEY_FORMAT)
    if fmt != REPOSITORY_FORMAT or isinstance(fmt, bool):
        raise MetadataError(source, f"expected backrest-format {REPOSITORY_FORMAT} but found {fmt!r}",
                            code="format_error")
    actual = sha.hexdigest()
    version = sections[SECTION_BACKREST].get("backrest-version")
    return InfoFile(sections, actual == expected, fmt, expected, actual,
                    version if isinstance(version, str) else None)


def _split_key_value(line: str, lineno: int, source: str) -> tuple[str, str, Any]:
    """Split at the first ``=`` leaving a valid JSON value (pgBackRest retries later ``=``)."""
    pos = line.find("=")
    if pos < 0:
        raise MetadataError(source, f"line {lineno}: missing '=' in {line[:80]!r}", code="format_error")
    while pos >= 0:
        raw = line[pos + 1:]
        ok, value = _json_value(raw)
        if ok:
            key = line[:pos]
            if not key:
                raise MetadataError(source, f"line {lineno}: zero-length key", code="format_error")
            return key, raw, value
        pos = line.find("=", pos + 1)
    raise MetadataError(source, f"line {lineno}: invalid JSON value (truncated or corrupt): {line[:80]!r}",
                        code="format_error")


def require(info: InfoFile, section: str, key: str, typ: type | tuple[type, ...], source: str) -> Any:
    """A required value of the given JSON type, else MetadataError naming section and key."""
    sec = info.sections.get(section)
    if sec is None or key not in sec:
        raise MetadataError(source, f"missing [{section}] {key}", code="format_error")
    return check_type(sec[key], typ, f"[{section}] {key}", source)


def check_type(value: Any, typ: type | tuple[type, ...], what: str, source: str) -> Any:
    if isinstance(value, bool) and typ is int:
        raise MetadataError(source, f"{what}: expected integer, found {value!r}", code="format_error")
    if not isinstance(value, typ):
        raise MetadataError(source, f"{what}: unexpected value {value!r}", code="format_error")
    return value


def pg_version_num(version: str, source: str = "pg version") -> int:
    """pgBackRest ``db-version`` ("15", "9.6") to a server_version_num-style integer.

    >>> pg_version_num("15"), pg_version_num("9.6"), pg_version_num("10")
    (150000, 90600, 100000)
    """
    parts = version.split(".")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise MetadataError(source, f"invalid PostgreSQL version {version!r}", code="format_error") from None
    if len(nums) == 1 and nums[0] >= 10:
        return nums[0] * 10000
    if len(nums) == 2 and nums[0] < 10:
        return nums[0] * 10000 + nums[1] * 100
    raise MetadataError(source, f"invalid PostgreSQL version {version!r}", code="format_error")
