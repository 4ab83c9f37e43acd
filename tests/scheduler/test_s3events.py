"""scheduler/s3events.py: decoding SQS bodies carrying S3 event records, and sequencer order."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from scheduler.s3events import Action, BadEventMessage, compare_sequencers, decode_body, newer


def record(name: str = "ObjectCreated:Put", key: str = "a/b", bucket: str = "bk", **obj: Any) -> dict[str, Any]:
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": "2026-12-07T12:00:01.250Z",
            "eventName": name, "s3": {"bucket": {"name": bucket}, "object": {"key": key, **obj}}}


def body(*records: dict[str, Any]) -> str:
    return json.dumps({"Records": list(records)})


@pytest.mark.parametrize("name,action", [
    ("ObjectCreated:Put", Action.CREATED), ("ObjectCreated:Post", Action.CREATED),
    ("ObjectCreated:Copy", Action.CREATED), ("ObjectCreated:CompleteMultipartUpload", Action.CREATED),
    ("s3:ObjectCreated:Put", Action.CREATED),            # MinIO's spelling
    ("ObjectRemoved:Delete", Action.REMOVED), ("ObjectRemoved:DeleteMarkerCreated", Action.REMOVED),
    ("s3:ObjectRemoved:Delete", Action.REMOVED),
])
def test_object_events(name: str, action: Action) -> None:
    d = decode_body(body(record(name, size=12, eTag='"abc"', sequencer="0055aed6dcd90281e5")))
    (e,) = d.events
    assert (e.action, e.bucket, e.key, e.size, e.etag, e.sequencer) == (action, "bk", "a/b", 12, "abc",
                                                                        "0055AED6DCD90281E5")
    assert e.time == datetime(2026, 12, 7, 12, 0, 1, 250000, tzinfo=timezone.utc)
    assert e.name == name.removeprefix("s3:")
    assert not d.test_event and d.other == 0


@pytest.mark.parametrize("raw,key", [
    ("a+b", "a b"), ("a%2Bb", "a+b"), ("x/%E2%82%AC.gz", "x/€.gz"), ("p%2Fq", "p/q"),
    ("pg/archive/main/15-1/0000000100000000/000000010000000000000001-" + "e" * 40 + ".gz",
     "pg/archive/main/15-1/0000000100000000/000000010000000000000001-" + "e" * 40 + ".gz"),
])
def test_keys_are_url_decoded(raw: str, key: str) -> None:
    assert decode_body(body(record(key=raw))).events[0].key == key


def test_other_records_are_counted_not_events() -> None:
    d = decode_body(body(record("ObjectRestore:Completed"), record("ObjectTagging:Put"), record()))
    assert len(d.events) == 1 and d.other == 2


def test_test_event_and_sns_wrapping() -> None:
    assert decode_body(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"})).test_event
    wrapped = json.dumps({"Type": "Notification", "Message": body(record(key="k%20x"))})
    assert decode_body(wrapped).events[0].key == "k x"


def test_missing_sequencer_and_time() -> None:
    r = record()
    del r["eventTime"]
    e = decode_body(body(r)).events[0]
    assert e.sequencer is None and e.time is None and e.size is None and e.etag is None


@pytest.mark.parametrize("raw,why", [
    ("not json", "not JSON"), ("[1, 2]", "not a JSON object"), ('{"a": 1}', "no Records"),
    (json.dumps({"Records": [1]}), "not an object"), (json.dumps({"Records": [{"s3": {}}]}), "no eventName"),
    (json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}), "no s3.bucket"),
    (body(record(key="")), "no bucket name or object key"),
    (body(record(bucket="")), "no bucket name or object key"),
    (body(record(sequencer="zz")), "not a hexadecimal"), (body(record(sequencer=12)), "not a hexadecimal"),
])
def test_poison_messages_name_the_problem(raw: str, why: str) -> None:
    with pytest.raises(BadEventMessage, match=why):
        decode_body(raw)


@pytest.mark.parametrize("a,b,want", [
    ("0A", "0B", -1), ("0B", "0A", 1), ("0a", "0A", 0),
    ("0A", "0A00", 0),                   # right-padded with zeros: equal
    ("0A", "0A01", -1), ("1", "0FFFFFFF", 1),
    ("0055AED6DCD90281E5", "0055AED6DCD90281E6", -1),
    ("0055AED6DCD90281E5", "0055AED6DCD90281E5", 0),
    ("0062A1", "0062A0FF", 1),
])
def test_sequencer_order(a: str, b: str, want: int) -> None:
    assert compare_sequencers(a, b) == want
    assert compare_sequencers(b, a) == -want


def test_newer() -> None:
    assert newer("0B", "0A") is True and newer("0A", "0B") is False and newer("0A", "0A") is False
    assert newer(None, "0A") is None and newer("0A", None) is None
