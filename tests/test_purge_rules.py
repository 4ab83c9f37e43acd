"""The pure purge rules (backup_catalog.usecases.purge_rules): undo period, grace, exact prefixes, overlap, hold, reuse."""
from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from backup_catalog.usecases.purge_rules import (
    Location,
    Policy,
    State,
    Unsafe,
    batches,
    claimed_prefixes,
    decide,
    deletion_prefixes,
    overlaps,
    reused,
    root,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
P = Policy(30, 24)


def loc(guid: str = "a", *, bucket: str = "b", prefix: str = "repo", layout: str | None = "pgbackrest",
        stanza: str | None = "main", deleted: datetime | None = T0, **kw: object) -> Location:
    return Location(guid, bucket, prefix, layout, stanza, deleted, **kw)  # type: ignore[arg-type]


def test_policy_times_and_name() -> None:
    assert P.undo_until(T0) == T0 + timedelta(days=30)
    assert P.delete_after(T0) == T0 + timedelta(days=30, hours=24)
    assert Policy(0, 0).delete_after(T0) == T0
    assert Policy(0.5, 1.5).name == "DELETED_RETENTION_DAYS=0.5 PURGE_GRACE_HOURS=1.5"
    with pytest.raises(ValueError):
        Policy(-1, 0)
    with pytest.raises(ValueError):
        Policy(0, float("nan"))


@pytest.mark.parametrize(("layout", "stanza", "expected"), [
    ("pgbackrest", "main", ("repo/archive/main/", "repo/backup/main/")),
    ("barman", "main", ("repo/main/",)),
    ("walg", None, ("repo/basebackups_005/", "repo/wal_005/")),
    ("wale", "ignored", ("repo/basebackups_005/", "repo/wal_005/")),
])
def test_exact_prefixes_per_layout(layout: str, stanza: str | None, expected: tuple[str, ...]) -> None:
    for prefix in ("repo", "/repo", "repo/", "/repo/"):
        assert deletion_prefixes(loc(prefix=prefix, layout=layout, stanza=stanza)) == expected


def test_prefixes_never_reach_beyond_the_stanza_or_server() -> None:
    for layout, stanza in itertools.product(["pgbackrest", "barman"], [None, "", "a/b", ".", "..", " main"]):
        with pytest.raises(Unsafe):
            deletion_prefixes(loc(layout=layout, stanza=stanza))
    for layout in (None, "auto", "unknown"):
        with pytest.raises(Unsafe, match="layout unknown"):
            deletion_prefixes(loc(layout=layout))
    # an unknown instance claims its whole root; a known one only its exact prefixes
    assert claimed_prefixes(loc(layout=None)) == ("repo/",)
    assert claimed_prefixes(loc(stanza=None)) == ("repo/",)
    assert claimed_prefixes(loc(prefix="")) == ("archive/main/", "backup/main/")
    assert root("") == "" and root("/") == ""


def test_overlap_is_containment_in_either_direction_never_a_shared_string_start() -> None:
    assert overlaps("x/", "x/") and overlaps("x/a/", "x/") and overlaps("x/", "x/a/")
    assert overlaps("", "anything/")
    assert not overlaps("walg/", "walg-2/") and not overlaps("repo/archive/main/", "repo/archive/main2/")


def test_not_due_live_undo_period_purged() -> None:
    assert decide(loc(deleted=None), [], P, T0 + timedelta(days=99)) is None
    assert decide(loc(), [], P, T0 + timedelta(days=30) - timedelta(microseconds=1)) is None
    assert decide(loc(purged_at=T0 + timedelta(days=31)), [], P, T0 + timedelta(days=99)) is None


def test_grace_then_due() -> None:
    d = decide(loc(), [], P, T0 + timedelta(days=30))
    assert d is not None and d.state is State.GRACE and "grace period until 2026-02-01T00:00:00Z" in (d.reason or "")
    d = decide(loc(), [], P, T0 + timedelta(days=31))
    assert d is not None and d.state is State.DUE and d.reason is None
    assert d.undo_until == T0 + timedelta(days=30) and d.delete_after == T0 + timedelta(days=31)
    assert d.prefixes == ("repo/archive/main/", "repo/backup/main/")


def test_a_started_purge_is_resumed_whatever_the_policy_says_now() -> None:
    d = decide(loc(purge_started=True), [], P, T0 + timedelta(days=1))
    assert d is not None and d.state is State.DUE


def test_hold_exempts_with_its_reason() -> None:
    d = decide(loc(hold_at=T0, hold_reason="legal"), [], P, T0 + timedelta(days=99))
    assert d is not None and d.state is State.REFUSED
    assert d.reason == "operator hold since 2026-01-01T00:00:00Z: legal"


NOW = T0 + timedelta(days=99)


@pytest.mark.parametrize(("other", "blocks", "label"), [
    (loc("o", stanza="main", deleted=None), True, "live"),                       # same stanza, live
    (loc("o", stanza="other", deleted=None), False, ""),                         # sibling stanza
    (loc("o", layout=None, stanza=None, deleted=None), True, "live"),            # unscanned: whole root
    (loc("o", prefix="", layout="walg", deleted=None), False, ""),               # other dirs of the bucket
    (loc("o", prefix="", layout=None, deleted=None), True, "live"),              # the whole bucket
    (loc("o", prefix="repo/archive/main/x", layout=None, deleted=None), True, "live"),   # nested inside
    (loc("o", bucket="b2", deleted=None), False, ""),                            # another bucket
    (loc("o", deleted=NOW - timedelta(days=1)), True, "in its undo period"),
    (loc("o", deleted=NOW - timedelta(days=30, hours=1)), True, "in its grace period"),
    (loc("o", deleted=T0, hold_at=T0), True, "held"),
    (loc("o", deleted=T0), False, ""),                                          # past its own grace: no promise
    (loc("o", deleted=T0, purged_at=T0 + timedelta(days=40)), False, ""),        # already gone
    (loc("o", prefix="repo2", deleted=None), False, ""),
])
def test_shared_prefixes_refuse(other: Location, blocks: bool, label: str) -> None:
    d = decide(loc(), [loc(), other], P, NOW)
    assert d is not None
    if blocks:
        assert d.state is State.REFUSED and "instance o" in (d.reason or "") and f"({label})" in (d.reason or "")
    else:
        assert d.state is State.DUE, d.reason


def test_deleted_walg_does_not_touch_a_live_pgbackrest_stanza_in_the_same_root_but_a_live_walg_blocks() -> None:
    me = loc(layout="walg", stanza=None)
    assert decide(me, [me, loc("o", deleted=None)], P, NOW).state is State.DUE  # type: ignore[union-attr]
    assert decide(me, [me, loc("o", layout="wale", deleted=None)], P, NOW).state is State.REFUSED  # type: ignore[union-attr]


def test_unknown_layout_is_refused_not_guessed() -> None:
    d = decide(loc(layout=None), [], P, NOW)
    assert d is not None and d.state is State.REFUSED and "layout unknown" in (d.reason or "")


def test_reuse_means_an_object_written_after_the_deletion() -> None:
    assert reused([], T0) is None
    assert reused([("a", T0), ("b", T0 - timedelta(days=3))], T0) is None
    why = reused([("a", T0), ("new1", T0 + timedelta(seconds=1)), ("new2", T0 + timedelta(hours=2))], T0)
    assert why is not None and "2 object(s)" in why and "newest new2 at 2026-01-01T02:00:00Z" in why


def test_batches_are_at_most_1000() -> None:
    keys = [str(i) for i in range(2001)]
    assert [len(b) for b in batches(keys)] == [1000, 1000, 1]
    assert [len(b) for b in batches(keys, 5000)] == [1000, 1000, 1]
    assert [len(b) for b in batches(keys[:7], 3)] == [3, 3, 1]
    assert batches([], 10) == [] and [len(b) for b in batches(keys[:2], 0)] == [1, 1]
    assert list(itertools.chain.from_iterable(batches(keys, 7))) == keys


def test_exhaustive_small_worlds_never_delete_what_another_instance_claims() -> None:
    """Every pair of instances over a few roots/layouts/states: DUE only when no claim overlaps."""
    roots = ["", "r", "r/archive/s", "r2"]
    kinds = [("pgbackrest", "s"), ("pgbackrest", "t"), ("barman", "s"), ("walg", None), (None, None)]
    states = [None, NOW - timedelta(days=1), T0]
    for (r1, (l1, s1)), (r2, (l2, s2), d2) in itertools.product(
            itertools.product(roots, kinds), itertools.product(roots, kinds, states)):
        me, other = loc("m", prefix=r1, layout=l1, stanza=s1), loc("o", prefix=r2, layout=l2, stanza=s2, deleted=d2)
        d = decide(me, [me, other], P, NOW)
        assert d is not None
        if l1 is None:
            assert d.state is State.REFUSED
            continue
        protected = d2 is None or d2 > NOW - timedelta(days=31)
        clash = protected and any(overlaps(a, b) for a in deletion_prefixes(me) for b in claimed_prefixes(other))
        assert (d.state is State.DUE) == (not clash), (me, other, d)


@pytest.mark.parametrize("bad", [{"deleted_retention_days": -1}, {"purge_grace_hours": float("nan")},
                                 {"purge_batch_size": 1001}, {"purge_batch_size": 0}, {"purge_interval_seconds": -5}])
def test_settings_refuse_nonsense_policies(bad: dict[str, object]) -> None:
    from pydantic import ValidationError

    from backup_catalog.settings import Settings
    with pytest.raises(ValidationError):
        Settings(**bad)  # type: ignore[arg-type]
    assert Settings(deleted_retention_days=0, purge_grace_hours=0).purge_batch_size == 1000
