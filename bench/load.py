"""HTTP load with Debian ``wrk`` in its own process: a Lua script cycles through prepared requests and
prints one JSON summary (latency percentiles in microseconds, requests, non-2xx count)."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

_DONE = r'''
done = function(summary, latency, requests)
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
'''


def _lua_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def script(method: str, items: list[tuple[str, str | None]], user: str, password: str) -> str:
    """Lua: ``items`` are (path, body or None); requests cycle through them in order."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    rows = ",\n".join("{" + _lua_str(p) + ", " + (_lua_str(b) if b is not None else "nil") + "}" for p, b in items)
    return (f"local items = {{\n{rows}\n}}\nlocal reqs = {{}}\nlocal idx = 0\n"
            "init = function(args)\n"
            f"  local h = {{['Authorization'] = 'Basic {auth}', ['Content-Type'] = 'application/json'}}\n"
            f"  for i, it in ipairs(items) do reqs[i] = wrk.format('{method}', it[1], h, it[2]) end\n"
            "  idx = math.random(#reqs)\nend\n"
            "request = function()\n  idx = idx % #reqs + 1\n  return reqs[idx]\nend\n" + _DONE)


def available() -> bool:
    return shutil.which("wrk") is not None


def run(url: str, lua: str, *, connections: int, seconds: int) -> dict[str, Any]:
    threads = 1 if connections == 1 else 2
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
        path = f.name
    try:
        proc = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
                               "-s", path, url], capture_output=True, text=True, timeout=seconds + 60)
    finally:
        Path(path).unlink(missing_ok=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary (exit {proc.returncode}): {proc.stderr[-500:]} {proc.stdout[-500:]}")
    out = json.loads(line[len("BENCHJSON "):])
    secs = out["duration_us"] / 1e6
    return {"connections": connections, "requests": out["requests"], "req_per_s": out["requests"] / secs,
            "p50_ms": out["p50_us"] / 1000, "p90_ms": out["p90_us"] / 1000, "p99_ms": out["p99_us"] / 1000,
            "max_ms": out["max_us"] / 1000, "mean_ms": out["mean_us"] / 1000, "non2xx": out["non2xx"],
            "socket_errors": out["socket_errors"]}
