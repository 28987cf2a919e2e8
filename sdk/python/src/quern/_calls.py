"""Every API call as data: the request to send and how to read its answer.
The sync and the async client both send these, so each call is written once."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generic, List, Mapping, Optional, Sequence, TypeVar, Union
from urllib.parse import quote

from ._models import ApplyReport, Event, EventPage, Queue, Schedule, Task, TaskPage, Workflow

T = TypeVar("T")

#: The longest single long-poll the server allows on a task or workflow.
MAX_WAIT_S = 300.0
#: The longest single long-poll on the event log.
MAX_EVENT_WAIT_S = 60.0


@dataclass
class Call(Generic[T]):
    method: str
    path: str
    decode: Callable[[Any], T]
    params: Optional[Dict[str, str]] = None
    json: Any = None
    content: Optional[str] = None
    #: Seconds the server may hold the answer (added to the client timeout).
    wait: float = 0.0


def _seg(s: str) -> str:
    return quote(s, safe="")


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _time(t: Union[str, _dt.datetime]) -> str:
    if isinstance(t, str):
        return t
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def task_spec(
    name: str,
    input: Any = None,
    *,
    queue: Optional[str] = None,
    priority: Optional[int] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    delay: Optional[float] = None,
    run_at: Union[str, _dt.datetime, None] = None,
    timeout: Optional[float] = None,
    max_attempts: Optional[int] = None,
    retry: Optional[Mapping[str, Any]] = None,
    idempotency_key: Optional[str] = None,
    depends_on: Optional[Sequence[Any]] = None,
) -> Dict[str, Any]:
    """A submission body; times are seconds (``delay``, ``timeout``).
    ``depends_on`` lists tasks submitted earlier that this one waits for:
    ids, ``Task``s, ``AsyncResult``s, or ``{"task": id, "on": "success" |
    "failure" | "completion" | {"expr": "…"}}``."""
    spec: Dict[str, Any] = {"name": name}
    if input is not None:
        spec["input"] = input
    for key, value in (
        ("queue", queue),
        ("priority", priority),
        ("max_attempts", max_attempts),
        ("idempotency_key", idempotency_key),
    ):
        if value is not None:
            spec[key] = value
    if metadata:
        spec["metadata"] = dict(metadata)
    if delay is not None:
        spec["delay_ms"] = _ms(delay)
    if run_at is not None:
        spec["run_at"] = _time(run_at)
    if timeout is not None:
        spec["timeout_ms"] = _ms(timeout)
    if retry is not None:
        spec["retry"] = dict(retry)
    if depends_on:
        spec["depends_on"] = [_edge(d) for d in depends_on]
    return spec


def _edge(parent: Any) -> Dict[str, Any]:
    """One ``depends_on`` edge from an id, a task or result object, or an edge."""
    if isinstance(parent, Mapping):
        return dict(parent)
    return {"task": str(getattr(parent, "id", parent))}


def _listed(d: Any, key: str) -> List[Any]:
    """A list answer: bare as the contract shows it, or wrapped under `key` as earlier builds sent it."""
    return list(d[key]) if isinstance(d, dict) else list(d)


def _task(d: Any) -> Task:
    return Task.from_json(d)


def _tasks(d: Any) -> List[Task]:
    return [Task.from_json(t) for t in d["tasks"]]


def submit(spec: Dict[str, Any]) -> Call[Task]:
    return Call("POST", "/v1/tasks", _task, json=spec)


def submit_batch(specs: Sequence[Dict[str, Any]]) -> Call[List[Task]]:
    return Call("POST", "/v1/tasks/batch", _tasks, json={"tasks": list(specs)})


def get(task_id: str, wait: Optional[float] = None) -> Call[Task]:
    if wait is None or wait <= 0:
        return Call("GET", f"/v1/tasks/{_seg(task_id)}", _task)
    w = min(wait, MAX_WAIT_S)
    return Call("GET", f"/v1/tasks/{_seg(task_id)}", _task, params={"wait": str(_ms(w))}, wait=w)


def _filter_text(value: Any) -> str:
    """A metadata filter's value as the server reads it by type: numbers and
    booleans as JSON, a string as itself unless it would read as a number or
    a boolean, then quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    text = str(value)
    try:
        typed = json.loads(text)
    except ValueError:
        return text
    reads_typed = text.strip() == text and isinstance(typed, (bool, int, float, str))
    return json.dumps(text) if reads_typed else text


def list_tasks(
    status: Union[str, Sequence[str], None] = None,
    queue: Optional[str] = None,
    name: Optional[str] = None,
    workflow: Optional[str] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    limit: Optional[int] = None,
    cursor: Optional[str] = None,
) -> Call[TaskPage]:
    params: Dict[str, str] = {}
    if status:
        params["status"] = status if isinstance(status, str) else ",".join(status)
    for key, value in (("queue", queue), ("name", name), ("workflow", workflow), ("cursor", cursor)):
        if value is not None:
            params[key] = value
    if limit is not None:
        params["limit"] = str(limit)
    for k, v in (metadata or {}).items():
        params[f"metadata.{k}"] = _filter_text(v)
    return Call("GET", "/v1/tasks", lambda d: TaskPage(_tasks(d), d.get("next_cursor")), params=params)


def cancel(task_id: str) -> Call[Task]:
    return Call("POST", f"/v1/tasks/{_seg(task_id)}/cancel", _task)


def retry(task_id: str) -> Call[Task]:
    return Call("POST", f"/v1/tasks/{_seg(task_id)}/retry", _task)


def history(task_id: str) -> Call[List[Dict[str, Any]]]:
    return Call("GET", f"/v1/tasks/{_seg(task_id)}/history", lambda d: list(_listed(d, "history")))


def submit_workflow(body: Dict[str, Any]) -> Call[Dict[str, Any]]:
    return Call("POST", "/v1/workflows", dict, json=body)


def workflow(
    workflow_id: str, wait: Optional[float] = None, limit: Optional[int] = None, cursor: Optional[str] = None
) -> Call[Workflow]:
    path = f"/v1/workflows/{_seg(workflow_id)}"
    params: Dict[str, str] = {}
    if limit is not None:
        params["limit"] = str(limit)
    if cursor is not None:
        params["cursor"] = cursor
    if wait is None or wait <= 0:
        return Call("GET", path, Workflow.from_json, params=params or None)
    w = min(wait, MAX_WAIT_S)
    params["wait"] = str(_ms(w))
    return Call("GET", path, Workflow.from_json, params=params, wait=w)


def workflow_graph(workflow_id: str, format: str = "json") -> Call[Any]:
    return Call("GET", f"/v1/workflows/{_seg(workflow_id)}/graph", lambda d: d, params={"format": format})


def cancel_workflow(workflow_id: str) -> Call[Dict[str, Any]]:
    return Call("POST", f"/v1/workflows/{_seg(workflow_id)}/cancel", dict)


def approve(task_id: str, approved: bool, by: Optional[str], comment: Optional[str]) -> Call[Task]:
    body = {"approved": approved, "by": by, "comment": comment}
    return Call("POST", f"/v1/tasks/{_seg(task_id)}/approve", _task, json=body)


def put_schedule(name: str, schedule: Mapping[str, Any]) -> Call[Schedule]:
    return Call("PUT", f"/v1/schedules/{_seg(name)}", Schedule.from_json, json=dict(schedule))


def schedules() -> Call[List[Schedule]]:
    return Call("GET", "/v1/schedules", lambda d: [Schedule.from_json(s) for s in d["schedules"]])


def schedule(name: str) -> Call[Schedule]:
    return Call("GET", f"/v1/schedules/{_seg(name)}", Schedule.from_json)


def delete_schedule(name: str) -> Call[Schedule]:
    return Call("DELETE", f"/v1/schedules/{_seg(name)}", Schedule.from_json)


def set_schedule_enabled(name: str, enabled: bool) -> Call[Schedule]:
    verb = "enable" if enabled else "disable"
    return Call("POST", f"/v1/schedules/{_seg(name)}/{verb}", Schedule.from_json)


def trigger_schedule(name: str) -> Call[Task]:
    return Call("POST", f"/v1/schedules/{_seg(name)}/trigger", _task)


def schedule_runs(name: str, limit: int = 100) -> Call[List[Task]]:
    return Call("GET", f"/v1/schedules/{_seg(name)}/runs", _tasks, params={"limit": str(limit)})


def apply_schedules(text: str, dry_run: bool, prune: bool) -> Call[ApplyReport]:
    def decode(d: Any) -> ApplyReport:
        return ApplyReport(d["created"], d["updated"], d["deleted"], d["unchanged"], d.get("dry_run", False))

    params = {"dry_run": str(dry_run).lower(), "prune": str(prune).lower()}
    return Call("POST", "/v1/schedules/apply", decode, params=params, content=text)


def publish(type: str, source: str, payload: Any, target: Optional[str]) -> Call[Event]:
    body = {"type": type, "source": source, "payload": payload, "target": target}
    return Call("POST", "/v1/events", Event.from_json, json=body)


def publish_batch(events: Sequence[Mapping[str, Any]]) -> Call[List[Event]]:
    return Call(
        "POST",
        "/v1/events",
        lambda d: [Event.from_json(e) for e in d["events"]],
        json={"events": [dict(e) for e in events]},
    )


def events(
    after: Union[int, str, None] = None,
    type: Optional[str] = None,
    source: Optional[str] = None,
    target: Optional[str] = None,
    limit: Optional[int] = None,
    wait: Optional[float] = None,
    group: Optional[str] = None,
    member: Optional[str] = None,
    visibility: Optional[float] = None,
) -> Call[EventPage]:
    params: Dict[str, str] = {}
    for key, value in (("type", type), ("source", source), ("target", target), ("group", group), ("member", member)):
        if value is not None:
            params[key] = value
    if after is not None:
        params["after"] = str(after)
    if limit is not None:
        params["limit"] = str(limit)
    if visibility is not None:
        params["visibility"] = str(_ms(visibility))
    w = 0.0
    if wait is not None and wait > 0:
        w = min(wait, MAX_EVENT_WAIT_S)
        params["wait"] = str(_ms(w))

    def decode(d: Any) -> EventPage:
        return EventPage([Event.from_json(e) for e in d["events"]], d["next_after"])

    return Call("GET", "/v1/events", decode, params=params, wait=w)


def ack(group: str, offsets: Sequence[int], member: Optional[str]) -> Call[Dict[str, Any]]:
    return Call("POST", "/v1/events/ack", dict, json={"group": group, "member": member, "offsets": list(offsets)})


def queues() -> Call[List[Queue]]:
    return Call(
        "GET",
        "/v1/queues",
        lambda d: [Queue(q["name"], dict(q.get("counts") or {}), q.get("paused", False)) for q in _listed(d, "queues")],
    )


def pause_queue(name: str, paused: bool) -> Call[Any]:
    verb = "pause" if paused else "resume"
    return Call("POST", f"/v1/queues/{_seg(name)}/{verb}", lambda d: d)


def health() -> Call[Dict[str, Any]]:
    return Call("GET", "/v1/health", dict)


def task_types() -> Call[List[Dict[str, Any]]]:
    return Call("GET", "/v1/task-types", lambda d: list(d["task_types"]) if isinstance(d, dict) else list(d))


def workers() -> Call[List[Dict[str, Any]]]:
    return Call("GET", "/v1/workers", lambda d: list(d["workers"]) if isinstance(d, dict) else list(d))
