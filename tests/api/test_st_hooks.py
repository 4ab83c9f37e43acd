"""The schemathesis hook drops exactly its one known false positive (see tests/api/st_hooks.py)."""
from __future__ import annotations

from types import SimpleNamespace as NS

from tests.api.st_hooks import filter_failure


def mutation(location: str, keywords: tuple[str, ...], parameter: str | None = None, was: object = None) -> NS:
    return NS(parameter_location=NS(name=location), keywords=keywords, parameter=parameter, original_value=was)


def keep(code: str, mutations: list[NS], sent_auth: bool = True) -> bool:
    case = NS(meta=NS(phase=NS(data=NS(mutations=mutations))))
    response = NS(request=NS(headers={"Authorization": "Basic x"} if sent_auth else {}))
    return filter_failure(None, NS(code=code), case, response)


AUTH = mutation("HEADER", ("required",), was="Authorization")
EXTRA_QUERY = mutation("QUERY", ("additionalProperties",))


def test_only_the_reinjected_auth_header_false_positive_is_dropped() -> None:
    assert keep("ST201", [AUTH, EXTRA_QUERY]) is False
    assert keep("ST201", [AUTH]) is False
    assert keep("ST201", [AUTH, mutation("BODY", ("type",))]) is True          # a real negative body
    assert keep("ST201", [AUTH, mutation("QUERY", ("type",), "full")]) is True  # a real bad query value
    assert keep("ST201", [AUTH, EXTRA_QUERY], sent_auth=False) is True           # accepted without credentials
    assert keep("ST201", [EXTRA_QUERY, mutation("HEADER", ("required",), "X-Other")]) is True
    assert keep("ST202", [AUTH]) is True                                        # other checks untouched


def test_problem_check_accepts_problems_and_rejects_the_rest() -> None:
    from tests.api.st_hooks import problem_violation
    good = b'{"type": "/problems/x", "title": "X", "status": 404, "detail": "no", "instance": "/a", "code": "x"}'
    assert problem_violation(404, "application/problem+json; charset=utf-8", good) is None
    assert problem_violation(200, "application/json", b"{}") is None
    assert "Content-Type" in (problem_violation(404, "application/json", good) or "")
    assert "Content-Type" in (problem_violation(500, "text/plain", b"500 Internal Server Error") or "")
    assert "differs" in (problem_violation(400, "application/problem+json", good) or "")
    assert "lacks detail" in (problem_violation(404, "application/problem+json",
                                                b'{"type": "t", "title": "X", "status": 404}') or "")
    assert "not JSON" in (problem_violation(422, "application/problem+json", b"{") or "")
