"""A JSON Schema of a task function's input, from its type hints: what a
worker registers so that the server refuses (422) a submit whose arguments,
positional or keyword, have the wrong types. Lenient by design: unknown
hints allow anything."""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, Dict, List, Optional

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
    """The schema of ``{"args": [...], "kwargs": {...}}`` — positional
    arguments checked in order, keyword ones by name; with ``"parent"`` (a
    chain's step, whose first argument the parent's result will be) the
    given positional arguments are checked from the second parameter on —
    or of the keyword arguments as a bare object, as schedules files send
    them; ``None`` when the function has no typed parameter."""
    try:
        hints = typing.get_type_hints(fn)
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError, NameError):
        return None
    positional = [_of(hints.get(name, p.annotation)) for name, p in params.items() if p.kind in _POSITIONAL]
    props = {
        name: _of(hints.get(name, p.annotation))
        for name, p in params.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    props = {k: v for k, v in props.items() if v}
    if not props and not any(positional):
        return None
    kwargs: Dict[str, Any] = {"type": "object", "properties": props}

    def array(items: List[Dict[str, Any]]) -> Dict[str, Any]:
        return {"type": "array", "prefixItems": items} if items else {"type": "array"}

    envelope_keys = [{"required": ["args"]}, {"required": ["kwargs"]}]
    envelope = {
        "type": "object",
        "properties": {"args": array(positional), "kwargs": kwargs},
        "anyOf": envelope_keys,
        "not": {"required": ["parent"]},
    }
    chained = {
        "type": "object",
        "properties": {"args": array(positional[1:]), "kwargs": kwargs},
        "required": ["parent"],
    }
    bare = {**kwargs, "not": {"anyOf": [*envelope_keys, {"required": ["parent"]}]}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "anyOf": [{"type": "null"}, envelope, chained, bare],
    }


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
