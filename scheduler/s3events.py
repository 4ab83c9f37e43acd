"""S3 event notifications as values: decoding an SQS message body into event records, and the per-key
order of two events (``sequencer``). Pure: text in, frozen dataclasses out.

What arrives (AWS "Event message structure"; MinIO and Ceph RGW send the same shape):

- ``{"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "...", "s3": {"bucket": {"name": ...},
  "object": {"key": ..., "size": ..., "eTag": ..., "sequencer": ...}}}]}``. Keys are URL-encoded with ``+``
  for spaces (``quote_plus``); MinIO prefixes event names with ``s3:``; moto sends no ``sequencer``;
- ``{"Service": "Amazon S3", "Event": "s3:TestEvent", ...}``, sent when a notification configuration is
  saved: nothing to do;
- the same bodies wrapped by SNS (``{"Type": "Notification", "Message": "<body>"}``) when a topic fans out
  to the queue.

Sequencers order events *of one key* only: "The sequencers can be of different lengths. So, to compare
these values, first right pad the shorter value with zeros, and then do a lexicographical comparison"
(AWS, notification-content-structure; older copies of that page said "left pad"). Hex digits are compared
case-insensitively.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from urllib.parse import unquote_plus

from recovery.errors import ParseError


class BadEventMessage(ParseError):
    """An SQS message that is not an S3 event notification (a poison message: left for the DLQ)."""

    code = "bad_event_message"


class Action(StrEnum):
    CREATED = "created"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class S3Event:
    """One object event: which key of which bucket was created or removed, when, and in which per-key order."""

    bucket: str
    key: str                       # URL-decoded
    action: Action
    name: str                      # e.g. ObjectCreated:Put (without the "s3:" MinIO adds)
    time: datetime | None          # eventTime (when the store finished the request)
    sequencer: str | None          # None: the store sends none (moto; some RGW versions)
    size: int | None = None
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one message body holds: object events, and whether it was a configuration test event. Records of
    other kinds (restore, tagging, lifecycle transitions...) are counted in ``other``."""

    events: tuple[S3Event, ...] = ()
    test_event: bool = False
    other: int = 0


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def _record(rec: object, n: int) -> S3Event | None:
    if not isinstance(rec, dict):
        raise BadEventMessage(f"Records[{n}] is not an object")
    name = rec.get("eventName")
    if not isinstance(name, str):
        raise BadEventMessage(f"Records[{n}] has no eventName")
    name = name.removeprefix("s3:")
    if name.startswith("ObjectCreated:"):
        action = Action.CREATED
    elif name.startswith("ObjectRemoved:"):
        action = Action.REMOVED
    else:
        return None                   # restore, tagging, ACL, replication, lifecycle transition: not ours
    s3 = rec.get("s3")
    bucket = s3.get("bucket") if isinstance(s3, dict) else None
    obj = s3.get("object") if isinstance(s3, dict) else None
    if not isinstance(bucket, dict) or not isinstance(obj, dict):
        raise BadEventMessage(f"Records[{n}] ({name}) has no s3.bucket / s3.object")
    bname, key = bucket.get("name"), obj.get("key")
    if not isinstance(bname, str) or not bname or not isinstance(key, str) or not key:
        raise BadEventMessage(f"Records[{n}] ({name}) has no bucket name or object key")
    seq = obj.get("sequencer")
    if seq is not None and (not isinstance(seq, str) or not seq or not is_hex(seq)):
        raise BadEventMessage(f"Records[{n}] ({name}): sequencer {seq!r} is not a hexadecimal string")
    size = obj.get("size")
    etag = obj.get("eTag")
    return S3Event(bucket=bname, key=unquote_plus(key), action=action, name=name, time=_time(rec.get("eventTime")),
                   sequencer=seq.upper() if isinstance(seq, str) else None,
                   size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                   etag=etag.strip('"') if isinstance(etag, str) and etag else None)


def decode_body(body: str) -> Decoded:
    """Decode one SQS message body.

    >>> d = decode_body('{"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "2026-01-01T00:00:00.000Z",'
    ...                 ' "s3": {"bucket": {"name": "b"}, "object": {"key": "a+b%2Fc", "sequencer": "0a"}}}]}')
    >>> d.events[0].key, d.events[0].action.value, d.events[0].sequencer
    ('a b/c', 'created', '0A')
    >>> decode_body('{"Service": "Amazon S3", "Event": "s3:TestEvent"}').test_event
    True

    :raises BadEventMessage: not JSON, or not an S3 event notification.
    """
    try:
        doc = json.loads(body)
    except (ValueError, TypeError) as e:
        raise BadEventMessage(f"message body is not JSON: {e}") from None
    if isinstance(doc, dict) and doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        return decode_body(doc["Message"])          # delivered through an SNS topic
    if not isinstance(doc, dict):
        raise BadEventMessage("message body is not a JSON object")
    if doc.get("Event") == "s3:TestEvent":
        return Decoded(test_event=True)
    records = doc.get("Records")
    if not isinstance(records, list):
        raise BadEventMessage("message body has no Records list (not an S3 event notification)")
    events: list[S3Event] = []
    other = 0
    for n, rec in enumerate(records):
        ev = _record(rec, n)
        if ev is None:
            other += 1
        else:
            events.append(ev)
    return Decoded(tuple(events), False, other)


_HEX = frozenset("0123456789abcdefABCDEF")


def is_hex(s: str) -> bool:
    return bool(s) and all(ch in _HEX for ch in s)


def compare_sequencers(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b`` (same key only).

    >>> compare_sequencers("0055AED6DCD90281E5", "0055AED6DCD90281E6")
    -1
    >>> compare_sequencers("0A", "0A00")     # right-padded: equal
    0
    >>> compare_sequencers("1", "0FFF")
    1
    """
    n = max(len(a), len(b))
    pa, pb = a.upper().ljust(n, "0"), b.upper().ljust(n, "0")
    return (pa > pb) - (pa < pb)


def newer(candidate: str | None, applied: str | None) -> bool | None:
    """Is ``candidate`` newer than the newest applied sequencer of its key? None: cannot tell (either missing).

    >>> newer("0B", "0A"), newer("0A", "0A"), newer(None, "0A"), newer("0A", None)
    (True, False, None, None)
    """
    if candidate is None or applied is None:
        return None
    return compare_sequencers(candidate, applied) > 0


__all__ = ["Action", "BadEventMessage", "Decoded", "S3Event", "compare_sequencers", "decode_body", "is_hex",
           "newer"]
