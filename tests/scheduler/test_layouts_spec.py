"""One module per layout: every Layout member has ``scheduler/layouts/<value>.py`` providing every capability
(docs/internals.md "Adding a layout"), and the capabilities' pure lines and prefixes."""
from __future__ import annotations

import argparse
import ast
import importlib
import inspect
from pathlib import Path

import pytest

from backup_catalog.api.openapi import openapi_document
from backup_catalog.cli.parser import build_parser
from backup_catalog.formats.pages import LAYOUTS
from catalog.fleet import FLEET_SQL
from recovery.model import Layout
from scheduler.layouts import spec_of
from scheduler.layouts.spec import LayoutArgumentError, LayoutSpec, S3Access, StorageLoc

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("layout", list(Layout))
def test_every_layout_has_a_module_with_every_capability(layout: Layout) -> None:
    spec = spec_of(layout)
    assert isinstance(spec, LayoutSpec) and spec.layout is layout and spec.tool
    assert importlib.import_module(f"scheduler.layouts.{layout.value}").LAYOUT is spec    # its own module
    for cap in LayoutSpec.CAPABILITIES:
        assert callable(getattr(spec, cap)), (layout, cap)
    assert inspect.iscoroutinefunction(spec.scan)
    assert spec.duplicates_note
    loc = StorageLoc(layout, "bkt", "pre/fix", "main")
    assert spec.restore_command(loc, None) and "%f" in spec.restore_command(loc, None)
    cmd = spec.fetch_command(loc, "LABEL", "/data", S3Access(), "/w")
    assert any("LABEL" in a for a in cmd.argv) and any("/data" in a for a in cmd.argv)
    assert all(p.startswith("pre/fix/") and p.endswith("/") for p in spec.purge_prefixes("pre/fix/", "main"))


def test_the_enum_is_the_only_list_of_layouts() -> None:
    values = [m.value for m in Layout]
    assert list(LAYOUTS) == values
    schemas = openapi_document()["components"]["schemas"]
    assert schemas["Layout"]["enum"] == values
    assert f"IN ({', '.join(repr(v) for v in values)})" in FLEET_SQL
    storage_in = schemas["StorageIn"]["properties"]["layout"]
    assert {"$ref": "#/components/schemas/Layout"} in storage_in["anyOf"]
    choices = [list(a.choices or ()) for a in _options(build_parser()) if "--layout" in a.option_strings]
    assert ["auto", *values] in choices and [*values, "unknown"] in choices
    # no module of the product spells the list out again (the layout modules name only themselves)
    spelled = []
    for path in (REPO / d for d in ("recovery", "catalog", "scheduler", "backup_catalog", "executor")):
        for f in path.rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Tuple | ast.List | ast.Set):
                    strs = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                    if len(strs & set(values)) >= 3:
                        spelled.append(str(f.relative_to(REPO)))
    assert not spelled, f"a list of layouts besides the enum: {spelled}"


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    out = []
    for a in parser._actions:
        out.append(a)
        if isinstance(a, argparse._SubParsersAction):
            for p in a.choices.values():
                out += _options(p)
    return out


@pytest.mark.parametrize("layout, loc, endpoint, expected", [
    (Layout.PGBACKREST, ("b", "pgbackrest", "main"), None, 'pgbackrest --stanza=main archive-get %f "%p"'),
    (Layout.PGBACKREST, ("b", "", "db-1"), None, 'pgbackrest --stanza=db-1 archive-get %f "%p"'),
    (Layout.BARMAN, ("pg-archive", "barman", "main"), None,
     "barman-cloud-wal-restore --no-partial s3://pg-archive/barman main %f %p"),
    (Layout.BARMAN, ("pg-archive", "", "main"), "http://127.0.0.1:5000",
     "barman-cloud-wal-restore --endpoint-url http://127.0.0.1:5000 --no-partial s3://pg-archive main %f %p"),
    (Layout.BARMAN, ("b", "my dir", "main"), None, "barman-cloud-wal-restore --no-partial 's3://b/my dir' main %f %p"),
    (Layout.WALG, ("b", "walg", None), None, 'wal-g wal-fetch "%f" "%p"'),
    (Layout.WALE, ("b", "wale", None), None, 'envdir /etc/wal-e.d/env wal-e wal-fetch "%f" "%p"'),
])
def test_restore_command(layout: Layout, loc: tuple[str, str, str | None], endpoint: str | None,
                         expected: str) -> None:
    assert spec_of(layout).restore_command(StorageLoc(layout, *loc), endpoint) == expected


def test_barman_needs_its_server_name() -> None:
    with pytest.raises(LayoutArgumentError, match="server name"):
        spec_of(Layout.BARMAN).restore_command(StorageLoc(Layout.BARMAN, "b", "p", None), None)
    with pytest.raises(LayoutArgumentError, match="server name"):
        spec_of(Layout.BARMAN).purge_prefixes("p/", "a/b")
    with pytest.raises(ValueError):
        spec_of("tarball")


def test_duplicate_rules() -> None:
    a = "archive/main/15-1/0000000100000000/000000010000000000000003-" + "a" * 40 + ".gz"
    assert spec_of(Layout.PGBACKREST).same_segment(a, a.replace(".gz", ".zst")) is True
    assert spec_of(Layout.PGBACKREST).same_segment(a, a.replace("a" * 40, "b" * 40)) is False
    for layout in (Layout.BARMAN, Layout.WALG, Layout.WALE):
        assert spec_of(layout).same_segment("x", "y") is None


def test_content_sha1_promised_by_the_name() -> None:
    key = "archive/main/15-1/0000000100000000/000000010000000000000003-" + "AB" * 20 + ".gz"
    assert spec_of(Layout.PGBACKREST).content_sha1(key) == "ab" * 20
    assert spec_of(Layout.PGBACKREST).content_sha1("archive/main/15-1/00000002.history") is None
    for layout in (Layout.BARMAN, Layout.WALG, Layout.WALE):
        assert spec_of(layout).content_sha1("wals/0000000100000000/000000010000000000000003.gz") is None
