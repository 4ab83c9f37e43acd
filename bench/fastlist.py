"""An S3-like ListObjectsV2 for the benchmark's in-process moto: O(page), not O(bucket).

moto 5 answers every ListObjectsV2 page by walking and sorting the **whole bucket** (FIELD-NOTES: 0.4 s a
page at 50,000 keys), so a listing is quadratic in bucket size and moto, not the client, dominates every
wall-clock figure. Real S3 serves a page in time independent of the bucket's size. This patch keeps a
sorted name index per bucket (rebuilt when the key count changes) and answers with the same semantics as
moto's own method (prefix, delimiter, StartAfter, continuation tokens, MaxKeys); versioned buckets and
anything unusual fall back to moto. ``--stock-moto`` disables it.

It also writes the ListObjectsV2 response's XML itself. moto 5.2.6's generic serializer (``moto.core.serialize``,
driven by botocore's service model) costs about 0.4 ms of CPU per key listed: 10 pages of 1,000 keys took 4.0 s
of CPU against 0.25 s with this XML, and in ``make bench`` a bare 50,000-key listing took 29-41 s where the
README's runs of 2026-11-25 took 9.5 s (2026-12-07, load 3-12). It is the same document, byte for byte but
the continuation tokens (tests/test_bench_smoke.py compares both, raw and as botocore parses them).
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any
from xml.sax.saxutils import escape

from moto.s3 import models as m
from moto.s3 import responses as r

_ORIG = m.S3Backend.list_objects_v2
_OWN_SERIALIZED = "serialized" in r.S3Response.__dict__
_ORIG_SERIALIZED = r.S3Response.serialized


def _names(bucket: Any) -> list[str]:
    keys = bucket.keys
    cached = getattr(bucket, "_bench_names", None)
    if cached is None or getattr(bucket, "_bench_len", -1) != len(keys):
        cached = sorted(keys.keys())
        bucket._bench_names, bucket._bench_len = cached, len(keys)
    return cached


def _after(s: str) -> str:
    """The smallest string greater than every string starting with ``s``."""
    return s[:-1] + chr(ord(s[-1]) + 1)


def list_objects_v2(self: Any, bucket: Any, prefix: str | None, delimiter: str | None,
                    continuation_token: str | None, start_after: str | None, max_keys: int) -> Any:
    if type(bucket) is not m.FakeBucket or getattr(bucket, "is_versioned", False):
        return _ORIG(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys)
    if max_keys == 0:
        return [], False, None
    names = _names(bucket)
    prefix = prefix or ""
    limit = self._pagination_tokens.get(continuation_token) if continuation_token else start_after
    i = bisect_left(names, prefix)
    if limit:
        i = max(i, bisect_right(names, limit))
    out: list[Any] = []
    n = len(names)
    while i < n and len(out) <= max_keys:
        name = names[i]
        if not name.startswith(prefix):
            break
        if delimiter:
            j = name.find(delimiter, len(prefix))
            if j >= 0:
                folder = name[: j + len(delimiter)]
                if not limit or folder > limit:
                    out.append(folder)
                i = bisect_left(names, _after(folder), i + 1)
                continue
        key = bucket.keys.get(name)
        if key is not None and not isinstance(key, m.FakeDeleteMarker):
            out.append(key)
        i += 1
    return self._truncate_result(out, max_keys)


def _tag(name: str, value: Any) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = escape(str(value))
    return f"<{name}>{text}</{name}>" if text else f"<{name}/>"


def _contents(c: dict[str, Any]) -> str:
    return ("<Contents>" + _tag("Key", c["Key"]) + _tag("LastModified", c["LastModified"]) + _tag("ETag", c["ETag"])
            + "".join(_tag("ChecksumAlgorithm", a) for a in c.get("ChecksumAlgorithm", ()))
            + _tag("Size", c["Size"]) + _tag("StorageClass", c["StorageClass"])
            + ("<Owner>" + _tag("DisplayName", c["Owner"]["DisplayName"]) + _tag("ID", c["Owner"]["ID"]) + "</Owner>"
               if "Owner" in c else "") + "</Contents>")


def list_xml(result: dict[str, Any]) -> str:
    """The ListBucketResult document of moto's ListObjectsV2 ``result``, as its serializer writes it (members in
    the service model's order)."""
    out = ['<?xml version="1.0" encoding="utf-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">']
    for name in ("IsTruncated", "Contents", "Name", "Prefix", "Delimiter", "MaxKeys", "CommonPrefixes", "EncodingType",
                 "KeyCount", "ContinuationToken", "NextContinuationToken", "StartAfter"):
        if name == "Contents":
            out += [_contents(c) for c in result.get(name, ())]
        elif name == "CommonPrefixes":
            out += ["<CommonPrefixes>" + _tag("Prefix", f["Prefix"]) + "</CommonPrefixes>" for f in result.get(name, ())]
        elif name in result:
            out.append(_tag(name, result[name]))
    out.append("</ListBucketResult>")
    return "".join(out)


def serialized(self: Any, action_result: Any) -> Any:
    result = action_result.result
    if self.data.get("Action") != "ListObjectsV2" or not isinstance(result, dict):
        return _ORIG_SERIALIZED(self, action_result)
    return 200, {"Content-Type": "application/xml", **self.response_headers, "status": 200}, list_xml(result)


def install() -> None:
    m.S3Backend.list_objects_v2 = list_objects_v2  # type: ignore[method-assign]
    r.S3Response.serialized = serialized  # type: ignore[method-assign]


def uninstall() -> None:
    m.S3Backend.list_objects_v2 = _ORIG  # type: ignore[method-assign]
    if _OWN_SERIALIZED:
        r.S3Response.serialized = _ORIG_SERIALIZED  # type: ignore[method-assign]
    elif "serialized" in r.S3Response.__dict__:
        del r.S3Response.serialized
