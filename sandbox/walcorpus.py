"""Real PostgreSQL 15 WAL for the record decoder's tests and bench: ``<repo>/.cache/walcorpus/v<N>/<name>/``.

    <name>/wal/<24-hex segment>     archived 16 MiB segments, as ``archive_command = cp`` left them
    <name>/truth.json               what the workload did (relation file numbers, database OID, segments)
    <name>/waldump.txt.gz           ``pg_waldump --bkp-details`` (PG 15) over the whole range, TZ=UTC (features)

``features``: every shape the decoder must handle — records spanning pages and segments, full-page images
plain and compressed (pglz, lz4, zstd), subtransactions (SAVEPOINT, ROLLBACK TO, 3000 in one DO block),
INSERT/COPY/UPDATE/HOT UPDATE/DELETE/ON CONFLICT, DROP TABLE, TRUNCATE, prepared transactions, restore
points (one name twice). ``bench``: pgbench initialisation and a run: full segments of ordinary OLTP WAL.
Built once under a ``flock`` into a temp dir and renamed, like sandbox/cache.py.
"""
from __future__ import annotations

import fcntl
import gzip
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sandbox.pg import PG_BIN, Cluster, as_postgres, make_postgres_dir

VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_ROOT = REPO_ROOT / ".cache" / "walcorpus"
SEG = 16 * 1024 * 1024

FEATURES_SQL = r"""
CREATE TABLE orders(id int PRIMARY KEY, note text);
CREATE TABLE customers(id int PRIMARY KEY, name text);
CREATE TABLE items(id serial PRIMARY KEY, v text);
CREATE TABLE kept(id int PRIMARY KEY, v text);
INSERT INTO orders SELECT g, 'o' || g FROM generate_series(1, 500) g;
INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 1500) g;
COPY items(v) FROM STDIN;
__COPY_ROWS__
\.
UPDATE customers SET name = name || 'x' WHERE id <= 100;
BEGIN;
INSERT INTO kept VALUES (1, 'top');
SAVEPOINT a;
INSERT INTO kept VALUES (2, 'sub a');
SAVEPOINT b;
INSERT INTO kept VALUES (3, 'sub b, rolled back');
ROLLBACK TO SAVEPOINT b;
INSERT INTO kept VALUES (4, 'sub b again');
RELEASE SAVEPOINT a;
COMMIT;
INSERT INTO kept VALUES (4, 'dup') ON CONFLICT (id) DO NOTHING;
INSERT INTO kept VALUES (5, 'spec') ON CONFLICT (id) DO NOTHING;
INSERT INTO kept VALUES (5, 'spec2') ON CONFLICT (id) DO UPDATE SET v = excluded.v;
DO $$ BEGIN FOR i IN 1..3000 LOOP BEGIN INSERT INTO kept VALUES (100 + i, 'loop');
  EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$;
SELECT pg_create_restore_point('before-migration');
ALTER SYSTEM SET wal_compression = 'pglz'; SELECT pg_reload_conf(); CHECKPOINT;
UPDATE orders SET note = note || '!' WHERE id % 50 = 0;
ALTER SYSTEM SET wal_compression = 'lz4'; SELECT pg_reload_conf(); CHECKPOINT;
UPDATE orders SET note = note || '?' WHERE id % 50 = 1;
ALTER SYSTEM SET wal_compression = 'zstd'; SELECT pg_reload_conf(); CHECKPOINT;
UPDATE orders SET note = note || '#' WHERE id % 50 = 2;
ALTER SYSTEM SET wal_compression = 'off'; SELECT pg_reload_conf(); CHECKPOINT;
UPDATE orders SET note = note || '.' WHERE id % 50 = 3;
SELECT pg_switch_wal();
BEGIN; INSERT INTO kept VALUES (9001, 'prepared'); PREPARE TRANSACTION 'g1';
COMMIT PREPARED 'g1';
BEGIN; INSERT INTO kept VALUES (9002, 'prepared, rolled back'); PREPARE TRANSACTION 'g2';
ROLLBACK PREPARED 'g2';
DELETE FROM customers;
TRUNCATE items;
DROP TABLE orders;
INSERT INTO kept VALUES (9003, 'after the drop');
SELECT pg_create_restore_point('before-migration');
-- a big commit record that starts a few kB before the segment end and finishes in the next one
BEGIN;
DO $$ BEGIN FOR i IN 1..3000 LOOP BEGIN INSERT INTO kept VALUES (20000 + i, 'z');
  EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$;
SELECT 16777216 - ((pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint % 16777216) AS rem \gset
SELECT pg_logical_emit_message(false, 'p', repeat('x', greatest(:rem - :rem / 8192 * 24 - 4500, 0)::int));
COMMIT;
INSERT INTO kept VALUES (9004, 'last');
SELECT pg_switch_wal();
"""

_FILENODES_SQL = ("SELECT json_object_agg(relname, pg_relation_filenode(oid)) FROM pg_class "
                  "WHERE relname IN ('orders', 'customers', 'items', 'kept', 'orders_pkey')")


def corpus_dir(name: str, root: Path = CACHE_ROOT, version: int = VERSION) -> Path:
    return root / f"v{version}" / name


def load_truth(d: Path) -> dict[str, Any]:
    return dict(json.loads((d / "truth.json").read_text()))


def segments(d: Path) -> list[Path]:
    return sorted(p for p in (d / "wal").iterdir() if len(p.name) == 24)


def ensure_corpus(name: str, root: Path = CACHE_ROOT) -> Path:
    """The corpus ``name`` ("features" or "bench"), built on first use (about 20-60 s)."""
    d = corpus_dir(name, root)
    if (d / "truth.json").is_file():
        return d
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(d.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (d / "truth.json").is_file():
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=d.parent))
            try:
                (_build_features if name == "features" else _build_bench)(tmp)
                tmp.rename(d)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return d


def _psql_file(cluster: Cluster, sql: str, workdir: Path) -> str:
    script = workdir / "workload.sql"
    script.write_text(sql)
    shutil.chown(script, "postgres")
    out = as_postgres([str(PG_BIN / "psql"), "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-h", str(cluster.sock),
                       "-p", str(cluster.port), "-U", "postgres", "-d", "postgres", "-f", str(script)])
    return out.stdout


def _run_cluster(out: Path, body: Any) -> dict[str, Any]:
    base = make_postgres_dir("walcorpus-")
    arch = base / "arch"
    arch.mkdir()
    shutil.chown(arch, "postgres")
    cluster = Cluster(base, archive_command=f"cp %p {arch}/%f")
    try:
        cluster.initdb("max_prepared_transactions = 5\nautovacuum = off\nwal_compression = off\n")
        cluster.start()
        truth: dict[str, Any] = body(cluster, base)
        last = cluster.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        cluster.switch_wal_and_wait()
        truth["last_segment"] = last
        cluster.stop()
        (out / "wal").mkdir(parents=True)
        for p in sorted(arch.iterdir()):
            if len(p.name) == 24 and p.name <= last:
                shutil.copy(p, out / "wal" / p.name)
        truth["segments"] = [p.name for p in segments(out)]
        return truth
    finally:
        cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def _build_features(out: Path) -> None:
    def body(cluster: Cluster, base: Path) -> dict[str, Any]:
        db_oid = int(cluster.sql("SELECT oid FROM pg_database WHERE datname = 'postgres'"))
        copy_rows = "\n".join(f"item {i}" for i in range(2000))
        sql = FEATURES_SQL.replace("__COPY_ROWS__", copy_rows)
        head, tail = sql.split("DELETE FROM customers;", 1)
        _psql_file(cluster, head, base)
        filenodes = json.loads(cluster.sql(_FILENODES_SQL))
        _psql_file(cluster, "DELETE FROM customers;" + tail, base)
        return {"db_oid": db_oid, "filenodes_before_drop": filenodes,
                "kept_filenode_after": int(cluster.sql("SELECT pg_relation_filenode('kept')")),
                "items_filenode_after": int(cluster.sql("SELECT pg_relation_filenode('items')"))}

    truth = _run_cluster(out, body)
    names = truth["segments"]
    proc = subprocess.run([str(PG_BIN / "pg_waldump"), "--bkp-details", f"--path={out / 'wal'}", names[0], names[-1]],
                          env={**os.environ, "TZ": "UTC"}, capture_output=True, text=True, check=False)
    with gzip.open(out / "waldump.txt.gz", "wt") as f:
        f.write(proc.stdout)
    (out / "truth.json").write_text(json.dumps(truth, indent=1))


def _build_bench(out: Path) -> None:
    def body(cluster: Cluster, base: Path) -> dict[str, Any]:
        conn = ["-h", str(cluster.sock), "-p", str(cluster.port), "-U", "postgres"]
        as_postgres([str(PG_BIN / "pgbench"), *conn, "-i", "-s", "3", "-q", "postgres"], timeout=600)
        as_postgres([str(PG_BIN / "pgbench"), *conn, "-c", "2", "-t", "6000", "-n", "postgres"], timeout=600)
        return {}

    truth = _run_cluster(out, body)
    (out / "truth.json").write_text(json.dumps(truth, indent=1))


if __name__ == "__main__":  # pragma: no cover - manual build: python -m sandbox.walcorpus
    for n in ("features", "bench"):
        print(ensure_corpus(n))
