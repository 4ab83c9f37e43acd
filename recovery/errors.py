"""Domain exceptions: one root, a base per area, leaves carrying context."""
from __future__ import annotations


class PitrError(Exception):
    """Root of every backup-catalog domain error."""

    code = "error"


class ParseError(PitrError):
    """Text that should follow a known format does not."""

    code = "parse_error"


class BadLsn(ParseError):
    code = "invalid_lsn"

    def __init__(self, text: str) -> None:
        super().__init__(f"not an LSN: {text!r} (expected hex 'X/Y', e.g. '16/B374D848')")
        self.text = text


class BadWalName(ParseError):
    code = "invalid_wal_name"

    def __init__(self, name: str) -> None:
        super().__init__(f"not a WAL segment name: {name!r} (expected 24 upper-case hex digits)")
        self.name = name


class BadHistory(ParseError):
    code = "invalid_history"

    def __init__(self, lineno: int, line: str, message: str) -> None:
        super().__init__(f"timeline history line {lineno}: {message}: {line!r}")
        self.lineno = lineno
        self.line = line


class MetadataError(ParseError):
    """Backup metadata (backup.info, sentinel, manifest) is corrupt or of an unknown format."""

    code = "metadata_error"

    def __init__(self, source: str, message: str, *, code: str | None = None) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        if code:
            self.code = code


class PlanningError(PitrError):
    """A recovery plan cannot be made; `code` is the refusal code of the plan JSON."""

    code = "planning_error"

    def __init__(self, code: str, message: str, *, windows: tuple[object, ...] = (), details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.windows = windows
        self.details = dict(details or {})
