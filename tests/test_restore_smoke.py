from __future__ import annotations
import shutil, uuid
from typing import Any
import pytest
from backup_catalog.s3 import s3_client
from backup_catalog.usecases.restore import restore_from_catalog
from tests.support.fixtures import register_and_scan, on_path
from tests.support.restore import restore_environ, restore_settings, scratch_dir, start_and_read

pytestmark = pytest.mark.realtools

@pytest.mark.parametrize("tool", ["pgbackrest", "barman"])
async def test_smoke(tool: str, _catalog_pool: Any, real_archives: Any, s3_endpoint: Any, catalog_dsn: str) -> None:
    settings = restore_settings(s3_endpoint, catalog_dsn)
    arch = real_archives[tool]
    space, guid = f"s-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    async with s3_client(settings) as c:
        await register_and_scan(_catalog_pool, c, settings, arch, guid, space=space, name="prod")
    d = scratch_dir()
    try:
        r = await restore_from_catalog(settings, space, {"clone-from": "prod", "latest": True}, d / "data",
                                       pool=_catalog_pool, environ=restore_environ(s3_endpoint), progress=print)
        print(r.to_json())
        rows = start_and_read(d / "data")
        assert rows == [c.row for c in on_path(arch, (1, 2))]
    finally:
        shutil.rmtree(d)
