"""Exact window ends: decode commit timestamps from the WAL segments at the end of each run."""
from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterable, Sequence

from catalog.scanresult import ScanIssue
from recovery.errors import ParseError, PitrError
from recovery.model import WalRun, WindowEdge
from recovery.walreader import read_xact_records
from scheduler.layouts.common import decompress
from scheduler.storage import NotFound, ObjectStore
from scheduler.walscan import RunTail

log = logging.getLogger(__name__)
_CODECS = ("gz", "bz2", "xz", "lz4", "zst", "br", "lzma", "lzo")


def codec_of(key: str) -> str | None:
    base = key.rsplit("/", 1)[-1]
    ext = base.rsplit(".", 1)[-1] if "." in base else None
    return ext if ext in _CODECS else None


async def _lzop(data: bytes) -> bytes:
    if not shutil.which("lzop"):
        raise ParseError("lzop is not installed: cannot read WAL-E .lzo segments")
    proc = await asyncio.create_subprocess_exec("lzop", "-dc", stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(data)
    if proc.returncode != 0:
        raise ParseError(f"lzop failed: {err.decode(errors='replace').strip()}")
    return out


async def read_segment(store: ObjectStore, key: str) -> bytes:
    data = await store.read(key)
    codec = codec_of(key)
    if codec == "lzo":
        return await _lzop(data)
    return decompress(data, codec)


async def decode_edges(store: ObjectStore, tails: Sequence[RunTail], runs: Iterable[WalRun],
                       previous: Iterable[WindowEdge], seg_size: int, issues: list[ScanIssue]) -> tuple[WindowEdge, ...]:
    """WindowEdges for the last segment of every run; reuses known ones, decodes new ones."""
    prev = {(e.timeline, e.segno): e for e in previous}
    by_end = {(t.timeline, t.last): t for t in tails}
    out: list[WindowEdge] = []
    for r in runs:
        k = (r.timeline, r.last)
        if k in prev:
            # the run still ends at the same segment: its content, and so its last commit, is unchanged
            out.append(prev[k])
            continue
        tail = by_end.get(k)
        if tail is None:
            continue
        out.append(await _decode_tail(store, tail, seg_size, issues))
    return tuple(out)


async def _decode_tail(store: ObjectStore, tail: RunTail, seg_size: int, issues: list[ScanIssue]) -> WindowEdge:
    """Walk back from the run's last segment (up to the few keys kept) to the last commit/abort record."""
    for segno, key, _lm in reversed(tail.recent):
        try:
            raw = await read_segment(store, key)
            scan = read_xact_records(raw, seg_size=seg_size, expected_segno=segno)
        except NotFound:
            issues.append(ScanIssue("not_found_race", key, "segment vanished before its commit times were read"))
            break
        except (PitrError, ValueError) as e:
            issues.append(ScanIssue("wal_decode_error", key, f"cannot read commit records: {e}"))
            break
        if scan.records:
            last = scan.records[-1]
            return WindowEdge(tail.timeline, tail.last, last.xact_time, last.lsn, True)
    return WindowEdge(tail.timeline, tail.last, tail.last_modified, None, False)
