"""`backup-catalog demo`: the README's one-command tour on embedded defaults.

1. S3: the configured endpoint, or a local moto server when S3_ENDPOINT_URL is unset.
2. A real archive: PostgreSQL 15 archived by pgBackRest and barman-cloud (with an incremental backup and a
   timeline switch), built once by the real tools (the sandbox's builder, cached under .cache/).
3. The catalog: CATALOG_DSN, or the embedded private cluster.
4. Register `production`, scan, list backups; delete `production`; ask for a clone of it at a point in time.
5. Restore that clone with the restore use case (the same as `backup-catalog restore`): pgBackRest fetches,
   PostgreSQL 15 recovers as the `postgres` user and is verified; print the restored rows next to the rows
   that were committed up to the asked time.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from backup_catalog.cli import render
from backup_catalog.settings import Settings
from backup_catalog.usecases import backups, plan
from backup_catalog.usecases.restore import restore_from_catalog
from catalog import embedded, repo
from catalog.connect import open_catalog
from catalog.embedded import default_base
from executor import RestoreError
from recovery.errors import PlanningError
from recovery.jsonout import refusal_to_dict
from recovery.model import InstanceRef, Storage
from recovery.target import CloneRequest, make_target
from recovery.timefmt import iso
from sandbox import s3serve
from sandbox.cache import ensure_cache, load_objects, load_truth, object_path
from sandbox.s3 import MotoEndpoint
from scheduler import runner
from scheduler.clients import s3_client

console = Console()


def _upload(settings: Settings, cache_dir: Path, tool: str, bucket: str) -> int:

    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.aws_default_region,
                      aws_access_key_id=_secret(settings.aws_access_key_id) or "demo",
                      aws_secret_access_key=_secret(settings.aws_secret_access_key) or "demo",
                      config=Config(s3={"addressing_style": "path"}),
                      verify=(settings.s3_ca_bundle or True) if settings.s3_verify_tls else False)
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    objs = load_objects(cache_dir, tool)
    for o in objs:
        s3.put_object(Bucket=bucket, Key=o.key, Body=object_path(cache_dir, tool, o.key).read_bytes())
    return len(objs)


def _archive(settings: Settings) -> dict[str, Any]:
    """The real pgBackRest archive (built once, cached), uploaded to the endpoint; its ground truth."""
    with console.status("building a real archive with PostgreSQL 15, pgBackRest and barman-cloud "
                        "(first run only, about 2 minutes)"):
        cache_dir = ensure_cache()
    truth: dict[str, Any] = load_truth(cache_dir)["pgbackrest"]
    n = _upload(settings, cache_dir, "pgbackrest", truth["bucket"])
    console.print(f"archive: s3://{truth['bucket']}/{truth['prefix']} ({n} objects written by "
                  f"{truth['tool_version']}, stanza {truth['stanza']})")
    return truth


def _secret(v: Any) -> str | None:
    return v.get_secret_value() if v is not None else None


def kept_dir() -> Path:
    """Where ``demo --keep`` keeps its local S3's state (beside the embedded catalog; reachable by postgres)."""
    return default_base().parent / "demo-s3"


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "stop", False):
        stopped = s3serve.stop(kept_dir())
        console.print("the demo's local S3 is stopped" if stopped else "no local S3 of the demo is running")
        return 0
    if getattr(args, "reset", False):
        return _reset(args, settings)
    if getattr(args, "env", False):
        envfile = kept_dir() / "env.sh"
        if s3serve.read_state(kept_dir()) is None or not envfile.exists():
            print("echo 'no local S3 of the demo is running: run backup-catalog demo --keep first' >&2; false")
            return 1
        print(envfile.read_text(), end="")
        return 0
    if getattr(args, "keep", False):
        return await _keep(settings)
    moto = None
    if not settings.s3_endpoint_url:
        moto = MotoEndpoint().start()
        settings = settings.model_copy(update={"s3_endpoint_url": moto.url,
                                               "aws_access_key_id": settings.aws_access_key_id or SecretStr("demo"),
                                               "aws_secret_access_key": settings.aws_secret_access_key or SecretStr("demo")})
        console.print(f"[dim]local S3 endpoint (moto server): {moto.url}[/dim]")
    try:
        truth = _archive(settings)
        pool = await open_catalog(settings)
        environ = dict(os.environ)
        if moto is not None:     # pgBackRest speaks TLS only: the local endpoint's TLS front, named as
            environ.update({"PGBACKREST_REPO1_STORAGE_PORT": str(moto.tls_port),   # pgBackRest defines
                            "PGBACKREST_REPO1_STORAGE_VERIFY_TLS": "n"})
        try:
            return 0 if await _tour(pool, settings, truth, environ) is not None else 1
        finally:
            await pool.close()
    finally:
        if moto is not None:
            moto.stop()


async def _tour(pool: Any, settings: Settings, truth: dict[str, Any], environ: dict[str, str]) -> str | None:
    """The tour; the space GUID of its (deleted) ``production`` when every step went as shown, else None."""
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
        return None
    console.rule(f"backup-catalog backups --space {SPACE} --name production")
    render.print_backups(await backups.backups_doc(pool, SPACE, "production"), console)

    console.rule("the user deletes production (cf delete-service production)")
    await repo.delete_instance(pool, GUID)
    console.print("instance marked deleted; its catalog entry, backups and name history are kept")

    tl2 = sorted((c for c in commits if c["tl"] == 2), key=lambda c: c["id"])
    a, b = tl2[0], tl2[1]
    ta, tb = datetime.fromisoformat(a["commit_time"]), datetime.fromisoformat(b["commit_time"])
    target = iso(ta + (tb - ta) / 2)
    body = CloneRequest("production", make_target(point_in_time=target))
    console.rule(f"cf create-service ... -c '{{\"clone-from\":\"production\",\"point-in-time\":\"{target}\"}}'")
    doc = await plan.plan_doc(pool, settings, SPACE, body)
    render.print_plan(doc, console)
    asked = [(i, 1) for i in sorted(truth["restored_ids_at_fork"])] + \
        [(c["id"], 2) for c in tl2 if c["commit_time"] <= a["commit_time"]]
    if await _restore(pool, settings, SPACE, body, environ, asked, str(target), b) != 0:
        return None

    console.rule("and a request the archive cannot serve")
    try:
        await plan.plan_doc(pool, settings, SPACE,
                            CloneRequest("production", make_target(point_in_time="2016-09-28T10:00Z")))
    except PlanningError as e:
        err = refusal_to_dict(e)["error"]
        console.print(f"refused [bold]{err['code']}[/bold]: {err['message']}")
    return SPACE


async def _keep(settings: Settings) -> int:
    """``demo --keep``: the tour against a local S3 that keeps running, then the commands to go on with."""
    d = kept_dir()
    with console.status("starting the local S3 (moto server with a TLS front) that outlives the demo"):
        state = s3serve.ensure(d)
    settings = settings.model_copy(update={"s3_endpoint_url": state["tls_url"], "s3_ca_bundle": state["ca_bundle"],
                                           "aws_access_key_id": SecretStr("demo"),
                                           "aws_secret_access_key": SecretStr("demo")})
    console.print(f"[dim]local S3 endpoint: {state['tls_url']} (CA {state['ca_bundle']}; pid {state['pid']})[/dim]")
    truth = _archive(settings)
    pool = await open_catalog(settings)
    try:
        space = await _tour(pool, settings, truth, dict(os.environ))
    finally:
        await pool.close()
    if space is None:
        return 1
    env = {"S3_ENDPOINT_URL": state["tls_url"], "S3_CA_BUNDLE": state["ca_bundle"], "AWS_ACCESS_KEY_ID": "demo",
           "AWS_SECRET_ACCESS_KEY": "demo", "DEMO_SPACE": space}
    if settings.catalog_dsn is not None:
        env["CATALOG_DSN"] = settings.catalog_dsn.get_secret_value()
    envfile = d / "env.sh"
    envfile.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    console.rule("after the demo: your first restore")
    console.print("The local S3 keeps running (stop it with [bold]backup-catalog demo --stop[/bold]). In this shell:",
                  highlight=False)
    lines = ['eval "$(backup-catalog demo --env)"      # or:', *(f"export {k}={shlex.quote(v)}" for k, v in env.items()),
             'backup-catalog backups --space "$DEMO_SPACE" --name production',
             'backup-catalog restore --space "$DEMO_SPACE" --clone-from production --latest '
             "--pgdata /tmp/first-clone --port 5433 --socket-dir /tmp --keep-running",
             "psql -h /tmp -p 5433 -U postgres -c 'SELECT count(*) FROM ticks'"]
    for ln in lines:
        print(ln)
    return 0


def _reset(args: argparse.Namespace, settings: Settings) -> int:
    """``demo --reset``: remove the embedded catalog (every instance, name history, drill) after asking."""
    if settings.catalog_dsn is not None:
        console.print("[red]demo --reset clears only the embedded catalog; CATALOG_DSN is set[/red]")
        return 2
    base = embedded.default_base()
    if not getattr(args, "yes", False):
        if not sys.stdin.isatty():
            console.print(f"[red]demo --reset removes {base} and everything the embedded catalog holds: "
                          "confirm on a terminal or pass --yes[/red]")
            return 2
        answer = input(f"remove the embedded catalog at {base} (every instance, name history, drill)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            console.print("nothing removed")
            return 0
    embedded.stop_cluster(base)
    shutil.rmtree(base, ignore_errors=True)
    console.print(f"the embedded catalog at {base} is removed; the next command creates an empty one")
    return 0


ROWS_QUERY = "SELECT coalesce(string_agg(id || ':' || tl, ',' ORDER BY id), '') FROM ticks"


async def _restore(pool: Any, settings: Settings, space: str, body: CloneRequest, environ: dict[str, str],
                   asked: list[tuple[int, int]], target: str, after: dict[str, Any]) -> int:
    console.rule(f"backup-catalog restore --space {space} --clone-from production --point-in-time {target} "
                 "--pgdata DIR")
    parent = tempfile.mkdtemp(prefix="demo-restore-")
    os.chmod(parent, 0o755)      # the postgres user reaches DIR through it
    pgdata = os.path.join(parent, "production-clone")
    try:
        with console.status("fetching with pgBackRest, recovering with PostgreSQL 15 as postgres, verifying"):
            res = await restore_from_catalog(settings, space, body, Path(pgdata), pool=pool, environ=environ,
                                             check_query=ROWS_QUERY)
    except RestoreError as e:
        console.print(f"[red]restore failed ({e.code}, {e.stage}): {e.message}[/red]")
        for ln in e.postgres_log[-10:]:
            console.print(f"  {ln}", markup=False, highlight=False)
        shutil.rmtree(parent, ignore_errors=True)
        return 1
    got = [(int(i), int(t)) for i, t in (x.split(":") for x in (res.check_result or "").split(",") if x)]
    console.print(f"restored and verified in {res.duration_s:.1f}s: backup {res.backup.label}, replay reached "
                  f"{res.reached_lsn}, new timeline {res.timeline}, last commit {res.last_commit_time}")
    table = Table("", "rows (id, timeline)")
    table.add_row(f"asked: committed up to {target}", " ".join(f"{i}/{t}" for i, t in asked))
    table.add_row("restored (SELECT id, tl FROM ticks)", " ".join(f"{i}/{t}" for i, t in got))
    console.print(table)
    ok = got == asked
    console.print(f"[green]the clone holds exactly the rows committed up to {target}[/green] (row {after['id']}, "
                  f"committed at {after['commit_time']}, is after the target)" if ok else
                  "[red]the restored rows differ from what was asked[/red]")
    shutil.rmtree(parent, ignore_errors=True)
    return 0 if ok else 1
