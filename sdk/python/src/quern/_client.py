"""`Quern` (the standard library's http.client, a keep-alive connection per
thread) and `AsyncQuern` (httpx): clients of one Quern server over HTTP.

Both send the calls of ``_calls``; waiting uses the server's long-poll
(``?wait=``), never a sleep loop. Every failure raises a ``QuernError``
subclass carrying the server's error code."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import ssl
import threading
import time
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)
from urllib.parse import urlencode, urlsplit

import httpx

from . import _calls as c
from ._answers import loads_answer
from ._errors import QuernError, TimeoutWaiting, TransportError, Unavailable, from_answer
from ._models import ApplyReport, Event, EventPage, Queue, Schedule, Task, TaskPage, Workflow

T = TypeVar("T")


class _Ending(Protocol):
    @property
    def done(self) -> bool: ...


E = TypeVar("E", bound=_Ending)

DEFAULT_URL = "http://127.0.0.1:7311"
#: Seconds an ordinary request may take; long-polls get their wait on top.
DEFAULT_TIMEOUT = 30.0


_log = logging.getLogger("quern")
#: How long a subscription waits before asking a server it could not reach again.
_BACKOFF_MIN, _BACKOFF_MAX = 0.1, 5.0


def _with_scheme(url: str) -> str:
    """``host:port`` means ``http://host:port``; no trailing slash."""
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def _headers(token: Optional[str]) -> Dict[str, str]:
    token = token or os.environ.get("QUERN_TOKEN") or None
    return {"authorization": f"Bearer {token}"} if token else {}


def _ssl_context(ca_file: Optional[str]) -> Optional[ssl.SSLContext]:
    """The TLS context that trusts ``ca_file`` (default ``$QUERN_CA_FILE``):
    a server with a private or self-signed certificate. ``None``: the
    system's roots."""
    ca_file = ca_file or os.environ.get("QUERN_CA_FILE") or None
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def _transport(e: Exception) -> QuernError:
    return TransportError(0, "transport", str(e) or type(e).__name__)


def _timed_out(got: Any, timeout: Optional[float]) -> TimeoutWaiting:
    """The error of a wait that ran out, holding what the last look saw."""
    if isinstance(got, Task):
        why = f": {got.notice}" if got.notice else ""
        error = TimeoutWaiting(0, "timeout", f"task {got.id} is still {got.status} after {timeout} s{why}")
        error.task = got
    else:
        error = TimeoutWaiting(0, "timeout", f"workflow {got.id} is still {got.status} after {timeout} s")
        error.workflow = got
    return error


def _remaining(deadline: Optional[float]) -> float:
    return c.MAX_WAIT_S if deadline is None else max(0.0, deadline - time.monotonic())


# The first look of a wait is this short, so that a task no live worker
# serves is named at once rather than after a whole long poll.
_FIRST_LOOK_S = 1.0


def _told(got: Any, told: bool) -> bool:
    """Logs, once per wait, why a waited-on task is not running."""
    notice = getattr(got, "notice", None)
    if notice and not told:
        _log.warning("task %s: %s", got.id, notice)
        return True
    return told


class _Connections:
    """Keep-alive HTTP/1.1 connections, one per thread, on the standard
    library's ``http.client``: a request costs a fraction of what a general
    HTTP client's machinery does, which is what lets one thread send
    thousands of submits a second."""

    def __init__(self, url: str, headers: Dict[str, str], context: Optional[ssl.SSLContext] = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.headers = headers
        self.context = context
        self.local = threading.local()

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        conn: Optional[http.client.HTTPConnection] = getattr(self.local, "conn", None)
        if conn is None:
            if self.https:
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.context)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            self.local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()
            self.local.conn = None

    def request(self, call: c.Call[Any], timeout: float) -> Tuple[int, bytes]:
        target = self.prefix + call.path + ("?" + urlencode(call.params) if call.params else "")
        headers = dict(self.headers)
        body: Optional[bytes] = None
        if call.json is not None:
            body = json.dumps(call.json).encode()
            headers["content-type"] = "application/json"
        elif call.content is not None:
            body = call.content.encode()
        for attempt in (0, 1):
            conn = self._conn(timeout)
            try:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                conn.request(call.method, target, body, headers)
                answer = conn.getresponse()
                return answer.status, answer.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                # A kept-alive connection the server closed while idle: the
                # request never reached it; send it once more on a new one.
                self.close()
                if attempt == 1:
                    raise _transport(e) from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise _transport(e) from e
        raise TransportError(0, "transport", "unreachable")


def _decode(call: c.Call[T], status: int, data: bytes) -> T:
    body: Any = None
    if data:
        try:
            body = loads_answer(data)
        except ValueError:
            body = data.decode("utf-8", "replace")
    if status >= 300:
        raise from_answer(status, body)
    return call.decode(body)


class Quern:
    """A client of the Quern server at ``url`` (default ``$QUERN_URL`` or
    http://127.0.0.1:7311), sending ``token`` (default ``$QUERN_TOKEN``) and,
    over https, trusting the CA in ``ca_file`` (default ``$QUERN_CA_FILE``)
    or else the system's roots. Safe to share between threads (each thread
    keeps its own connection)."""

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        ca_file: Optional[str] = None,
    ) -> None:
        self.url = _with_scheme(url or os.environ.get("QUERN_URL") or DEFAULT_URL)
        self.timeout = timeout
        self.headers = _headers(token)
        self.ssl_context = _ssl_context(ca_file)
        self._http = _Connections(self.url, self.headers, self.ssl_context)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Quern:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _run(self, call: c.Call[T]) -> T:
        status, data = self._http.request(call, self.timeout + call.wait)
        return _decode(call, status, data)

    # -- tasks --------------------------------------------------------------
    def submit(self, name: str, input: Any = None, **options: Any) -> Task:
        """Submits a task; options as ``POST /v1/tasks`` (``delay`` and ``timeout`` in seconds)."""
        return self._run(c.submit(c.task_spec(name, input, **options)))

    def submit_batch(self, specs: Sequence[Dict[str, Any]]) -> List[Task]:
        """Submits tasks (bodies as ``c.task_spec`` makes them), all or none."""
        return self._run(c.submit_batch(specs))

    def get(self, task_id: str) -> Task:
        return self._run(c.get(task_id))

    def _until_done(self, call: Callable[[float], c.Call[E]], timeout: Optional[float]) -> E:
        """What ``call`` answers once it has ended; ``TimeoutWaiting`` when
        ``timeout`` seconds passed first. Each look long-polls for the time left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        look, told = _FIRST_LOOK_S, False
        while True:
            got = self._run(call(min(look, _remaining(deadline))))
            look = c.MAX_WAIT_S
            if got.done:
                return got
            told = _told(got, told)
            if _remaining(deadline) <= 0:
                raise _timed_out(got, timeout)

    def wait(self, task_id: str, timeout: Optional[float] = None) -> Task:
        """The task once it ended, or as it stands when ``timeout`` seconds passed."""
        return self._until_done(lambda wait: c.get(task_id, wait), timeout)

    def monitor(
        self, task_id: str, callback: Callable[[Task], None], timeout: Optional[float] = None, poll: float = 1.0
    ) -> Task:
        """Calls ``callback`` with the task now and whenever its status or
        progress changed, until it ends. Each look after the first is a
        long-poll that returns at once when the task ends, else after ``poll``
        seconds (progress is seen at that pace)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: Any = None
        task = self._run(c.get(task_id))
        while True:
            now = (task.status, task.progress)
            if now != seen:
                seen = now
                callback(task)
            if task.done:
                return task
            if _remaining(deadline) <= 0:
                raise _timed_out(task, timeout)
            task = self._run(c.get(task_id, min(poll, _remaining(deadline))))

    def list_tasks(self, **filters: Any) -> TaskPage:
        return self._run(c.list_tasks(**filters))

    def cancel(self, task_id: str) -> Task:
        return self._run(c.cancel(task_id))

    def retry(self, task_id: str) -> Task:
        return self._run(c.retry(task_id))

    def history(self, task_id: str) -> List[Dict[str, Any]]:
        return self._run(c.history(task_id))

    # -- workflows ----------------------------------------------------------
    def submit_workflow(self, workflow: Dict[str, Any]) -> Dict[str, Any]:
        """``POST /v1/workflows``: answers ``{"id", "name", "tasks": {key: id}}``."""
        return self._run(c.submit_workflow(workflow))

    def workflow(self, workflow_id: str, limit: Optional[int] = None, cursor: Optional[str] = None) -> Workflow:
        """``GET /v1/workflows/{id}``: status and counts over every task, and
        one page of its tasks (100 by default; pass ``next_cursor`` on)."""
        return self._run(c.workflow(workflow_id, limit=limit, cursor=cursor))

    def wait_workflow(self, workflow_id: str, timeout: Optional[float] = None) -> Workflow:
        return self._until_done(lambda wait: c.workflow(workflow_id, wait), timeout)

    def workflow_graph(self, workflow_id: str, format: str = "json") -> Any:
        return self._run(c.workflow_graph(workflow_id, format))

    def cancel_workflow(self, workflow_id: str) -> Dict[str, Any]:
        return self._run(c.cancel_workflow(workflow_id))

    def approve(
        self, task_id: str, approved: bool = True, by: Optional[str] = None, comment: Optional[str] = None
    ) -> Task:
        return self._run(c.approve(task_id, approved, by, comment))

    # -- schedules ----------------------------------------------------------
    def put_schedule(self, name: str, schedule: Mapping[str, Any]) -> Schedule:
        return self._run(c.put_schedule(name, schedule))

    def schedules(self) -> List[Schedule]:
        return self._run(c.schedules())

    def schedule(self, name: str) -> Schedule:
        return self._run(c.schedule(name))

    def delete_schedule(self, name: str) -> Schedule:
        return self._run(c.delete_schedule(name))

    def enable_schedule(self, name: str) -> Schedule:
        return self._run(c.set_schedule_enabled(name, True))

    def disable_schedule(self, name: str) -> Schedule:
        return self._run(c.set_schedule_enabled(name, False))

    def trigger_schedule(self, name: str) -> Task:
        return self._run(c.trigger_schedule(name))

    def schedule_runs(self, name: str, limit: int = 100) -> List[Task]:
        return self._run(c.schedule_runs(name, limit))

    def apply_schedules(self, text: str, dry_run: bool = False, prune: bool = False) -> ApplyReport:
        """Applies a schedules file's text (YAML or JSON)."""
        return self._run(c.apply_schedules(text, dry_run, prune))

    # -- events -------------------------------------------------------------
    def publish(self, type: str, payload: Any = None, source: str = "python", target: Optional[str] = None) -> Event:
        return self._run(c.publish(type, source, payload, target))

    def publish_batch(self, events: Sequence[Mapping[str, Any]]) -> List[Event]:
        return self._run(c.publish_batch(events))

    def events(self, after: Union[int, str, None] = None, **filters: Any) -> EventPage:
        """``GET /v1/events``: ``type``, ``source``, ``target``, ``limit``,
        ``wait`` (seconds), ``group``, ``member``, ``visibility`` (seconds)."""
        return self._run(c.events(after, **filters))

    def ack(self, group: str, offsets: Sequence[int], member: Optional[str] = None) -> Dict[str, Any]:
        return self._run(c.ack(group, offsets, member))

    def subscribe(
        self,
        type: Optional[str] = None,
        source: Optional[str] = None,
        target: Optional[str] = None,
        after: Union[int, str, None] = "latest",
        wait: float = 30.0,
    ) -> Iterator[Event]:
        """Every event that matches, from ``after`` on (by default those
        published from now on), as they are published: each look long-polls
        for ``wait`` seconds. A server that cannot be reached is asked again
        (backing off to 5 s) from where the iterator was: nothing is missed
        while the events are kept."""
        cursor = after
        backoff = _BACKOFF_MIN
        while True:
            try:
                page = self.events(cursor, type=type, source=source, target=target, wait=wait)
            except (TransportError, Unavailable):
                time.sleep(backoff)
                backoff = min(_BACKOFF_MAX, backoff * 2)
                continue
            backoff = _BACKOFF_MIN
            yield from page.events
            cursor = page.next_after

    def consume(
        self,
        group: str,
        handler: Callable[[Event], Any],
        member: Optional[str] = None,
        type: Optional[str] = None,
        source: Optional[str] = None,
        target: Optional[str] = None,
        visibility: float = 30.0,
        stop: Optional[threading.Event] = None,
        after: Union[int, str, None] = "latest",
    ) -> None:
        """Reads ``group`` as ``member`` (a consumer group: each event goes to
        one member) and calls ``handler`` with each event, acknowledging it
        once the handler returned. An event whose handler raised is not
        acknowledged: it is handed out again after ``visibility`` seconds.
        A new group starts at ``after`` (by default with the events
        published from now on); an existing one goes on where it was. Runs
        until ``stop`` is set."""
        member = member or f"py-{os.getpid()}"
        while stop is None or not stop.is_set():
            try:
                page = self.events(
                    after,
                    type=type,
                    source=source,
                    target=target,
                    wait=5.0,
                    group=group,
                    member=member,
                    visibility=visibility,
                )
            except (TransportError, Unavailable):
                time.sleep(_BACKOFF_MAX)
                continue
            done = []
            for event in page.events:
                try:
                    handler(event)
                except Exception:
                    _log.exception("event %d: the handler raised; it will be handed out again", event.offset)
                    continue
                done.append(event.offset)
            if done:
                self.ack(group, done, member)

    # -- queues, workers, health --------------------------------------------
    def queues(self) -> List[Queue]:
        return self._run(c.queues())

    def pause_queue(self, name: str) -> None:
        self._run(c.pause_queue(name, True))

    def resume_queue(self, name: str) -> None:
        self._run(c.pause_queue(name, False))

    def health(self) -> Dict[str, Any]:
        return self._run(c.health())

    def list_task_types(self) -> List[Dict[str, Any]]:
        return self._run(c.task_types())

    def list_workers(self) -> List[Dict[str, Any]]:
        return self._run(c.workers())


class AsyncQuern:
    """The asyncio twin of ``Quern``: the same methods, awaited."""

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        ca_file: Optional[str] = None,
    ) -> None:
        self.url = _with_scheme(url or os.environ.get("QUERN_URL") or DEFAULT_URL)
        self.timeout = timeout
        context = _ssl_context(ca_file)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=_headers(token), timeout=timeout, verify=context if context else True
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncQuern:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _run(self, call: c.Call[T]) -> T:
        try:
            r = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                content=call.content,
                timeout=self.timeout + call.wait,
            )
        except httpx.HTTPError as e:
            raise _transport(e) from e
        return _decode(call, r.status_code, r.content)

    async def submit(self, name: str, input: Any = None, **options: Any) -> Task:
        return await self._run(c.submit(c.task_spec(name, input, **options)))

    async def submit_batch(self, specs: Sequence[Dict[str, Any]]) -> List[Task]:
        return await self._run(c.submit_batch(specs))

    async def get(self, task_id: str) -> Task:
        return await self._run(c.get(task_id))

    async def _until_done(self, call: Callable[[float], c.Call[E]], timeout: Optional[float]) -> E:
        """What ``call`` answers once it has ended; ``TimeoutWaiting`` when
        ``timeout`` seconds passed first. Each look long-polls for the time left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        look, told = _FIRST_LOOK_S, False
        while True:
            got = await self._run(call(min(look, _remaining(deadline))))
            look = c.MAX_WAIT_S
            if got.done:
                return got
            told = _told(got, told)
            if _remaining(deadline) <= 0:
                raise _timed_out(got, timeout)

    async def wait(self, task_id: str, timeout: Optional[float] = None) -> Task:
        return await self._until_done(lambda wait: c.get(task_id, wait), timeout)

    async def list_tasks(self, **filters: Any) -> TaskPage:
        return await self._run(c.list_tasks(**filters))

    async def cancel(self, task_id: str) -> Task:
        return await self._run(c.cancel(task_id))

    async def retry(self, task_id: str) -> Task:
        return await self._run(c.retry(task_id))

    async def history(self, task_id: str) -> List[Dict[str, Any]]:
        return await self._run(c.history(task_id))

    async def submit_workflow(self, workflow: Dict[str, Any]) -> Dict[str, Any]:
        return await self._run(c.submit_workflow(workflow))

    async def workflow(self, workflow_id: str, limit: Optional[int] = None, cursor: Optional[str] = None) -> Workflow:
        """``GET /v1/workflows/{id}``: status and counts over every task, and
        one page of its tasks (100 by default; pass ``next_cursor`` on)."""
        return await self._run(c.workflow(workflow_id, limit=limit, cursor=cursor))

    async def monitor(
        self, task_id: str, callback: Callable[[Task], None], timeout: Optional[float] = None, poll: float = 1.0
    ) -> Task:
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: Any = None
        task = await self._run(c.get(task_id))
        while True:
            now = (task.status, task.progress)
            if now != seen:
                seen = now
                callback(task)
            if task.done:
                return task
            if _remaining(deadline) <= 0:
                raise _timed_out(task, timeout)
            task = await self._run(c.get(task_id, min(poll, _remaining(deadline))))

    async def wait_workflow(self, workflow_id: str, timeout: Optional[float] = None) -> Workflow:
        return await self._until_done(lambda wait: c.workflow(workflow_id, wait), timeout)

    async def workflow_graph(self, workflow_id: str, format: str = "json") -> Any:
        return await self._run(c.workflow_graph(workflow_id, format))

    async def cancel_workflow(self, workflow_id: str) -> Dict[str, Any]:
        return await self._run(c.cancel_workflow(workflow_id))

    async def approve(
        self, task_id: str, approved: bool = True, by: Optional[str] = None, comment: Optional[str] = None
    ) -> Task:
        return await self._run(c.approve(task_id, approved, by, comment))

    async def schedule(self, name: str) -> Schedule:
        return await self._run(c.schedule(name))

    async def delete_schedule(self, name: str) -> Schedule:
        return await self._run(c.delete_schedule(name))

    async def enable_schedule(self, name: str) -> Schedule:
        return await self._run(c.set_schedule_enabled(name, True))

    async def disable_schedule(self, name: str) -> Schedule:
        return await self._run(c.set_schedule_enabled(name, False))

    async def trigger_schedule(self, name: str) -> Task:
        return await self._run(c.trigger_schedule(name))

    async def schedule_runs(self, name: str, limit: int = 100) -> List[Task]:
        return await self._run(c.schedule_runs(name, limit))

    async def apply_schedules(self, text: str, dry_run: bool = False, prune: bool = False) -> ApplyReport:
        return await self._run(c.apply_schedules(text, dry_run, prune))

    async def publish_batch(self, events: Sequence[Mapping[str, Any]]) -> List[Event]:
        return await self._run(c.publish_batch(events))

    async def stream(
        self,
        type: Optional[str] = None,
        source: Optional[str] = None,
        target: Optional[str] = None,
        after: Union[int, str, None] = "latest",
    ) -> AsyncIterator[Event]:
        """Every event that matches, from ``after`` on (by default those
        published from now on), over the server-sent event stream
        (``GET /v1/events/stream``). A broken connection is opened again
        with ``Last-Event-ID``, so nothing is missed or repeated."""
        params = {k: v for k, v in (("type", type), ("source", source), ("target", target)) if v is not None}
        if after is not None:
            params["after"] = str(after)
        last: Optional[int] = None
        backoff = _BACKOFF_MIN
        while True:
            headers = {"last-event-id": str(last)} if last is not None else {}
            try:
                async with self._http.stream(
                    "GET", "/v1/events/stream", params=params, headers=headers, timeout=httpx.Timeout(30.0, read=None)
                ) as r:
                    if r.status_code >= 300:
                        raise from_answer(r.status_code, loads_answer(await r.aread()))
                    backoff = _BACKOFF_MIN
                    data: List[str] = []
                    async for line in r.aiter_lines():
                        if line.startswith("data:"):
                            data.append(line[5:].lstrip())
                        elif line == "" and data:
                            event = Event.from_json(json.loads("\n".join(data)))
                            data = []
                            last = event.offset
                            yield event
            except (httpx.HTTPError, Unavailable):
                await asyncio.sleep(backoff)
                backoff = min(_BACKOFF_MAX, backoff * 2)

    async def ack(self, group: str, offsets: Sequence[int], member: Optional[str] = None) -> Dict[str, Any]:
        return await self._run(c.ack(group, offsets, member))

    async def pause_queue(self, name: str) -> None:
        await self._run(c.pause_queue(name, True))

    async def resume_queue(self, name: str) -> None:
        await self._run(c.pause_queue(name, False))

    async def list_task_types(self) -> List[Dict[str, Any]]:
        return await self._run(c.task_types())

    async def list_workers(self) -> List[Dict[str, Any]]:
        return await self._run(c.workers())

    async def put_schedule(self, name: str, schedule: Mapping[str, Any]) -> Schedule:
        return await self._run(c.put_schedule(name, schedule))

    async def schedules(self) -> List[Schedule]:
        return await self._run(c.schedules())

    async def publish(
        self, type: str, payload: Any = None, source: str = "python", target: Optional[str] = None
    ) -> Event:
        return await self._run(c.publish(type, source, payload, target))

    async def events(self, after: Union[int, str, None] = None, **filters: Any) -> EventPage:
        return await self._run(c.events(after, **filters))

    async def queues(self) -> List[Queue]:
        return await self._run(c.queues())

    async def health(self) -> Dict[str, Any]:
        return await self._run(c.health())


__all__ = ["AsyncQuern", "Quern"]
