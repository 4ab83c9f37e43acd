from __future__ import annotations

import bz2
import gzip
import lzma

import lz4.frame
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from recovery.errors import MetadataError, ParseError
from recovery.model import WalKind
from scheduler.layouts.common import (
    DecompressError,
    ForeignObject,
    MetaObject,
    Unsupported,
    decode_text,
    decompress,
    decompress_chunks,
    is_encrypted,
    split_suffix,
    unsafe_key_reason,
    wal_object,
)

SEG = 16 * 1024 * 1024
PAYLOAD = b"\x10\xd1\x06\x00" + bytes(range(256)) * 40

COMPRESSORS = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    "lz4": lz4.frame.compress,
    "zst": lambda d: zstandard.ZstdCompressor().compress(d),
}


@pytest.mark.parametrize("codec", sorted(COMPRESSORS))
def test_decompress_round_trip(codec: str) -> None:
    assert decompress(COMPRESSORS[codec](PAYLOAD), codec) == PAYLOAD


def test_decompress_zstd_stream_without_content_size() -> None:
    chunks = zstandard.ZstdCompressor().compressobj()
    data = chunks.compress(PAYLOAD) + chunks.flush()
    assert zstandard.get_frame_parameters(data).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert decompress(data, "zst") == PAYLOAD


@pytest.mark.parametrize("codec", sorted(COMPRESSORS))
def test_decompress_corrupt_is_domain_error(codec: str) -> None:
    good = COMPRESSORS[codec](PAYLOAD)
    for bad in (good[: len(good) // 2], b"garbage" * 10):
        with pytest.raises(DecompressError) as e:
            decompress(bad, codec)
        assert isinstance(e.value, ParseError)
        assert e.value.code == "corrupt_data"


@pytest.mark.parametrize("codec", ["lzo", "snappy", "br", "weird"])
def test_decompress_unsupported(codec: str) -> None:
    with pytest.raises(Unsupported) as e:
        decompress(b"\x89LZO\x00\r\n\x1a\n", codec)
    assert e.value.code == "unsupported_compression"
    assert isinstance(e.value, ParseError)


def test_decompress_plain_and_max_size() -> None:
    assert decompress(b"abc", None) == b"abc"
    with pytest.raises(DecompressError, match="more than 100 bytes"):
        decompress(gzip.compress(PAYLOAD), "gz", max_size=100)
    with pytest.raises(DecompressError, match="more than 100 bytes"):
        decompress(COMPRESSORS["zst"](PAYLOAD), "zst", max_size=100)


@pytest.mark.parametrize("codec", sorted(COMPRESSORS))
def test_decompress_is_bounded_while_decoding(codec: str) -> None:
    """A bomb (64 MiB of zeros, a few KiB compressed) is stopped at the bound, not decoded and then
    measured: the decoder never holds much more than the bound."""
    import tracemalloc
    bomb = COMPRESSORS[codec](bytes(64 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(DecompressError, match="more than 1048576 bytes"):
            decompress(bomb, codec, max_size=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"{codec}: {peak} bytes held while decoding"


@pytest.mark.parametrize("codec", ["gz", "bz2", "xz", "lz4"])
def test_decompress_reads_concatenated_members(codec: str) -> None:
    pack = COMPRESSORS[codec]
    assert decompress(pack(b"ab") + pack(b"cd"), codec) == b"abcd"


def test_is_encrypted_and_decode_text() -> None:
    assert is_encrypted(b"Salted__\x00\x01")
    assert not is_encrypted(b"[backrest]\n")
    assert not is_encrypted(b"Salted_")
    with pytest.raises(MetadataError) as e:
        decode_text(b"Salted__\x00\x01", "repo/backup.info")
    assert e.value.code == "encrypted" and "repo/backup.info" in str(e.value)
    with pytest.raises(MetadataError) as e:
        decode_text(b"\xff\xfe\x00", "x")
    assert e.value.code == "format_error"
    with pytest.raises(MetadataError):
        decode_text(gzip.compress(b"x"), "x")
    assert decode_text("ä=1\n".encode(), "x") == "ä=1\n"


@pytest.mark.parametrize("rel, reason", [
    ("", "empty key"),
    ("/abs", "absolute"),
    ("a/../b", "'..'"),
    ("./a", "'.'"),
    ("a//b", "empty path component"),
    ("a\\b", "backslash"),
    ("a\nb", "control character"),
])
def test_unsafe_keys(rel: str, reason: str) -> None:
    r = unsafe_key_reason(rel)
    assert r is not None and reason in r


def test_safe_key() -> None:
    assert unsafe_key_reason("0000000100000000/000000010000000000000001.gz") is None


@pytest.mark.parametrize("name, kind, segno", [
    ("000000010000000000000001", WalKind.SEGMENT, 1),
    ("0000000100000001000000FF", WalKind.SEGMENT, 511),
    ("000000010000000000000003.partial", WalKind.PARTIAL, 3),
    ("000000010000000000000003.000000D8.backup", WalKind.BACKUP_LABEL, 3),
    ("0000000A.history", WalKind.HISTORY, None),
])
def test_wal_object(name: str, kind: WalKind, segno: int | None) -> None:
    w = wal_object(name, SEG)
    assert w is not None and w.kind is kind and w.segno == segno and w.name == name


@pytest.mark.parametrize("name, seg_size", [
    ("00000001000000000000000a", SEG),              # lower case
    ("000000000000000000000001", SEG),              # timeline 0
    ("000000010000000000000100", SEG),              # seg >= 256 at 16 MiB
    ("000000010000000000000040", 64 * 1024 * 1024),  # seg >= 64 at 64 MiB
    ("000000010000000000000003.01000000.backup", SEG),  # offset beyond the segment
    ("00000001.History", SEG),
    ("0000001.history", SEG),
    ("000000010000000000000001.partial.partial", SEG),
])
def test_wal_object_rejects(name: str, seg_size: int) -> None:
    assert wal_object(name, seg_size) is None


def test_split_suffix_strips_one() -> None:
    allowed = frozenset({"gz"})
    assert split_suffix("x.gz.gz", allowed) == ("x.gz", "gz")
    assert split_suffix(".gz", allowed) == (".gz", None)


def test_value_types_are_frozen() -> None:
    m = MetaObject("k", "kind", None)
    f = ForeignObject("k", "why")
    with pytest.raises(AttributeError):
        m.kind = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        f.reason = "x"  # type: ignore[misc]


@given(st.binary(max_size=2000), st.sampled_from(sorted(COMPRESSORS)))
def test_decompress_round_trip_property(data: bytes, codec: str) -> None:
    assert decompress(COMPRESSORS[codec](data), codec) == data


@given(st.binary(max_size=200), st.sampled_from(sorted(COMPRESSORS)))
def test_decompress_never_raises_foreign_errors(data: bytes, codec: str) -> None:
    try:
        decompress(data, codec)
    except DecompressError:
        pass


def _chunked(data: bytes, codec: str, **kw: int) -> bytes | str:
    try:
        return b"".join(bytes(c) for c in decompress_chunks(data, codec, **kw))
    except DecompressError as e:
        return f"error: {e}"


def _whole(data: bytes, codec: str, **kw: int) -> bytes | str:
    try:
        return decompress(data, codec, **kw)
    except DecompressError as e:
        return f"error: {e}"


@pytest.mark.parametrize("codec", sorted(COMPRESSORS))
def test_decompress_chunks_is_decompress_in_pieces(codec: str) -> None:
    good = COMPRESSORS[codec](PAYLOAD)
    for data in (good, good + COMPRESSORS[codec](b"tail"), good[: len(good) // 2], b"garbage" * 10, good + b"\0" * 7):
        assert _chunked(data, codec, chunk=1000) == _whole(data, codec), (codec, len(data))
    assert _chunked(good, codec, max_size=100).startswith("error:")    # type: ignore[union-attr]
    assert all(len(c) <= 1000 for c in decompress_chunks(good, codec, chunk=1000)) or codec == "zst"


@pytest.mark.parametrize("codec", ["gz", "bz2", "xz", "lz4"])
def test_decompress_chunks_holds_one_piece_at_a_time(codec: str) -> None:
    import tracemalloc
    data = COMPRESSORS[codec](bytes(32 << 20))
    tracemalloc.start()
    try:
        n = sum(len(c) for c in decompress_chunks(data, codec))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 32 << 20 and peak < 12 << 20, f"{codec}: {peak} bytes held while decoding"   # xz: its 8 MiB dictionary


@given(st.binary(max_size=300), st.sampled_from(sorted(COMPRESSORS)))
def test_decompress_chunks_agrees_with_decompress(data: bytes, codec: str) -> None:
    packed = COMPRESSORS[codec](data)
    for d in (data, packed, packed[: len(packed) // 2]):
        assert _chunked(d, codec, chunk=64) == _whole(d, codec)
