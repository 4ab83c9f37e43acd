"""Shared pieces of the layout readers: compression suffixes, decompression, key verdicts, errors.

Everything here is pure: bytes and strings in, values or domain errors out.  The S3 scanner
does the listing and GETs, then hands keys and payloads to the per-tool modules.
"""
from __future__ import annotations

import bz2
import lzma
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from recovery.errors import MetadataError, ParseError, PitrError
from recovery.model import Layout, WalKind, WalObject
from recovery.wal import WalSegment

# Compression suffixes each tool writes (or reads back) for WAL objects, without the dot.
ALLOWED: dict[Layout, frozenset[str]] = {
    # archive-get regex: (\.gz|\.lz4|\.zst|\.xz|\.bz2); xz is only reserved there.
    Layout.PGBACKREST: frozenset({"gz", "lz4", "zst", "xz", "bz2"}),
    # barman cloud ALLOWED_COMPRESSIONS
    Layout.BARMAN: frozenset({"gz", "bz2", "xz", "snappy", "zst", "lz4"}),
    # WAL-G writes lz4/lzma/zst/br, reads gz and lzo (WAL-E compatibility)
    Layout.WALG: frozenset({"lz4", "lzma", "zst", "br", "gz", "lzo"}),
    Layout.WALE: frozenset({"lzo"}),
}

SALTED_MAGIC = b"Salted__"          # OpenSSL enc header, pgBackRest repo-cipher-type=aes-256-cbc
LZOP_MAGIC = b"\x89LZO\x00\r\n\x1a\n"

_CODEC_ALIASES = {"gzip": "gz", "bzip2": "bz2", "lzma": "xz", "zstd": "zst", "brotli": "br"}


class LayoutError(PitrError):
    """The storage prefix does not hold a layout we can read."""

    code = "layout_error"


class UnknownLayout(LayoutError):
    code = "unknown_layout"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class DecompressError(ParseError):
    """A payload could not be decompressed with the codec its name announced."""

    code = "corrupt_data"

    def __init__(self, codec: str | None, message: str) -> None:
        super().__init__(f"{codec or 'uncompressed'} data: {message}")
        self.codec = codec


class Unsupported(DecompressError):
    """A codec we recognise but cannot decode in-process (lzo, snappy, brotli without its package)."""

    code = "unsupported_compression"


@dataclass(frozen=True, slots=True)
class MetaObject:
    """A known, non-WAL object: metadata, backup directory, payload or side file.

    ``kind`` is one of the ``KIND_*`` strings of the reader that made it; ``label`` names the
    backup it belongs to, when there is one.
    """

    key: str
    kind: str
    label: str | None = None


@dataclass(frozen=True, slots=True)
class ForeignObject:
    """A key that does not belong to the layout; ``reason`` says why (shown in scan reports)."""

    key: str
    reason: str


# the largest WAL segment PostgreSQL allows (--wal-segsize 1024): nothing an archive holds is larger
MAX_DECOMPRESSED = 1 << 30


def decompress(data: bytes, codec: str | None, *, max_size: int = MAX_DECOMPRESSED) -> bytes:
    """Decompress ``data`` written with ``codec`` (a key suffix such as ``gz``; None = plain): the one
    decompression of the product, used for every object it reads (segments, history files, checksums).

    Bounded: the decoder stops after ``max_size`` bytes of output (a corrupt or hostile object cannot
    exhaust memory); more is a :class:`DecompressError`, as is a truncated or corrupt stream.
    Concatenated gzip/bzip2/xz members are read as one stream, as the command-line tools do.

    >>> import gzip
    >>> decompress(gzip.compress(b"abc"), "gz")
    b'abc'
    >>> decompress(b"abc", None)
    b'abc'
    >>> decompress(gzip.compress(b"x" * 100), "gz", max_size=10)
    Traceback (most recent call last):
    ...
    scheduler.layouts.common.DecompressError: gz data: decompresses to more than 10 bytes
    """
    c = _CODEC_ALIASES.get(codec, codec) if codec else None
    try:
        if c is None:
            out = data
        elif c == "gz":
            if not data.startswith(b"\x1f\x8b"):
                raise DecompressError("gz", "no gzip magic")
            out = _members(lambda: zlib.decompressobj(31), data, max_size, "gz")
        elif c == "bz2":
            out = _members(bz2.BZ2Decompressor, data, max_size, "bz2")
        elif c == "xz":
            out = _members(lambda: lzma.LZMADecompressor(lzma.FORMAT_AUTO), data, max_size, "xz")  # .xz, .lzma
        elif c == "lz4":
            import lz4.frame
            out = _members(lz4.frame.LZ4FrameDecompressor, data, max_size, "lz4")
        elif c == "zst":
            out = _unzstd(data, max_size)
        elif c == "br":
            out = _unbrotli(data)
        elif c == "lzo":
            raise Unsupported(c, "lzop streams are not decoded in-process; the scanner runs lzop -d")
        elif c == "snappy":
            raise Unsupported(c, "snappy needs the python-snappy package, which is not installed")
        else:
            raise Unsupported(c, "unknown compression")
    except DecompressError:
        raise
    except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error, RuntimeError) as e:
        raise DecompressError(c, f"corrupt or truncated ({e})") from None
    except Exception as e:  # lz4/zstandard raise their own error classes
        if type(e).__module__.split(".")[0] in {"lz4", "zstandard", "_lz4", "brotli"}:
            raise DecompressError(c, f"corrupt or truncated ({e})") from None
        raise
    if len(out) > max_size:
        raise DecompressError(c, f"decompresses to more than {max_size} bytes")
    return out


CHUNK = 1 << 18


def decompress_chunks(data: bytes, codec: str | None, *, max_size: int = MAX_DECOMPRESSED,
                      chunk: int = CHUNK) -> Iterator[bytes | memoryview]:
    """:func:`decompress` as a stream of pieces of at most about ``chunk`` bytes (gz, bz2, xz, lz4; the other
    codecs in one piece), with the same bound and the same errors (raised when met): a reader that keeps
    only what it needs never holds the whole output.

    >>> import gzip
    >>> b"".join(decompress_chunks(gzip.compress(b"abc" * 1000) + gzip.compress(b"d"), "gz", chunk=100)) == b"abc" * 1000 + b"d"
    True
    >>> list(decompress_chunks(gzip.compress(b"x" * 100)[:-9], "gz"))
    Traceback (most recent call last):
    ...
    scheduler.layouts.common.DecompressError: gz data: truncated (the stream ends before its end marker)
    """
    c = _CODEC_ALIASES.get(codec, codec) if codec else None
    if c not in ("gz", "bz2", "xz", "lz4"):
        yield decompress(data, codec, max_size=max_size)
        return
    total = 0
    try:
        if c == "gz" and not data.startswith(b"\x1f\x8b"):
            raise DecompressError("gz", "no gzip magic")
        rest = data
        while True:
            if c == "gz":
                z = zlib.decompressobj(31)
                inp = rest
                while not z.eof:
                    out = z.decompress(inp, chunk)
                    inp = z.unconsumed_tail
                    if not out and not inp:
                        break
                    total += len(out)
                    if total > max_size:
                        raise DecompressError(c, f"decompresses to more than {max_size} bytes")
                    yield out
                done, rest = z.eof, z.unused_data
            else:
                d = _decoder(c)
                inp = rest
                while not d.eof:
                    out = d.decompress(inp, chunk)
                    inp = b""
                    if not out and d.needs_input:
                        break
                    total += len(out)
                    if total > max_size:
                        raise DecompressError(c, f"decompresses to more than {max_size} bytes")
                    yield out
                done, rest = d.eof, getattr(d, "unused_data", None) or b""
            if not done:
                raise DecompressError(c, "truncated (the stream ends before its end marker)")
            if not rest.strip(b"\x00"):      # trailing padding after the last member
                return
    except DecompressError:
        raise
    except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error, RuntimeError) as e:
        raise DecompressError(c, f"corrupt or truncated ({e})") from None
    except Exception as e:  # lz4 raises its own error classes
        if type(e).__module__.split(".")[0] in {"lz4", "_lz4"}:
            raise DecompressError(c, f"corrupt or truncated ({e})") from None
        raise


def _decoder(c: str) -> Any:
    if c == "bz2":
        return bz2.BZ2Decompressor()
    if c == "xz":
        return lzma.LZMADecompressor(lzma.FORMAT_AUTO)
    import lz4.frame
    return lz4.frame.LZ4FrameDecompressor()


def _members(new: Callable[[], Any], data: bytes, max_size: int, codec: str) -> bytes:
    """Decode member after member (``new()`` makes a decoder with ``decompress(data, max_length)``,
    ``eof`` and ``unused_data``), never more than ``max_size + 1`` bytes of output."""
    out = bytearray()
    rest = data
    while True:
        d = new()
        chunk = d.decompress(rest, max_size + 1 - len(out))
        out += chunk
        if len(out) > max_size:
            raise DecompressError(codec, f"decompresses to more than {max_size} bytes")
        if not d.eof:
            raise DecompressError(codec, "truncated (the stream ends before its end marker)")
        rest = getattr(d, "unused_data", None) or b""
        if not rest.strip(b"\x00"):      # trailing padding after the last member
            return bytes(out)


def _unzstd(data: bytes, max_size: int) -> bytes:
    import zstandard
    # the stream reader bounds the output; it does not tell a truncated frame from a complete one, which a
    # decompressobj does (eof) once the output is known to be within the bound. The decompressobj copes
    # with frames that omit the content size.
    with zstandard.ZstdDecompressor().stream_reader(data) as r:
        out = r.read(max_size + 1)
    if len(out) > max_size:
        raise DecompressError("zst", f"decompresses to more than {max_size} bytes")
    d = zstandard.ZstdDecompressor().decompressobj()
    d.decompress(data)
    if not d.eof:
        raise DecompressError("zst", "truncated (no end of frame)")
    return bytes(out)


def _unbrotli(data: bytes) -> bytes:
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError:
        raise Unsupported("br", "brotli needs the 'brotli' package, which is not installed") from None
    return bytes(brotli.decompress(data))


def is_encrypted(data: bytes) -> bool:
    """pgBackRest ciphered files (info files included) start with OpenSSL's ``Salted__``.

    >>> is_encrypted(b"Salted__\\x01\\x02"), is_encrypted(b"[backrest]\\n")
    (True, False)
    """
    return data[:8] == SALTED_MAGIC


def decode_text(data: bytes, source: str) -> str:
    """Metadata bytes to text: refuse encrypted and non-UTF-8 content with a MetadataError."""
    if is_encrypted(data):
        raise MetadataError(source, "encrypted (OpenSSL 'Salted__' header); repository cipher is not supported",
                            code="encrypted")
    if data[:9] == LZOP_MAGIC or data[:2] == b"\x1f\x8b":
        raise MetadataError(source, "compressed data where plain text was expected", code="format_error")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MetadataError(source, f"not UTF-8 text (byte {e.start})", code="format_error") from None


def utc_from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


# --- WAL file names shared by barman, WAL-G and WAL-E (pgBackRest adds a hash) -----------------

WAL_NAME_RE = re.compile(
    r"^(?P<tli>[0-9A-F]{8})(?:"
    r"(?P<rest>[0-9A-F]{16})(?:\.(?P<off>[0-9A-F]{8})\.backup|(?P<partial>\.partial))?"
    r"|(?P<history>\.history))$"
)


def wal_object(name: str, seg_size: int, compression: str | None = None,
               checksum: str | None = None) -> WalObject | None:
    """Classify a bare PostgreSQL archive file name (segment, partial, backup label, history).

    None when it is not one (lower-case hex, timeline 0, segment number out of range for seg_size).

    >>> wal_object("000000010000000000000003.000000D8.backup", 16 << 20).segno
    3
    >>> wal_object("00000002.history", 16 << 20).kind
    <WalKind.HISTORY: 'history'>
    >>> wal_object("0000000100000000000000ff", 16 << 20) is None
    True
    """
    m = WAL_NAME_RE.match(name)
    if not m:
        return None
    tli = int(m.group("tli"), 16)
    if tli == 0:
        return None
    if m.group("history"):
        return WalObject(WalKind.HISTORY, name, tli, None, compression, checksum)
    seg_name = name[:24]
    try:
        seg = WalSegment.from_name(seg_name, seg_size)
    except ParseError:
        return None
    if m.group("off"):
        if int(m.group("off"), 16) >= seg_size:
            return None
        kind = WalKind.BACKUP_LABEL
    elif m.group("partial"):
        kind = WalKind.PARTIAL
    else:
        kind = WalKind.SEGMENT
    return WalObject(kind, name, tli, seg.segno, compression, checksum)


def split_suffix(filename: str, allowed: frozenset[str]) -> tuple[str, str | None]:
    """Strip exactly one allowed compression suffix: ``("X.gz")`` -> ``("X", "gz")``.

    >>> split_suffix("000000010000000000000001.gz", ALLOWED[Layout.BARMAN])
    ('000000010000000000000001', 'gz')
    >>> split_suffix("00000002.history", ALLOWED[Layout.BARMAN])
    ('00000002.history', None)
    """
    base, dot, ext = filename.rpartition(".")
    if dot and base and ext in allowed:
        return base, ext
    return filename, None


def unsafe_key_reason(rel: str) -> str | None:
    """Reason a relative key must never be interpreted (path tricks, empty parts), else None."""
    if not rel:
        return "empty key"
    if rel.startswith("/") or "\\" in rel:
        return "absolute path or backslash in key"
    parts = rel.split("/")
    if any(p in {".", ".."} for p in parts):
        return "'.' or '..' path component"
    if any(p == "" for p in parts[:-1]):
        return "empty path component"
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in rel):
        return "control character in key"
    return None


SENTINEL_SUFFIX = "_backup_stop_sentinel.json"
KIND_SENTINEL = "sentinel"
KIND_BACKUP_DIR = "backup_dir"


def split_basebackup_key(rel: str, name_re: re.Pattern[str], backup_name: Callable[[str], str],
                         names: str) -> MetaObject | ForeignObject | tuple[str, list[str]]:
    """The part of classifying a ``basebackups_005/`` key that WAL-G and WAL-E share.

    Returns the sentinel or backup-directory MetaObject, a ForeignObject, or ``(label, tail)`` for the
    layout to classify what lies inside a backup directory. ``names`` describes the name form in messages.
    """
    bad = unsafe_key_reason(rel)
    if bad:
        return ForeignObject(rel, bad)
    parts = rel.split("/")
    if len(parts) == 1:
        if rel.endswith(SENTINEL_SUFFIX) and name_re.match(backup_name(rel)):
            return MetaObject(rel, KIND_SENTINEL, backup_name(rel))
        return ForeignObject(rel, f"not a {names}{SENTINEL_SUFFIX}")
    label, tail = parts[0], parts[1:]
    if not name_re.match(label):
        return ForeignObject(rel, f"not under a {names} backup directory")
    if tail == [""]:
        return MetaObject(rel, KIND_BACKUP_DIR, label)
    return label, tail
