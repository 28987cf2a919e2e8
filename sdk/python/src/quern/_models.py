"""Typed views of the server's answers. Each keeps the whole answer in
``raw`` too, so fields added by a newer server are never lost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out", "skipped"})


@dataclass
class Progress:
    percent: float
    message: Optional[str] = None


@dataclass
class TaskError:
    kind: str
    message: str
    details: Any = None


@dataclass
class Task:
    """A task as ``GET /v1/tasks/{id}`` shows it."""

    id: str
    name: str
    queue: str
    status: str
    input: Any = None
    priority: int = 0
    metadata: Dict[str, Any] = field(default_factory=dict)
    """Labels: strings, numbers or booleans."""
    attempt: int = 0
    max_attempts: int = 1
    timeout_ms: Optional[int] = None
    progress: Optional[Progress] = None
    result: Any = None
    error: Optional[TaskError] = None
    created_at: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    run_at: Optional[str] = None
    worker: Optional[str] = None
    workflow: Optional[str] = None
    idempotency_key: Optional[str] = None
    digest: Optional[str] = None
    notice: Optional[str] = None
    """Why a queued task is not running, when the server can tell (no live
    worker serves its name on its queue)."""
    traceparent: Optional[str] = None
    """The W3C trace context the task continues, when its submit gave one."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        """Whether the task reached a terminal status."""
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> Task:
        p, e = d.get("progress"), d.get("error")
        return cls(
            id=d["id"],
            name=d["name"],
            queue=d.get("queue", "default"),
            status=d["status"],
            input=d.get("input"),
            priority=d.get("priority", 0),
            metadata=dict(d.get("metadata") or {}),
            attempt=d.get("attempt", 0),
            max_attempts=d.get("max_attempts", 1),
            timeout_ms=d.get("timeout_ms"),
            progress=Progress(p.get("percent", 0.0), p.get("message")) if isinstance(p, dict) else None,
            result=d.get("result"),
            error=TaskError(e.get("kind", ""), e.get("message", ""), e.get("details")) if isinstance(e, dict) else None,
            created_at=d.get("created_at"),
            started_at=d.get("started_at"),
            finished_at=d.get("finished_at"),
            run_at=d.get("run_at"),
            worker=d.get("worker"),
            workflow=d.get("workflow"),
            idempotency_key=d.get("idempotency_key"),
            digest=d.get("digest"),
            notice=d.get("notice"),
            traceparent=d.get("traceparent"),
            raw=d,
        )


@dataclass
class TaskPage:
    tasks: List[Task]
    next_cursor: Optional[str]


@dataclass
class Event:
    """An event of the log."""

    offset: int
    at: str
    type: str
    source: str
    target: Optional[str]
    payload: Any

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> Event:
        return cls(d["offset"], d["at"], d["type"], d["source"], d.get("target"), d.get("payload"))


@dataclass
class EventPage:
    events: List[Event]
    next_after: int


@dataclass
class Schedule:
    """A schedule with its state."""

    name: str
    enabled: bool
    task: Dict[str, Any]
    cron: Optional[str] = None
    every: Any = None
    at: Optional[str] = None
    timezone: str = "UTC"
    overlap: str = "allow"
    description: Optional[str] = None
    next_fire_at: Optional[str] = None
    next_fire_local: Optional[str] = None
    last_fired_at: Optional[str] = None
    last_task: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> Schedule:
        return cls(
            name=d["name"],
            enabled=d.get("enabled", True),
            task=d.get("task") or {},
            cron=d.get("cron"),
            every=d.get("every"),
            at=d.get("at"),
            timezone=d.get("timezone", "UTC"),
            overlap=d.get("overlap", "allow"),
            description=d.get("description"),
            next_fire_at=d.get("next_fire_at"),
            next_fire_local=d.get("next_fire_local"),
            last_fired_at=d.get("last_fired_at"),
            last_task=d.get("last_task"),
            raw=d,
        )


@dataclass
class ApplyReport:
    created: List[str]
    updated: List[str]
    deleted: List[str]
    unchanged: List[str]
    dry_run: bool = False


@dataclass
class Workflow:
    """A workflow's status and totals over all its tasks, and one page of
    its tasks in submission order (``next_cursor`` names the next page)."""

    id: str
    name: str
    status: str
    total: int
    counts: Dict[str, int]
    tasks: List[Task]
    next_cursor: Optional[str] = None

    @property
    def done(self) -> bool:
        return self.status != "running"

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> Workflow:
        return cls(
            d["id"],
            d["name"],
            d["status"],
            d.get("total", 0),
            dict(d.get("counts") or {}),
            [Task.from_json(t) for t in d.get("tasks", [])],
            d.get("next_cursor"),
        )


@dataclass
class Queue:
    name: str
    counts: Dict[str, int]
    paused: bool
