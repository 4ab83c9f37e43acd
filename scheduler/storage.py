"""The storage port (a tiny Protocol) and its thin S3 adapter on aioboto3.

Retries: botocore "standard" mode covers 5xx/throttling/RequestTimeout on the request itself; errors while
reading a body (reset, truncation) are not covered, so ``read`` retries GET + full read as one unit and
never returns a short body (see RELIABILITY.md).

Timeouts (settings ``s3_connect_timeout_seconds``, ``s3_read_timeout_seconds``): the read timeout is an
inactivity timeout (aiohttp ``sock_read``: the longest wait for the next bytes, headers or body), so a slow
transfer that keeps making progress is never cut, while a stalled one fails as ``storage_timeout``; the scan
as a whole is bounded by ``scan_deadline_seconds`` (scheduler/runner.py).
"""
from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import aioboto3
    from botocore.config import Config

from recovery.errors import PitrError


class StorageError(PitrError):
    code = "storage_error"

    def __init__(self, code: str, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.key = key


class NotFound(StorageError):
    """A key listed a moment ago is gone (a race with retention), or never existed."""

    def __init__(self, key: str) -> None:
        super().__init__("not_found_race", f"object vanished or does not exist: {key}", key)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime
    etag: str = ""


@dataclass(frozen=True, slots=True)
class Listing:
    """One delimiter listing: objects directly under the prefix and sub-"directories"."""

    objects: tuple[ObjectInfo, ...]
    prefixes: tuple[str, ...]


class ObjectStore(Protocol):
    requests: int

    def list_keys(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectInfo]: ...
    async def list_dir(self, prefix: str) -> Listing: ...
    async def read(self, key: str) -> bytes: ...


_UNAVAILABLE = {"500", "502", "503", "504", "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
                "Throttling", "ThrottlingException", "RequestTimeTooSkewed"}


def classify_client_error(exc: Exception, bucket: str, key: str | None = None) -> StorageError:
    """Map botocore errors to clear storage error codes (never echoing credentials)."""
    # lazy: the port (ObjectStore, NotFound) is imported by the layout modules that `plan --json` uses
    from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError, SSLError
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "404") or (status == 404 and key):
            return NotFound(key or "")
        if code == "NoSuchBucket" or (status == 404 and not key):
            return StorageError("no_such_bucket", f"bucket {bucket!r} does not exist")
        if code == "RequestTimeTooSkewed":
            return StorageError("clock_skew", "S3 refused the request: this machine's clock is too far off (RequestTimeTooSkewed)")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return StorageError("access_denied", f"access denied to bucket {bucket!r} ({code})", key)
        if code in _UNAVAILABLE or (isinstance(status, int) and status >= 500):
            return StorageError("storage_unavailable", f"S3 unavailable ({code or status}) for bucket {bucket!r}", key)
        return StorageError("storage_error", f"S3 error {code or status} for bucket {bucket!r}", key)
    if isinstance(exc, SSLError) or _cert_error(exc):
        return StorageError("tls_error", "TLS verification of the S3 endpoint failed (set S3_CA_BUNDLE to the CA "
                            f"that signed its certificate): {_safe(exc)}", key)
    if isinstance(exc, (ReadTimeoutError, ConnectTimeoutError, asyncio.TimeoutError)):
        return StorageError("storage_timeout", f"S3 made no progress within the connect/read timeout "
                            f"({type(exc).__name__}){' reading ' + key if key else ''}", key)
    if isinstance(exc, (BotoCoreError, OSError)):
        name = type(exc).__name__
        return StorageError("storage_unavailable", f"S3 endpoint unreachable or failing ({name}): {_safe(exc)}", key)
    return StorageError("storage_error", f"{type(exc).__name__}: {_safe(exc)}", key)


def _cert_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# codes ``read`` retries as a unit (GET + whole body); anything else is final
_READ_RETRY = frozenset({"storage_unavailable", "storage_error", "storage_timeout", "truncated_body"})


def _safe(exc: BaseException) -> str:
    return str(exc).split("\n")[0][:300]


class S3Store:
    """ObjectStore over one bucket. Counts requests (``requests``) for tests and benchmarks."""

    def __init__(self, client: Any, bucket: str, *, read_attempts: int = 4, backoff_cap: float = 2.0) -> None:
        self._c = client
        self.bucket = bucket
        self.requests = 0
        self.retries = 0
        self._read_attempts = read_attempts
        self._backoff_cap = backoff_cap

    async def list_keys(self, prefix: str, start_after: str | None = None) -> AsyncIterator[ObjectInfo]:
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
        if start_after and start_after > prefix:
            kw["StartAfter"] = start_after
        token: str | None = None
        while True:
            if token:
                kw["ContinuationToken"] = token
            page = await self._call(self._c.list_objects_v2, **kw)
            for o in page.get("Contents", ()):
                yield ObjectInfo(o["Key"], int(o.get("Size", 0)), o["LastModified"], str(o.get("ETag", "")).strip('"'))
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token:
                return

    async def list_dir(self, prefix: str) -> Listing:
        objs: list[ObjectInfo] = []
        prefixes: list[str] = []
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "Delimiter": "/", "MaxKeys": 1000}
        while True:
            page = await self._call(self._c.list_objects_v2, **kw)
            objs += [ObjectInfo(o["Key"], int(o.get("Size", 0)), o["LastModified"], str(o.get("ETag", "")).strip('"'))
                     for o in page.get("Contents", ())]
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", ())]
            if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                return Listing(tuple(objs), tuple(prefixes))
            kw["ContinuationToken"] = page["NextContinuationToken"]

    async def read(self, key: str) -> bytes:
        """GET and read the whole body, retried as one unit; a short body is never returned."""
        last: StorageError | None = None
        for attempt in range(self._read_attempts):
            try:
                r = await self._call(self._c.get_object, Bucket=self.bucket, Key=key, _key=key)
                expected = r.get("ContentLength")
                async with r["Body"] as body:
                    data = await body.read()
                if expected is not None and len(data) != int(expected):
                    raise StorageError("truncated_body", f"short read of {key}: {len(data)} of {expected} bytes", key)
                return bytes(data)
            except NotFound:
                raise
            except StorageError as e:
                last = e
            except Exception as e:  # body read errors: aiohttp ClientPayloadError, ResponseStreamingError,
                last = classify_client_error(e, self.bucket, key)   # resets, a stalled body (read timeout)
            if last.code not in _READ_RETRY:     # access_denied, clock_skew, tls_error, no_such_bucket: final
                raise last
            self.retries += 1
            await asyncio.sleep(min(self._backoff_cap, 0.1 * 2 ** attempt) * random.uniform(0.5, 1.0))
        assert last is not None
        raise last

    async def head(self, key: str) -> ObjectInfo | None:
        """HEAD one key: its size, LastModified and ETag, or None when it does not exist (events: a removal
        without a sequencer is confirmed this way before it changes the catalog)."""
        try:
            r = await self._call(self._c.head_object, Bucket=self.bucket, Key=key, _key=key)
        except NotFound:
            return None
        return ObjectInfo(key, int(r.get("ContentLength", 0)), r["LastModified"], str(r.get("ETag", "")).strip('"'))

    async def _call(self, fn: Any, _key: str | None = None, **kw: Any) -> Any:
        self.requests += 1
        try:
            return await fn(**kw)
        except Exception as e:
            raise classify_client_error(e, self.bucket, _key) from None


def s3_config(*, max_attempts: int, connect_timeout: float, read_timeout: float) -> Config:
    from botocore.config import Config  # lazy: see classify_client_error
    # total_max_attempts counts the first request too (botocore's ``max_attempts`` would count retries only)
    # 64 connections: the event consumer reads up to 32 run ends at once beside scans and requests (botocore's
    # default of 10 would queue them)
    return Config(retries={"mode": "standard", "total_max_attempts": max_attempts},
                  connect_timeout=connect_timeout, read_timeout=read_timeout, max_pool_connections=64,
                  s3={"addressing_style": "path"}, signature_version="s3v4")


def make_session(access_key: str | None, secret_key: str | None, region: str) -> aioboto3.Session:
    import aioboto3  # lazy: see classify_client_error
    return aioboto3.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region)
