"""The end users' rules (backup_catalog.usecases.access), exhaustively: every (need, view, admin) combination,
the claims checks, the key refetch and cache rules."""
from __future__ import annotations

import itertools

import pytest

from backup_catalog.usecases.access import (
    ADMIN_SCOPE,
    REQUIRED_SCOPE,
    InvalidToken,
    Need,
    SpaceView,
    UserClaims,
    Verdict,
    can_undo,
    check_claims,
    decide,
    fresh,
    may_refetch_keys,
    needs_roles_query,
)

USER = UserClaims("u", "ann", "cf", frozenset({REQUIRED_SCOPE}))
ADMIN = UserClaims("a", "root", "cf", frozenset({REQUIRED_SCOPE, ADMIN_SCOPE}))


def expected(need: Need, view: SpaceView | None, admin: bool) -> Verdict:
    if need is Need.BROKER or view is None:
        return Verdict.FORBIDDEN           # the lifecycle and routes naming no space are never a user's
    if not view.visible:
        return Verdict.HIDDEN              # the same 404 as an unknown name, whatever the roles say
    if need is Need.READ:
        return Verdict.ALLOW
    return Verdict.ALLOW if view.developer or admin else Verdict.FORBIDDEN


VIEWS = [None, *(SpaceView(v, d) for v, d in itertools.product((True, False), repeat=2))]


@pytest.mark.parametrize("need, view, admin", list(itertools.product(Need, VIEWS, (False, True))))
def test_decide_every_combination(need: Need, view: SpaceView | None, admin: bool) -> None:
    user = ADMIN if admin else USER
    assert decide(user, need, view) is expected(need, view, admin)
    if view is not None:
        assert can_undo(user, view) == (view.visible and (view.developer or admin))


def test_roles_are_asked_only_when_they_matter() -> None:
    assert needs_roles_query(USER, True)
    assert not needs_roles_query(USER, False)       # a hidden space: nothing more to ask
    assert not needs_roles_query(ADMIN, True)       # cloud_controller.admin may undo anywhere it sees


@pytest.mark.parametrize("claims, check", [
    ({"user_id": "u", "scope": ["openid"]}, "scope"),
    ({"user_id": "u", "scope": "openid cloud_controller.write"}, "scope"),
    ({"user_id": "u"}, "scope"),
    ({"scope": [REQUIRED_SCOPE]}, "claims"),
    ({"user_id": "", "scope": [REQUIRED_SCOPE]}, "claims"),
    ({"user_id": 7, "scope": [REQUIRED_SCOPE]}, "claims"),
])
def test_claims_checks(claims: dict[str, object], check: str) -> None:
    with pytest.raises(InvalidToken) as e:
        check_claims(claims)
    assert e.value.check == check


def test_claims_of_a_cf_token() -> None:
    c = check_claims({"user_id": "u1", "user_name": "ann", "cid": "cf", "sub": "u1",
                      "scope": ["openid", REQUIRED_SCOPE, ADMIN_SCOPE]})
    assert (c.user_id, c.user_name, c.client_id, c.admin) == ("u1", "ann", "cf", True)
    assert check_claims({"sub": "u2", "scope": f"openid {REQUIRED_SCOPE}"}).user_id == "u2"


@pytest.mark.parametrize("now, last, interval, ok", [
    (0.0, None, 30.0, True), (10.0, 0.0, 30.0, False), (29.9, 0.0, 30.0, False), (30.0, 0.0, 30.0, True),
    (5.0, 5.0, 0.0, True)])
def test_key_refetch_at_most_once_per_interval(now: float, last: float | None, interval: float, ok: bool) -> None:
    assert may_refetch_keys(now, last, interval) is ok


@pytest.mark.parametrize("now, at, ttl, ok", [(0.0, 0.0, 60.0, True), (59.9, 0.0, 60.0, True),
                                              (60.0, 0.0, 60.0, False), (1.0, 0.0, 0.0, False)])
def test_cache_freshness(now: float, at: float, ttl: float, ok: bool) -> None:
    assert fresh(now, at, ttl) is ok
