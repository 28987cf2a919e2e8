"""A JSON Schema of a task function's input, from its type hints: what a
worker registers so that the server refuses (422) a submit whose keyword
arguments have the wrong types. Lenient by design: unknown hints allow
anything, and positional arguments are not checked."""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, Dict, Optional

_SIMPLE = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "object", list: "array"}


def _of(hint: Any) -> Dict[str, Any]:
    if hint is inspect.Parameter.empty or hint is Any:
        return {}
    if hint is type(None):
        return {"type": "null"}
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return {"anyOf": [_of(a) for a in typing.get_args(hint)]}
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(hint)
        items = _of(args[0]) if args and origin is not tuple else {}
        return {"type": "array", "items": items} if items else {"type": "array"}
    if origin is dict:
        return {"type": "object"}
    if hint in _SIMPLE:
        return {"type": _SIMPLE[hint]}
    return {}


def schema_of(fn: Callable[..., Any]) -> Optional[Dict[str, Any]]:
    """The schema of ``{"args": [...], "kwargs": {...}}`` (or of the keyword
    arguments as a bare object, as schedules files send them); ``None`` when
    the function has no typed keyword-capable parameter."""
    try:
        hints = typing.get_type_hints(fn)
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError, NameError):
        return None
    props = {
        name: _of(hints.get(name, p.annotation))
        for name, p in params.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    props = {k: v for k, v in props.items() if v}
    if not props:
        return None
    kwargs: Dict[str, Any] = {"type": "object", "properties": props}
    envelope = {"type": "object", "properties": {"args": {"type": "array"}, "kwargs": kwargs}, "required": ["args"]}
    bare = {**kwargs, "not": {"required": ["args"]}}
    return {"anyOf": [{"type": "null"}, envelope, bare]}
