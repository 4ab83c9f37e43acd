"""Time to text: the one place a datetime becomes a string. Pure, no clock (callers pass ``now``).

One function per format that some reader pins, each named after that format:

- :func:`iso` — the documents' times (DESIGN.md), refusals and warnings: ISO 8601 in UTC with ``Z``,
  microseconds only when there are some. The form to use for anything new.
- :func:`iso_offset` — Python's ``isoformat`` in UTC (``+00:00``): the windows stored in the catalog, a
  restore's ``reached.last_commit_time``, some catalog messages and the sandbox's truth files carry it
  (docs/undo.md and docs/clones.md show it).
- :func:`iso_micro` — Go's ``time.Time`` with six fraction digits and ``Z``, as WAL-G writes its sentinels
  (the sandbox and the bench write archives in that form).
- :func:`conf_time` — a PostgreSQL ``recovery_target_time`` (and pgBackRest ``--target``) value.
- :func:`short_time` — a person's glance at a table cell or a page: to the minute.

Parsing stays beside what it parses (:func:`recovery.target.parse_time`, the layouts' ``parse_time``).
Not here: the coverage chart's tick labels (``formats.report``, a strftime pattern chosen by the axis span)
and cf-undo's cells (the client imports nothing of the service; it reshapes the documents' strings).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import overload


@overload
def iso(t: datetime) -> str: ...
@overload
def iso(t: None) -> None: ...
@overload
def iso(t: datetime | None) -> str | None: ...
def iso(t: datetime | None) -> str | None:
    """ISO 8601 in UTC with ``Z``; ``None`` stays ``None`` (JSON ``null``).

    >>> from datetime import timedelta
    >>> iso(datetime(2016, 9, 28, 12, 0, tzinfo=timezone(timedelta(hours=2))))
    '2016-09-28T10:00:00Z'
    >>> iso(datetime(2026, 1, 1, 12, 0, 37, 990332, tzinfo=timezone.utc)), iso(None)
    ('2026-01-01T12:00:37.990332Z', None)
    """
    if t is None:
        return None
    t = t.astimezone(timezone.utc)
    if t.year < 1000:   # isoformat pads the year; keep strftime's form for those
        return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{t.microsecond:06d}" if t.microsecond else "") + "Z"
    return t.isoformat()[:-6] + "Z"    # ...[.ffffff]+00:00 -> ...[.ffffff]Z (the fast path)


@overload
def iso_offset(t: datetime, *, micro: bool = False) -> str: ...
@overload
def iso_offset(t: None, *, micro: bool = False) -> None: ...
@overload
def iso_offset(t: datetime | None, *, micro: bool = False) -> str | None: ...
def iso_offset(t: datetime | None, *, micro: bool = False) -> str | None:
    """ISO 8601 in UTC with ``+00:00``; microseconds when there are some, or always with ``micro``.

    >>> iso_offset(datetime(2026, 12, 7, 12, 35, 54, 390695, tzinfo=timezone.utc))
    '2026-12-07T12:35:54.390695+00:00'
    >>> iso_offset(datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc), micro=True), iso_offset(None)
    ('2026-01-01T12:00:00.000000+00:00', None)
    """
    if t is None:
        return None
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds" if micro else "auto")


def iso_micro(t: datetime) -> str:
    """ISO 8601 in UTC, always six fraction digits, ``Z`` (WAL-G's ``StartTime``/``FinishTime``).

    >>> iso_micro(datetime(2026, 1, 1, 12, 0, 2, tzinfo=timezone.utc))
    '2026-01-01T12:00:02.000000Z'
    """
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def conf_time(t: datetime) -> str:
    """A timestamptz PostgreSQL and pgBackRest read unambiguously (``recovery_target_time``, ``--target``).

    >>> conf_time(datetime(2016, 9, 28, 10, 0, tzinfo=timezone.utc))
    '2016-09-28 10:00:00.000000+00'
    """
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f") + "+00"


def short_time(t: datetime) -> str:
    """To the minute, in UTC, for a person (the full value goes in a tooltip or ``--json``).

    >>> short_time(datetime(2026, 3, 10, 11, 58, 41, tzinfo=timezone.utc))
    '2026-03-10 11:58Z'
    """
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M") + "Z"
