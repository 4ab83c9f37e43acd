"""The bench's own plumbing (``make bench-smoke`` runs the bench itself): what counts as broken, phases run
side by side with their needs, and the shared job process reporting a failed job."""
from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.runner import Jobs, Phases

SCAN = {"ok": True, "code": None, "message": ""}
GOOD: dict[str, Any] = {
    "walrecords": {"records": 27854, "transactions": 725},
    "year": {"initial_scan": {"runs": [dict(SCAN)]}, "rescan_idle": dict(SCAN), "rescan_1000_new": dict(SCAN),
             "footprint": {"backups": 3, "wal_runs": 4}, "backups": 3, "wal_keys_listed": 497},
    "fleet": {"instances": 4, **{k: {"failed": 0, "failures": []} for k in ("first_pass", "pass_idle", "pass_1pct_new")}},
    "events": {"freshness": {"puts": 20, "seen": 20}, "throughput": {"events": 100, "applied": 100}},
    "http": {"plan_c1": {"requests": 90, "non2xx": 0, "socket_errors": 0}},
    "tools": {"barman": {"http_status": [200, 200], "plan_ok": True, "backups_catalog": 3, "backups_tool": 3}},
}


def test_a_good_run_is_not_broken() -> None:
    assert report.broken(GOOD) == []
    assert report.broken({}) == []


@pytest.mark.parametrize("path, value, says", [
    (("year", "rescan_idle", "ok"), False, "year: rescan, nothing new failed"),
    (("year", "footprint", "backups"), 2, "2 backups catalogued of 3"),
    (("fleet", "pass_idle", "failed"), 1, "fleet pass_idle: 1 instances failed"),
    (("events", "throughput", "applied"), 99, "99 of 100 events applied"),
    (("events", "freshness", "seen"), 0, "0 of 20 PUTs"),
    (("http", "plan_c1", "non2xx"), 3, "3 non-2xx"),
    (("tools", "barman", "http_status"), [200, 500], "tools barman: HTTP [200, 500]"),
    (("tools", "barman", "backups_catalog"), 0, "0 backups catalogued of the tool's 3"),
    (("walrecords", "transactions"), 0, "no transactions"),
])
def test_what_did_not_work_breaks_the_run(path: tuple[str, ...], value: Any, says: str) -> None:
    r = copy.deepcopy(GOOD)
    d = r
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    out = report.broken(r)
    assert len(out) == 1 and says in out[0], out


def test_phases_together_wait_for_their_needs_and_a_failure_stops_its_dependents() -> None:
    ran: list[str] = []
    lock = threading.Lock()

    def note(name: str, fail: bool = False, sleep: float = 0.0) -> Any:
        def fn() -> None:
            time.sleep(sleep)
            if fail:
                raise RuntimeError(f"{name} broke")
            with lock:
                ran.append(name)
        return fn
    phases = Phases()
    with pytest.raises(RuntimeError, match="b broke"):
        phases.run([("a", note("a", sleep=0.2), ()), ("b", note("b", fail=True), ()),
                    ("c", note("c"), ("a",)), ("d", note("d"), ("b",)), ("e", note("e"), ("d",))], together=True)
    assert sorted(ran) == ["a", "c"] and ran.index("c") > ran.index("a")
    assert set(phases.seconds) == {"a", "b", "c"}


def test_the_shared_job_process_reports_a_failed_job_and_goes_on() -> None:
    jobs = Jobs()
    jobs.shared = True
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        with pytest.raises(RuntimeError, match=r"bench\.job nonsense failed: SystemExit"):
            jobs(env, "nonsense")
        with pytest.raises(RuntimeError, match=r"bench\.job list failed: SystemExit"):   # the same process answers
            jobs(env, "list")
        assert jobs._worker is not None and jobs._worker[0].poll() is None
    finally:
        jobs.close()
    assert jobs._worker is None


def test_the_bench_listing_answers_as_moto_does() -> None:
    """bench.fastlist (its index and its own XML) against moto's ListObjectsV2, page by page: the same raw
    document (continuation tokens aside) and the same parsed response."""
    import re
    import urllib.request

    from bench import fastlist
    from sandbox.s3 import MotoEndpoint

    bucket = "bench-fastlist"
    with MotoEndpoint() as ep:
        c = ep.client()
        ep.ensure_bucket(bucket)
        for k in ("a/1", "a/2&<x>", "b/c/3", "b/d/4", "b/d/5 space", "b/e/6", "z"):
            c.put_object(Bucket=bucket, Key=k, Body=b"xy")

        def pages(**kw: Any) -> list[dict[str, Any]]:
            out, kw = [], {"Bucket": bucket, **kw}
            while True:
                resp = c.list_objects_v2(**kw)
                resp.pop("ResponseMetadata")
                out.append({k: ("T" if k.endswith("ContinuationToken") else v) for k, v in resp.items()})
                if not resp["IsTruncated"]:
                    return out
                kw["ContinuationToken"] = resp["NextContinuationToken"]

        def raw(query: str) -> str:
            with urllib.request.urlopen(f"{ep.url}/{bucket}?list-type=2&{query}") as f:
                return re.sub(r"<NextContinuationToken>[^<]*<", "<NextContinuationToken>T<", f.read().decode())
        cases: list[dict[str, Any]] = [{}, {"MaxKeys": 2}, {"Prefix": "b/"}, {"Delimiter": "/"},
                                       {"Prefix": "b/", "Delimiter": "/", "MaxKeys": 1}, {"StartAfter": "a/2"},
                                       {"FetchOwner": True}, {"Prefix": "nothing"}]
        queries = ["prefix=a/", "max-keys=3&encoding-type=url", "delimiter=/&start-after=a", "fetch-owner=true"]
        fastlist.uninstall()
        stock = [pages(**kw) for kw in cases], [raw(q) for q in queries]
        fastlist.install()
        try:
            ours = [pages(**kw) for kw in cases], [raw(q) for q in queries]
        finally:
            fastlist.uninstall()
    assert ours == stock
