"""Decoding the server's JSON answers so that one value nested too deeply for
Python's ``json`` module (it recurses, and raises ``RecursionError`` about a
thousand levels down) spoils only that value, not the whole answer.

Invariant: an answer that ``json.loads`` decodes is decoded by it alone, so
nothing changes for ordinary answers. Only when it raises ``RecursionError``
is the answer split where the server puts tasks — the members of an answer
object (a ``tasks`` list into its tasks), the elements of an answer list —
and each piece decoded alone, down to a task's fields (and a task's
``error`` down to its ``kind``, ``message`` and ``details``). A field that
still cannot be decoded becomes an ``Undecodable`` that keeps its JSON text
as the server sent it; every other field is decoded as usual. The pieces are
found by a scan that does not recurse."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Tuple, Union

#: A JSON string, or one of the characters that open, close or separate
#: members. Strings are skipped whole, so brackets inside them do not count.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.DOTALL)
#: The key of an object member and its colon.
_KEY = re.compile(r'\s*("[^"\\]*(?:\\.[^"\\]*)*")\s*:', re.DOTALL)


class Undecodable:
    """A value of a server answer that this SDK could not decode: ``field``
    names it (``"input"``, ``"result"``, …), ``text`` is its JSON text as the
    server sent it, ``reason`` says why. It stands where the value would be
    (``task.input``, ``task.result``); the rest of the task is decoded."""

    __slots__ = ("field", "reason", "text")

    def __init__(self, text: str, reason: str, field: Optional[str] = None) -> None:
        self.text = text
        self.reason = reason
        self.field = field

    def __repr__(self) -> str:
        return f"<Undecodable {self.field or 'value'}: {self.reason} ({len(self.text)} characters of JSON)>"


def loads_answer(data: Union[bytes, str]) -> Any:
    """The answer ``data`` decoded; values too deeply nested to decode are
    ``Undecodable`` (see the module's docs). Raises ``ValueError`` when
    ``data`` is not JSON at all."""
    try:
        return json.loads(data)
    except RecursionError:
        pass
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    opening = text.lstrip()[:1]
    if opening == "{":
        return _object(text, top=True)
    if opening == "[":
        return [_task(element) for element in _members(text)]
    return _undecodable(text, None)


def _object(text: str, top: bool) -> Dict[str, Any]:
    """The object ``text`` decoded member by member; ``top`` when it is the
    answer itself."""
    return {key: _member(key, value, top) for key, value in _object_members(text)}


def _member(key: str, text: str, top: bool) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        pass
    except ValueError as e:
        return Undecodable(text.strip(), f"not JSON: {e}", key)
    opening = text.lstrip()[:1]
    if top and key == "tasks" and opening == "[":
        # The tasks of a list, lease or workflow answer.
        return [_task(element) for element in _members(text)]
    if key == "error" and opening == "{":
        # A task's error: its details are whatever a worker wrote, and its
        # kind and message must survive them.
        return _object(text, top=False)
    return _undecodable(text, key)


def _task(text: str) -> Any:
    """A task (or another object) of a list, decoded field by field when it
    cannot be decoded whole."""
    try:
        return json.loads(text)
    except RecursionError:
        pass
    except ValueError as e:
        return Undecodable(text.strip(), f"not JSON: {e}")
    if text.lstrip().startswith("{"):
        return _object(text, top=False)
    return _undecodable(text, None)


def _undecodable(text: str, field: Optional[str]) -> Undecodable:
    return Undecodable(text.strip(), "nested too deeply for Python's json module to decode", field)


def _object_members(text: str) -> List[Tuple[str, str]]:
    """The ``(key, value text)`` pairs of the JSON object ``text``."""
    pairs = []
    for member in _members(text):
        m = _KEY.match(member)
        if m is None:
            raise ValueError(f"not a JSON object member: {member[:80]!r}")
        pairs.append((str(json.loads(m.group(1))), member[m.end() :]))
    return pairs


def _members(text: str) -> List[str]:
    """The texts of the top-level members of the JSON array or object
    ``text`` (for an object, each ``"key": value``), found without
    recursion."""
    depth = 0
    begin = 0
    members: List[str] = []
    for m in _TOKENS.finditer(text):
        token = m.group()
        if token[0] == '"':
            continue
        if token in "[{":
            depth += 1
            if depth == 1:
                begin = m.end()
        elif token in "]}":
            depth -= 1
            if depth == 0:
                last = text[begin : m.start()]
                if last.strip():
                    members.append(last)
                return members
            if depth < 0:
                break
        elif depth == 1:
            members.append(text[begin : m.start()])
            begin = m.end()
    raise ValueError("unbalanced JSON: brackets do not match")
