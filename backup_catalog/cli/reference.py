"""The CLI reference (``docs/cli.md``), generated from the parser itself: every command and subcommand with
its ``--help``. ``python -m backup_catalog.cli.reference > docs/cli.md`` refreshes it (``make docs-cli``);
``tests/test_cli_reference.py`` fails when the checked-in file and the parser differ."""
from __future__ import annotations

import argparse
import os

from backup_catalog.cli.parser import build_parser

HEADER = """# `backup-catalog` command reference

Generated from the command line's parser (`make docs-cli`; a test fails when it drifts). Exit codes: 0 success,
2 usage or bad input, 3 the plan is refused, 4 a restore or drill failed (a recorded result), 1 other errors.
With `--json`, stdout holds exactly one JSON document (success or error). Settings come from the
environment: [settings.md](settings.md).
"""


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(p: argparse.ArgumentParser, path: list[str], out: list[str]) -> None:
    subs = _subparsers(p)
    if path:
        out.append(f"\n## `backup-catalog {' '.join(path)}`\n\n```\n{p.format_help().rstrip()}\n```\n")
    for name, child in subs.items():
        _walk(child, [*path, name], out)


def reference() -> str:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"     # argparse wraps help to the terminal: the file must not depend on it
    try:
        p = build_parser()
        out = [HEADER, f"\n```\n{p.format_help().rstrip()}\n```\n"]
        _walk(p, [], out)
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return "".join(out)


if __name__ == "__main__":
    print(reference(), end="")
