"""Quern's Python SDK: clients of a Quern server (``Quern``, ``AsyncQuern``),
the typed objects they answer with, and the errors they raise.

    from quern import Quern
    q = Quern("http://127.0.0.1:7311")
    task = q.submit("report.build", {"month": "2026-11"}, max_attempts=3)
    print(q.wait(task.id, timeout=30).result)
"""

from ._answers import Undecodable
from ._app import App, AsyncResult, Signature, TaskFailed, WorkflowResult, chain, chord, group
from ._calls import task_spec
from ._client import AsyncQuern, Quern
from ._errors import (
    BadRequest,
    Conflict,
    Gone,
    NotFound,
    PayloadTooLarge,
    QuernError,
    TimeoutWaiting,
    TransportError,
    Unavailable,
    UndecodableValue,
    Unprocessable,
)
from ._local import local
from ._models import ApplyReport, Event, EventPage, Progress, Queue, Schedule, Task, TaskError, TaskPage, Workflow
from ._worker import Cancelled, TaskContext, Worker, current_task

__all__ = [
    "App",
    "ApplyReport",
    "AsyncQuern",
    "AsyncResult",
    "BadRequest",
    "Cancelled",
    "Conflict",
    "Event",
    "EventPage",
    "Gone",
    "NotFound",
    "PayloadTooLarge",
    "Progress",
    "Quern",
    "QuernError",
    "Queue",
    "Schedule",
    "Signature",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskFailed",
    "TaskPage",
    "TimeoutWaiting",
    "TransportError",
    "Unavailable",
    "Undecodable",
    "UndecodableValue",
    "Unprocessable",
    "Worker",
    "Workflow",
    "WorkflowResult",
    "chain",
    "chord",
    "current_task",
    "group",
    "local",
    "task_spec",
]
