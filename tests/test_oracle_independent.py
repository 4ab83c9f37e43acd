"""The coverage oracle (tests/support/coverage_oracle.py) is independent of the grading it checks."""
from __future__ import annotations

import ast
from pathlib import Path

ORACLE = Path(__file__).parent / "support" / "coverage_oracle.py"
# the stored-facts grading and everything that formats its rows
CHECKED = ("recovery.grading", "recovery.jsonout", "backup_catalog.usecases", "backup_catalog.formats",
           "catalog.scancache", "backup_catalog.api")


def test_the_oracle_imports_nothing_it_checks() -> None:
    tree = ast.parse(ORACLE.read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert names, "no imports found: the test reads the wrong file"
    bad = [m for m in names if any(m == c or m.startswith(c + ".") for c in CHECKED)]
    assert not bad, f"the coverage oracle imports what it checks: {bad}"
