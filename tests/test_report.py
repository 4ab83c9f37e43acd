"""Coverage report against a real catalog: grading, CSV, terminal table, HTML (and a headless Chromium render)."""
from __future__ import annotations

import csv
import io
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from rich.console import Console

from backup_catalog.cli import render
from backup_catalog.formats import report
from backup_catalog.settings import Settings
from backup_catalog.usecases import coverage
from catalog import repo
from recovery.lsn import Lsn
from recovery.model import Backup, WalRun, WindowEdge
from tests.catalog.factories import backup, ref, scan, storage
from tests.support.tools import missing

pytestmark = pytest.mark.asyncio(loop_scope="session")

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
S = 16 << 20
CHROMIUM = Path("/usr/bin/chromium")


def ago(hours: float = 0, minutes: float = 0) -> datetime:
    return NOW - timedelta(hours=hours, minutes=minutes)


def bk(label: str, seg: int, stop: datetime) -> Backup:
    return backup(label, start_lsn=Lsn(seg * S + 0x28), stop_lsn=Lsn(seg * S + 0x138),
                  start_time=stop - timedelta(minutes=5), stop_time=stop)


def edge(seg: int, at: datetime, exact: bool = True) -> WindowEdge:
    return WindowEdge(1, seg, at, Lsn(seg * S + 0x100) if exact else None, exact)


async def add(pool: asyncpg.Pool, guid: str, name: str, backups: list[Backup], runs: list[tuple[int, int]],
              edges: list[WindowEdge], *, scanned: datetime = NOW - timedelta(minutes=1)) -> str:
    await repo.register_instance(pool, ref(guid, name), storage(prefix=f"cf/{guid}/"), existed_before=True)
    await repo.save_scan(pool, guid, scan(tuple(WalRun(1, a, b) for a, b in runs), backups=tuple(backups),
                                          edges=tuple(edges), started_at=scanned - timedelta(seconds=5),
                                          finished_at=scanned))
    return guid


async def fleet(pool: asyncpg.Pool) -> dict[str, str]:
    """One instance per situation the report must grade; returns name -> guid."""
    g = {}
    g["orders"] = await add(pool, "11111111-0000-4000-8000-000000000001", "orders",
                            [bk("B-orders-1", 2, ago(49)), bk("B-orders-2", 20, ago(25)), bk("B-orders-3", 40, ago(2))],
                            [(2, 50)], [edge(50, ago(minutes=4))])
    g["billing"] = await add(pool, "11111111-0000-4000-8000-000000000002", "billing",
                             [bk("B-billing-1", 2, ago(20))], [(2, 30)], [edge(30, ago(minutes=6))])
    await repo.record_scan_failure(pool, g["billing"], "storage_unavailable", "S3 unavailable (503) for bucket 'backups'")
    # the catalog stamps failures with the database clock: move it onto the test's clock
    await pool.execute("UPDATE scan_state SET stale_since = $2, last_attempt = $2 WHERE instance_guid = $1",
                       g["billing"], ago(minutes=30))
    g["inventory"] = await add(pool, "11111111-0000-4000-8000-000000000003", "inventory",
                               [bk("B-inv-1", 2, ago(40)), bk("B-inv-2", 8, ago(20))],
                               [(2, 5), (7, 12), (15, 16)],
                               [edge(5, ago(30)), edge(12, ago(minutes=10)), edge(16, ago(minutes=1))])
    g["reports"] = await add(pool, "11111111-0000-4000-8000-000000000004", "reports",
                             [bk("B-reports-1", 2, ago(30))], [(2, 60)], [edge(60, ago(minutes=3))])
    g["analytics"] = await add(pool, "11111111-0000-4000-8000-000000000005", "analytics",
                               [bk("B-an-1", 2, ago(70)), bk("B-an-2", 9, ago(60))], [(2, 30)],
                               [edge(30, ago(minutes=2), exact=False)])
    g["legacy"] = await add(pool, "11111111-0000-4000-8000-000000000006", "legacy", [], [(2, 9)],
                            [edge(9, ago(minutes=2))])
    g["checkout-old"] = await add(pool, "11111111-0000-4000-8000-000000000007", "checkout-old",
                                  [bk("B-co-1", 2, ago(20))], [(2, 20)], [edge(20, ago(12, 5))],
                                  scanned=ago(12))
    await repo.delete_instance(pool, g["checkout-old"], at=ago(12))
    g["rpo-late"] = await add(pool, "11111111-0000-4000-8000-000000000008", "rpo-late",
                              [bk("B-late-1", 2, ago(3))], [(2, 10)], [edge(10, ago(2))])
    return g


async def rows_by_name(pool: asyncpg.Pool) -> dict[str, dict]:
    return {r["name"]: r for r in await coverage.all_rows(pool, Settings(), now=NOW)}


async def test_statuses(pool: asyncpg.Pool) -> None:
    await fleet(pool)
    rows = await rows_by_name(pool)
    assert {n: r["status"] for n, r in rows.items()} == {
        "orders": "ok", "billing": "warning", "inventory": "warning", "reports": "warning",
        "analytics": "critical", "legacy": "critical", "checkout-old": "ok", "rpo-late": "critical"}

    ok = rows["orders"]
    assert ok["reasons"] == []
    assert ok["newest_backup"] == "B-orders-3" and ok["newest_backup_age_seconds"] == 2 * 3600
    assert ok["rpo_seconds"] == 4 * 60 and ok["latest_window_end_exact"] is True
    assert ok["latest_window_end"] == "2026-03-10T11:56:00Z" and ok["holes"] == []
    assert ok["backups_total"] == 3 and ok["backups_restorable"] == 3 and len(ok["windows"]) == 1

    stale = rows["billing"]
    assert stale["stale_since"] is not None and stale["scan_errors_count"] == 1
    assert "S3 unavailable" in stale["scan_errors"][0]
    assert "catalog stale since 2026-03-10T11:30:00Z (scans failing)" in stale["reasons"]

    hole = rows["inventory"]
    assert [(h["first_missing"], h["after_newest_backup"]) for h in hole["holes"]] == [
        ("000000010000000000000006", False), ("00000001000000000000000D", True)]
    assert hole["latest_window_end_kind"] == "hole" and hole["rpo_seconds"] == 10 * 60
    assert any("WAL hole after the newest backup" in x for x in hole["reasons"]) and len(hole["reasons"]) == 1

    old = rows["reports"]
    assert old["newest_backup_age_seconds"] == 30 * 3600 and old["reasons"] == ["backup age 1d 6h exceeds 1d 2h"]

    assert rows["analytics"]["latest_window_end_exact"] is False
    assert any(x.startswith("backup age 2d 12h exceeds") for x in rows["analytics"]["reasons"])
    assert rows["legacy"]["newest_backup"] is None and "no usable backup" in rows["legacy"]["reasons"][0]
    assert rows["rpo-late"]["rpo_seconds"] == 7200 and rows["rpo-late"]["reasons"][0].startswith("RPO 2h exceeds")

    gone = rows["checkout-old"]
    assert gone["deleted"] is True and gone["deleted_at"] == "2026-03-10T00:00:00Z"
    assert gone["rpo_seconds"] == 5 * 60, "a deleted instance's RPO is measured to its deletion"

    order = [r["status"] for r in await coverage.all_rows(pool, Settings(), now=NOW)]
    assert order == sorted(order, key={"critical": 0, "warning": 1, "ok": 2}.__getitem__)


async def test_thresholds_come_from_settings(pool: asyncpg.Pool) -> None:
    await fleet(pool)
    strict = Settings(coverage_warning_rpo_seconds=60, coverage_critical_rpo_seconds=200)
    rows = {r["name"]: r for r in await coverage.all_rows(pool, strict, now=NOW)}
    assert rows["orders"]["status"] == "critical"        # RPO 4 min > 200 s
    assert rows["orders"]["reasons"] == ["RPO 4m exceeds 3m 20s"]


async def test_never_scanned_and_overdue(pool: asyncpg.Pool) -> None:
    await repo.register_instance(pool, ref("22222222-0000-4000-8000-000000000001", "fresh"), storage())
    await add(pool, "22222222-0000-4000-8000-000000000002", "sleepy", [bk("B1", 2, ago(1))], [(2, 5)],
              [edge(5, ago(minutes=1))], scanned=ago(2))
    rows = await rows_by_name(pool)
    assert rows["fresh"]["status"] == "critical" and rows["fresh"]["layout"] is None
    assert rows["fresh"]["reasons"][0] == "never scanned: archive layout unknown"
    assert rows["sleepy"]["status"] == "warning" and "overdue" in rows["sleepy"]["reasons"][0]


async def test_csv_parses_back(pool: asyncpg.Pool) -> None:
    g = await fleet(pool)
    rows = await coverage.all_rows(pool, Settings(), now=NOW)
    text = report.to_csv(rows)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert tuple(parsed[0].keys()) == report.CSV_COLUMNS
    assert [p["instance_guid"] for p in parsed] == [r["instance_guid"] for r in rows]
    inv = next(p for p in parsed if p["instance_guid"] == g["inventory"])
    assert inv["status"] == "warning" and inv["deleted"] == "false" and inv["rpo_seconds"] == "600"
    assert inv["holes"] == "000000010000000000000006..000000010000000000000006; " \
                           "00000001000000000000000D..00000001000000000000000E"
    assert next(p for p in parsed if p["name"] == "legacy")["newest_backup"] == ""


async def test_cli_table(pool: asyncpg.Pool) -> None:
    await fleet(pool)
    rows = await coverage.all_rows(pool, Settings(), now=NOW)
    con = Console(record=True, width=260, color_system=None)
    render.print_table(rows, con)
    out = con.export_text()
    for r in rows:
        assert r["instance_guid"] in out
    assert "checkout-old (deleted, clonable)" in out and "8 instance(s): 2 ok, 3 warning, 3 critical" in out
    assert "backup age 1d 6h exceeds 1d 2h" in out

    narrow = Console(record=True, width=80, color_system=None)
    render.print_table(rows, narrow)
    lines = narrow.export_text().splitlines()
    assert max(len(x) for x in lines) <= 80
    assert any(x.startswith("warning reports (11111111-0000-4000-8000-000000000004): backup age") for x in lines)


async def test_html_escapes_names(pool: asyncpg.Pool) -> None:
    evil = '<script>alert("x")</script>&'
    await add(pool, "33333333-0000-4000-8000-000000000001", evil, [bk("<b>label</b>", 2, ago(1))], [(2, 5)],
              [edge(5, ago(minutes=1))])
    page = report.to_html(await coverage.all_rows(pool, Settings(), now=NOW), now=NOW)
    assert "<script" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert "&lt;b&gt;label&lt;/b&gt;" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page and "src=" not in page


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120)


async def test_html_renders_in_headless_chromium(pool: asyncpg.Pool, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        missing("/usr/bin/chromium is absent (Debian package chromium; `make setup` installs it)")
    g = await fleet(pool)
    rows = await coverage.all_rows(pool, Settings(), now=NOW)
    page = tmp_path / "coverage.html"
    page.write_text(report.to_html(rows, now=NOW), encoding="utf-8")

    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name, guid in g.items():
        assert f'data-guid="{guid}"' in dom.stdout, name
    assert dom.stdout.count('<tr class="instance') == len(g)
    assert dom.stdout.count('class="window"') == sum(len(r["windows"]) for r in rows)
    assert dom.stdout.count('class="hole"') == 2
    # a fleet page marks only the newest restorable backup; the detail page has every backup
    assert dom.stdout.count('class="backup"') == sum(1 for r in rows if r["newest_backup"])
    assert dom.stdout.count('class="detail"') == len(g)

    detail = await coverage.detail(pool, Settings(), g["orders"], now=NOW)
    dpage = tmp_path / "orders.html"
    dpage.write_text(report.detail_html(detail, now=NOW), encoding="utf-8")
    ddom = _chromium(["--dump-dom", dpage.as_uri()], tmp_path / "profile-detail")
    assert ddom.returncode == 0, ddom.stderr[-2000:]
    assert ddom.stdout.count('class="backup"') == 3 and "B-orders-1" in ddom.stdout

    png = tmp_path / "coverage.png"   # docs/coverage.png is written by `make docs` (scripts/docs_screenshot.py)
    shot = _chromium([f"--screenshot={png}", "--window-size=1400,900", "--hide-scrollbars", page.as_uri()],
                     tmp_path / "profile-shot")
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


async def test_newest_backup_without_its_wal_is_flagged(pool: asyncpg.Pool) -> None:
    await add(pool, "44444444-0000-4000-8000-000000000001", "payments",
              [bk("B-pay-1", 2, ago(3)), bk("B-pay-2", 20, ago(1))], [(2, 10)], [edge(10, ago(minutes=2))])
    row = (await rows_by_name(pool))["payments"]
    assert row["newest_backup"] == "B-pay-1" and row["backups_restorable"] == 1 and row["backups_total"] == 2
    assert row["status"] == "warning"
    assert row["reasons"] == ["newest backup B-pay-2 is not restorable (WAL missing)"]
    assert "backups" not in row, "per-backup lists are only on the detail"
    detail = await coverage.detail(pool, Settings(), row["instance_guid"], now=NOW)
    assert [b["restorable"] for b in detail["backups"]] == [True, False]
    assert {k: v for k, v in detail.items() if k not in ("backups", "windows")} == \
        {k: v for k, v in row.items() if k != "windows"}


async def test_a_corrupt_segment_makes_the_instance_critical(pool: asyncpg.Pool) -> None:
    """A segment the scanner proved bad cuts the window before it, and the instance is critical even when
    its clock looks fine (replay would silently stop there)."""
    from catalog.scanresult import WalConflict

    guid = "55555555-0000-4000-8000-000000000001"
    await repo.register_instance(pool, ref(guid, "ledger"), storage(prefix=f"cf/{guid}/"), existed_before=True)
    why = "segment starts at 0/D000000 (segno 13), expected segno 14"
    await repo.save_scan(pool, guid, scan((WalRun(1, 2, 16),), backups=(bk("B-led-1", 2, ago(2)),),
                                          edges=(edge(13, ago(minutes=20)), edge(16, ago(minutes=1))),
                                          corrupt=(WalConflict(1, 14, why),), started_at=ago(minutes=2),
                                          finished_at=ago(minutes=1)))
    row = (await rows_by_name(pool))["ledger"]
    assert row["status"] == "critical"
    assert f"corrupt WAL segment 00000001000000000000000E: {why}; recovery cannot replay past it" in row["reasons"]
    assert row["corrupt"] == [{"timeline": 1, "segment": "00000001000000000000000E", "reason": why}]
    assert row["latest_window_end_kind"] == "corrupt" and row["latest_window_end"] == "2026-03-10T11:40:00Z"
    assert row["rpo_seconds"] == 20 * 60, "the window ends at the last commit before the corrupt segment"
