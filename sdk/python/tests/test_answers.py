"""Decoding answers that hold values too deeply nested for Python's json
module, on answers written here (the server refuses such results and error
details from workers, so they cannot be made end to end)."""

from __future__ import annotations

import json
from typing import Any, Optional, cast

import pytest

import quern
from quern._answers import loads_answer

DEEP = "[" * 5000 + "]" * 5000


def task_json(**fields: Any) -> str:
    """A task's JSON with ``DEEP`` wherever a field's value is ``"DEEP"``."""
    task = {"id": "t1", "name": "n", "queue": "q", "status": "succeeded", **fields}
    return json.dumps(task, separators=(",", ":")).replace('"DEEP"', DEEP)


def test_ordinary_answers_are_decoded_as_json_decodes_them() -> None:
    text = '{"tasks": [{"id": "a", "input": {"x": [1, "],}{[", null]}}], "next_cursor": "c"}'
    assert loads_answer(text) == json.loads(text)
    assert loads_answer(b"[1, 2]") == [1, 2]
    with pytest.raises(ValueError):
        loads_answer("{not json")


def test_only_the_deep_field_of_the_deep_task_is_undecodable() -> None:
    deep_task, plain = task_json(result="DEEP"), task_json(id="t2", result={"ok": True})
    page = loads_answer('{"tasks": [' + deep_task + ", " + plain + '], "next_cursor": null}')
    assert page["next_cursor"] is None and page["tasks"][1] == json.loads(plain)
    first = page["tasks"][0]
    assert (first["id"], first["status"]) == ("t1", "succeeded")
    assert isinstance(first["result"], quern.Undecodable)
    assert (first["result"].field, first["result"].text) == ("result", DEEP)
    # A bare task, and a list of tasks, the same way.
    assert loads_answer(deep_task)["result"].text == DEEP
    assert loads_answer("[" + deep_task + "]")[0]["result"].text == DEEP


def test_an_errors_kind_and_message_survive_deep_details() -> None:
    error = {"kind": "exception", "message": "too deep", "details": "DEEP"}
    task = quern.Task.from_json(loads_answer(task_json(status="failed", error=error)))
    assert task.error is not None and (task.error.kind, task.error.message) == ("exception", "too deep")
    assert isinstance(task.error.details, quern.Undecodable) and task.error.details.field == "details"


class _Client:
    def __init__(self, task: quern.Task) -> None:
        self.task = task

    def wait(self, task_id: str, timeout: Optional[float] = None) -> quern.Task:
        return self.task


def test_async_result_get_raises_for_an_undecodable_result() -> None:
    task = quern.Task.from_json(loads_answer(task_json(result="DEEP")))
    with pytest.raises(quern.UndecodableValue) as raised:
        quern.AsyncResult("t1", cast(quern.Quern, _Client(task))).get(timeout=1)
    assert raised.value.code == "undecodable" and raised.value.details["text"] == DEEP
    assert isinstance(raised.value, quern.QuernError)
