"""Operator surfaces at fleet scale (issue 12): /metrics, coverage pages (JSON, filtered, HTML) and the CSV of
every instance, timed against a running ``serve`` on the large catalog, with the server's RSS sampled while the
CSV streams (flat memory: it must not grow with the fleet)."""
from __future__ import annotations

import base64
import http.client
import statistics
import threading
import time
from pathlib import Path
from typing import Any

AUTH = {"Authorization": "Basic " + base64.b64encode(b"operator:operator").decode()}
RUNS = 5


def _get(port: int, path: str) -> tuple[int, bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        t0 = time.perf_counter()
        conn.request("GET", path, headers=AUTH)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body, time.perf_counter() - t0
    finally:
        conn.close()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(port: int, path: str, runs: int = RUNS) -> dict[str, Any]:
    """The first (cold) request and the median of ``runs`` more."""
    status, body, cold = _get(port, path)
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
    walls = [_get(port, path)[2] for _ in range(runs)]
    return {"path": path, "cold_s": cold, "wall_s": statistics.median(walls), "runs_s": walls,
            "bytes": len(body)}


def csv_all(port: int, pid: int) -> dict[str, Any]:
    """GET every instance as CSV while sampling the server's RSS every 10 ms."""
    base = _rss_mb(pid)
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb(pid))
            time.sleep(0.01)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        status, body, wall = _get(port, "/reports/coverage?format=csv")
    finally:
        stop.set()
        th.join()
    if status != 200:
        raise RuntimeError(f"CSV: {status} {body[:300]!r}")
    return {"wall_s": wall, "bytes": len(body), "rows": body.count(b"\n") - 1, "rss_before_mb": base,
            "rss_peak_mb": peak[0], "rss_growth_mb": peak[0] - base}


def measure(port: int, pid: int, log: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, path in (("metrics", "/metrics"), ("page", "/reports/coverage"),
                      ("filtered", "/reports/coverage?status=warning&space=bench-space-0042"),
                      ("html", "/reports/coverage.html")):
        out[key] = r = timed(port, path)
        log(f"{path}: cold {r['cold_s']:.3f}s, median {r['wall_s']:.3f}s, {r['bytes'] / 1e6:.2f} MB")
    out["csv"] = c = csv_all(port, pid)
    log(f"CSV of every instance: {c['rows']} rows, {c['bytes'] / 1e6:.1f} MB in {c['wall_s']:.2f}s, server RSS "
        f"{c['rss_before_mb']:.0f} -> peak {c['rss_peak_mb']:.0f} MB")
    return out
