"""The only code that deletes from S3: a thin DeleteObjects adapter, built on the purge's own client.

The scanner and the API read through :class:`scheduler.storage.S3Store`, which has no delete operation and
is built from the read-only credentials; this class is built only by the purge use case from
``PURGE_AWS_*`` (:func:`scheduler.clients.purge_s3_client`).
"""
from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

from scheduler.storage import ObjectInfo, S3Store, StorageError, classify_client_error

_RETRY = frozenset({"storage_unavailable", "storage_error", "storage_timeout"})


class S3Deleter:
    """Lists and deletes keys in one bucket. ``requests``/``retries`` count calls for tests and logs."""

    def __init__(self, client: Any, bucket: str, *, attempts: int = 5, backoff_cap: float = 2.0) -> None:
        self._c = client
        self.bucket = bucket
        self._reader = S3Store(client, bucket)
        self._attempts = max(1, attempts)
        self._backoff_cap = backoff_cap
        self.retries = 0

    @property
    def requests(self) -> int:
        return self._reader.requests

    async def list_all(self, prefix: str) -> list[ObjectInfo]:
        return [o async for o in self._reader.list_keys(prefix)]

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete up to 1,000 keys with one DeleteObjects, retrying the request and any per-key errors.
        A key that is already gone counts as deleted (S3 semantics), so a resumed batch is harmless.
        :raises StorageError: still failing after the attempts (code ``delete_failed`` for per-key errors).
        """
        if len(keys) > 1000:
            raise ValueError("DeleteObjects takes at most 1,000 keys")
        todo = list(keys)
        last: StorageError | None = None
        for attempt in range(self._attempts):
            if attempt:
                self.retries += 1
                await asyncio.sleep(min(self._backoff_cap, 0.1 * 2 ** attempt) * random.uniform(0.5, 1.0))
            self._reader.requests += 1
            try:
                resp = await self._c.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in todo], "Quiet": True})
            except Exception as e:
                last = classify_client_error(e, self.bucket)
                if last.code not in _RETRY:
                    raise last from None
                continue
            errors = resp.get("Errors") or []
            if not errors:
                return
            todo = [str(e["Key"]) for e in errors]
            first = errors[0]
            code = "access_denied" if first.get("Code") == "AccessDenied" else "delete_failed"
            last = StorageError(code, f"S3 refused to delete {len(todo)} key(s) in bucket {self.bucket!r}, e.g. "
                                      f"{first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".rstrip(),
                                first.get("Key"))
            if code == "access_denied":
                raise last
        assert last is not None
        raise last
