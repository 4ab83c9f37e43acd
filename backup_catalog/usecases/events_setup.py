"""Use case: ``backup-catalog events setup --bucket B --queue-url Q [--apply]``.

What a bucket needs to push its events to the consumer's queue (pure: :func:`plan_setup`):

- the bucket's notification configuration: ``s3:ObjectCreated:*`` and ``s3:ObjectRemoved:*`` to the queue,
  one entry per registered prefix. S3 refuses overlapping entries and allows about 100 per bucket, so
  nested prefixes collapse into their ancestor, and past ``MAX_FILTERS`` the filters widen to the top-level
  directories, then to the whole bucket (keys of no instance are counted and dropped by the consumer);
  entries of other owners (other ids, topics, Lambda functions, EventBridge) are kept;
- the queue policy that lets ``s3.amazonaws.com`` send from this bucket (``aws:SourceArn``);
- the queue's redrive policy: a dead-letter queue after ``S3_EVENTS_MAX_RECEIVES`` receives, a visibility
  timeout longer than a reconcile scan may take, and the longest retention (14 days).

:func:`apply_setup` applies it (queue first: S3 checks it may send, with an ``s3:TestEvent``).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ID_PREFIX = "backup-catalog-"
MAX_FILTERS = 100
EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
RETENTION_SECONDS = 14 * 24 * 3600


@dataclass(frozen=True, slots=True)
class SetupPlan:
    bucket: str
    queue_url: str
    queue_arn: str
    prefixes: tuple[str, ...]                   # the notification filters ("" = the whole bucket)
    notification: dict[str, Any]                # PutBucketNotificationConfiguration's document
    queue_attributes: dict[str, str]            # SetQueueAttributes (Policy, RedrivePolicy, ...)
    dead_letter_queue: str | None               # name of the DLQ to create, or None (one is configured)

    def to_json(self) -> dict[str, Any]:
        attrs = {k: (json.loads(v) if k in ("Policy", "RedrivePolicy") else v) for k, v in self.queue_attributes.items()}
        return {"bucket": self.bucket, "queue_url": self.queue_url, "queue_arn": self.queue_arn,
                "prefixes": list(self.prefixes), "bucket_notification_configuration": self.notification,
                "queue_attributes": attrs, "create_dead_letter_queue": self.dead_letter_queue}


def filter_prefixes(prefixes: Iterable[str], limit: int = MAX_FILTERS) -> tuple[str, ...]:
    """The fewest non-overlapping filters covering ``prefixes`` (normalized "a/b/"; "" = whole bucket).

    >>> filter_prefixes(["pg/a", "pg/a/b/", "pg/c/"])
    ('pg/a/', 'pg/c/')
    >>> filter_prefixes(["x/1/", "x/2/", "y/3/"], limit=2)
    ('x/', 'y/')
    >>> filter_prefixes(["x/1/", "y/2/", "z/3/"], limit=2)
    ('',)
    """
    norm = sorted({f"{p.strip('/')}/" if p.strip("/") else "" for p in prefixes})
    if "" in norm:
        return ("",)
    out: list[str] = []
    for p in norm:
        if not any(p.startswith(q) for q in out):
            out.append(p)
    if len(out) > limit:
        out = sorted({p.split("/", 1)[0] + "/" for p in out})
    if len(out) > limit:
        return ("",)
    return tuple(out)


def queue_policy(queue_arn: str, bucket: str, existing: str | None = None) -> str:
    """The queue's access policy with a statement letting the bucket send (other statements kept)."""
    doc: dict[str, Any] = json.loads(existing) if existing else {"Version": "2012-10-17", "Statement": []}
    sid = f"{ID_PREFIX}{bucket}"
    account = queue_arn.split(":")[4] if queue_arn.count(":") >= 5 else ""
    stmt: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
                            "Action": "sqs:SendMessage", "Resource": queue_arn,
                            "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}}}
    if account:
        stmt["Condition"]["StringEquals"] = {"aws:SourceAccount": account}
    doc["Statement"] = [s for s in doc.get("Statement", []) if s.get("Sid") != sid] + [stmt]
    return json.dumps(doc, sort_keys=True)


def plan_setup(bucket: str, queue_url: str, queue_attrs: dict[str, str], prefixes: Iterable[str],
               existing: dict[str, Any], *, max_receives: int, visibility_timeout: int) -> SetupPlan:
    """The configuration for ``bucket`` -> the queue at ``queue_url`` (``queue_attrs``: its current
    attributes, QueueArn at least; ``existing``: the bucket's current notification configuration)."""
    arn = queue_attrs["QueueArn"]
    filters = filter_prefixes(prefixes)
    ours = []
    for n, p in enumerate(filters):
        entry: dict[str, Any] = {"Id": f"{ID_PREFIX}{n}", "QueueArn": arn, "Events": list(EVENTS)}
        if p:
            entry["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": p}]}}
        ours.append(entry)
    keep = [c for c in existing.get("QueueConfigurations", []) if not str(c.get("Id", "")).startswith(ID_PREFIX)]
    notification: dict[str, Any] = {"QueueConfigurations": keep + ours}
    for k in ("TopicConfigurations", "LambdaFunctionConfigurations", "EventBridgeConfiguration"):
        if existing.get(k):
            notification[k] = existing[k]
    attrs = {"Policy": queue_policy(arn, bucket, queue_attrs.get("Policy")),
             "VisibilityTimeout": str(visibility_timeout), "MessageRetentionPeriod": str(RETENTION_SECONDS)}
    dlq = None
    redrive = json.loads(queue_attrs["RedrivePolicy"]) if queue_attrs.get("RedrivePolicy") else None
    if redrive and redrive.get("deadLetterTargetArn"):
        redrive["maxReceiveCount"] = max_receives
        attrs["RedrivePolicy"] = json.dumps(redrive, sort_keys=True)
    else:
        dlq = arn.rsplit(":", 1)[-1] + "-dead-letter"
        attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn.rsplit(":", 1)[0] + ":" + dlq,
                                             "maxReceiveCount": max_receives}, sort_keys=True)
    return SetupPlan(bucket, queue_url, arn, filters, notification, attrs, dlq)


async def read_current(s3: Any, sqs: Any, bucket: str, queue_url: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The queue's attributes and the bucket's notification configuration, as they are."""
    attrs = (await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"]))["Attributes"]
    conf = await s3.get_bucket_notification_configuration(Bucket=bucket)
    return dict(attrs), {k: v for k, v in conf.items() if k != "ResponseMetadata"}


async def apply_setup(s3: Any, sqs: Any, plan: SetupPlan) -> None:
    """Apply ``plan``: the dead-letter queue (if one is to be created), the queue's attributes, then the
    bucket's notification configuration."""
    if plan.dead_letter_queue:
        await sqs.create_queue(QueueName=plan.dead_letter_queue,
                               Attributes={"MessageRetentionPeriod": str(RETENTION_SECONDS)})
    await sqs.set_queue_attributes(QueueUrl=plan.queue_url, Attributes=plan.queue_attributes)
    await s3.put_bucket_notification_configuration(Bucket=plan.bucket,
                                                   NotificationConfiguration=plan.notification)


__all__ = ["SetupPlan", "apply_setup", "filter_prefixes", "plan_setup", "queue_policy", "read_current"]
