"""Side by side with the tools on the real fixture buckets (tests/realarchives cache): wall time of
``pgbackrest info --output=json`` and ``barman-cloud-backup-list --format json`` against our CLI
(``backups --json``, ``plan --json``) and the HTTP API for the same archives. HTTP is timed on a kept-alive
connection (a broker's HTTP client pool; the ratios use it) and on a new connection per request."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox import cache, tool_barman, tool_pgbackrest
from sandbox.pg import as_postgres, make_postgres_dir
from sandbox.s3 import MotoEndpoint

SPACE = "bench-tools"
TOOLS = ("pgbackrest", "barman")


def upload(ep: MotoEndpoint) -> dict[str, dict[str, Any]]:
    """Store the cached real archives (built once under .cache, see sandbox.cache) in ``ep``'s in-process
    moto backend (seven times faster than PUTs over HTTP); return per tool its instance registration (guid,
    bucket, prefix…)."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    d = cache.ensure_cache()
    truth = cache.load_truth(d)
    be = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    out: dict[str, dict[str, Any]] = {}
    for tool in TOOLS:
        t = truth[tool]
        ep.ensure_bucket(t["bucket"])
        for o in cache.load_objects(d, tool):
            be.put_object(t["bucket"], o.key, cache.object_path(d, tool, o.key).read_bytes())
        out[tool] = {"guid": f"tools-{tool}", "name": f"real-{tool}", "bucket": t["bucket"], "prefix": t["prefix"],
                     "stanza": t.get("stanza") or "main", "layout": tool}
    return out


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall seconds over ``repeat`` runs, and the last result."""
    times, res = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), res


CLI_TARGET_MS = 150.0      # `backups --json` and `plan --json` at a terminal (issue 14; `pgbackrest info`: ~50 ms)
PRODUCT_PACKAGES = ("recovery", "catalog", "scheduler", "backup_catalog", "executor", "sandbox", "bench")
_CLI_CPU: dict[str, list[float]] = {}


def precompile() -> None:
    """Byte-compile the product packages, as installing a package does. An editable install does not, and with
    PYTHONDONTWRITEBYTECODE (set in some shells and CI images) every command would compile ~40 modules from
    source on each start: a cost no installed copy pays, and not the CLI's."""
    import compileall
    root = Path(__file__).resolve().parents[1]
    for pkg in PRODUCT_PACKAGES:
        compileall.compile_dir(str(root / pkg), quiet=1)


def cli(env: dict[str, str], *args: str) -> Any:
    """One CLI run; its own CPU time (user + system, from wait4) is kept per command in ``_CLI_CPU``."""
    exe = str(Path(sys.executable).with_name("backup-catalog"))
    with tempfile.TemporaryFile("w+") as errf:
        proc = subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=errf, text=True, env=env)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, ru = os.wait4(proc.pid, 0)      # reaps it: its own rusage (communicate() would not give it)
        proc.returncode = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        err = errf.read()
    _CLI_CPU.setdefault(args[0], []).append(ru.ru_utime + ru.ru_stime)
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"backup-catalog {' '.join(args[:2])}: exit {proc.returncode}: {err[-400:]}")
    return json.loads(out)


def http_call(port: int, method: str, path: str, body: dict[str, Any] | None, auth: str,
              conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    """One request; on ``conn`` (kept alive, as a broker's HTTP client pool does) or on a new connection."""
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        c.request(method, path, body=data, headers={"Authorization": f"Basic {auth}",
                                                    "Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        if own:
            c.close()


def measure(ep: MotoEndpoint, regs: dict[str, dict[str, Any]], env: dict[str, str], port: int, auth: str,
            *, repeat: int = 5, http_repeat: int = 50) -> dict[str, Any]:
    results: dict[str, Any] = {}
    precompile()
    work = make_postgres_dir("bench-pgbr-")
    try:
        conf = tool_pgbackrest.write_conf(work, tool_pgbackrest.pgbackrest_conf(
            bucket=regs["pgbackrest"]["bucket"], tls_port=ep.tls_port, work=work))
        tool_cmds: dict[str, Callable[[], Any]] = {
            "pgbackrest": lambda: json.loads(as_postgres(["pgbackrest", f"--config={conf}", "--stanza=main",
                                                          "--output=json", "info"]).stdout),
            "barman": lambda: tool_barman.backup_list(ep.url, regs["barman"]["bucket"]),
        }
        for tool in TOOLS:
            r = regs[tool]
            tool_s, tool_doc = timed(tool_cmds[tool], repeat)
            _CLI_CPU.clear()
            backups_s, doc = timed(lambda: cli(env, "backups", "--space", SPACE, "--name", r["name"], "--json"), repeat)
            plan_s, plan = timed(lambda: cli(env, "plan", "--space", SPACE, "--clone-from", r["name"], "--latest",
                                             "--json"), repeat)
            get_path = f"/spaces/{SPACE}/services/{r['name']}/backups"
            clone = {"clone-from": r["name"], "latest": True}
            get_new_s, (st_get, _) = timed(lambda: http_call(port, "GET", get_path, None, auth), http_repeat)
            post_new_s, (st_post, _) = timed(lambda: http_call(port, "POST", f"/spaces/{SPACE}/clones", clone, auth),
                                             http_repeat)
            keep = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                get_s, _ = timed(lambda: http_call(port, "GET", get_path, None, auth, keep), http_repeat)
                post_s, _ = timed(lambda: http_call(port, "POST", f"/spaces/{SPACE}/clones", clone, auth, keep),
                                  http_repeat)
            finally:
                keep.close()
            n_tool = len(tool_doc[0]["backup"]) if tool == "pgbackrest" else len(tool_doc.get("backups_list", []))
            n_ours = len(doc["instances"][0]["backups"]) if doc.get("instances") else 0
            results[tool] = {
                "tool_s": tool_s, "cli_backups_s": backups_s, "cli_plan_s": plan_s, "http_backups_s": get_s,
                "http_plan_s": post_s, "http_new_conn_backups_s": get_new_s, "http_new_conn_plan_s": post_new_s,
                "http_status": [st_get, st_post], "backups_tool": n_tool,
                "backups_catalog": n_ours, "plan_ok": "error" not in plan,
                "ratio_tool_over_http_backups": tool_s / get_s, "ratio_tool_over_http_plan": tool_s / post_s,
                "ratio_tool_over_cli_backups": tool_s / backups_s,
                "cli_backups_cpu_s": statistics.median(_CLI_CPU["backups"]),
                "cli_plan_cpu_s": statistics.median(_CLI_CPU["plan"]), "cli_target_ms": CLI_TARGET_MS,
                "load_avg_1m": os.getloadavg()[0],     # wall times are only comparable on an idle machine
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def cli_env(dsn: str, s3_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATALOG_", "S3_", "AWS_"))}
    env.update(CATALOG_DSN=dsn, S3_ENDPOINT_URL=s3_url, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
               DRILL_ENABLED="false")   # the bench's serve must not restore its instances while measured
    return env
