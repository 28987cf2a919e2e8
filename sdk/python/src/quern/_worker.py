"""``python -m quern worker MODULE:APP``: runs an app's tasks (and, with
``--allow-import``, tasks named by import path) from Quern queues.

Sync functions run in a thread pool, ``async def`` ones on one event loop.
One heartbeat thread keeps every lease alive in one request and carries
progress; completions go out in batches from one thread. SIGTERM or SIGINT:
stop leasing, let running tasks finish within the grace period, hand the rest
back (they are queued again at once).

A task the worker cannot take up fails alone, not retried: one with a field
nested too deeply for Python to decode (kind ``rejected``), or whose
function cannot be found or imported; the other tasks of its lease run, and
the worker keeps running. A worker given lease keys (``lease_key_file``,
``QUERN_LEASE_KEY_FILE``) runs only tasks whose lease signature verifies;
any other fails as ``rejected`` without running."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
import ctypes
import importlib
import logging
import os
import queue
import signal
import socket
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import httpx

from ._answers import Undecodable, loads_answer
from ._app import App, TaskFunction
from ._integrity import LeaseKeys

_log = logging.getLogger("quern.worker")

_current: contextvars.ContextVar[Optional[TaskContext]] = contextvars.ContextVar("quern_task", default=None)


class TaskContext:
    """What a running task knows of itself: ``quern.current_task()``."""

    def __init__(self, task: Dict[str, Any], beat: threading.Event) -> None:
        self.id: str = task["id"]
        self.name: str = task["name"]
        self.attempt: int = task.get("attempt", 1)
        self.input: Any = task.get("input")
        self.parents: Dict[str, Any] = task.get("parents") or {}
        self.token: str = task["lease"]["token"]
        self.timeout_ms: Optional[int] = task.get("timeout_ms")
        self._progress: Optional[Dict[str, Any]] = None
        self._cancelled = threading.Event()
        self._beat = beat
        self.cancel_hook: Optional[Callable[[], None]] = None

    def progress(self, percent: float, message: Optional[str] = None) -> None:
        """Reports progress; the server has it with the next heartbeat, which this brings forward."""
        self._progress = {"percent": float(percent), "message": message}
        self._beat.set()

    @property
    def cancelled(self) -> bool:
        """Whether a client cancelled the task; a sync task should stop soon after."""
        return self._cancelled.is_set()

    def _cancel(self) -> None:
        self._cancelled.set()
        if self.cancel_hook is not None:
            self.cancel_hook()


def _raise_in(thread: int, exc: Optional[type]) -> None:
    """Makes ``thread`` raise ``exc`` at its next Python instruction (``None``
    withdraws one not raised yet)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(exc) if exc else None)


class _Interrupt:
    """Stops a sync task's thread when the task is cancelled: ``Cancelled`` is
    raised in it at its next Python instruction, so Python code stops at once
    (a blocking call such as ``time.sleep`` or a socket read returns first).
    Only while the task's function runs: once it returned, a cancel changes
    nothing, and one not yet raised is withdrawn, so the thread's next task
    never sees it."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.lock = threading.Lock()
        self.armed = True

    def fire(self) -> None:
        with self.lock:
            if self.armed:
                _raise_in(self.thread, Cancelled)

    def disarm(self) -> None:
        with self.lock:
            self.armed = False
            _raise_in(self.thread, None)


def current_task() -> TaskContext:
    """The task this code runs for (inside a task function)."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("current_task() outside a task run by a quern worker")
    return ctx


class Cancelled(Exception):
    """Raise (or let a sync task end) after ``current_task().cancelled``."""


def decode_input(value: Any, parents: Optional[Dict[str, Any]] = None) -> Tuple[List[Any], Dict[str, Any]]:
    """``{"args", "kwargs"}`` as the SDK sends them — with ``"parent":
    "prepend"`` (a chain's step, a chord's callback) the parents' results go
    first: one parent's result, or the list of several's in the order they
    were submitted; a bare object is keyword arguments (schedules files), a
    list positional ones, anything else one."""
    if isinstance(value, dict) and value and set(value) <= {"args", "kwargs", "parent"}:
        args = list(value.get("args") or [])
        if value.get("parent") == "prepend":
            results = [p.get("result") for p in sorted((parents or {}).values(), key=lambda p: str(p.get("task")))]
            if len(results) == 1:
                args.insert(0, results[0])
            elif results:
                args.insert(0, results)
        return args, dict(value.get("kwargs") or {})
    if isinstance(value, dict):
        return [], dict(value)
    if isinstance(value, list):
        return list(value), {}
    return ([] if value is None else [value]), {}


def _error(e: BaseException, kind: str = "exception") -> Dict[str, Any]:
    return {
        "kind": kind,
        "message": str(e) or type(e).__name__,
        "details": {
            "type": f"{type(e).__module__}.{type(e).__qualname__}",
            "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__)),
        },
    }


class Worker:
    """Leases, runs and completes tasks until stopped."""

    def __init__(
        self,
        app: App,
        queues: Sequence[str] = ("default",),
        concurrency: int = 8,
        allow_import: Sequence[str] = (),
        lease_s: float = 30.0,
        grace_s: float = 30.0,
        worker_id: Optional[str] = None,
        lease_key_file: Optional[str] = None,
    ) -> None:
        self.app = app
        key_file = lease_key_file or os.environ.get("QUERN_LEASE_KEY_FILE")
        self.lease_keys: Optional[LeaseKeys] = LeaseKeys.load(key_file) if key_file else None
        self.queues = list(queues)
        self.concurrency = max(1, concurrency)
        self.allow_import = [p.strip() for p in allow_import if p.strip()]
        self.lease_ms = int(lease_s * 1000)
        self.grace_s = grace_s
        self.id = worker_id or f"py-{socket.gethostname()}-{os.getpid()}"
        context = app.client.ssl_context
        self.http = httpx.Client(
            base_url=app.client.url,
            timeout=httpx.Timeout(30.0, read=90.0),
            headers=dict(app.client._http.headers),
            verify=context if context else True,
        )
        self.running: Dict[str, TaskContext] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.beat = threading.Event()
        self.done: queue.Queue[Optional[Dict[str, Any]]] = queue.Queue()
        self.pool = cf.ThreadPoolExecutor(self.concurrency, thread_name_prefix="quern-task")
        self.loop = asyncio.new_event_loop()
        self.free = threading.Semaphore(self.concurrency)
        self.unreachable = False

    # -- resolving a task's function ------------------------------------------
    def resolve(self, name: str) -> Tuple[Optional[Callable[..., Any]], Tuple[type, ...], str]:
        """The function for ``name``, its retry_on, or why there is none."""
        t = self.app.tasks.get(name)
        if t is not None:
            return t.fn, t.retry_on, ""
        module, sep, attr = name.partition(":")
        if not sep:
            # A Celery-style dotted name (`my_project.tasks.long_computation`)
            # is `my_project.tasks:long_computation`, under the same allowlist.
            module, sep, attr = name.rpartition(".")
            if not sep or not self.allow_import:
                return None, (), f"no task {name!r} in this worker's app"
        if not any(module == p or module.startswith(p + ".") for p in self.allow_import):
            return None, (), f"import path {name!r} is not under an --allow-import prefix"
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            return None, (), f"cannot import {name!r}: {e}"
        if isinstance(fn, TaskFunction):
            return fn.fn, fn.retry_on, ""
        return fn, (), ""

    # -- the threads ------------------------------------------------------------
    def _post(self, path: str, body: Dict[str, Any]) -> Any:
        for attempt in range(20):
            try:
                r = self.http.post(path, json=body)
                if r.status_code < 500:
                    if self.unreachable:
                        self.unreachable = False
                        _log.warning("the server at %s answers again", self.http.base_url)
                        if path != "/v1/workers/register":
                            # It may have restarted without this worker's types.
                            self.register()
                    return loads_answer(r.content)
                why = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                why = str(e) or type(e).__name__
            except ValueError as e:
                # Not JSON at all: asking again would not mend it (and would
                # lease other tasks); what this answer leased expires.
                _log.error("POST %s: the server's answer is not JSON (%s); ignored", path, e)
                return None
            if not self.unreachable:
                self.unreachable = True
                _log.warning("POST %s to %s failed (%s); retrying", path, self.http.base_url, why)
            time.sleep(min(5.0, 0.1 * 2**attempt))
        return None

    def _completer(self) -> None:
        while True:
            first = self.done.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 500:
                try:
                    nxt = self.done.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.done.put(None)
                    break
                batch.append(nxt)
            self._post("/v1/complete", {"worker": self.id, "results": batch})

    def _heartbeats(self) -> None:
        period = max(0.2, self.lease_ms / 3000)
        while not self.stopping.is_set() or self.running:
            self.beat.wait(period)
            self.beat.clear()
            with self.lock:
                leases = [
                    {"task": c.id, "token": c.token, **({"progress": c._progress} if c._progress else {})}
                    for c in self.running.values()
                ]
            if not leases:
                if self.stopping.is_set():
                    return
                continue
            answer = self._post("/v1/heartbeat", {"worker": self.id, "leases": leases})
            for a in (answer or {}).get("leases", []):
                if a.get("cancel"):
                    with self.lock:
                        ctx = self.running.get(a["task"])
                    if ctx is not None:
                        ctx._cancel()

    def _watch_stops(self) -> None:
        """Holds ``POST /v1/stops`` open so that a cancel (or an attempt the
        server ended) reaches its task at once, not at the next heartbeat."""
        http = httpx.Client(
            base_url=self.http.base_url,
            timeout=httpx.Timeout(30.0, read=60.0),
            headers=dict(self.http.headers),
            verify=self.app.client.ssl_context or True,
        )
        backoff = 0.1
        while not self.stopping.is_set() or self.running:
            try:
                r = http.post("/v1/stops", json={"worker": self.id, "wait_ms": 25000})
            except httpx.HTTPError:
                time.sleep(backoff)
                backoff = min(5.0, backoff * 2)
                continue
            if r.status_code == 404:
                _log.info("the server does not push stops; cancels arrive with heartbeats")
                return
            if r.status_code != 200:
                time.sleep(backoff)
                backoff = min(5.0, backoff * 2)
                continue
            backoff = 0.1
            for stop in loads_answer(r.content).get("stops", []):
                with self.lock:
                    ctx = self.running.get(stop.get("task"))
                if ctx is not None:
                    _log.info("task %s: told to stop (%s)", ctx.id, stop.get("reason"))
                    ctx._cancel()

    def _finish(self, ctx: TaskContext, outcome: Dict[str, Any]) -> None:
        with self.lock:
            if self.running.pop(ctx.id, None) is None:
                return  # already handed back or timed out
        # The last progress goes with the outcome: a heartbeat may not have carried it.
        last = {"progress": ctx._progress} if ctx._progress else {}
        self.done.put({"task": ctx.id, "token": ctx.token, **outcome, **last})
        self.free.release()

    def _run_sync(self, ctx: TaskContext, fn: Callable[..., Any], retry_on: Tuple[type, ...]) -> None:
        args, kwargs = decode_input(ctx.input, ctx.parents)
        token = _current.set(ctx)
        interrupt = _Interrupt()
        ctx.cancel_hook = interrupt.fire
        try:
            try:
                result = fn(*args, **kwargs)
            finally:
                interrupt.disarm()
        except Cancelled as e:
            self._finish(ctx, {"outcome": "failed", "error": _error(e, "cancelled"), "retry": False})
        except Exception as e:
            self._finish(ctx, {"outcome": "failed", "error": _error(e), "retry": isinstance(e, retry_on)})
        else:
            if ctx.cancelled:
                self._finish(ctx, {"outcome": "failed", "error": {"kind": "cancelled", "message": "cancelled"}})
            else:
                self._finish(ctx, {"outcome": "succeeded", "result": result})
        finally:
            _current.reset(token)

    async def _run_async(self, ctx: TaskContext, fn: Callable[..., Any], retry_on: Tuple[type, ...]) -> None:
        args, kwargs = decode_input(ctx.input, ctx.parents)
        _current.set(ctx)
        timeout = ctx.timeout_ms / 1000 if ctx.timeout_ms else None
        try:
            result = await asyncio.wait_for(fn(*args, **kwargs), timeout)
        except asyncio.CancelledError as e:
            self._finish(ctx, {"outcome": "failed", "error": _error(e, "cancelled"), "retry": False})
        except asyncio.TimeoutError as e:
            self._finish(ctx, {"outcome": "failed", "error": _error(e, "timeout"), "retry": True})
        except Exception as e:
            self._finish(ctx, {"outcome": "failed", "error": _error(e), "retry": isinstance(e, retry_on)})
        else:
            self._finish(ctx, {"outcome": "succeeded", "result": result})

    def _start(self, task: Any) -> None:
        """Starts one leased task; fails it alone when it cannot be run."""
        try:
            ctx = TaskContext(task, self.beat)
        except (AttributeError, TypeError, KeyError) as e:
            # Without its id and lease token the task cannot be completed:
            # its lease expires and the server handles it as lost.
            _log.error("a leased task without a readable id or lease token (%r); left to its lease expiry", e)
            self.free.release()
            return
        with self.lock:
            self.running[ctx.id] = ctx
        undecodable = [v for v in task.values() if isinstance(v, Undecodable)]
        if undecodable:
            fields = [v.field or "?" for v in undecodable]
            message = f"the worker cannot decode the task's {', '.join(fields)}: {undecodable[0].reason}; not run"
            error = {"kind": "rejected", "message": message, "details": {"type": "quern.Undecodable", "fields": fields}}
            self._finish(ctx, {"outcome": "failed", "error": error, "retry": False})
            return
        if self.lease_keys is not None:
            refused = self.lease_keys.verify(task)
            if refused is not None:
                _log.error("task %s: lease signature check failed: %s; not run", ctx.id, refused)
                message = f"lease signature check failed: {refused}; not run"
                error = {"kind": "rejected", "message": message, "details": {"reason": "integrity"}}
                self._finish(ctx, {"outcome": "failed", "error": error, "retry": False})
                return
        try:
            fn, retry_on, why = self.resolve(task["name"])
        except Exception as e:
            fn, retry_on, why = None, (), f"cannot resolve the task's function: {e}"
        if fn is None:
            error = {"kind": "exception", "message": why, "details": {"type": "quern.NotRegistered"}}
            self._finish(ctx, {"outcome": "failed", "error": error, "retry": False})
            return
        if asyncio.iscoroutinefunction(fn):
            fut = asyncio.run_coroutine_threadsafe(self._run_async(ctx, fn, retry_on), self.loop)

            def cancel_async() -> None:
                self.loop.call_soon_threadsafe(fut.cancel)

            ctx.cancel_hook = cancel_async
        else:
            self.pool.submit(contextvars.copy_context().run, self._run_sync, ctx, fn, retry_on)
            if ctx.timeout_ms:
                # A thread cannot be stopped: at the deadline the attempt is
                # reported timed out, and the function's late result dropped.
                timer = threading.Timer(ctx.timeout_ms / 1000, self._time_out, args=(ctx,))
                timer.daemon = True
                timer.start()

    def _time_out(self, ctx: TaskContext) -> None:
        err = {"kind": "timeout", "message": f"ran past its timeout of {ctx.timeout_ms} ms"}
        self._finish(ctx, {"outcome": "failed", "error": err, "retry": True})
        # Stop the thread too, so that it is free for the next task.
        if ctx.cancel_hook is not None:
            ctx.cancel_hook()

    def register(self) -> None:
        types = [t.type_declaration() for t in self.app.tasks.values()]
        answer = self._post("/v1/workers/register", {"worker": self.id, "queues": self.queues, "task_types": types})
        refused = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(refused, dict):
            _log.error("the server refused this worker's task types: %s", refused.get("message"))

    def stop(self, *_: Any) -> None:
        self.stopping.set()
        self.beat.set()

    def run(self) -> None:
        """Runs until ``stop()`` (SIGTERM/SIGINT in the main thread)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        serving = ", ".join(sorted(self.app.tasks)) or "none"
        imports = f"; import paths under {', '.join(self.allow_import)}" if self.allow_import else ""
        signed = f"; only leases signed with {', '.join(self.lease_keys.ids)}" if self.lease_keys else ""
        _log.info(
            "worker %s on %s: queues %s, concurrency %d, tasks %s%s%s",
            self.id,
            self.http.base_url,
            ",".join(self.queues),
            self.concurrency,
            serving,
            imports,
            signed,
        )
        self.register()
        threading.Thread(target=self.loop.run_forever, name="quern-async", daemon=True).start()
        completer = threading.Thread(target=self._completer, name="quern-complete", daemon=True)
        completer.start()
        beats = threading.Thread(target=self._heartbeats, name="quern-heartbeat", daemon=True)
        beats.start()
        threading.Thread(target=self._watch_stops, name="quern-stops", daemon=True).start()
        for pattern, group, handler in self.app.event_handlers:
            _log.info("events %s → %s (consumer group %s)", pattern, getattr(handler, "__qualname__", handler), group)
            threading.Thread(
                target=self.app.client.consume,
                kwargs={"group": group, "handler": handler, "member": self.id, "type": pattern, "stop": self.stopping},
                name=f"quern-events-{group}",
                daemon=True,
            ).start()
        # Only what this worker can run: its app's tasks, and the import
        # paths under its prefixes (`pkg:func`, `pkg.mod:func`, `pkg.func`).
        names = sorted(self.app.tasks) + [f"{p}{sep}*" for p in self.allow_import for sep in (":", ".")]
        while not self.stopping.is_set():
            # Wait for one free slot, then take every other one free now.
            free = 0
            while free < self.concurrency and (
                self.free.acquire(timeout=0.5) if free == 0 else self.free.acquire(blocking=False)
            ):
                free += 1
            if free == 0:
                continue
            body: Dict[str, Any] = {
                "worker": self.id,
                "queues": self.queues,
                "max": free,
                # Short enough that an idle worker stops within a second.
                "wait_ms": 800,
                "lease_ms": self.lease_ms,
            }
            body["names"] = names
            answer = None if self.stopping.is_set() else self._post("/v1/lease", body)
            tasks = answer.get("tasks") if isinstance(answer, dict) else None
            if not isinstance(tasks, list):
                tasks = []
            for _ in range(free - len(tasks)):
                self.free.release()
            for t in tasks:
                self._start(t)
        _log.info("worker %s stopping: %d task(s) running, grace %.0f s", self.id, len(self.running), self.grace_s)
        self._shutdown()
        beats.join(timeout=5)
        self.done.put(None)
        completer.join(timeout=30)
        _log.info("worker %s stopped", self.id)

    def _shutdown(self) -> None:
        deadline = time.monotonic() + self.grace_s
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
        with self.lock:
            left = list(self.running.values())
            self.running.clear()
        for ctx in left:
            self.done.put({"task": ctx.id, "token": ctx.token, "outcome": "released"})
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.pool.shutdown(wait=False, cancel_futures=True)


def load_app(spec: str) -> App:
    """``package.module:app`` → the ``App`` there."""
    module, _, attr = spec.partition(":")
    app = getattr(importlib.import_module(module), attr or "app")
    if not isinstance(app, App):
        raise SystemExit(f"{spec} is not a quern.App")
    return app
