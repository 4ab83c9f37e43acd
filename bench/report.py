"""Targets, the pass/fail checks and the rich table of one bench run."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def machine() -> dict[str, Any]:
    model = ""
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), "")
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem, 1),
            "python": platform.python_version(), "kernel": platform.release()}


def _c(section: str, figure: str, value: Any, target: str, met: bool | None, unit: str = "") -> dict[str, Any]:
    return {"section": section, "figure": figure, "value": value, "unit": unit, "target": target, "met": met}


def checks(r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    y = r.get("year")
    if y:
        s, b = y["initial_scan"], y["bare_list"]
        sec = f"1 initial scan ({y['wal_keys_listed']:,} WAL keys, {y['backups']} backups)"
        out += [
            _c(sec, "scan wall", s["wall_s"], "", None, "s"),
            _c(sec, "bare list_objects_v2 wall", b["wall_s"], "", None, "s"),
            _c(sec, "scan / bare listing (wall)", s["wall_ratio_vs_bare"], "<= 1.3x", s["wall_ratio_vs_bare"] <= 1.3, "x"),
            _c(sec, "scan CPU per 1,000 keys", s["cpu_ms_per_1000_keys"], "", None, "ms"),
            _c(sec, "bare listing CPU per 1,000 keys", b["cpu_ms_per_1000_keys"], "", None, "ms"),
            _c(sec, "scan CPU / listing CPU", s["cpu_s"] / b["cpu_s"], "", None, "x"),
            _c(sec, "scan requests", s["requests"], "", None),
            _c(sec, "scan peak RSS (child process)", s["child_maxrss_mb"], "<= 200 MB", s["child_maxrss_mb"] <= 200, "MB"),
        ]
        i, n = y["rescan_idle"], y["rescan_1000_new"]
        out += [
            _c("2 incremental rescan", "nothing new: requests", i["requests"], "<= 3", i["requests"] <= 3),
            _c("2 incremental rescan", "nothing new: wall", i["wall_s"], "", None, "s"),
            _c("2 incremental rescan", "1,000 new segments: requests", n["requests"], "", None),
            _c("2 incremental rescan", "1,000 new segments: wall", n["wall_s"], "", None, "s"),
        ]
        f = y["footprint"]
        out += [_c("3 catalog footprint (instance-year)", f"{t} rows", v, "wal_runs = runs (4)" if t == "wal_runs" else "",
                   (v == 4) if t == "wal_runs" else None) for t, v in f.items()]
    if r.get("walrecords"):
        from bench.walrecords import checks as wal_checks
        out += wal_checks(r["walrecords"], _c)
    if r.get("events"):
        from bench.events import checks as event_checks
        out += event_checks(r["events"], _c)
    h = r.get("http")
    if h:
        for k, v in h.items():
            what, conns = k.rsplit("_c", 1)
            sec = f"4 HTTP {'POST clones (plan)' if what == 'plan' else 'GET backups'} vs {r['catalog']['instances']:,}-instance catalog"
            lab = "sequential" if conns == "1" else f"{conns} concurrent"
            ok = v["non2xx"] == 0 and v["socket_errors"] == 0
            out += [
                _c(sec, f"{lab}: p50", v["p50_ms"], "", None, "ms"),
                _c(sec, f"{lab}: p99", v["p99_ms"], "<= 20 ms", v["p99_ms"] <= 20 and ok, "ms"),
                _c(sec, f"{lab}: throughput", v["req_per_s"], "", None, "req/s"),
            ]
            if not ok:
                out.append(_c(sec, f"{lab}: errors", v["non2xx"] + v["socket_errors"], "0", False))
    rep = r.get("reports")
    if rep:
        sec = f"7 operator surfaces vs {r['catalog']['instances']:,}-instance catalog (median of 5; cold first)"
        for key, lab in (("metrics", "GET /metrics"), ("page", "GET /reports/coverage (default page: 100)"),
                         ("filtered", "GET /reports/coverage?status=warning&space=..."),
                         ("html", "GET /reports/coverage.html")):
            v = rep[key]
            out.append(_c(sec, f"{lab}: wall", v["wall_s"], "<= 1 s", v["wall_s"] <= 1.0, "s"))
            out.append(_c(sec, f"{lab}: first request", v["cold_s"], "", None, "s"))
            out.append(_c(sec, f"{lab}: size", v["bytes"] / 1e6, "<= 2 MB" if key == "html" else "",
                          (v["bytes"] <= 2_000_000) if key == "html" else None, "MB"))
        c = rep["csv"]
        out += [_c(sec, f"CSV of every instance ({c['rows']:,} rows, {c['bytes'] / 1e6:.1f} MB): wall", c["wall_s"],
                   "", None, "s"),
                _c(sec, "CSV: server RSS growth while streaming", c["rss_growth_mb"], "<= 32 MB (flat)",
                   c["rss_growth_mb"] <= 32, "MB")]
    t = r.get("tools")
    if t:
        for tool, v in t.items():
            sec = f"5 side by side: {tool} ({v['backups_tool']} backups; catalog {v['backups_catalog']})"
            cmd = "pgbackrest info --output=json" if tool == "pgbackrest" else "barman-cloud-backup-list --format json"
            out += [
                _c(sec, cmd, v["tool_s"] * 1000, "", None, "ms"),
                *_cli_checks(sec, v),
                _c(sec, "HTTP GET backups (kept-alive connection)", v["http_backups_s"] * 1000, "", None, "ms"),
                _c(sec, "HTTP POST clones (kept-alive connection)", v["http_plan_s"] * 1000, "", None, "ms"),
                _c(sec, "HTTP GET backups / POST clones, new connection each",
                   f"{v['http_new_conn_backups_s'] * 1000:.2f} / {v['http_new_conn_plan_s'] * 1000:.2f} ms", "", None),
                _c(sec, "tool / HTTP backups", v["ratio_tool_over_http_backups"], ">= 100x",
                   v["ratio_tool_over_http_backups"] >= 100, "x"),
                _c(sec, "tool / HTTP plan", v["ratio_tool_over_http_plan"], ">= 100x",
                   v["ratio_tool_over_http_plan"] >= 100, "x"),
                _c(sec, "tool / CLI backups", v["ratio_tool_over_cli_backups"], "", None, "x"),
            ]
    for tool, v in (r.get("drills") or {}).items():
        sec = f"7 drill vs the tool's own restore: {tool} (backup {v['backup']}, medians of {len(v['drill_runs'])})"
        out += [_c(sec, "drill wall (plan, fetch, recover, verify, check, record, clean up)", v["drill_s"], "",
                   None, "s"),
                _c(sec, "tool's restore + plain recovery wall", v["plain_restore_s"], "", None, "s"),
                _c(sec, "drill / tool's own restore", v["ratio"], f"<= {v['target_ratio']:.2f}x", v["met"], "x")]
    fl = r.get("fleet")
    if fl:
        sec = f"6 fleet pass ({fl['instances']} x {fl['segments']} segments x {fl['backups']} backups, 4 layouts)"
        for key, lab in (("first_pass", "first pass (full listing)"), ("pass_idle", "incremental, nothing new"),
                         ("pass_1pct_new", f"incremental, 1% new ({fl['new_objects']} objects)")):
            v = fl[key]
            ok = v["failed"] == 0
            out += [_c(sec, f"{lab}: wall", v["wall_s"], "", None, "s"),
                    _c(sec, f"{lab}: requests", v["requests"],
                       f"<= {3 * fl['instances']}" if key == "pass_idle" else "",
                       (v["requests"] <= 3 * fl["instances"] and ok) if key == "pass_idle" else (ok or None))]
            if not ok:
                out.append(_c(sec, f"{lab}: failed instances", v["failed"], "0", False))
    return out


def broken(r: dict[str, Any]) -> list[str]:
    """What did not work, whatever the sizes: a failed scan, a failed instance, an HTTP error, an event not
    applied, a catalog that disagrees with the tool. Any of these fails the run (``make bench-smoke`` too,
    where the figures and their targets mean nothing)."""
    out: list[str] = []
    w = r.get("walrecords")
    if w and not (w["records"] and w["transactions"]):
        out.append(f"walrecords: the decoder found no transactions in {w['records']} records")
    y = r.get("year")
    if y:
        for what, v in (*((f"initial scan {i + 1}", s) for i, s in enumerate(y["initial_scan"]["runs"])),
                        ("rescan, nothing new", y["rescan_idle"]), ("rescan, 1,000 new", y["rescan_1000_new"])):
            if not v["ok"]:
                out.append(f"year: {what} failed: {v['code']} {v['message']}")
        if y["footprint"]["backups"] != y["backups"]:
            out.append(f"year: {y['footprint']['backups']} backups catalogued of {y['backups']}")
        if not y["wal_keys_listed"]:
            out.append("year: the bare listing found no WAL keys")
    for key, v in (r.get("fleet") or {}).items():
        if isinstance(v, dict) and v.get("failed"):
            out.append(f"fleet {key}: {v['failed']} instances failed: {v['failures']}")
    e = r.get("events")
    if e:
        f, t = e["freshness"], e["throughput"]
        if f["seen"] != f["puts"]:
            out.append(f"events: {f['seen']} of {f['puts']} PUTs reached the catalog")
        if t["applied"] != t["events"]:
            out.append(f"events: {t['applied']} of {t['events']} events applied")
    for k, v in (r.get("http") or {}).items():
        if v["non2xx"] or v["socket_errors"] or not v["requests"]:
            out.append(f"http {k}: {v['requests']} requests, {v['non2xx']} non-2xx, {v['socket_errors']} socket errors")
    for tool, v in (r.get("tools") or {}).items():
        if v["http_status"] != [200, 200] or not v["plan_ok"] or v["backups_catalog"] != v["backups_tool"]:
            out.append(f"tools {tool}: HTTP {v['http_status']}, plan ok {v['plan_ok']}, "
                       f"{v['backups_catalog']} backups catalogued of the tool's {v['backups_tool']}")
    return out


def _cli_checks(sec: str, v: dict[str, Any]) -> list[dict[str, Any]]:
    """The terminal commands' wall time (median) against their target, and their own CPU time."""
    target = v.get("cli_target_ms", 150.0)
    out = []
    for cmd, key in (("backups", "cli_backups"), ("plan", "cli_plan")):
        ms = v[f"{key}_s"] * 1000
        out.append(_c(sec, f"CLI {cmd} --json (wall, median)", ms, f"<= {target:.0f} ms", ms <= target, "ms"))
        if f"{key}_cpu_s" in v:
            out.append(_c(sec, f"CLI {cmd} --json (its CPU, user+sys)", v[f"{key}_cpu_s"] * 1000, "", None, "ms"))
    if "load_avg_1m" in v:
        out.append(_c(sec, "machine load average (1 min) while timing", v["load_avg_1m"], "", None))
    return out


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_table(r: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    m = r["machine"]
    t = Table(title=f"backup-catalog bench — {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
                    f"moto listing: {r['moto_listing']}")
    for col, just in (("measurement", "left"), ("figure", "left"), ("value", "right"), ("target", "left"),
                      ("met", "center")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    last = None
    for c in rows:
        met = "" if c["met"] is None else ("[green]yes[/]" if c["met"] else "[red]NO[/]")
        t.add_row(c["section"] if c["section"] != last else "", c["figure"], f"{fmt(c['value'])} {c['unit']}".strip(),
                  c["target"], met)
        last = c["section"]
    Console(width=160).print(t)


def markdown(r: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = ["| measurement | figure | value | target | met |", "|---|---|---:|---|:---:|"]
    last = None
    for c in rows:
        met = "" if c["met"] is None else ("yes" if c["met"] else "**no**")
        lines.append(f"| {c['section'] if c['section'] != last else ''} | {c['figure']} | "
                     f"{fmt(c['value'])} {c['unit']} | {c['target']} | {met} |")
        last = c["section"]
    return "\n".join(lines) + "\n"
