"""cf-undo end to end (issue 19): the real catalog service on a real port, the CC + UAA double, the console
script in a real terminal (tmux) and as a plain subprocess.

The cf CLI's config.json is written as the cf CLI writes it, with an access token that has expired: the
client refreshes it at UAA (client ``cf``, empty secret), never rewrites the file, lists the space, shows a
name, and undoes a DELETED instance by its old name at a time: the double receives the
``POST /v3/service_instances`` with the user's token and the clone request as parameters, and the job is
followed to success. A refused clone prints the refusal and the windows that exist.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import jwt
import pytest
import pytest_asyncio
from aiohttp import web

from backup_catalog.service.app import create_app
from catalog import spaces
from sandbox.s3 import free_port
from tests.api.seed import SPACE, B, iso, seed_history
from tests.support.ccdouble import CloudControllerDouble
from tests.support.fixtures import make_settings
from tests.support.tmux import Tmux, path_with

BIN = Path(sys.executable).parent
CF_UNDO = BIN / "cf-undo"
ORG = "org-1"


@dataclass
class World:
    cc: CloudControllerDouble
    catalog: str
    env: dict[str, str]
    config: Path


def cf_config(cc: CloudControllerDouble, user: str, *, expired: bool = True) -> dict[str, object]:
    """A config.json as ``cf login`` (cf CLI v8) leaves it, targeting the org and space."""
    token = cc.token_for(user, now=time.time() - 7200, lifetime=600) if expired else cc.token_for(user)
    return {
        "ConfigVersion": 3, "Target": cc.url, "APIVersion": "3.150.0", "AuthorizationEndpoint": cc.uaa_url,
        "DopplerEndPoint": "wss://doppler.example.com:443", "UaaEndpoint": cc.uaa_url,
        "RoutingAPIEndpoint": f"{cc.url}/routing", "AccessToken": f"bearer {token}", "SSHOAuthClient": "ssh-proxy",
        "UAAOAuthClient": "cf", "UAAOAuthClientSecret": "", "UAAGrantType": "",
        "RefreshToken": cc.refresh_token_for(user),
        "OrganizationFields": {"GUID": ORG, "Name": "acme"},
        "SpaceFields": {"GUID": SPACE, "Name": "dev-space", "AllowSSH": True},
        "SSLDisabled": False, "AsyncTimeout": 0, "Trace": "", "ColorEnabled": "", "Locale": "",
        "PluginRepos": [{"Name": "CF-Community", "URL": "https://plugins.cloudfoundry.org"}],
        "MinCLIVersion": "6.23.0", "MinRecommendedCLIVersion": "6.23.0", "TargetedCFVersion": "",
        "CFOnK8s": {"Enabled": False, "AuthInfo": ""}}


@pytest_asyncio.fixture
async def world(pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[World]:
    if not CF_UNDO.exists():
        pytest.fail("the cf-undo console script is not installed: pip install -e .")
    await seed_history(pool)                          # B held "production", was deleted at T0+100min
    await spaces.set_service_plan(pool, B, "plan-1")
    async with CloudControllerDouble(create_polls=3) as cc:
        cc.spaces.update({SPACE: ORG, "space-b": ORG})
        cc.space_names[SPACE] = "dev-space"
        cc.user("u-dev", "dev")
        cc.grant("u-dev", "space_developer", SPACE)
        cc.user("u-aud", "audrey")
        cc.grant("u-aud", "space_auditor", SPACE)
        app = create_app(make_settings(cf_api_url=cc.url, deleted_retention_days=3650), pool=pool,
                         start_scheduler=False)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        home = tmp_path / "cfhome"
        (home / ".cf").mkdir(parents=True)
        config = home / ".cf" / "config.json"
        config.write_text(json.dumps(cf_config(cc, "u-dev"), indent=2))
        env = {"CF_HOME": str(home), "HOME": str(tmp_path), "CF_UNDO_CONFIG": str(tmp_path / "cf-undo.json"),
               "CF_UNDO_POLL_SECONDS": "0.2", "PATH": path_with(str(BIN)), "TERM": "xterm-256color",
               "LANG": "C.UTF-8", "PS1": "$ "}
        try:
            yield World(cc, f"http://127.0.0.1:{port}", env, config)
        finally:
            await runner.cleanup()
        assert not cc.unexpected, cc.unexpected


async def run_plain(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(str(CF_UNDO), *args, env={**os.environ, **env},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.timeout(300)
async def test_undo_a_deleted_instance_by_its_old_name_on_a_terminal(world: World) -> None:
    cc, before = world.cc, world.config.read_bytes()
    with Tmux(world.env) as term:
        code, out = await term.run(f"cf-undo api {world.catalog}")
        assert code == 0 and "catalog API set to" in out

        code, out = await term.run("cf-undo list --deleted")
        assert code == 0, out
        assert "dev-space" in out and "production" in out and "legacy (was production)" in out and "deleted" in out
        assert cc.refresh_grants >= 1, "the expired access token was refreshed at UAA"
        assert world.config.read_bytes() == before, "the cf CLI's file is never rewritten"

        code, out = await term.run("cf-undo show production")
        assert code == 0, out
        assert "Recoverable windows" in out and "2026-01-01 13:01" in out and "Backups (1)" in out

        # the clone asks for confirmation on the terminal: typed and answered by hand
        start = len(term.screen())
        term.send(f"cf-undo clone production --as production-restored --at {iso(70)}; echo __CLONE__=$?")
        screen = await term.wait_for(r"Create production-restored from this plan\?", 60, after=start)
        preview = screen[start:]
        assert B in preview and "deleted" in preview and "Undo preview" in preview, preview
        assert not cc.created, "nothing is created before the user confirms"
        term.send("y")
        screen = await term.wait_for(r"__CLONE__=\d+", 90, after=start)
        assert "__CLONE__=0" in screen, screen[start:]
        assert "Created production-restored" in screen[start:]
        if os.environ.get("CF_UNDO_SCREEN"):    # a transcript for a person to read
            Path(os.environ["CF_UNDO_SCREEN"]).write_text(term.screen())

    call = cc.created[-1]
    assert call.status == 202 and call.user_id == "u-dev"
    token = call.authorization.split(" ", 1)[1]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["user_id"] == "u-dev" and claims["exp"] > time.time(), "the user's own, refreshed token"
    assert call.body == {"type": "managed", "name": "production-restored",
                         "parameters": {"clone-from": "production", "point-in-time": iso(70)},
                         "relationships": {"space": {"data": {"guid": SPACE}},
                                           "service_plan": {"data": {"guid": "plan-1"}}}}
    created = next(i for i in cc.instances.values() if i.name == "production-restored")
    assert created.last_operation["state"] == "succeeded"
    assert cc.requests["job"] >= 2, "the job was followed"
    assert world.config.read_bytes() == before


@pytest.mark.timeout(300)
async def test_a_refused_clone_prints_the_refusal_and_the_windows(world: World) -> None:
    with Tmux(world.env) as term:
        code, out = await term.run(f"cf-undo --api {world.catalog} clone production --as early --at {iso(-500)}")
    assert code == 3, out
    assert "Refused:" in out and "What can be restored" in out and "2026-01-01 13:01" in out, out
    assert not world.cc.created


async def test_json_clone_failed_platform_exit_4_and_refusals(world: World) -> None:
    env = {**world.env, "BACKUP_CATALOG_URL": world.catalog}
    world.cc.create_fails = "pgBackRest could not fetch the backup"
    code, out, _ = await run_plain(env, "clone", "production", "--as", "p2", "--at", iso(70), "--yes", "--json")
    doc = json.loads(out)
    assert code == 4 and doc["error"]["code"] == "clone_failed" and "could not fetch" in doc["error"]["message"]

    code, out, _ = await run_plain(env, "list", "--json")
    doc = json.loads(out)
    assert code == 0 and [i["name"] for i in doc["instances"]] == ["legacy"], "deleted ones need --deleted"
    code, out, _ = await run_plain(env, "list", "--deleted", "--space", "dev-space", "--json")
    assert code == 0 and [i["name"] for i in json.loads(out)["instances"]] == ["legacy", "production"]
    code, out, _ = await run_plain(env, "list", "--space", "someone-elses", "--json")
    assert code == 2 and "no space named" in json.loads(out)["error"]["message"]

    # changes: the catalog's route through the user's token; its refusals keep their codes and exit codes
    code, out, _ = await run_plain(env, "changes", "production", "--from", iso(80), "--to", iso(70), "--json")
    assert code == 3 and json.loads(out)["error"]["code"] == "invalid_range", out
    code, out, _ = await run_plain(env, "changes", "production", "--from", "yesterday", "--to", iso(70), "--json")
    assert code == 2, out
    code, out, _ = await run_plain(env, "changes", "nothing-here", "--from", iso(60), "--to", iso(70), "--json")
    assert code == 3 and json.loads(out)["error"]["code"] == "unknown_service", out

    code, out, _ = await run_plain(env, "clone", "nothing-here", "--as", "x", "--latest", "--yes", "--json")
    assert code == 3 and json.loads(out)["error"]["code"] == "unknown_service"

    code, out, _ = await run_plain(env, "clone", "production", "--as", "x", "--at", "yesterday", "--yes", "--json")
    assert code == 2, out

    code, out, err = await run_plain(env, "clone", "production", "--as", "x", "--at", iso(70), "--lsn", "0/1")
    assert code == 2 and "exactly one" in err

    # an auditor sees the plan but may not start the undo: refused before the platform is asked
    world.config.write_text(json.dumps(cf_config(world.cc, "u-aud", expired=False)))
    before = len(world.cc.created)
    code, out, _ = await run_plain(env, "clone", "production", "--as", "x", "--at", iso(70), "--yes", "--json")
    assert code == 3 and json.loads(out)["error"]["code"] == "not_permitted"
    assert len(world.cc.created) == before


async def test_not_logged_in_says_to_run_cf_login(world: World, tmp_path: Path) -> None:
    env = {**world.env, "CF_HOME": str(tmp_path / "nobody"), "BACKUP_CATALOG_URL": world.catalog}
    code, out, err = await run_plain(env, "list")
    assert code == 1 and out == ""
    assert err.strip().count("\n") == 0 and "cf login" in err
    world.config.write_text(json.dumps({**cf_config(world.cc, "u-dev"), "RefreshToken": "revoked-r"}))
    code, out, err = await run_plain({**world.env, "BACKUP_CATALOG_URL": world.catalog}, "list")
    assert code == 1 and "cf login" in err


async def test_cc_outage_is_an_error_never_a_listing(world: World) -> None:
    world.cc.down = True
    code, out, _ = await run_plain({**world.env, "BACKUP_CATALOG_URL": world.catalog}, "list", "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "authorization_unavailable"
