"""Frozen dataclasses as JSON documents, both ways, by their fields and type hints (the plan document,
:mod:`recovery.plandoc`, is one): ``document_json`` writes, ``read_document`` reads and names the member
that is wrong. A member's ``Annotated`` metadata (:class:`Text`) carries its description and rule: the
reader checks the rule, a JSON Schema generator (pydantic's, in :mod:`api.openapi`) reads both through
``__get_pydantic_json_schema__``. Pure: no I/O.
"""
from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import MISSING, dataclass, fields, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from recovery.errors import BadLsn, BadWalName
from recovery.lsn import Lsn


class DocumentError(ValueError):
    """The data is not the document; the message names the member that is wrong."""


_WHAT: ContextVar[str] = ContextVar("what", default="the document")


def read_document(cls: type[T], data: Mapping[str, Any], *, what: str = "the document") -> T:
    """``data`` as a ``cls`` (a frozen dataclass of the kinds :func:`_value` reads): a nullable member may be
    absent, any other absent or ill-typed member is a :class:`DocumentError` naming it, e.g. "the plan's
    backup.stop_lsn '0-3' is not an LSN" (``what``: "the plan")."""
    token = _WHAT.set(what)
    try:
        return _read(cls, data, "")
    finally:
        _WHAT.reset(token)


@dataclass(frozen=True, slots=True)
class Text:
    """A text member's description and the rule its value follows (``pattern``, and ``check`` for
    ``from_json``: raises ValueError on a bad value)."""

    description: str = ""
    pattern: str | None = None
    check: Callable[[str], object] | None = None

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        out: dict[str, Any] = dict(handler(schema))
        if self.description:
            out["description"] = self.description
        if self.pattern:
            out["pattern"] = self.pattern
        return out


def _time(v: str) -> None:
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)", v):
        raise ValueError("is not an ISO 8601 time with a zone")
    datetime.fromisoformat(v)


def _segment(v: str) -> None:
    if not re.fullmatch(r"[0-9A-F]{24}", v):
        raise ValueError("is not a WAL segment name")


LSN = Text("PostgreSQL LSN, hex 'X/Y'", r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$", Lsn.parse)
TIME = Text("UTC time, ISO 8601 (YYYY-MM-DDTHH:MM:SS[.ffffff]Z)", None, _time)
SEGMENT = Text("WAL segment file name", r"^[0-9A-F]{24}$", _segment)
LsnText = Annotated[str, LSN]
TimeText = Annotated[str, TIME]
SegmentText = Annotated[str, SEGMENT]


def document_json(doc: object) -> dict[str, Any]:
    """A member of the document (a dataclass above) as JSON data."""
    out = _dump(doc)
    assert isinstance(out, dict)
    return out


def _dump(v: object) -> Any:
    if is_dataclass(v) and not isinstance(v, type):
        out: dict[str, Any] = {}
        for f in fields(v):
            x = getattr(v, f.name)
            if x is None and f.default is None:     # optional members are absent, not null (undo_until)
                continue
            out[f.name] = _dump(x)
        return out
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, tuple | list):
        return [_dump(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _dump(x) for k, x in v.items()}
    return v


T = TypeVar("T")


def _name(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _read(cls: type[T], data: Mapping[str, Any], path: str) -> T:
    kw: dict[str, Any] = {}
    hints = get_type_hints(cls, include_extras=True)
    for f in fields(cls):   # type: ignore[arg-type]
        where = _name(path, f.name)
        if f.name not in data:
            if f.default is MISSING and not _nullable(hints[f.name]):
                raise DocumentError(f"{_WHAT.get()} has no {where}")
            if f.default is MISSING:     # a nullable member may be absent (plans made before it existed)
                kw[f.name] = None
            continue
        kw[f.name] = _value(hints[f.name], data[f.name], where)
    return cls(**kw)


def _nullable(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _value(tp: Any, v: object, where: str) -> Any:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        out = _value(base, v, where)
        for m in meta:
            if isinstance(m, Text) and m.check is not None and out is not None:
                try:
                    m.check(out)
                except (ValueError, BadLsn, BadWalName) as e:
                    raise DocumentError(f"{_WHAT.get()}'s {where} {out!r} {_why(e, m)}") from None
        return out
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if v is None:
            if type(None) in args:
                return None
            raise DocumentError(f"{_WHAT.get()}'s {where} is null")
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _value(a, v, where)
            except DocumentError as e:
                errors.append(str(e))
        raise DocumentError(errors[0] if len(errors) == 1 else f"{_WHAT.get()}'s {where} {v!r} is not valid")
    if origin is Literal:
        if v not in get_args(tp):
            raise DocumentError(f"{_WHAT.get()}'s {where} {v!r} is not one of {', '.join(map(str, get_args(tp)))}")
        return v
    if origin is tuple:
        if not isinstance(v, list):
            raise DocumentError(f"{_WHAT.get()}'s {where} is not a list")
        item = get_args(tp)[0]
        return tuple(_value(item, x, f"{where}[{i}]") for i, x in enumerate(v))
    if origin in (Mapping, dict, typing.Mapping) or tp is Mapping:
        if not isinstance(v, dict):
            raise DocumentError(f"{_WHAT.get()}'s {where} is not an object")
        _, vt = get_args(tp)
        return {str(k): _value(vt, x, f"{where}.{k}") for k, x in v.items()}
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(v)
        except ValueError:
            raise DocumentError(f"{_WHAT.get()}'s {where} {v!r} is not one of "
                               f"{', '.join(str(m.value) for m in tp)}") from None
    if isinstance(tp, type) and is_dataclass(tp):
        if not isinstance(v, dict):
            raise DocumentError(f"{_WHAT.get()}'s {where} is not an object")
        return _read(tp, v, where)
    if tp is bool:
        if not isinstance(v, bool):
            raise DocumentError(f"{_WHAT.get()}'s {where} is not true or false")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise DocumentError(f"{_WHAT.get()}'s {where} {v!r} is not an integer")
        return v
    if tp is str:
        if not isinstance(v, str):
            raise DocumentError(f"{_WHAT.get()}'s {where} {v!r} is not a string")
        return v
    raise TypeError(f"plan member {where}: no reader for {tp!r}")   # a programming error, not input


def _why(e: Exception, m: Text) -> str:
    return {LSN.check: "is not an LSN", SEGMENT.check: "is not a segment name"}.get(m.check, str(e))
