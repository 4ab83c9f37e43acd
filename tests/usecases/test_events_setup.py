"""backup_catalog/usecases/events_setup.py: the notification configuration and queue policy (pure)."""
from __future__ import annotations

import json

import pytest

from backup_catalog.usecases.events_setup import ID_PREFIX, filter_prefixes, plan_setup, queue_policy

ARN = "arn:aws:sqs:eu-west-1:123456789012:catalog-events"
URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/catalog-events"


@pytest.mark.parametrize("prefixes,limit,want", [
    (["a", "b/"], 100, ("a/", "b/")),
    (["a/b", "a", "a/b/c"], 100, ("a/",)),                   # nested prefixes overlap: S3 refuses them
    (["ab/", "a/"], 100, ("a/", "ab/")),                     # a string prefix is not a directory prefix
    (["", "x/"], 100, ("",)),
    ([], 100, ()),
    ([f"org/{n}/" for n in range(5)], 3, ("org/",)),         # too many: the top-level directories
    ([f"{n}/x/" for n in range(5)], 3, ("",)),               # still too many: the whole bucket
])
def test_filter_prefixes(prefixes: list[str], limit: int, want: tuple[str, ...]) -> None:
    assert filter_prefixes(prefixes, limit) == want


def test_plan_keeps_other_owners_and_adds_a_dead_letter_queue() -> None:
    existing = {"QueueConfigurations": [{"Id": "theirs", "QueueArn": "arn:x", "Events": ["s3:ObjectCreated:*"]},
                                        {"Id": ID_PREFIX + "7", "QueueArn": ARN, "Events": []}],
                "TopicConfigurations": [{"Id": "t", "TopicArn": "arn:t", "Events": ["s3:ObjectRemoved:*"]}]}
    plan = plan_setup("bkt", URL, {"QueueArn": ARN}, ["pg/a", "pg/b/"], existing, max_receives=4,
                      visibility_timeout=360)
    qc = plan.notification["QueueConfigurations"]
    assert [c["Id"] for c in qc] == ["theirs", ID_PREFIX + "0", ID_PREFIX + "1"]
    assert qc[1]["Filter"] == {"Key": {"FilterRules": [{"Name": "prefix", "Value": "pg/a/"}]}}
    assert qc[1]["Events"] == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"] and qc[1]["QueueArn"] == ARN
    assert plan.notification["TopicConfigurations"] == existing["TopicConfigurations"]
    assert plan.dead_letter_queue == "catalog-events-dead-letter"
    assert json.loads(plan.queue_attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": "arn:aws:sqs:eu-west-1:123456789012:catalog-events-dead-letter", "maxReceiveCount": 4}
    assert plan.queue_attributes["VisibilityTimeout"] == "360"
    assert plan.queue_attributes["MessageRetentionPeriod"] == str(14 * 86400)
    doc = plan.to_json()
    assert doc["queue_attributes"]["Policy"]["Statement"][0]["Condition"] == {
        "ArnLike": {"aws:SourceArn": "arn:aws:s3:::bkt"}, "StringEquals": {"aws:SourceAccount": "123456789012"}}
    json.dumps(doc)


def test_whole_bucket_has_no_filter_and_an_existing_dlq_is_kept() -> None:
    redrive = json.dumps({"deadLetterTargetArn": "arn:aws:sqs:eu-west-1:123456789012:mine", "maxReceiveCount": 9})
    plan = plan_setup("bkt", URL, {"QueueArn": ARN, "RedrivePolicy": redrive}, [""], {}, max_receives=5,
                      visibility_timeout=60)
    (c,) = plan.notification["QueueConfigurations"]
    assert "Filter" not in c and plan.dead_letter_queue is None
    assert json.loads(plan.queue_attributes["RedrivePolicy"])["deadLetterTargetArn"].endswith(":mine")
    assert json.loads(plan.queue_attributes["RedrivePolicy"])["maxReceiveCount"] == 5


def test_queue_policy_replaces_only_its_own_statement() -> None:
    other = {"Sid": "keep", "Effect": "Allow", "Principal": "*", "Action": "sqs:ReceiveMessage", "Resource": ARN}
    once = queue_policy(ARN, "bkt", json.dumps({"Version": "2012-10-17", "Statement": [other]}))
    twice = queue_policy(ARN, "bkt", once)
    assert once == twice
    sids = [s["Sid"] for s in json.loads(twice)["Statement"]]
    assert sids == ["keep", ID_PREFIX + "bkt"]
