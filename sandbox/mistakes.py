"""The "undo a mistake" scenario, archived by the real tools (pgBackRest, barman-cloud) from PostgreSQL 15.

    tables orders (100 rows), customers (1500), items (200), ledger (bigserial; the "elsewhere")
    B1 full | orders 101-120, one commit each | restore point 'before-migration' | migration (items gets a
    column) | restore point 'deploy' | B2 (pgBackRest incr, barman full) | restore point 'deploy' again |
    orders 121-140 | a pgbench load inserting into ledger on 8 connections starts, and under it:
    DROP TABLE orders (one transaction) | DELETE FROM customers (no WHERE) | TRUNCATE items | load ends |
    ledger +5 | switch, archived, stop

So the drop commits with several ledger commits in the same millisecond around it, 'before-migration'
is a unique restore point and 'deploy' a duplicated one. truth.json records each mistake's xid and commit
time (``pg_xact_commit_timestamp``), the relation file numbers before the drop (``relmap``: relfilenode →
schema, name, kind), the row counts before each mistake and how many ledger commits share the drop's
millisecond. Cached in ``<repo>/.cache/mistakes/v<N>/<tool>/`` (objects + objects.json, like
sandbox/cache.py) and uploaded into a session's moto by :func:`load_mistakes`. Build: about a minute per tool.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.cache import dump_bucket, load_objects, upload_objects
from sandbox.pg import PG_BIN, Cluster, make_postgres_dir, utc_iso
from sandbox.s3 import MotoEndpoint

VERSION = 2   # 2: a build whose drop shares its millisecond with no ledger commit is built again
REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_ROOT = REPO_ROOT / ".cache" / "mistakes"
TOOLS = ("pgbackrest", "barman")
BUCKETS = {"pgbackrest": "mistakes-pgbackrest", "barman": "mistakes-barman"}

SETUP_SQL = """
CREATE TABLE orders(id int PRIMARY KEY, customer int NOT NULL, amount numeric NOT NULL);
CREATE TABLE customers(id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE items(id int PRIMARY KEY, v text NOT NULL);
CREATE TABLE ledger(id bigserial PRIMARY KEY, note text NOT NULL);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 1500) g;
INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 200) g;
INSERT INTO orders SELECT g, 1 + g % 1500, g * 1.5 FROM generate_series(1, 100) g;
"""
RELMAP_SQL = ("SELECT json_agg(json_build_array(c.relfilenode, n.nspname, c.relname, c.relkind)) FROM pg_class c "
              "JOIN pg_namespace n ON n.oid = c.relnamespace "
              "WHERE c.relfilenode <> 0 AND n.nspname = 'public'")


@dataclass(frozen=True, slots=True)
class MistakesArchive:
    """The scenario's archive of one tool, uploaded into a session's moto."""

    tool: str
    bucket: str
    prefix: str
    stanza: str
    truth: dict[str, Any]


def cache_dir(root: Path = CACHE_ROOT, version: int = VERSION) -> Path:
    return root / f"v{version}"


def _mistake(cluster: Cluster, label: str, statement: str) -> dict[str, Any]:
    """Run ``statement`` in its own transaction; return its xid, commit time and commit-time insert LSN."""
    out = cluster.sql("BEGIN", "SELECT txid_current()", statement, "COMMIT")  # one session: one transaction
    xid = int(next(line for line in out.splitlines() if line.isdigit()))
    ts, lsn = cluster.sql(f"SELECT pg_xact_commit_timestamp('{xid}'::xid), pg_current_wal_insert_lsn()").split("|")
    return {"what": label, "statement": statement, "xid": xid, "commit_time": utc_iso(ts), "lsn_after": lsn}


def _ordered_inserts(cluster: Cluster, ids: range) -> list[dict[str, Any]]:
    rows = []
    for i in ids:
        out = cluster.sql(f"INSERT INTO orders VALUES ({i}, {1 + i % 1500}, {i}) RETURNING xmin::text")
        rows.append({"id": i, "xid": int(out.splitlines()[0])})
        time.sleep(0.02)
    return rows


def run_scenario(tool: Any, workdir: Path, kinds: tuple[str, str]) -> dict[str, Any]:
    """Run the scenario against ``tool`` (a sandbox.scenario.ArchiveTool); returns the truth."""
    base = make_postgres_dir(f"mistakes-{tool.name}-", str(workdir))
    cluster = Cluster(base)
    cluster.archive_command = tool.archive_command(cluster)
    truth: dict[str, Any] = {"restore_points": [], "mistakes": []}
    try:
        cluster.initdb("max_connections = 20\nautovacuum = off\n")
        cluster.start()
        tool.setup(cluster)
        cluster.sql(*[s for s in SETUP_SQL.split(";\n") if s.strip()])
        cluster.switch_wal_and_wait()
        truth["B1"] = tool.backup(cluster, kinds[0])
        truth["orders_before_restore_point"] = _ordered_inserts(cluster, range(101, 121))

        def point(name: str) -> None:
            lsn, ts = cluster.sql(f"SELECT pg_create_restore_point('{name}'), now()").split("|")
            truth["restore_points"].append({"name": name, "lsn": lsn, "approx_time": utc_iso(ts)})

        point("before-migration")
        cluster.sql("ALTER TABLE items ADD COLUMN price int", "UPDATE items SET price = id WHERE id <= 10")
        point("deploy")
        cluster.switch_wal_and_wait()
        truth["B2"] = tool.backup(cluster, kinds[1])
        point("deploy")
        truth["orders_after_restore_point"] = _ordered_inserts(cluster, range(121, 141))
        truth["relmap_before_drop"] = json.loads(cluster.sql(RELMAP_SQL))
        truth["db_oid"] = int(cluster.sql("SELECT oid FROM pg_database WHERE datname = 'postgres'"))
        truth["counts_before"] = {t: int(cluster.sql(f"SELECT count(*) FROM {t}")) for t in ("orders", "customers", "items")}

        script = base / "ledger.sql"
        script.write_text("INSERT INTO ledger(note) VALUES ('tick');\n")
        shutil.chown(script, "postgres")
        conn = ["-h", str(cluster.sock), "-p", str(cluster.port), "-U", "postgres"]
        load = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "pgbench"), *conn, "-n", "-c", "8", "-T", "4",
             "-f", str(script), "postgres"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/tmp")
        try:
            time.sleep(1.0)
            truth["mistakes"].append(_mistake(cluster, "drop", "DROP TABLE orders"))
            time.sleep(0.7)
            truth["mistakes"].append(_mistake(cluster, "delete", "DELETE FROM customers"))
            time.sleep(0.7)
            truth["mistakes"].append(_mistake(cluster, "truncate", "TRUNCATE items"))
        finally:
            _, err = load.communicate(timeout=60)
        if load.returncode != 0:
            raise RuntimeError(f"pgbench load failed: {err[-500:]!r}")
        drop = truth["mistakes"][0]
        truth["ledger_commits_in_drop_millisecond"] = int(cluster.sql(
            "SELECT count(*) FROM ledger WHERE date_trunc('milliseconds', pg_xact_commit_timestamp(xmin)) = "
            f"date_trunc('milliseconds', '{drop['commit_time']}'::timestamptz)"))
        truth["ledger_rows"] = int(cluster.sql("SELECT count(*) FROM ledger"))
        cluster.sql(*["INSERT INTO ledger(note) VALUES ('after')"] * 5)
        truth["last_segment"] = cluster.switch_wal_and_wait()
        truth["system_id"] = cluster.system_id()
        cluster.stop()
        truth["tool_info"] = tool.info()
    finally:
        cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
    return truth


ATTEMPTS = 4   # builds of one tool's scenario at most, until a ledger commit shares the drop's millisecond


def _build_tool(ep: MotoEndpoint, tool_name: str, work: Path) -> dict[str, Any]:
    """One tool's scenario archive. The point of the ledger load is commits in the drop's own millisecond
    (what a time target cannot separate from the drop, and ``before-xid`` can): on a loaded machine the load
    may commit too slowly for that, so a build without one is thrown away and built again."""
    for attempt in range(1, ATTEMPTS + 1):
        truth = _build_tool_once(ep, tool_name, work)
        if truth["ledger_commits_in_drop_millisecond"] >= 1:
            return truth
        print(f"mistakes archive ({tool_name}): no ledger commit in the drop's millisecond (attempt {attempt} of "
              f"{ATTEMPTS}); building it again", file=sys.stderr)
        _empty_bucket(ep, BUCKETS[tool_name])
    raise RuntimeError(f"mistakes archive ({tool_name}): no ledger commit shared the drop's millisecond in "
                       f"{ATTEMPTS} builds (is the machine overloaded?)")


def _empty_bucket(ep: MotoEndpoint, bucket: str) -> None:
    c = ep.client()
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            c.delete_object(Bucket=bucket, Key=o["Key"])


def _build_tool_once(ep: MotoEndpoint, tool_name: str, work: Path) -> dict[str, Any]:
    bucket = BUCKETS[tool_name]
    if tool_name == "pgbackrest":
        from sandbox.tool_pgbackrest import PREFIX, STANZA, PgBackRest
        pgbr = PgBackRest(ep, work, bucket=bucket)
        try:
            truth = run_scenario(pgbr, work, ("full", "incr"))
        finally:
            shutil.rmtree(pgbr.work, ignore_errors=True)
        truth.update({"prefix": PREFIX, "stanza": STANZA, "config": pgbr.conf_text})
    else:
        from sandbox.tool_barman import PREFIX as BPREFIX
        from sandbox.tool_barman import SERVER, BarmanCloud
        truth = run_scenario(BarmanCloud(ep, bucket=bucket), work, ("full", "full"))
        truth.update({"prefix": BPREFIX, "stanza": SERVER})
    truth.update({"tool": tool_name, "bucket": bucket, "layout": tool_name})
    return truth


def ensure_mistakes(root: Path = CACHE_ROOT, version: int = VERSION) -> Path:
    """The cached scenario archives (both tools), built on first use under a lock."""
    d = cache_dir(root, version)
    if (d / "truth.json").is_file():
        return d
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"v{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (d / "truth.json").is_file():
            return d
        tmp = Path(tempfile.mkdtemp(prefix=f"v{version}.build-", dir=root))
        work = make_postgres_dir("mistakes-build-")
        try:
            truth: dict[str, Any] = {}
            with MotoEndpoint() as ep:
                for name in TOOLS:
                    truth[name] = _build_tool(ep, name, work)
                    dump_bucket(ep, BUCKETS[name], tmp, name)
            (tmp / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
            os.rename(tmp, d)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
    return d


def load_mistakes(endpoint: MotoEndpoint, tool: str, bucket: str | None = None) -> MistakesArchive:
    """Upload ``tool``'s scenario archive into ``bucket`` (default: the build's bucket name) of ``endpoint``."""
    d = ensure_mistakes()
    truth = json.loads((d / "truth.json").read_text())[tool]
    target = bucket or truth["bucket"]
    upload_objects(endpoint, target, d, tool, load_objects(d, tool))
    return MistakesArchive(tool, target, truth["prefix"], truth["stanza"], truth)


if __name__ == "__main__":  # pragma: no cover - manual build: python -m sandbox.mistakes
    print(ensure_mistakes())
    print(json.dumps({k: {"mistakes": v["mistakes"], "same_ms": v["ledger_commits_in_drop_millisecond"]}
                      for k, v in json.loads((ensure_mistakes() / "truth.json").read_text()).items()}, indent=1))
