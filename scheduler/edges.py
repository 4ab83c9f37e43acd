"""Exact window ends: decode commit timestamps from the WAL segments at the end of each run.

Every segment read here is also checked against its name (``recovery.walreader.segment_problem``, and for
pgBackRest the SHA-1 in the key): a segment proven not to be the one its name says is recorded as
corrupt, and the walk goes on backwards for the last commit *before* it, so that the window ends there.
LastModified stands in for a commit time only where no commit could be read, never past a bad segment.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from catalog.scanresult import ScanIssue, WalConflict
from recovery.errors import PitrError
from recovery.model import Layout, WalRun, WindowEdge
from recovery.walreader import BadWal, PrefixTooShort, XactRecord, read_xact_records, segment_problem
from scheduler.layouts import spec_of
from scheduler.layouts.common import DecompressError, Unsupported, decompress, decompress_chunks
from scheduler.storage import NotFound, ObjectStore
from scheduler.walscan import RunTail

log = logging.getLogger(__name__)
_CODECS = ("gz", "bz2", "xz", "lz4", "zst", "br", "lzma", "lzo")

Recent = Sequence[tuple[int, str, datetime | None]]   # (segno, key, LastModified), oldest first


def codec_of(key: str) -> str | None:
    base = key.rsplit("/", 1)[-1]
    ext = base.rsplit(".", 1)[-1] if "." in base else None
    return ext if ext in _CODECS else None


async def _lzop(data: bytes) -> bytes:
    if not shutil.which("lzop"):
        raise Unsupported("lzo", "lzop is not installed: cannot read WAL-E .lzo segments")
    proc = await asyncio.create_subprocess_exec("lzop", "-dc", stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(data)
    if proc.returncode != 0:
        raise DecompressError("lzo", f"lzop failed: {err.decode(errors='replace').strip()}")
    return out


async def read_segment(store: ObjectStore, key: str) -> bytes:
    data = await store.read(key)
    codec = codec_of(key)
    if codec == "lzo":
        return await _lzop(data)
    return decompress(data, codec)


@dataclass(frozen=True, slots=True)
class SegmentChecks:
    """What a segment is checked against besides its name: the layout (pgBackRest keys carry the SHA-1
    of the content) and the archive's system identifiers (empty: not checked)."""

    layout: Layout | None = None
    system_ids: frozenset[int] = frozenset()


@dataclass(slots=True)
class EdgeFindings:
    """Edges and corrupt segments found while decoding (the scan stores both)."""

    edges: list[WindowEdge] = field(default_factory=list)
    corrupt: list[WalConflict] = field(default_factory=list)


async def _read_checked(store: ObjectStore, key: str, tli: int, segno: int, seg_size: int,
                        checks: SegmentChecks) -> tuple[tuple[XactRecord, ...], str | None]:
    """The segment's commit records, or the proof that it is not segment ``segno`` of timeline ``tli``.

    Decoded off the event loop (decompression and SHA-1 release the GIL), keeping only the beginning of
    the segment that the WAL reader can reach (:func:`segment_prefix`).

    :raises NotFound: gone since the listing. :raises ParseError: it cannot be read here (no lzop, an
        unsupported codec), which proves nothing about the segment.
    """
    data = await store.read(key)
    codec = codec_of(key)
    if codec == "lzo":
        data, codec = await _lzop(data), None
    want = spec_of(checks.layout).content_sha1(key) if checks.layout is not None else None
    return await asyncio.to_thread(_decode_checked, data, codec, want, tli, segno, seg_size, checks.system_ids)


def _decode_checked(data: bytes, codec: str | None, want_sha1: str | None, tli: int, segno: int, seg_size: int,
                    system_ids: frozenset[int]) -> tuple[tuple[XactRecord, ...], str | None]:
    sha = hashlib.sha1(usedforsecurity=False) if want_sha1 is not None else None
    try:
        prefix, total = segment_prefix(decompress_chunks(data, codec), sha)
    except Unsupported:
        raise
    except DecompressError as e:
        return (), f"cannot be decompressed: {e}"
    try:
        try:
            scan = read_xact_records(prefix, seg_size=seg_size, expected_segno=segno, total_len=total)
        except PrefixTooShort:     # a zero page inside a record's data: read the whole file
            scan = read_xact_records(decompress(data, codec), seg_size=seg_size, expected_segno=segno)
    except BadWal as e:
        return (), e.message
    why = segment_problem(scan, timeline=tli, system_ids=system_ids)
    if why is None and sha is not None:      # e.g. pgBackRest names a segment by its SHA-1
        got = sha.hexdigest()
        if got != want_sha1:
            why = f"content SHA-1 {got} does not match the {want_sha1} in its name"
    return scan.records, why


def segment_prefix(chunks: Iterable[bytes | memoryview], sha: Any = None) -> tuple[bytearray, int]:
    """The beginning of a decompressed segment that the WAL reader can reach, and the file's length.

    The reader checks the header of every page it enters, and a page of zeros has none: nothing after the
    first page-aligned page of zeros is kept (a segment archived by a switch or ``archive_timeout`` is
    mostly zeros). Without one, everything is kept. ``sha``: fed every byte (the whole file).

    >>> page = bytes(range(256)) * 32
    >>> hdr = bytes(36) + (8192).to_bytes(4, "little")
    >>> p, n = segment_prefix([hdr + page[40:], page, bytes(8192), page, page])
    >>> len(p), n
    (24576, 40960)
    >>> len(segment_prefix([hdr + page[40:], page])[0])
    16384
    """
    kept = bytearray()
    total = 0
    blcksz = 0
    nxt = 0                  # the next page to look at
    done = False
    for c in chunks:
        if sha is not None:
            sha.update(c)
        total += len(c)
        if done:
            continue
        kept += c
        if not blcksz:
            if len(kept) < 40:
                continue
            blcksz = int.from_bytes(kept[36:40], "little")
            if blcksz not in (1024, 2048, 4096, 8192, 16384, 32768, 65536):
                blcksz, done = 0, True          # not a WAL segment: the reader says so from the beginning
                continue
            nxt = blcksz
            zero = bytes(blcksz)
        while nxt + blcksz <= len(kept):
            if kept[nxt:nxt + blcksz] == zero:
                del kept[nxt + blcksz:]
                done = True
                break
            nxt += blcksz
    return kept, total


async def decode_edges(store: ObjectStore, tails: Sequence[RunTail], runs: Iterable[WalRun],
                       previous: Iterable[WindowEdge], seg_size: int, issues: list[ScanIssue], *,
                       checks: SegmentChecks | None = None,
                       recheck: dict[tuple[int, int], Recent] | None = None,
                       blocked: dict[tuple[int, int], Recent] | None = None) -> EdgeFindings:
    """WindowEdges for the last segment of every run (reusing known ones, decoding new ones), and the
    corrupt segments met on the way.

    ``recheck``: known corrupt segments listed by this scan, with the keys up to them: each is read again
    (still bad: recorded again with the last commit before it; repaired: forgotten by a full scan).
    ``blocked``: segments replay cannot pass (conflicting copies), with the keys up to them: windows end
    before them, so the last commit before each is read.
    """
    checks = checks or SegmentChecks()
    prev = {(e.timeline, e.segno): e for e in previous}
    by_end = {(t.timeline, t.last): t for t in tails}
    found = EdgeFindings()
    for r in runs:
        k = (r.timeline, r.last)
        if k in prev:
            # the run still ends at the same segment: its content, and so its last commit, is unchanged
            found.edges.append(prev[k])
            continue
        tail = by_end.get(k)
        if tail is None:
            continue
        await _walk_back(store, tail.timeline, list(tail.recent), tail.last, seg_size, issues, checks, found)
    seen = {(c.timeline, c.segno) for c in found.corrupt}
    for (tli, segno), recent in sorted((recheck or {}).items()):
        if (tli, segno) not in seen and recent and recent[-1][0] == segno:
            await _walk_back(store, tli, list(recent), None, seg_size, issues, checks, found)
    have = {(e.timeline, e.segno) for e in found.edges}
    for (tli, segno), recent in sorted((blocked or {}).items()):
        before = [x for x in recent if x[0] < segno]
        if before and before[-1][0] == segno - 1 and (tli, segno - 1) not in have:
            await _walk_back(store, tli, before, segno - 1, seg_size, issues, checks, found)
    return found


async def _walk_back(store: ObjectStore, tli: int, recent: list[tuple[int, str, datetime | None]], end: int | None,
                     seg_size: int, issues: list[ScanIssue], checks: SegmentChecks, found: EdgeFindings) -> None:
    """Walk back from the newest of ``recent`` to the last commit/abort record.

    ``end``: the run's last segment, whose edge is wanted (None: only the segment before each corrupt one
    met). A corrupt segment c asks for the edge at c - 1: the last commit read before it, or an unknown
    time when none is within reach (never a LastModified, which could lie past the bad segment's content).
    """
    end_edge: WindowEdge | None = None
    pending: list[int] = []          # corrupt segments still waiting for the last commit before them
    for segno, key, _lm in reversed(recent):
        if (end is None or end_edge is not None) and not pending and segno != recent[-1][0]:
            break
        try:
            records, why = await _read_checked(store, key, tli, segno, seg_size, checks)
        except NotFound:
            issues.append(ScanIssue("not_found_race", key, "segment vanished before its commit times were read"))
            break
        except (PitrError, ValueError) as e:
            issues.append(ScanIssue("wal_decode_error", key, f"cannot read commit records: {e}"))
            break
        if why is not None:
            found.corrupt.append(WalConflict(tli, segno, why))
            issues.append(ScanIssue("wal_corrupt", key, f"not the WAL segment its name says: {why}; "
                                    "recovery cannot replay past it"))
            log.warning("corrupt WAL segment %s: %s", key, why)
            if end is not None and end_edge is None:
                # no commit read after it. At the run's end itself: no window ends there (replay stops
                # before it). Later: the segments after it hold no commit; the last one may be inside the
                # bad segment, so the end is only bounded by the run end's LastModified
                lm = next((m for n, _k, m in recent if n == end), None)
                end_edge = WindowEdge(tli, end, None if end == segno else lm, None, False)
            pending = [p for p in pending if p != segno + 1] + [segno]
            continue
        if records:
            last = records[-1]
            if end is not None and end_edge is None:
                end_edge = WindowEdge(tli, end, last.xact_time, last.lsn, True)
            for c in pending:
                if c - 1 >= 0:
                    found.edges.append(WindowEdge(tli, c - 1, last.xact_time, last.lsn, True))
            pending = []
    for c in pending:
        if c - 1 >= 0:
            found.edges.append(WindowEdge(tli, c - 1, None, None, False))
    if end is not None:
        if end_edge is None:
            lm = next((lm for n, _k, lm in recent if n == end), None)
            end_edge = WindowEdge(tli, end, lm, None, False)
        found.edges.append(end_edge)


__all__ = ["EdgeFindings", "SegmentChecks", "codec_of", "decode_edges", "read_segment", "segment_prefix"]
