"""The embedded private cluster: idempotent start, stop, clear errors."""
from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from catalog import embedded
from catalog.errors import CatalogUnavailable


def test_default_base_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BACKUP_CATALOG_HOME", str(tmp_path))
    assert embedded.default_base() == tmp_path / "pg"
    monkeypatch.delenv("BACKUP_CATALOG_HOME")
    if os.geteuid() == 0:
        assert embedded.default_base() == Path("/var/lib/backup-catalog/pg")


def test_too_long_socket_path_is_a_clear_error() -> None:
    with pytest.raises(CatalogUnavailable, match="too long for a unix socket"):
        embedded.ensure_cluster(Path("/tmp/" + "x" * 120))


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the root -> postgres user path")
def test_unreachable_directory_for_postgres_is_a_clear_error(tmp_path: Path) -> None:
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    with pytest.raises(CatalogUnavailable, match="cannot enter"):
        embedded.ensure_cluster(hidden / "pg")


@pytest.mark.asyncio(loop_scope="session")
async def test_session_cluster_is_reused_and_idempotent(catalog_dsn: str) -> None:
    if os.environ.get("TEST_CATALOG_DSN"):
        pytest.skip("session database is on an external server")
    host = catalog_dsn.split("host=")[1].split("&")[0]
    from urllib.parse import unquote
    base = Path(unquote(host)).parent
    assert embedded.is_running(base)
    assert embedded.ensure_cluster(base) == catalog_dsn          # already running: same DSN, no error
    conn = await asyncpg.connect(catalog_dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == "backup_catalog"
        assert await conn.fetchval("SHOW listen_addresses") == ""
    finally:
        await conn.close()


def test_fresh_cluster_concurrent_ensure_then_stop() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bc-emb-", dir="/tmp"))
    tmp.chmod(0o711)
    base = tmp / "pg"
    try:
        with ThreadPoolExecutor(3) as ex:
            dsns = list(ex.map(lambda _: embedded.ensure_cluster(base), range(3)))
        assert len(set(dsns)) == 1 and embedded.is_running(base)
        assert (base / "data" / "PG_VERSION").is_file()
        assert embedded.stop_cluster(base) is True
        assert embedded.stop_cluster(base) is False and not embedded.is_running(base)
        assert embedded.ensure_cluster(base) == dsns[0]          # restart of an existing cluster
    finally:
        embedded.stop_cluster(base)
        shutil.rmtree(tmp, ignore_errors=True)
