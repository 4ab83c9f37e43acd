"""The WAL record decoder (issue 20): ``changes`` decodes every record of the segments it reads, so its speed
is the hot path. Decodes real 16 MiB PostgreSQL 15 segments (sandbox.walcorpus "bench": pgbench
initialisation and a pgbench run, ordinary OLTP WAL with full-page images) with
:func:`recovery.walrecords.decode_stream` + :func:`recovery.walsummary.summarise`, one run, in this process
(one core), and ``pg_waldump --stats`` (PostgreSQL's own decoder, C) on the same segments, one run.
Target: >= 50 MB/s of WAL per core (CPU time). ``--smoke``: one segment (``make bench-smoke``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from recovery.walrecords import decode_stream
from recovery.walsummary import summarise
from sandbox.pg import PG_BIN
from sandbox.walcorpus import ensure_corpus, segments

TARGET_MB_S = 50.0


def measure(log: Callable[[str], None] = print, *, smoke: bool = False) -> dict[str, Any]:
    d = ensure_corpus("bench")
    files = segments(d)[:1] if smoke else segments(d)
    data = [p.read_bytes() for p in files]
    size = sum(len(x) for x in data)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    summary = summarise(decode_stream(data))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    t0 = time.perf_counter()
    proc = subprocess.run([str(PG_BIN / "pg_waldump"), "--stats", f"--path={d / 'wal'}", files[0].name,
                           files[-1].name], capture_output=True, text=True, env={**os.environ, "TZ": "UTC"},
                          check=False)
    dump_s = time.perf_counter() - t0
    total = re.search(r"^Total\s+(\d+)", proc.stdout, re.MULTILINE)
    out = {"segments": len(files), "bytes": size, "records": int(total[1]) if total else None,
           "transactions": len(summary.transactions), "decoder_wall_s": wall, "decoder_cpu_s": cpu,
           "decoder_mb_s_per_core": size / 1e6 / cpu, "decoder_mb_s_wall": size / 1e6 / wall,
           "pg_waldump_stats_s": dump_s, "pg_waldump_mb_s": size / 1e6 / dump_s}
    log(f"WAL decoder: {len(files)} x 16 MiB segments ({out['records']} records) in {cpu:.2f} s CPU = "
        f"{out['decoder_mb_s_per_core']:.0f} MB/s per core; pg_waldump --stats {dump_s:.2f} s = "
        f"{out['pg_waldump_mb_s']:.0f} MB/s")
    return out


def checks(w: dict[str, Any], row: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """bench.report's rows for this measurement (``row`` is report._c)."""
    sec = f"WAL record decoder ({w['segments']} real 16 MiB PG 15 segments, {w['records']:,} records)"
    return [
        row(sec, "decoder (changes) per core, CPU time", w["decoder_mb_s_per_core"], f">= {TARGET_MB_S:g} MB/s",
            w["decoder_mb_s_per_core"] >= TARGET_MB_S, "MB/s"),
        row(sec, "decoder, wall", w["decoder_mb_s_wall"], "", None, "MB/s"),
        row(sec, "pg_waldump --stats (PostgreSQL, C), wall", w["pg_waldump_mb_s"], "", None, "MB/s"),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.walrecords", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="one segment")
    a = p.parse_args(argv)
    r = measure(lambda m: print(m, file=sys.stderr), smoke=a.smoke)
    print(json.dumps(r))
    return 0 if a.smoke or r["decoder_mb_s_per_core"] >= TARGET_MB_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
