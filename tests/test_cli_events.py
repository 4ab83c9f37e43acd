"""``backup-catalog events setup``: prints the notification configuration and queue policy for the
registered prefixes of a bucket, applies them with --apply (moto then sends S3's test event), and says
clearly what is wrong otherwise."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from catalog import repo
from recovery.model import InstanceRef, Storage
from tests.support.events import sqs_sync

pytestmark = pytest.mark.realtools


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backup_catalog.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)


async def test_events_setup_prints_then_applies(pool: Any, catalog_dsn: str, s3_endpoint: Any) -> None:
    s3_endpoint.ensure_bucket("ev-setup")
    for guid, prefix in (("g1", "org/a"), ("g2", "org/a/nested"), ("g3", "org/b/")):
        await repo.register_instance(pool, InstanceRef(guid, "sp", guid), Storage("ev-setup", prefix, "auto", None))
    sqs = sqs_sync(s3_endpoint)
    url = sqs.create_queue(QueueName="ev-setup-q")["QueueUrl"]
    env = dict(os.environ, CATALOG_DSN=catalog_dsn, S3_ENDPOINT_URL=s3_endpoint.url, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", S3_EVENTS_MAX_RECEIVES="4")

    p = run(["events", "setup", "--bucket", "ev-setup", "--queue-url", url], env)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["applied"] is False and doc["prefixes"] == ["org/a/", "org/b/"]
    assert doc["queue_attributes"]["RedrivePolicy"]["maxReceiveCount"] == 4
    assert s3_endpoint.client().get_bucket_notification_configuration(Bucket="ev-setup").get(
        "QueueConfigurations") is None                        # printing changes nothing

    p = run(["events", "setup", "--bucket", "ev-setup", "--queue-url", url, "--apply"], env)
    assert p.returncode == 0, p.stderr
    conf = s3_endpoint.client().get_bucket_notification_configuration(Bucket="ev-setup")["QueueConfigurations"]
    assert sorted(c["Filter"]["Key"]["FilterRules"][0]["Value"] for c in conf) == ["org/a/", "org/b/"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert json.loads(attrs["RedrivePolicy"])["maxReceiveCount"] == 4
    assert "s3.amazonaws.com" in attrs["Policy"]
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
    assert got and json.loads(got[0]["Body"])["Event"] == "s3:TestEvent"
    # again: idempotent (the same filters, one statement, the DLQ kept)
    assert run(["events", "setup", "--bucket", "ev-setup", "--queue-url", url, "--apply"], env).returncode == 0
    conf2 = s3_endpoint.client().get_bucket_notification_configuration(Bucket="ev-setup")["QueueConfigurations"]
    assert len(conf2) == 2

    p = run(["events", "setup", "--bucket", "nobody-here", "--queue-url", url, "--json"], env)
    assert p.returncode == 2 and "no registered instance" in json.loads(p.stdout)["error"]["message"]
    p = run(["events", "setup", "--bucket", "ev-setup", "--queue-url", url.replace("ev-setup-q", "nope")], env)
    assert p.returncode == 1 and "Traceback" not in p.stderr and "events_setup_failed" in p.stdout + p.stderr
