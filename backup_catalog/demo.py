"""`backup-catalog demo`: the README's one-command tour on embedded defaults.

1. S3: the configured endpoint, or a local moto server when S3_ENDPOINT_URL is unset.
2. A real archive: PostgreSQL 15 archived by pgBackRest and barman-cloud (with an incremental backup and a
   timeline switch), built once by the real tools (the test fixture builder, cached under .cache/).
3. The catalog: CATALOG_DSN, or the embedded private cluster.
4. Register `production`, scan, list backups; delete `production`; ask for a clone of it at a point in time.
"""
from __future__ import annotations

import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console

from backup_catalog import documents, service
from backup_catalog.s3 import s3_client
from backup_catalog.settings import Settings
from backup_catalog.usecases import backups, plan
from catalog import repo
from recovery.errors import PlanningError
from recovery.jsonout import refusal_to_dict
from recovery.model import InstanceRef, Storage
from scheduler import runner

console = Console()


def _checkout() -> Path:
    root = Path(__file__).resolve().parents[1]
    if not (root / "tests" / "realarchives").is_dir():
        raise SystemExit("the demo builds its archive with the fixture builder in tests/realarchives: "
                         "run it from a source checkout (make demo)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def _upload(settings: Settings, cache_dir: Path, tool: str, bucket: str) -> int:
    import boto3
    from botocore.config import Config

    from tests.realarchives.cache import load_objects, object_path

    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.aws_default_region,
                      aws_access_key_id=_secret(settings.aws_access_key_id) or "demo",
                      aws_secret_access_key=_secret(settings.aws_secret_access_key) or "demo",
                      config=Config(s3={"addressing_style": "path"}), verify=settings.s3_verify_tls)
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    objs = load_objects(cache_dir, tool)
    for o in objs:
        s3.put_object(Bucket=bucket, Key=o.key, Body=object_path(cache_dir, tool, o.key).read_bytes())
    return len(objs)


def _secret(v: Any) -> str | None:
    return v.get_secret_value() if v is not None else None


async def run(settings: Settings) -> int:
    _checkout()
    from tests.realarchives.cache import ensure_cache, load_truth

    moto = None
    if not settings.s3_endpoint_url:
        from tests.realarchives.s3 import MotoEndpoint
        moto = MotoEndpoint().start()
        settings = settings.model_copy(update={"s3_endpoint_url": moto.url,
                                               "aws_access_key_id": settings.aws_access_key_id or SecretStr("demo"),
                                               "aws_secret_access_key": settings.aws_secret_access_key or SecretStr("demo")})
        console.print(f"[dim]local S3 endpoint (moto server): {moto.url}[/dim]")
    try:
        with console.status("building a real archive with PostgreSQL 15, pgBackRest and barman-cloud "
                            "(first run only, about 2 minutes)"):
            cache_dir = ensure_cache()
        truth = load_truth(cache_dir)["pgbackrest"]
        n = _upload(settings, cache_dir, "pgbackrest", truth["bucket"])
        console.print(f"archive: s3://{truth['bucket']}/{truth['prefix']} ({n} objects written by "
                      f"{truth['tool_version']}, stanza {truth['stanza']})")
        pool = await service.open_catalog(settings)
        try:
            return await _tour(pool, settings, truth)
        finally:
            await pool.close()
    finally:
        if moto is not None:
            moto.stop()


async def _tour(pool: Any, settings: Settings, truth: dict[str, Any]) -> int:
    # a fresh space and instance per run, so repeated demos never disturb each other's name history
    SPACE, GUID = str(uuid.uuid4()), str(uuid.uuid4())
    commits = truth["commits"]
    first = min(datetime.fromisoformat(c["commit_time"]) for c in commits)
    await repo.register_instance(pool, InstanceRef(GUID, SPACE, "production"),
                                 Storage(truth["bucket"], truth["prefix"], "auto", truth["stanza"]),
                                 at=first - timedelta(minutes=5))
    async with s3_client(settings) as client:
        outcome = await runner.scan_instance(pool, client, GUID, full=True, settings=settings)
    if not outcome.ok:
        console.print(f"[red]scan failed ({outcome.code}): {outcome.message}[/red]")
        return 1
    console.rule(f"backup-catalog backups --space {SPACE} --name production")
    documents.print_backups(await backups.backups_doc(pool, SPACE, "production"), console)

    console.rule("the user deletes production (cf delete-service production)")
    await repo.delete_instance(pool, GUID)
    console.print("instance marked deleted; its catalog entry, backups and name history are kept")

    tl2 = sorted((c for c in commits if c["tl"] == 2), key=lambda c: c["id"])
    a, b = tl2[0], tl2[1]
    ta, tb = datetime.fromisoformat(a["commit_time"]), datetime.fromisoformat(b["commit_time"])
    target = documents.iso(ta + (tb - ta) / 2)
    body = {"clone-from": "production", "point-in-time": target}
    console.rule(f"cf create-service ... -c '{{\"clone-from\":\"production\",\"point-in-time\":\"{target}\"}}'")
    doc = await plan.plan_doc(pool, settings, SPACE, body)
    documents.print_plan(doc, console)
    rows = sorted(truth["restored_ids_at_fork"]) + [c["id"] for c in tl2 if c["commit_time"] <= a["commit_time"]]
    console.print(f"[green]restoring this plan yields the rows with ids {rows}: timeline 1 up to the fork, then "
                  f"timeline 2 up to {target} (row {b['id']} was committed at {b['commit_time']}, after the "
                  f"target); the end-to-end tests restore such plans and check exactly this[/green]")

    console.rule("and a request the archive cannot serve")
    try:
        await plan.plan_doc(pool, settings, SPACE, {"clone-from": "production", "point-in-time": "2016-09-28T10:00Z"})
    except PlanningError as e:
        err = refusal_to_dict(e)["error"]
        console.print(f"refused [bold]{err['code']}[/bold]: {err['message']}")
    return 0
