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
