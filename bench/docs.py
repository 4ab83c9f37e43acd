"""``make docs``: docs/coverage.png and docs/coverage-detail.png -- the coverage page of a 10,000-instance
catalog as ``serve`` answers it, rendered by headless Chromium.

Builds the bench's large catalog (bench.bigcatalog: COPY, then the facts each scan stores) in a private
embedded cluster, starts ``backup-catalog serve``, fetches ``/reports/coverage.html`` and one instance's detail
page, checks in Chromium's DOM that the page has its rows, its summary, filter form, next-page and detail
links, and writes the screenshots. Everything else lives in a temp dir that is removed.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from html import unescape
from pathlib import Path

from bench import bigcatalog, fleetreports, sidebyside
from bench.run import _init
from bench.runner import SERVE_INTERVAL, Server, log
from catalog import embedded

DOCS = Path(__file__).resolve().parents[1] / "docs"
CHROMIUM = Path("/usr/bin/chromium")


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=300, check=False)


def render(page: Path, png: Path, tmp: Path, size: str) -> str:
    """Chromium's DOM of ``page`` (checked by the caller) and a screenshot of it."""
    dom = chromium(["--dump-dom", page.as_uri()], tmp / f"profile-dom-{page.stem}")
    if dom.returncode != 0:
        raise RuntimeError(f"chromium --dump-dom failed: {dom.stderr[-1500:]}")
    shot = chromium([f"--screenshot={png}", f"--window-size={size}", "--hide-scrollbars", page.as_uri()],
                    tmp / f"profile-shot-{page.stem}")
    if shot.returncode != 0 or not png.exists() or png.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise RuntimeError(f"chromium --screenshot failed: {shot.stderr[-1500:]}")
    return dom.stdout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.docs", description=__doc__.split("\n")[0])
    p.add_argument("--instances", type=int, default=10_000)
    p.add_argument("--days", type=int, default=60, help="days of daily backups per instance")
    p.add_argument("--out", type=Path, default=DOCS)
    a = p.parse_args(argv)
    if not CHROMIUM.exists():
        print("/usr/bin/chromium is missing (Debian package chromium; `make setup` installs it)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bc-docs-", dir="/tmp"))
    tmp.chmod(0o755)
    base = tmp / "pg"
    server = None
    try:
        dsn = embedded.ensure_cluster(base)
        asyncio.run(_init(dsn))
        t0 = time.perf_counter()
        asyncio.run(bigcatalog.build(dsn, a.instances, a.days))
        n = bigcatalog.derive(dsn, a.instances)
        log(f"catalog: {a.instances} instances x {a.days} days, facts of {n} in {time.perf_counter() - t0:.0f}s")
        from backup_catalog.usecases.scan import slot_for
        asyncio.run(bigcatalog.claim_slots(dsn, slot_for(datetime.now(UTC), SERVE_INTERVAL)))
        server = Server(sidebyside.cli_env(dsn, "http://127.0.0.1:9"), tmp / "server.log")
        status, body, wall = fleetreports._get(server.port, "/reports/coverage.html")
        if status != 200:
            raise RuntimeError(f"coverage.html: {status} {body[:300]!r}")
        log(f"/reports/coverage.html: {len(body) / 1e6:.2f} MB in {wall:.3f}s")
        page = tmp / "coverage.html"
        page.write_bytes(body)
        dom = render(page, tmp / "coverage.png", tmp, "1500,1100")
        rows = dom.count('<tr class="instance')
        nxt = re.findall(r'<a class="next" rel="next" href="([^"]+)"', dom)
        details = re.findall(r'<a class="detail" href="([^"]+)"', dom)
        summary = re.search(r'<span class="n">([\d,]+)</span> instances', dom)
        if rows != 100 or len(nxt) != 2 or len(details) != 100 or summary is None or \
                summary.group(1).replace(",", "") != str(a.instances) or 'name="status"' not in dom:
            raise RuntimeError(f"the rendered page lacks rows, links or its summary: rows={rows} next={len(nxt)} "
                               f"details={len(details)}")
        status, body2, _ = fleetreports._get(server.port, "/reports/coverage.html" + unescape(nxt[0]))
        if status != 200 or body2.count(b'<tr class="instance') != 100:
            raise RuntimeError(f"next page: {status}")
        detail_path = "/reports/" + unescape(details[0])
        status, dbody, _ = fleetreports._get(server.port, detail_path.replace("/reports/../", "/"))
        if status != 200:
            raise RuntimeError(f"detail page {detail_path}: {status}")
        dpage = tmp / "detail.html"
        dpage.write_bytes(dbody)
        render(dpage, tmp / "coverage-detail.png", tmp, "1300,900")
        a.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp / "coverage.png", a.out / "coverage.png")
        shutil.copyfile(tmp / "coverage-detail.png", a.out / "coverage-detail.png")
        log(f"wrote {a.out / 'coverage.png'} and {a.out / 'coverage-detail.png'} (page 1 of {a.instances} "
            f"instances: {rows} rows, next page and detail links followed)")
        return 0
    finally:
        if server is not None:
            server.stop()
        try:
            embedded.stop_cluster(base)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
