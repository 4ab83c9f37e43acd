"""The coverage page at 1280 px (issue 23 item 8), rendered in headless Chromium: no horizontal scroll with the
bar and the reasons visible, axis labels with times for a short span, a short window visible beside a
backup tick, and the space beside a name that two instances on the page share."""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from backup_catalog.formats import report
from backup_catalog.settings import Settings
from backup_catalog.usecases import coverage
from catalog import repo
from tests.catalog.factories import ref, scan, storage
from tests.support.tools import missing
from tests.test_report import CHROMIUM, NOW, _chromium, ago, bk, edge

pytestmark = pytest.mark.asyncio(loop_scope="session")

SPACE_A = "aaaaaaaa-1111-4000-8000-00000000000a"
SPACE_B = "bbbbbbbb-2222-4000-8000-00000000000b"
LABEL = "20260310-101500F_20260310-113000I"      # as long as a pgBackRest incremental's label


async def _add(pool: asyncpg.Pool, guid: str, name: str, space: str, *, deleted: bool) -> None:
    from recovery.model import WalRun
    await repo.register_instance(pool, ref(guid, name, space=space), storage(prefix=f"cf/{guid}/"),
                                 existed_before=True)
    await repo.save_scan(pool, guid, scan((WalRun(1, 2, 4),), backups=(bk(LABEL, 2, ago(minutes=50)),),
                                          edges=(edge(4, ago(minutes=49)),), started_at=NOW - timedelta(seconds=65),
                                          finished_at=NOW - timedelta(seconds=60)))
    if deleted:
        await repo.delete_instance(pool, guid, at=ago(minutes=30))


def _measure(html: str, tmp: Path, name: str) -> tuple[int, str]:
    """The page's scrollWidth at a 1280x900 window, and its DOM after load."""
    probe = ("<script>window.addEventListener('load',()=>{document.body.setAttribute('data-scroll-width',"
             "document.documentElement.scrollWidth)})</script>")
    page = tmp / f"{name}.html"
    page.write_text(html.replace("</body>", probe + "</body>"), encoding="utf-8")
    dom = _chromium(["--window-size=1280,900", "--virtual-time-budget=2000", "--dump-dom", page.as_uri()],
                    tmp / f"profile-{name}")
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-scroll-width="(\d+)"', dom.stdout)
    assert m, dom.stdout[:2000]
    return int(m.group(1)), dom.stdout


async def test_coverage_page_fits_1280_with_short_spans_and_shared_names(pool: asyncpg.Pool, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        missing("/usr/bin/chromium is absent (Debian package chromium; `make setup` installs it)")
    await _add(pool, "cccccccc-0000-4000-8000-000000000001", "production", SPACE_A, deleted=True)
    await _add(pool, "cccccccc-0000-4000-8000-000000000002", "production", SPACE_B, deleted=True)
    await _add(pool, "cccccccc-0000-4000-8000-000000000003", "a-long-service-name-for-the-orders-database",
               SPACE_A, deleted=False)
    rows = await coverage.all_rows(pool, Settings(), now=NOW)
    html = report.to_html(rows, now=NOW)
    width, dom = _measure(html, tmp_path, "coverage")
    assert width <= 1280, f"the page scrolls sideways at 1280 px: scrollWidth {width}"
    # the span is under an hour: every axis label is a distinct time, not one repeated date
    labels = re.findall(r'<text x="[\d.]+" y="12" text-anchor="\w+">([^<]+)</text>', dom)
    assert len(labels) == 4 and len(set(labels)) == 4 and all(re.fullmatch(r"\d\d:\d\d:\d\d", x) for x in labels)
    # the short window is wider than a backup tick drawn on it
    widths = [float(w) for w in re.findall(r'class="window" x="[\d.]+" y="4" width="([\d.]+)"', dom)]
    assert len(widths) == 3 and min(widths) >= report.MIN_WINDOW_W
    # the two deleted "production" rows say their spaces; the unique name does not
    assert dom.count('class="space"') == 2 and SPACE_A in dom and SPACE_B in dom
    detail = await coverage.detail(pool, Settings(), "cccccccc-0000-4000-8000-000000000001", now=NOW)
    dwidth, _ = _measure(report.detail_html(detail, now=NOW), tmp_path, "detail")
    assert dwidth <= 1280, f"the detail page scrolls sideways at 1280 px: scrollWidth {dwidth}"
