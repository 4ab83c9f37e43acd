"""The queue adapter: SQS long polling with aioboto3 (receive up to 10, delete in batches), thin.

Errors become :class:`QueueError` with a code (``queue_unreachable``, ``queue_access_denied``,
``no_such_queue``, ``queue_error``) and never echo credentials.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from recovery.errors import PitrError

MAX_BATCH = 10          # SQS: at most 10 messages per ReceiveMessage and per DeleteMessageBatch


class QueueError(PitrError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    receipt: str
    body: str
    receive_count: int            # ApproximateReceiveCount (1 on first delivery)
    sent_at: datetime | None      # SentTimestamp


def endpoint_for(queue_url: str) -> str | None:
    """The SQS endpoint a queue URL implies: None for AWS (the region's own), else scheme://host[:port].

    >>> endpoint_for("https://sqs.eu-west-1.amazonaws.com/123456789012/q") is None
    True
    >>> endpoint_for("http://127.0.0.1:5000/123456789012/q")
    'http://127.0.0.1:5000'
    """
    u = urlsplit(queue_url)
    if not u.scheme or not u.netloc:
        raise QueueError("bad_queue_url", f"not a queue URL: {queue_url!r}")
    if u.hostname and u.hostname.endswith(".amazonaws.com"):
        return None
    return f"{u.scheme}://{u.netloc}"


def region_for(queue_url: str, default: str) -> str:
    """``sqs.<region>.amazonaws.com`` names the region; other endpoints take the configured one."""
    host = urlsplit(queue_url).hostname or ""
    parts = host.split(".")
    if host.endswith(".amazonaws.com") and len(parts) >= 4 and parts[0] == "sqs":
        return parts[1]
    return default


def _error(e: Exception, url: str) -> QueueError:
    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        if "NonExistentQueue" in code or code == "QueueDoesNotExist":
            return QueueError("no_such_queue", f"queue {url} does not exist")
        if code in ("AccessDenied", "AccessDeniedException", "InvalidClientTokenId", "SignatureDoesNotMatch"):
            return QueueError("queue_access_denied", f"access denied to queue {url} ({code})")
        return QueueError("queue_error", f"SQS error {code} on {url}")
    if isinstance(e, (BotoCoreError, OSError, asyncio.TimeoutError)):
        return QueueError("queue_unreachable", f"queue {url} unreachable ({type(e).__name__})")
    return QueueError("queue_error", f"{type(e).__name__} on {url}")


class SqsQueue:
    """One queue over an aioboto3 SQS client."""

    def __init__(self, client: Any, url: str) -> None:
        self._c = client
        self.url = url

    async def receive(self, *, wait_seconds: int = 20, max_messages: int = MAX_BATCH,
                      visibility_timeout: int | None = None) -> list[Message]:
        kw: dict[str, Any] = {"QueueUrl": self.url, "MaxNumberOfMessages": max(1, min(MAX_BATCH, max_messages)),
                              "WaitTimeSeconds": wait_seconds,
                              "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"]}
        if visibility_timeout is not None:
            kw["VisibilityTimeout"] = visibility_timeout
        try:
            r = await self._c.receive_message(**kw)
        except Exception as e:
            raise _error(e, self.url) from None
        out = []
        for m in r.get("Messages", ()):
            attrs = m.get("Attributes", {})
            sent = attrs.get("SentTimestamp")
            out.append(Message(m["MessageId"], m["ReceiptHandle"], m.get("Body", ""),
                               int(attrs.get("ApproximateReceiveCount", 1)),
                               datetime.fromtimestamp(int(sent) / 1000, timezone.utc) if sent else None))
        return out

    async def delete(self, receipts: list[str]) -> int:
        """Delete messages (batches of 10); returns how many SQS confirmed."""
        done = 0
        for i in range(0, len(receipts), MAX_BATCH):
            chunk = receipts[i:i + MAX_BATCH]
            try:
                r = await self._c.delete_message_batch(
                    QueueUrl=self.url, Entries=[{"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(chunk)])
            except Exception as e:
                raise _error(e, self.url) from None
            done += len(r.get("Successful", ()))
        return done

    async def attributes(self, *names: str) -> dict[str, str]:
        try:
            r = await self._c.get_queue_attributes(QueueUrl=self.url, AttributeNames=list(names) or ["All"])
        except Exception as e:
            raise _error(e, self.url) from None
        return dict(r.get("Attributes", {}))


__all__ = ["MAX_BATCH", "Message", "QueueError", "SqsQueue", "endpoint_for", "region_for"]
