"""Which tool wrote a prefix, from the names a delimiter listing returns directly under it.

- pgBackRest: ``archive/`` and/or ``backup/``.
- WAL-G / WAL-E: ``basebackups_005/`` and/or ``wal_005/``; the two share the layout, so
  :func:`guess_walg_or_wale` decides from WAL key suffixes and a sentinel.
- barman-cloud: only ``<server>/`` directories, each holding ``base/`` and/or ``wals/``
  (confirm with :func:`detect_barman_servers`).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from recovery.model import Layout
from scheduler.layouts import wale, walg
from scheduler.layouts.common import ALLOWED, UnknownLayout

PGBACKREST_MARKERS = frozenset({"archive/", "backup/"})
WALG_MARKERS = frozenset({"basebackups_005/", "wal_005/"})
BARMAN_SERVER_MARKERS = frozenset({"base/", "wals/"})


def detect_layout(entries: set[str] | frozenset[str]) -> Layout | None:
    """The layout a top-level listing shows.

    Returns ``Layout.PGBACKREST``; ``Layout.BARMAN`` when the prefix holds only directories
    (server candidates: confirm with :func:`detect_barman_servers`); None for the WAL-G/WAL-E
    family (call :func:`guess_walg_or_wale`).

    :raises UnknownLayout: empty prefix (code ``empty_prefix``), markers of several tools
        (``ambiguous_layout``), a barman *server* directory given as the prefix, or nothing known.

    >>> detect_layout({"archive/", "backup/"})
    <Layout.PGBACKREST: 'pgbackrest'>
    >>> detect_layout({"basebackups_005/", "wal_005/"}) is None
    True
    >>> detect_layout({"main/", "replica/"})
    <Layout.BARMAN: 'barman'>
    """
    if not entries:
        raise UnknownLayout("the prefix is empty: nothing archived yet, or a wrong bucket/prefix",
                            code="empty_prefix")
    dirs = {e for e in entries if e.endswith("/")}
    pgbr = dirs & PGBACKREST_MARKERS
    walg = dirs & WALG_MARKERS
    if pgbr and walg:
        raise UnknownLayout(f"the prefix holds both pgBackRest ({', '.join(sorted(pgbr))}) and WAL-G/WAL-E "
                            f"({', '.join(sorted(walg))}) directories; set the layout explicitly",
                            code="ambiguous_layout")
    if pgbr:
        return Layout.PGBACKREST
    if walg:
        return None
    if dirs and dirs <= BARMAN_SERVER_MARKERS:
        raise UnknownLayout("the prefix is a barman-cloud server directory (base/, wals/): configure its "
                            "parent as the prefix and the server name as the stanza", code="barman_server_prefix")
    if dirs:
        return Layout.BARMAN
    raise UnknownLayout(f"no known layout under the prefix (found {', '.join(sorted(entries)[:5])})")


def detect_barman_servers(listings: Mapping[str, Iterable[str]]) -> tuple[str, ...]:
    """barman-cloud server names: directories whose own listing has ``base/`` or ``wals/``.

    ``listings`` maps each top-level directory (``"main/"``) to the names listed under it.

    >>> detect_barman_servers({"main/": {"base/", "wals/"}, "junk/": {"x"}})
    ('main',)
    """
    servers = tuple(sorted(d.rstrip("/") for d, names in listings.items()
                           if BARMAN_SERVER_MARKERS & set(names)))
    if not servers:
        raise UnknownLayout("no barman-cloud server (a directory holding base/ or wals/) under the prefix")
    return servers


def guess_walg_or_wale(sample_wal_keys: Iterable[str], sentinel_json: bytes | None = None,
                       sentinel_names: Iterable[str] = ()) -> Layout:
    """WAL-G or WAL-E, from a few ``wal_005/`` names, one sentinel's bytes and sentinel names.

    Evidence, strongest first: sentinel fields (WAL-G ``LSN``/``FinishLSN``; WAL-E
    ``wal_segment_backup_stop``); sentinel names (WAL-E ``base_<seg>_<8 digits>``); WAL suffixes
    (WAL-E writes only ``.lzo``, WAL-G never writes lzo).

    >>> guess_walg_or_wale(["wal_005/000000010000000000000001.lzo"])
    <Layout.WALE: 'wale'>
    >>> guess_walg_or_wale([], b'{"LSN": 33554472, "FinishLSN": 33554688}')
    <Layout.WALG: 'walg'>
    """
    if sentinel_json is not None:
        try:
            obj = json.loads(sentinel_json)
        except (ValueError, UnicodeDecodeError):
            obj = None
        if isinstance(obj, dict):
            if "wal_segment_backup_stop" in obj:
                return Layout.WALE
            if "LSN" in obj or "FinishLSN" in obj:
                return Layout.WALG
    for name in sentinel_names:
        base = name.rsplit("/", 1)[-1]
        if wale.NAME_RE.match(wale.backup_name(base)):
            return Layout.WALE
        if walg.NAME_RE.match(walg.backup_name(base)):
            return Layout.WALG
    exts = set()
    for k in sample_wal_keys:
        base, dot, ext = k.rsplit("/", 1)[-1].rpartition(".")
        exts.add(ext if dot and base else "")
    walg_only = (ALLOWED[Layout.WALG] - {"lzo", "gz"}) | {"", "history", "backup", "partial"}
    if exts & walg_only:   # an uncompressed name, or a WAL-G-only codec: WAL-E always writes .lzo
        return Layout.WALG
    if exts == {"lzo"}:
        return Layout.WALE
    raise UnknownLayout("cannot tell WAL-G from WAL-E: no sentinel and no telling WAL suffix; "
                        "set the layout explicitly", code="ambiguous_layout")
