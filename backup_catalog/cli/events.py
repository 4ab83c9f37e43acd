"""``backup-catalog events setup --bucket B --queue-url Q [--apply]``: what a bucket needs to push its
events to the consumer's queue (:mod:`backup_catalog.usecases.events_setup`), printed as one JSON document,
and applied with ``--apply`` (credentials allowed to put the bucket's notification configuration and the
queue's attributes: an operator's, not the scanner's read-only ones)."""
from __future__ import annotations

import argparse

from botocore.exceptions import BotoCoreError, ClientError

from backup_catalog.cli.common import UsageError, on_catalog, print_json
from backup_catalog.settings import Settings
from backup_catalog.usecases import events_setup
from catalog import events as cat_events
from recovery.errors import PitrError
from scheduler.clients import s3_client, sqs_client
from scheduler.sqs import endpoint_for


class SetupFailed(PitrError):
    code = "events_setup_failed"


async def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    endpoint_for(args.queue_url)      # a bad URL is a usage error before anything is asked
    routes = await on_catalog(settings, cat_events.routes)
    prefixes = [p for b, p, _ in routes if b == args.bucket]
    if not prefixes:
        raise UsageError(f"no registered instance keeps its archive in bucket {args.bucket!r}: nothing to notify")
    try:
        async with s3_client(settings) as s3, sqs_client(settings, args.queue_url) as sqs:
            attrs, existing = await events_setup.read_current(s3, sqs, args.bucket, args.queue_url)
            plan = events_setup.plan_setup(args.bucket, args.queue_url, attrs, prefixes, existing,
                                           max_receives=settings.s3_events_max_receives,
                                           visibility_timeout=int(settings.scan_deadline_seconds) + 60)
            if args.apply:
                await events_setup.apply_setup(s3, sqs, plan)
    except ClientError as e:
        err = e.response.get("Error", {})
        raise SetupFailed(f"{e.operation_name} refused: {err.get('Code', '?')}: {err.get('Message', '')}") from None
    except (BotoCoreError, OSError) as e:
        raise SetupFailed(f"S3 or SQS unreachable: {type(e).__name__}") from None
    doc = plan.to_json() | {"applied": bool(args.apply)}
    print_json(doc)
    return 0
