"""The Celery-style layer: ``App``, ``@app.task``, ``.delay()``,
``.apply_async()``, ``AsyncResult``, and ``chain``/``group``/``chord`` that
become one server-side workflow.

Arguments travel as ``input = {"args": [...], "kwargs": {...}}``; a worker
(``python -m quern worker``) calls the function with them."""

from __future__ import annotations

import datetime as _dt
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generic, List, Optional, Sequence, Tuple, TypeVar, Union, overload

from ._answers import Undecodable
from ._calls import task_spec
from ._client import AsyncQuern, Quern
from ._errors import QuernError, UndecodableValue
from ._models import Event, Task, Workflow
from ._schema import schema_of

R = TypeVar("R")

#: Celery's state names for Quern's statuses.
STATES = {
    "pending": "PENDING",
    "queued": "PENDING",
    "running": "STARTED",
    "succeeded": "SUCCESS",
    "failed": "FAILURE",
    "timed_out": "FAILURE",
    "cancelled": "REVOKED",
    "skipped": "REVOKED",
}


class TaskFailed(QuernError):
    """``AsyncResult.get()`` of a task that did not succeed; ``.task`` is it."""

    def __init__(self, task: Task) -> None:
        err = task.error
        super().__init__(
            0,
            err.kind if err else task.status,
            err.message if err else task.status,
            {"details": err.details} if err else {},
        )
        self.task = task


def encode_args(args: Sequence[Any], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    return {"args": list(args), "kwargs": dict(kwargs)}


class AsyncResult:
    """A submitted task, Celery-style."""

    def __init__(self, task_id: str, client: Quern) -> None:
        self.id = task_id
        self._client = client
        self._task: Optional[Task] = None

    def _fresh(self) -> Task:
        if self._task is None or not self._task.done:
            self._task = self._client.get(self.id)
        return self._task

    @property
    def status(self) -> str:
        """Quern's status (``queued``, ``running``, ``succeeded``, …)."""
        return self._fresh().status

    @property
    def state(self) -> str:
        """Celery's name for it (``PENDING``, ``STARTED``, ``SUCCESS``, ``FAILURE``, ``REVOKED``)."""
        return STATES.get(self.status, self.status.upper())

    def ready(self) -> bool:
        return self._fresh().done

    def successful(self) -> bool:
        return self.status == "succeeded"

    def failed(self) -> bool:
        return self.status in ("failed", "timed_out")

    @property
    def info(self) -> Any:
        """The progress while it runs (``{"percent", "message"}``), the
        result once it succeeded, the error once it failed."""
        t = self._fresh()
        if t.status == "succeeded":
            return t.result
        if t.error is not None:
            return {"kind": t.error.kind, "message": t.error.message, "details": t.error.details}
        if t.progress is not None:
            return {"percent": t.progress.percent, "message": t.progress.message}
        return None

    @property
    def result(self) -> Any:
        return self._fresh().result

    def get(self, timeout: Optional[float] = None, propagate: bool = True) -> Any:
        """Waits (the server's long-poll) and answers the result; raises
        ``TaskFailed`` if it did not succeed (unless ``propagate=False``)."""
        self._task = self._client.wait(self.id, timeout)
        if self._task.status != "succeeded" and propagate:
            raise TaskFailed(self._task)
        return _decoded_result(self._task)

    def revoke(self) -> None:
        """Cancels it (a running task is told to stop)."""
        self._task = self._client.cancel(self.id)

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"


@dataclass
class Signature:
    """A task with its arguments, not yet sent: ``add.s(1, 2)``."""

    name: str
    args: Tuple[Any, ...] = ()
    kwargs: Dict[str, Any] = field(default_factory=dict)
    options: Dict[str, Any] = field(default_factory=dict)
    #: ``add.si(...)``: in a chain or as a chord's callback it does not take
    #: its parent's result as its first argument.
    immutable: bool = False

    def spec(self, takes_parent: bool = False) -> Dict[str, Any]:
        """The task's submission; ``takes_parent``: its parents' results go
        first in its arguments when it runs (Celery's chain semantics)."""
        body = encode_args(self.args, self.kwargs)
        if takes_parent and not self.immutable:
            body["parent"] = "prepend"
        return task_spec(self.name, body, **self.options)


class WorkflowResult:
    """A submitted chain, group or chord: one server-side workflow."""

    def __init__(self, workflow_id: str, task_ids: Dict[str, str], client: Quern, kind: str = "group") -> None:
        self.id = workflow_id
        self.task_ids = task_ids
        self._client = client
        #: ``chain``, ``group`` or ``chord``: what ``get()`` answers.
        self.kind = kind

    @property
    def results(self) -> List[AsyncResult]:
        return [AsyncResult(t, self._client) for t in self.task_ids.values()]

    def status(self) -> Workflow:
        return self._client.workflow(self.id)

    def get(self, timeout: Optional[float] = None, propagate: bool = True) -> Any:
        """Waits for the whole workflow. As Celery does, a chain answers its
        last task's result, a chord its callback's, a group every task's
        result in order."""
        wf = self._client.wait_workflow(self.id, timeout)
        by_id = {t.id: t for t in wf.tasks}
        tasks = [by_id[i] for i in self.task_ids.values()]
        if propagate:
            for t in tasks:
                if t.status != "succeeded":
                    raise TaskFailed(t)
        if self.kind in ("chain", "chord") and tasks:
            return _decoded_result(tasks[-1])
        return [_decoded_result(t) for t in tasks]


def _decoded_result(task: Task) -> Any:
    """The task's result; ``UndecodableValue`` when it could not be decoded."""
    if isinstance(task.result, Undecodable):
        message = f"task {task.id}: its result is {task.result.reason}"
        raise UndecodableValue(200, "undecodable", message, {"task": task.id, "text": task.result.text})
    return task.result


def _bodies(sigs: Sequence[Signature], chained: bool = False) -> List[Dict[str, Any]]:
    """The tasks' submissions; ``chained``: each after the first takes its
    parent's result as its first argument."""
    return [s.spec(takes_parent=chained and i > 0) for i, s in enumerate(sigs)]


def _send(app: Optional[App], body: Dict[str, Any], kind: str) -> WorkflowResult:
    client = (app or _default_app()).client
    answer = client.submit_workflow(body)
    return WorkflowResult(answer["id"], answer["tasks"], client, kind)


class _Shorthand:
    """Tasks sent as one workflow of the shape ``kind`` names (api.md's
    ``chain`` or ``group`` shorthand)."""

    kind = ""

    def __init__(self, *tasks: Signature, name: Optional[str] = None) -> None:
        self.tasks: Tuple[Signature, ...] = tasks
        self.name = name or self.kind

    def apply_async(self, app: Optional[App] = None) -> WorkflowResult:
        body = {"name": self.name, self.kind: _bodies(self.tasks, chained=self.kind == "chain")}
        return _send(app, body, self.kind)

    delay = apply_async


class chain(_Shorthand):
    """Each task after the previous one succeeded, with the previous one's
    result as its first argument (unless made with ``.si()``)."""

    kind = "chain"


class group(_Shorthand):
    """All at once."""

    kind = "group"


@dataclass
class chord:
    """A group, then ``callback`` once all of it succeeded, with the list of
    the group's results as its first argument (unless made with ``.si()``)."""

    header: group
    callback: Signature

    def apply_async(self, app: Optional[App] = None) -> WorkflowResult:
        body = {
            "name": self.header.name,
            "group": _bodies(self.header.tasks),
            "then": self.callback.spec(takes_parent=True),
        }
        return _send(app, body, "chord")

    delay = apply_async


class TaskFunction(Generic[R]):
    """What ``@app.task`` makes: still callable locally, and sendable."""

    def __init__(
        self, app: App, fn: Callable[..., R], name: str, options: Dict[str, Any], retry_on: Tuple[type, ...]
    ) -> None:
        self.app, self.fn, self.name, self.options, self.retry_on = app, fn, name, options, retry_on
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.is_async = inspect.iscoroutinefunction(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.fn(*args, **kwargs)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature: in a chain it takes the previous task's result first."""
        return Signature(self.name, args, kwargs, dict(self.options))

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: it runs with these arguments alone."""
        return Signature(self.name, args, kwargs, dict(self.options), immutable=True)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Optional[Dict[str, Any]] = None,
        *,
        countdown: Optional[float] = None,
        eta: Union[_dt.datetime, str, None] = None,
        priority: Optional[int] = None,
        queue: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        depends_on: Optional[Sequence[Any]] = None,
    ) -> AsyncResult:
        """Submits the task; ``depends_on`` (results, tasks or ids submitted
        earlier, or ``{"task", "on"}`` edges) makes it wait for them."""
        options = dict(self.options)
        for key, value in (
            ("priority", priority),
            ("queue", queue),
            ("idempotency_key", idempotency_key),
            ("depends_on", depends_on),
        ):
            if value is not None:
                options[key] = value
        if countdown is not None:
            options["delay"] = countdown
        if eta is not None:
            options["run_at"] = eta
        task = self.app.client.submit(self.name, encode_args(args, kwargs or {}), **options)
        return AsyncResult(task.id, self.app.client)

    def type_declaration(self) -> Dict[str, Any]:
        """What the worker registers: name, docstring, input schema, and the
        task's own attempts, timeout and retry as the type's defaults."""
        decl: Dict[str, Any] = {"name": self.name, "description": inspect.getdoc(self.fn) or ""}
        schema = schema_of(self.fn)
        if schema is not None:
            decl["input_schema"] = schema
        # The server applies these to every task of the type whose submission
        # leaves them out, whoever submits it (curl, the CLI, another SDK).
        defaults: Dict[str, Any] = {}
        if "max_attempts" in self.options:
            defaults["max_attempts"] = self.options["max_attempts"]
        if "timeout" in self.options:
            defaults["timeout_ms"] = round(self.options["timeout"] * 1000)
        if "retry" in self.options:
            defaults["retry"] = self.options["retry"]
        if defaults:
            decl["defaults"] = defaults
        return decl


_apps: List[App] = []


def _default_app() -> App:
    if not _apps:
        raise RuntimeError("no quern.App made yet: pass app= or make one")
    return _apps[-1]


def _group_name(text: str) -> str:
    """``text`` with what a consumer group's name may not hold replaced by ``-``."""
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_.:-") else "-" for ch in text)[:200]


class App:
    """A set of tasks and the server they go to, Celery-style."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, queue: Optional[str] = None) -> None:
        self.client = Quern(url, token)
        #: An ``AsyncQuern`` of the same server, when ``quern.local()`` made one.
        self.aio: Optional[AsyncQuern] = None
        self.queue = queue
        self.tasks: Dict[str, TaskFunction[Any]] = {}
        #: Event handlers: (type glob, consumer group, handler).
        self.event_handlers: List[Tuple[str, str, Callable[[Event], Any]]] = []
        _apps.append(self)

    def on_event(
        self, type: str, group: Optional[str] = None
    ) -> Callable[[Callable[[Event], Any]], Callable[[Event], Any]]:
        """Registers a handler of the events whose type matches ``type`` (a
        glob such as ``email.*``), run by ``python -m quern worker``: each
        event goes to one worker process of the consumer ``group`` (default:
        named after the handler) and is acknowledged once the handler
        returned; one whose handler raised comes back 30 s later."""

        def register(fn: Callable[[Event], Any]) -> Callable[[Event], Any]:
            name = group or _group_name(f"on-event:{fn.__module__}.{fn.__qualname__}")
            self.event_handlers.append((type, name, fn))
            return fn

        return register

    @overload
    def task(self, fn: Callable[..., R]) -> TaskFunction[R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        *,
        name: Optional[str] = None,
        queue: Optional[str] = None,
        max_retries: Optional[int] = None,
        timeout: Optional[float] = None,
        priority: Optional[int] = None,
        retry_on: Tuple[type, ...] = (),
        retry_backoff: Optional[Dict[str, Any]] = None,
    ) -> Callable[[Callable[..., R]], TaskFunction[R]]: ...

    def task(
        self,
        fn: Optional[Callable[..., Any]] = None,
        *,
        name: Optional[str] = None,
        queue: Optional[str] = None,
        max_retries: Optional[int] = None,
        timeout: Optional[float] = None,
        priority: Optional[int] = None,
        retry_on: Tuple[type, ...] = (),
        retry_backoff: Optional[Dict[str, Any]] = None,
    ) -> Any:
        """``@app.task`` or ``@app.task(name=…, queue=…, max_retries=…, timeout=…, priority=…, retry_on=(…))``."""

        def wrap(f: Callable[..., Any]) -> TaskFunction[Any]:
            options: Dict[str, Any] = {}
            if queue or self.queue:
                options["queue"] = queue or self.queue
            if max_retries is not None:
                options["max_attempts"] = max_retries + 1
            if timeout is not None:
                options["timeout"] = timeout
            if priority is not None:
                options["priority"] = priority
            if retry_backoff is not None:
                options["retry"] = retry_backoff
            task_name = name or f"{f.__module__}.{f.__qualname__}"
            t: TaskFunction[Any] = TaskFunction(self, f, task_name, options, tuple(retry_on))
            self.tasks[task_name] = t
            return t

        return wrap(fn) if fn is not None else wrap

    # -- the pipeline-style helpers ---------------------------------------
    def submit_workflow(
        self, tasks: Sequence[Union[Signature, Dict[str, Any]]], sequential: bool = True, name: str = "workflow"
    ) -> List[str]:
        """Submits tasks as one workflow (a chain if ``sequential``, else a
        group); answers their ids in order."""
        bodies = [t.spec() if isinstance(t, Signature) else dict(t) for t in tasks]
        answer = self.client.submit_workflow({"name": name, ("chain" if sequential else "group"): bodies})
        return list(answer["tasks"].values())

    def get_workflow_status(self, task_ids: Sequence[str]) -> Dict[str, Any]:
        """``{"total", "completed", "failed", "status", "tasks": {id: status}}``."""
        tasks = [self.client.get(i) for i in task_ids]
        statuses = {t.id: t.status for t in tasks}
        completed = sum(1 for t in tasks if t.status == "succeeded")
        failed = sum(1 for t in tasks if t.status in ("failed", "timed_out", "cancelled"))
        done = all(t.done for t in tasks)
        status = "running" if not done else ("failed" if failed else "succeeded")
        return {"total": len(tasks), "completed": completed, "failed": failed, "status": status, "tasks": statuses}

    def wait_for_workflow(
        self,
        task_ids: Sequence[str],
        timeout: Optional[float] = None,
        callback: Optional[Callable[[Dict[str, Any]], None]] = None,
    ) -> Dict[str, Any]:
        """Waits (long-polls, one task at a time) until every task ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for i in task_ids:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.client.wait(i, left)
            if callback is not None:
                callback(self.get_workflow_status(task_ids))
        return self.get_workflow_status(task_ids)
