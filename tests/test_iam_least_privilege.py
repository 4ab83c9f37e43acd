"""Least privilege (issue 21): the policies of deploy/iam/ attached to three users of a moto server with IAM
enforcement on (``INITIAL_NO_AUTH_ACTION_COUNT``: the setup runs unauthenticated, then every request is
authorised): the scanner-restorer lists and reads and is denied a delete; the purger deletes under its prefix
and is denied elsewhere; the events consumer receives and deletes on its queue only; and the product's scan,
restore, drill and purge each run (the CLI, in a subprocess) with only their own principal's keys.

moto's enforcement differs from AWS's, so the users get the shipped documents translated (:func:`for_moto`),
never widened: moto names the action it checks after the API operation (s3:ListObjectsV2 where AWS checks
s3:ListBucket, s3:HeadObject for s3:GetObject, sqs:DeleteMessageBatch for sqs:DeleteMessage), authorises a
DeleteObjects batch against the bucket's ARN (AWS: s3:DeleteObject on each key's ARN), and ignores StringLike
conditions (the ``s3:prefix`` of ListBucket: AWS enforces it, moto lists any prefix).
"""
from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr

from backup_catalog.settings import Settings
from sandbox.archives import fresh_archive
from sandbox.s3 import MotoEndpoint, free_port, list_all, wait_port
from sandbox.tool_barman import TOOLS_BIN
from scheduler.clients import sqs_client
from scheduler.sqs import SqsQueue
from tests.support.restore import scratch_dir, start_and_read

pytestmark = pytest.mark.realtools

IAM_DIR = Path(__file__).resolve().parents[1] / "deploy" / "iam"
EXE = str(Path(sys.executable).with_name("backup-catalog"))
REGION = "us-east-1"


class EnforcingMoto(MotoEndpoint):
    """A moto server process (its auth settings are process-wide) that enforces IAM once :meth:`enforce`d."""

    def start(self) -> EnforcingMoto:
        port = free_port()
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "1000000000"}   # the setup: unauthenticated
        self._proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        self.port = port
        return self

    def stop(self) -> None:
        super().stop()
        self._proc.terminate()
        self._proc.wait(timeout=20)

    def enforce(self) -> None:
        req = urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.load(r)["status"] == "ok"

    def session_client(self, service: str, keys: dict[str, str]) -> Any:
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=keys["AccessKeyId"], aws_secret_access_key=keys["SecretAccessKey"])


def render(name: str, **values: str) -> dict[str, Any]:
    text = (IAM_DIR / name).read_text()
    for k, v in values.items():
        text = text.replace("${" + k + "}", v)
    assert "${" not in text, text
    doc: dict[str, Any] = json.loads(text)
    return doc


def merged(*docs: dict[str, Any]) -> dict[str, Any]:
    """One document with every statement (one rendering per registered bucket/prefix), Sids kept unique."""
    out: dict[str, Any] = {"Version": "2012-10-17", "Statement": []}
    for i, d in enumerate(docs):
        for st in d["Statement"]:
            out["Statement"].append({**st, "Sid": f"{st['Sid']}{i}"})
    return out


# AWS IAM action -> the API operations moto authorises instead (it names the action after the operation)
MOTO_ACTIONS = {
    "s3:ListBucket": ["s3:ListObjectsV2", "s3:ListObjects"],
    "s3:GetObject": ["s3:HeadObject"],
    "sqs:DeleteMessage": ["sqs:DeleteMessageBatch"],
    "sqs:ChangeMessageVisibility": ["sqs:ChangeMessageVisibilityBatch"],
}


def for_moto(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as moto needs it to allow exactly what AWS allows with the original (module docstring):
    each action also under the names moto checks, and DeleteObjects (a batch) against the bucket's ARN."""
    d = copy.deepcopy(doc)
    extra = []
    for st in d["Statement"]:
        actions = [st["Action"]] if isinstance(st["Action"], str) else list(st["Action"])
        st["Action"] = actions + [m for a in actions for m in MOTO_ACTIONS.get(a, [])]
        if "s3:DeleteObject" in actions:
            bucket = st["Resource"].split(":::")[1].split("/")[0]
            extra.append({"Sid": st["Sid"] + "Batch", "Effect": "Allow", "Action": "s3:DeleteObjects",
                          "Resource": f"arn:aws:s3:::{bucket}"})
    d["Statement"] += extra
    return d


@pytest.fixture(scope="module")
def moto() -> Iterator[EnforcingMoto]:
    ep = EnforcingMoto()
    ep.start()
    try:
        yield ep
    finally:
        ep.stop()


def make_user(iam: Any, name: str, policy: dict[str, Any]) -> dict[str, str]:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}


def denied(call: Any) -> bool:
    """True when ``call`` is refused for lack of permission (any other error fails the test)."""
    try:
        call()
    except ClientError as e:
        code = e.response["Error"]["Code"]
        # moto answers SQS's JSON protocol with an XML error body: botocore then reports the status as the code
        assert code in ("AccessDenied", "AccessDeniedException") or (
            code == "403" and "<Code>AccessDenied</Code>" in str(e)), f"not a denial: {e}"
        return True
    return False


async def consume(moto: EnforcingMoto, queue_url: str, keys: dict[str, str]) -> int:
    """Receive and delete with the events consumer's SQS client (scheduler.clients.sqs_client, consumer=True)."""
    settings = Settings(aws_access_key_id=SecretStr("not-a-key"), aws_secret_access_key=SecretStr("x"),
                        events_aws_access_key_id=SecretStr(keys["AccessKeyId"]),
                        events_aws_secret_access_key=SecretStr(keys["SecretAccessKey"]), s3_max_attempts=1)
    async with sqs_client(settings, queue_url, consumer=True) as client:
        queue = SqsQueue(client, queue_url)
        messages = await queue.receive(wait_seconds=0)
        return await queue.delete([m.receipt for m in messages])


def cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def base_env(moto: EnforcingMoto, catalog_dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PURGE_AWS_", "EVENTS_AWS_", "PGBACKREST_"))}
    env.update(CATALOG_DSN=catalog_dsn, S3_ENDPOINT_URL=moto.url, AWS_DEFAULT_REGION=REGION, S3_MAX_ATTEMPTS="2",
               RESTORE_TOOLS_PATH=str(TOOLS_BIN), RESTORE_RECOVERY_TIMEOUT_SECONDS="180",
               RESTORE_FETCH_TIMEOUT_SECONDS="180", DRILL_ENABLED="false")
    return env


def as_principal(env: dict[str, str], keys: dict[str, str] | None, prefix: str = "") -> dict[str, str]:
    """``env`` with one principal's keys under ``<prefix>AWS_*`` and no other credentials at all."""
    e = dict(env)
    if keys is not None:
        e[f"{prefix}AWS_ACCESS_KEY_ID"] = keys["AccessKeyId"]
        e[f"{prefix}AWS_SECRET_ACCESS_KEY"] = keys["SecretAccessKey"]
    return e


def test_each_principal_can_do_its_part_and_nothing_more(moto: EnforcingMoto, catalog_dsn: str, pool: Any) -> None:
    # -- setup, unauthenticated: two real archives (one to scan and restore, one to purge), a neighbour's
    #    objects beside the purged one, the queue, and the users with the shipped policies
    keep = fresh_archive(moto, "barman")                 # scanned and restored
    gone = fresh_archive(moto, "walg")                   # deleted, then purged
    admin_s3 = moto.client()
    neighbour = "neighbour-instance/basebackups_005/keep-me"
    admin_s3.put_object(Bucket=gone.bucket, Key=neighbour, Body=b"another instance's archive")
    sqs = boto3.client("sqs", endpoint_url=moto.url, region_name=REGION, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    queue_url = sqs.create_queue(QueueName="archive-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    other_queue = sqs.create_queue(QueueName="someone-elses")["QueueUrl"]
    for q in (queue_url, queue_url, other_queue):
        sqs.send_message(QueueUrl=q, MessageBody='{"Records": []}')
    iam = boto3.client("iam", endpoint_url=moto.url, region_name=REGION, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    keep_prefix, gone_prefix = keep.prefix.rstrip("/") + "/", gone.prefix.rstrip("/") + "/"
    scanner = make_user(iam, "scanner-restorer", for_moto(merged(
        render("scanner-restorer.json", BUCKET=keep.bucket, PREFIX=keep_prefix),
        render("scanner-restorer.json", BUCKET=gone.bucket, PREFIX=gone_prefix))))
    purger = make_user(iam, "purger", for_moto(render("purger.json", BUCKET=gone.bucket, PREFIX=gone_prefix)))
    events = make_user(iam, "events-consumer", for_moto(render("events-consumer.json", QUEUE_ARN=queue_arn)))
    auditor = make_user(iam, "auditor", for_moto({"Version": "2012-10-17", "Statement": [   # the test's own eyes
        {"Sid": "TestOnlyReadEverything", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"],
         "Resource": "*"}]}))
    moto.enforce()

    # -- enforcement is on: the setup's unknown keys are refused
    with pytest.raises(ClientError):
        admin_s3.list_objects_v2(Bucket=keep.bucket)

    # -- scanner-restorer: lists and reads its prefixes; denied a delete and a write
    s3 = moto.session_client("s3", scanner)
    listed = s3.list_objects_v2(Bucket=keep.bucket, Prefix=keep_prefix)["Contents"]
    assert listed
    assert s3.get_object(Bucket=keep.bucket, Key=listed[0]["Key"])["Body"].read() is not None
    assert denied(lambda: s3.delete_object(Bucket=keep.bucket, Key=listed[0]["Key"]))
    assert denied(lambda: s3.put_object(Bucket=keep.bucket, Key=keep_prefix + "x", Body=b"x"))
    assert denied(lambda: s3.get_object(Bucket=gone.bucket, Key=neighbour))    # outside its prefixes
    assert denied(lambda: moto.session_client("sqs", scanner).receive_message(QueueUrl=queue_url))

    # -- purger: deletes under the prefix it purges; denied elsewhere
    p3 = moto.session_client("s3", purger)
    victim = p3.list_objects_v2(Bucket=gone.bucket, Prefix=gone_prefix)["Contents"][-1]["Key"]
    p3.delete_object(Bucket=gone.bucket, Key=victim)
    assert denied(lambda: p3.delete_object(Bucket=gone.bucket, Key=neighbour))
    assert denied(lambda: p3.delete_object(Bucket=keep.bucket, Key=listed[0]["Key"]))
    assert denied(lambda: p3.get_object(Bucket=keep.bucket, Key=listed[0]["Key"]))

    # -- events consumer: receive / change visibility / delete on its queue; nothing else
    q = moto.session_client("sqs", events)
    msgs = q.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)["Messages"]
    q.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=msgs[0]["ReceiptHandle"], VisibilityTimeout=0)
    msgs = q.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)["Messages"]
    q.delete_message_batch(QueueUrl=queue_url, Entries=[{"Id": "0", "ReceiptHandle": msgs[0]["ReceiptHandle"]}])
    assert denied(lambda: q.send_message(QueueUrl=queue_url, MessageBody="x"))
    assert denied(lambda: q.receive_message(QueueUrl=other_queue))
    assert denied(lambda: moto.session_client("s3", events).list_objects_v2(Bucket=keep.bucket))
    # the product's consumer client: EVENTS_AWS_* (and AWS_* of no use to it)
    assert asyncio.run(consume(moto, queue_url, events)) == 1

    # -- the product, each part with only its own principal
    env = base_env(moto, catalog_dsn)
    scan_env = as_principal(env, scanner)
    for guid, arch, name in (("iam-keep", keep, "orders"), ("iam-gone", gone, "old-orders")):
        r = cli(scan_env, "instances", "add", "--instance", guid, "--space", "sp-iam", "--name", name, "--bucket",
                arch.bucket, "--prefix", arch.prefix.rstrip("/") + "/", "--json")
        assert r.returncode == 0, r.stderr
    r = cli(scan_env, "scan", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert {s["instance_guid"]: s["ok"] for s in json.loads(r.stdout)["scans"]} == {"iam-keep": True,
                                                                                    "iam-gone": True}

    d = scratch_dir()
    try:
        r = cli(scan_env, "restore", "--space", "sp-iam", "--clone-from", "orders", "--immediate", "--pgdata",
                str(d / "data"), "--json")
        assert r.returncode == 0, (r.stdout, r.stderr[-3000:])
        assert json.loads(r.stdout)["state"] == "restored"
        assert start_and_read(d / "data")                  # the clone starts and has the archive's rows
    finally:
        shutil.rmtree(d, ignore_errors=True)

    drill_dir = scratch_dir("iam-drill-")
    try:
        r = cli({**scan_env, "DRILL_SCRATCH_DIR": str(drill_dir)}, "drill", "--instance", "iam-keep", "--json")
        assert r.returncode == 0, (r.stdout, r.stderr[-3000:])
        assert json.loads(r.stdout)["state"] == "passed", r.stdout
    finally:
        shutil.rmtree(drill_dir, ignore_errors=True)

    r = cli(scan_env, "instances", "delete", "iam-gone", "--json")
    assert r.returncode == 0, r.stderr
    purge_env = as_principal(as_principal(env, None), purger, "PURGE_")
    purge_env.update(DELETED_RETENTION_DAYS="0", PURGE_GRACE_HOURS="0")
    r = cli(purge_env, "purge", "run", "--json")
    assert r.returncode == 0, (r.stdout, r.stderr[-3000:])
    audit = moto.session_client("s3", auditor)
    left = [o["Key"] for o in list_all(audit, gone.bucket)]
    assert left == [neighbour], left                     # its prefix emptied, the neighbour's object kept
    assert list_all(audit, keep.bucket)                  # the restored instance's archive untouched
