from __future__ import annotations

import json
from pathlib import Path

import pytest

from recovery.model import Layout
from scheduler.layouts.common import LayoutError, UnknownLayout
from scheduler.layouts.detect import detect_barman_servers, detect_layout, guess_walg_or_wale

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("entries, layout", [
    ({"archive/", "backup/"}, Layout.PGBACKREST),
    ({"archive/"}, Layout.PGBACKREST),                 # stanza created, no backup yet
    ({"backup/"}, Layout.PGBACKREST),
    ({"basebackups_005/", "wal_005/"}, None),           # WAL-G or WAL-E: guess_walg_or_wale
    ({"wal_005/"}, None),
    ({"main/"}, Layout.BARMAN),                        # confirm with detect_barman_servers
    ({"main/", "replica/", "README.txt"}, Layout.BARMAN),
])
def test_detect_layout(entries: set[str], layout: Layout | None) -> None:
    assert detect_layout(entries) == layout


@pytest.mark.parametrize("entries, code", [
    (set(), "empty_prefix"),
    ({"archive/", "wal_005/"}, "ambiguous_layout"),
    ({"base/", "wals/"}, "barman_server_prefix"),
    ({"README.txt"}, "unknown_layout"),
])
def test_detect_layout_errors(entries: set[str], code: str) -> None:
    with pytest.raises(UnknownLayout) as e:
        detect_layout(entries)
    assert e.value.code == code and str(e.value)
    assert isinstance(e.value, LayoutError)


def test_detect_barman_servers() -> None:
    listings = {"main/": {"base/", "wals/"}, "walsonly/": {"wals/"}, "other/": {"something/"}}
    assert detect_barman_servers(listings) == ("main", "walsonly")
    with pytest.raises(UnknownLayout):
        detect_barman_servers({"other/": {"x"}})


def test_guess_from_sentinels() -> None:
    wale_sentinel = (DATA / "wale" / "base_000000010000000000000003_00000216_backup_stop_sentinel.json").read_bytes()
    walg_sentinel = (DATA / "walg" / "base_000000430000030600000060_backup_stop_sentinel.json").read_bytes()
    assert guess_walg_or_wale([], wale_sentinel) is Layout.WALE
    assert guess_walg_or_wale(["000000010000000000000001.lzo"], walg_sentinel) is Layout.WALG
    assert guess_walg_or_wale([], b"garbage", ["base_000000010000000000000003_00000216_backup_stop_sentinel.json"]) \
        is Layout.WALE
    assert guess_walg_or_wale([], None, ["basebackups_005/base_000000010000000000000003_backup_stop_sentinel.json"]) \
        is Layout.WALG


@pytest.mark.parametrize("keys, layout", [
    (["wal_005/000000010000000000000001.lzo", "wal_005/00000002.history.lzo"], Layout.WALE),
    (["000000010000000000000001.lz4"], Layout.WALG),
    (["000000010000000000000001.br", "000000010000000000000002.lzo"], Layout.WALG),
    (["000000010000000000000001"], Layout.WALG),
    (["000000010000000000000001."], Layout.WALG),
])
def test_guess_from_wal_suffixes(keys: list[str], layout: Layout) -> None:
    assert guess_walg_or_wale(keys) is layout


@pytest.mark.parametrize("keys", [[], ["000000010000000000000001.gz"]])
def test_guess_undecidable(keys: list[str]) -> None:
    with pytest.raises(UnknownLayout) as e:
        guess_walg_or_wale(keys, json.dumps({"foo": 1}).encode())
    assert e.value.code == "ambiguous_layout"
