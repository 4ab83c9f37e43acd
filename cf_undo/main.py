"""``cf-undo``: list, show and undo your own databases' backups with your Cloud Foundry login.

    cf-undo api URL
    cf-undo list [--deleted] [--space NAME|GUID] [--json]
    cf-undo show NAME [--json]
    cf-undo changes NAME --from TS --to TS [--json]
    cf-undo clone NAME --as NEW (--at TS | --lsn LSN | --before-xid X | --restore-point P | --latest |
                  --immediate) [--plan PLAN] [--yes] [--json]

Exit codes: 0 ok, 2 bad input, 3 refused, 4 the platform reported the clone failed, 1 anything else.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.prompt import Confirm

from cf_undo import render
from cf_undo.client import Api
from cf_undo.login import CfLogin, Named, NotLoggedIn, config_path, parse_config
from cf_undo.rules import (
    BAD_INPUT,
    CLONE_FAILED,
    GUID_RE,
    OTHER,
    REFUSED,
    Failure,
    catalog_url,
    cc_error,
    check_url,
    create_body,
    find_instance,
    http_failure,
    job_state,
    operation_state,
    target_of,
)

POLL_SECONDS = float(os.environ.get("CF_UNDO_POLL_SECONDS", "2"))
WAIT_SECONDS = float(os.environ.get("CF_UNDO_WAIT_SECONDS", str(4 * 3600)))


def own_config() -> Path:
    """cf-undo's own settings file (the catalog URL): ``CF_UNDO_CONFIG``, else the user config dir."""
    if os.environ.get("CF_UNDO_CONFIG"):
        return Path(os.environ["CF_UNDO_CONFIG"])
    import platformdirs
    return platformdirs.user_config_path("cf-undo") / "config.json"


def stored_api() -> str | None:
    try:
        doc = json.loads(own_config().read_text())
    except (OSError, ValueError):
        return None
    return doc.get("api") if isinstance(doc, dict) else None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cf-undo", description="Your databases' backups and undo, with your cf login.")
    # --json and --api go before or after the command; the command's copies must not reset the main ones
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    for parser_ in (p, common):
        parser_.add_argument("--json", action="store_true", help="one JSON document on stdout")
        parser_.add_argument("--api", help="the backup catalog's URL (else BACKUP_CATALOG_URL, else 'cf-undo api')")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("api", parents=[common], help="remember the backup catalog's URL")
    a.add_argument("url", nargs="?")
    ls = sub.add_parser("list", parents=[common], help="the targeted space's databases and how far back they go")
    ls.add_argument("--deleted", action="store_true", help="include deleted instances")
    ls.add_argument("--space", help="a space name (in the targeted org) or GUID instead of the targeted one")
    sh = sub.add_parser("show", parents=[common], help="one name's windows, holes, backups and last drill")
    sh.add_argument("name")
    sh.add_argument("--space")
    ch = sub.add_parser("changes", parents=[common], help="what transactions changed in a time range")
    ch.add_argument("name")
    ch.add_argument("--from", dest="start", required=True)
    ch.add_argument("--to", dest="end", required=True)
    ch.add_argument("--space")
    cl = sub.add_parser("clone", parents=[common], help="undo: create a new instance as NAME was at a point")
    cl.add_argument("name")
    cl.add_argument("--as", dest="new", required=True, help="the new instance's name")
    cl.add_argument("--at", help="a time with a zone, e.g. 2026-11-24T19:15:00Z")
    cl.add_argument("--lsn")
    cl.add_argument("--before-xid")
    cl.add_argument("--restore-point")
    cl.add_argument("--latest", action="store_true")
    cl.add_argument("--immediate", action="store_true")
    cl.add_argument("--plan", help="a service plan name or GUID (default: the source's plan)")
    cl.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    cl.add_argument("--space")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    try:
        doc = asyncio.run(run(args, out))
    except NotLoggedIn as e:
        return _fail(args, err, Failure(OTHER, str(e), {"error": {"code": "not_logged_in", "message": str(e)}}))
    except Failure as e:
        return _fail(args, err, e)
    except KeyboardInterrupt:
        created = getattr(args, "created", None)
        note = f"; the platform keeps creating {created!r}: see 'cf service {created}'" if created else ""
        return _fail(args, err, Failure(OTHER, "interrupted" + note))
    if args.json:
        print(json.dumps(doc, indent=2))
    return 0


def _fail(args: argparse.Namespace, err: Console, f: Failure) -> int:
    if args.json:
        print(json.dumps(f.doc, indent=2))
    elif not getattr(f, "shown", False):
        err.print(f"[red]{f}[/]")
    return f.exit_code


def load_login() -> CfLogin:
    path = config_path(os.environ, Path.home())
    try:
        text = path.read_text()
    except OSError:
        raise NotLoggedIn() from None
    return parse_config(text)


async def run(args: argparse.Namespace, out: Console) -> dict[str, Any]:
    if args.command == "api":
        return api_command(args, out)
    login = load_login()
    async with Api(login, catalog_url(args.api, os.environ, stored_api())) as api:
        space = await resolve_space(api, args.space)
        if args.command == "list":
            return await list_command(api, args, out, space)
        if args.command == "show":
            return await show_command(api, args, out, space)
        if args.command == "changes":
            return await changes_command(api, args, out, space)
        return await clone_command(api, args, out, space)


def api_command(args: argparse.Namespace, out: Console) -> dict[str, Any]:
    if args.url is None:
        current = args.api or os.environ.get("BACKUP_CATALOG_URL") or stored_api()
        if not args.json:
            out.print(f"catalog API: {current or 'not set'}")
        return {"api": current}
    url = check_url(args.url)
    path = own_config()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"api": url}) + "\n")
    if not args.json:
        out.print(f"catalog API set to {url}")
    return {"api": url}


async def resolve_space(api: Api, flag: str | None) -> Named:
    if flag is None:
        if api.login.space is None:
            raise Failure(BAD_INPUT, "no space targeted: run 'cf target -s SPACE' or pass --space")
        return api.login.space
    if GUID_RE.match(flag):
        return Named(flag, flag)
    params = {"names": flag}
    if api.login.org is not None:
        params["organization_guids"] = api.login.org.guid
    status, doc, _ = await api.cc("GET", "/v3/spaces", params=params)
    found = doc.get("resources", []) if status == 200 and isinstance(doc, dict) else []
    if len(found) != 1:
        org = f" in org {api.login.org.name}" if api.login.org else ""
        raise Failure(BAD_INPUT, f"no space named {flag!r}{org} that you can see")
    return Named(str(found[0]["guid"]), flag)


async def _listing(api: Api, space: Named) -> dict[str, Any]:
    status, doc = await api.services(space.guid)
    if status != 200:
        raise http_failure(status, doc, f"space {space.name}")
    assert isinstance(doc, dict)
    return doc


async def list_command(api: Api, args: argparse.Namespace, out: Console, space: Named) -> dict[str, Any]:
    doc = await _listing(api, space)
    if not args.deleted:
        doc = {**doc, "instances": [i for i in doc["instances"] if not i.get("deleted_at")]}
    if not args.json:
        render.services_table(out, doc, space.name, deleted=True)
    return doc


async def show_command(api: Api, args: argparse.Namespace, out: Console, space: Named) -> dict[str, Any]:
    status, doc = await api.backups(space.guid, args.name)
    if status != 200:
        raise http_failure(status, doc, f"no backups for {args.name!r} in space {space.name}")
    listing = await _listing(api, space)
    meta = {i["instance_guid"]: i for i in listing["instances"]}
    for inst in doc.get("instances", []):
        m = meta.get(inst["instance_guid"], {})
        inst.update({k: m.get(k) for k in ("can_undo", "undo_until", "drill", "service_plan_guid", "purge")})
    if not args.json:
        render.show(out, doc, listing)
    assert isinstance(doc, dict)
    return doc


async def changes_command(api: Api, args: argparse.Namespace, out: Console, space: Named) -> dict[str, Any]:
    status, doc = await api.changes(space.guid, args.name, args.start, args.end)
    if status != 200:
        raise http_failure(status, doc, f"changes of {args.name!r}")
    if not args.json:
        render.changes(out, doc)
    assert isinstance(doc, dict)
    return doc


async def resolve_plan(api: Api, flag: str | None, source: dict[str, Any], space: Named) -> tuple[str, str]:
    """(plan GUID, how to call it): ``--plan`` (a GUID or a plan name available in the space), else the plan
    the source instance was created with."""
    if flag is None:
        guid = source.get("service_plan_guid")
        if not guid:
            raise Failure(BAD_INPUT, f"the catalog does not know which plan {source.get('name')!r} was created "
                                     "with: pass --plan PLAN")
        return str(guid), f"{guid} (as {source.get('name')})"
    if GUID_RE.match(flag):
        return flag, flag
    status, doc, _ = await api.cc("GET", "/v3/service_plans", params={"names": flag, "space_guids": space.guid})
    found = doc.get("resources", []) if status == 200 and isinstance(doc, dict) else []
    if len(found) != 1:
        raise Failure(BAD_INPUT, f"{'no' if not found else 'more than one'} service plan named {flag!r} "
                                 f"available in space {space.name}: pass its GUID")
    return str(found[0]["guid"]), flag


async def clone_command(api: Api, args: argparse.Namespace, out: Console, space: Named) -> dict[str, Any]:
    target = target_of(args.at, args.lsn, args.before_xid, args.restore_point, args.latest, args.immediate)
    if args.json and not args.yes:
        raise Failure(BAD_INPUT, "with --json, pass --yes (there is no one to confirm)")
    status, plan = await api.preview(space.guid, target.body(args.name))
    if status != 200:
        f = http_failure(status, plan, f"cannot undo {args.name!r} to {target.describe()}")
        if not args.json:
            render.refusal(out, str(f), f.doc)
            f.shown = True    # type: ignore[attr-defined]
        raise f
    listing = await _listing(api, space)
    source = next((i for i in listing["instances"] if i["instance_guid"] == plan["source"]["instance_guid"]),
                  (find_instance(listing, args.name) or [{}])[0])
    plan_guid, plan_label = await resolve_plan(api, args.plan, source, space)
    if not args.json:
        render.preview(out, plan, args.new, plan_label)
    if not source.get("can_undo"):
        raise Failure(REFUSED, f"you may not start an undo in space {space.name}: it takes the SpaceDeveloper role "
                               "there (the platform would refuse the new instance)",
                      {"error": {"code": "not_permitted", "message": "SpaceDeveloper role required"}, "plan": plan})
    if not args.yes:
        if not sys.stdin.isatty():
            raise Failure(BAD_INPUT, "not a terminal: pass --yes to create the clone")
        if not Confirm.ask(f"Create {args.new} from this plan?", console=out, default=False):
            raise Failure(REFUSED, "cancelled; nothing was created")
    body = create_body(args.new, space.guid, plan_guid, target, args.name)
    status, doc, headers = await api.cc("POST", "/v3/service_instances", json=body)
    if status not in (201, 202):
        raise Failure(REFUSED, f"the platform refused to create {args.new!r}: {cc_error(doc) or f'HTTP {status}'}",
                      {"error": {"code": "platform_refused", "status": status, "message": cc_error(doc)}})
    args.created = args.new      # from here on, an interrupt leaves the platform working on it
    result = await follow(api, out, args, space, headers.get("Location"), quiet=args.json)
    return {"state": "created", "name": args.new, "space_guid": space.guid, "service_plan_guid": plan_guid,
            "parameters": body["parameters"], "plan": plan, **result}


async def follow(api: Api, out: Console, args: argparse.Namespace, space: Named, job_href: str | None, *,
                 quiet: bool) -> dict[str, Any]:
    """Follow the platform's job, then the new instance's last operation, until it succeeds or fails."""
    deadline = time.monotonic() + WAIT_SECONDS
    status_line = out.status(f"Creating {args.new}: asking the platform ...") if not quiet else None
    if status_line is not None:
        status_line.start()
    try:
        job: dict[str, Any] = {}
        while job_href:
            st, job = await api.cc_href(job_href)
            state = job_state(job)
            if status_line is not None:
                status_line.update(f"Creating {args.new}: platform job {state.lower() or '?'} ...")
            if state == "COMPLETE":
                break
            if state == "FAILED":
                raise Failure(CLONE_FAILED, f"the platform reported the clone failed: {cc_error(job)}",
                              {"error": {"code": "clone_failed", "message": cc_error(job), "job": job}})
            if st != 200 or time.monotonic() > deadline:
                raise Failure(OTHER, f"lost track of the platform's job ({st})")
            await asyncio.sleep(POLL_SECONDS)
        st, found, _ = await api.cc("GET", "/v3/service_instances", params={"names": args.new,
                                                                             "space_guids": space.guid})
        resources = found.get("resources", []) if st == 200 and isinstance(found, dict) else []
        if not resources:
            raise Failure(OTHER, f"the platform does not show {args.new!r} after its job completed")
        guid = str(resources[0]["guid"])
        while True:
            state, text = operation_state(resources[0] if resources else {})
            if status_line is not None:
                status_line.update(f"Creating {args.new}: {state or '?'}{': ' + text if text else ''} ...")
            if state == "succeeded":
                break
            if state == "failed":
                raise Failure(CLONE_FAILED, f"the platform reported the clone failed: {text}",
                              {"error": {"code": "clone_failed", "message": text, "instance_guid": guid}})
            if time.monotonic() > deadline:
                raise Failure(OTHER, f"{args.new!r} is still {state!r} after {WAIT_SECONDS:.0f} s")
            await asyncio.sleep(POLL_SECONDS)
            st, one, _ = await api.cc("GET", f"/v3/service_instances/{guid}")
            resources = [one] if st == 200 and isinstance(one, dict) else []
    finally:
        if status_line is not None:
            status_line.stop()
    if not quiet:
        out.print(f"[green]Created {args.new}[/] ({guid}): the clone is ready. Bind it with "
                  f"'cf bind-service APP {args.new}'.")
    return {"instance_guid": guid, "job": job, "last_operation": {"state": "succeeded"}}


if __name__ == "__main__":
    sys.exit(main())
