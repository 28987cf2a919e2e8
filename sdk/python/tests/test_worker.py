"""The Celery-style layer and `python -m quern worker`, as real processes
against a real server: delay/get, retries, errors, progress, cancellation of
sync and async tasks, chain/group/chord, import-path tasks, registration,
SIGTERM, and a task too deeply nested to decode."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

import quern

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def app(server_url: str) -> Iterator[quern.App]:
    os.environ["QUERN_URL"] = server_url
    sys.path.insert(0, str(HERE))
    import tasks_app

    tasks_app.app.client = quern.Quern(server_url)
    yield tasks_app.app


def start_worker(server_url: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "QUERN_URL": server_url, "PYTHONPATH": str(HERE)}
    return subprocess.Popen(
        [sys.executable, "-m", "quern", "worker", "tasks_app:app", "--concurrency", "4", "--lease", "3", *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def worker(server_url: str, app: quern.App) -> Iterator[subprocess.Popen[str]]:
    proc = start_worker(server_url, "--allow-import", "tasks_app")
    yield proc
    proc.terminate()
    proc.wait(timeout=20)


def test_delay_get_retries_and_errors(app: quern.App, worker: object) -> None:
    import tasks_app

    r = tasks_app.add.delay(2, 3)
    assert r.get(timeout=20) == 5 and r.successful() and r.state == "SUCCESS"
    assert tasks_app.add(1, 1) == 2, "calling the function runs it here"
    flaky = tasks_app.flaky.apply_async(args=("ok",), priority=3)
    assert flaky.get(timeout=20) == "ok"
    assert app.client.get(flaky.id).attempt == 2
    bad = tasks_app.boom.delay()
    with pytest.raises(quern.TaskFailed) as failed:
        bad.get(timeout=20)
    assert failed.value.task.error is not None
    details = failed.value.task.error.details
    assert details["type"] == "builtins.ValueError" and "bad value" in details["traceback"]
    assert bad.state == "FAILURE" and bad.info["kind"] == "exception"
    later = tasks_app.add.apply_async((1, 2), countdown=60)
    assert later.status == "pending"
    later.revoke()
    assert later.state == "REVOKED"


def test_a_task_waits_for_tasks_submitted_earlier(app: quern.App, worker: object) -> None:
    import tasks_app

    first = tasks_app.add.delay(1, 2)
    then = tasks_app.add.apply_async((3, 4), depends_on=[first])
    assert then.get(timeout=20) == 7
    done_first, done_then = app.client.get(first.id), app.client.get(then.id)
    assert done_then.raw["depends_on"] == [{"task": first.id, "on": "success"}]
    assert done_first.finished_at is not None and done_then.started_at is not None
    assert done_first.finished_at <= done_then.started_at, "it ran after its parent ended"
    # A failure edge on a parent that succeeded skips the task at once.
    skipped = app.client.submit("t.add", {"args": [1, 1]}, depends_on=[{"task": first.id, "on": "failure"}])
    assert skipped.status == "skipped"


def test_progress_and_cancellation(app: quern.App, worker: object) -> None:
    import tasks_app

    r = tasks_app.slow.delay(steps=50)
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not seen:
        info = r.info
        if isinstance(info, dict) and "percent" in info:
            seen.append(info)
        time.sleep(0.1)
    assert seen, "progress reached the server"
    r.revoke()
    done = app.client.wait(r.id, timeout=20)
    assert done.status == "cancelled"
    a = tasks_app.async_sleep.delay(30)
    deadline = time.monotonic() + 20
    while app.client.get(a.id).status != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    a.revoke()
    assert app.client.wait(a.id, timeout=20).status == "cancelled"


def test_a_cancel_reaches_a_running_task_at_once(server_url: str, app: quern.App) -> None:
    """With 30-second leases heartbeats come every 10 s: a cancel seen within
    a few seconds came through the worker's watch for stops."""
    proc = start_worker(server_url, "--queues", "prompt", "--lease", "30")
    try:
        # A sync task that checks, a coroutine, and sync code that never checks
        # (interrupted in its thread).
        for name, kwargs in (("t.progress", {"steps": 500}), ("t.async_sleep", {"seconds": 60}), ("t.spin", {})):
            task = app.client.submit(name, {"args": [], "kwargs": kwargs}, queue="prompt")
            deadline = time.monotonic() + 20
            while app.client.get(task.id).status != "running" and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)
            asked = time.monotonic()
            app.client.cancel(task.id)
            assert app.client.wait(task.id, timeout=20).status == "cancelled"
            took = time.monotonic() - asked
            assert took < 3, f"{name}: the cancel took {took:.1f} s to end the task"
        # The interrupted thread is free again: the next task runs.
        after = app.client.submit("t.add", {"args": [2, 3]}, queue="prompt")
        assert app.client.wait(after.id, timeout=20).result == 5
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_task_ends_showing_the_last_progress_it_reported(app: quern.App, worker: object) -> None:
    import tasks_app

    r = tasks_app.report.delay()
    assert r.get(timeout=20) == "reported"
    progress = app.client.get(r.id).progress
    assert progress is not None and progress.percent == 100, progress


def test_an_event_handler_runs_in_the_worker_and_a_failure_comes_back(app: quern.App, worker: object) -> None:
    head = app.client.publish("warmup", None).offset
    app.client.publish("note.hello", "hi")
    app.client.publish("note.flaky", "fail once")
    seen = {}
    for event in app.client.subscribe(type="seen.*", after=head, wait=5.0):
        seen[event.type] = event.payload
        if len(seen) == 2:
            break
    assert seen == {"seen.hello": "hi", "seen.flaky": "fail once"}


def test_chain_group_chord_and_pipeline_helpers(app: quern.App, worker: object) -> None:
    import tasks_app

    # Celery's semantics: each step takes the previous result first; get() answers the last.
    add = tasks_app.add
    assert quern.chain(add.s(1, 2), add.s(3), add.s(4)).apply_async(app).get(timeout=30) == 10
    assert quern.chain(add.s(1, 2), add.si(5, 5)).apply_async(app).get(timeout=30) == 10, "si() ignores the parent"
    steps = [add.s(0, 1)] + [add.s(1) for _ in range(11)]
    chained = quern.chain(*steps).apply_async(app)
    assert chained.get(timeout=30) == 12
    assert [r.get(timeout=5) for r in chained.results] == list(range(1, 13)), "results in declaration order"
    assert quern.group(add.s(1, 1), add.s(2, 2)).apply_async(app).get(timeout=30) == [2, 4]
    chord = quern.chord(quern.group(add.s(1, 1), add.s(2, 2), add.s(3, 3)), tasks_app.total.s())
    assert chord.apply_async(app).get(timeout=30) == 12, "the callback takes the group's results"
    ids = app.submit_workflow([tasks_app.add.s(5, 5), tasks_app.add.s(6, 6)], sequential=False)
    status = app.wait_for_workflow(ids, timeout=30)
    assert (status["total"], status["completed"], status["status"]) == (2, 2, "succeeded")


def test_import_path_tasks_run_and_others_are_left_alone(app: quern.App, worker: object) -> None:
    ok = app.client.submit("tasks_app:plain", {"args": ["hi"], "kwargs": {}})
    assert app.client.wait(ok.id, timeout=20).result == "HI"
    kw = app.client.submit("tasks_app:plain", {"word": "kw"})
    assert app.client.wait(kw.id, timeout=20).result == "KW", "a bare object is keyword arguments"
    # What it cannot run — another worker's task, an import path outside
    # its prefixes — it does not lease: the task waits for one that can.
    others = [app.client.submit("shell", {"command": ["echo", "hello"]}), app.client.submit("os:getcwd")]
    dotted = app.client.submit("tasks_app.plain", {"args": ["dots"], "kwargs": {}})
    assert app.client.wait(dotted.id, timeout=20).result == "DOTS", "a Celery-style dotted name"
    for other in others:
        left = app.client.get(other.id)
        assert left.status == "queued", f"{other.name} is left for a worker that can run it: {left.error}"
        app.client.cancel(other.id)


def test_task_types_are_registered_with_docstrings_and_schemas(app: quern.App, worker: object) -> None:
    import tasks_app

    types = {t["name"]: t for t in app.client.list_task_types()}
    assert types["t.add"]["description"] == "Adds two numbers."
    # A task's own attempts and retry are its type's defaults on the server:
    # a submission by name from anywhere gets them.
    assert types["t.flaky"]["defaults"]["max_attempts"] == 3
    by_name = app.client.submit("t.flaky", queue="unserved")
    assert (by_name.max_attempts, by_name.raw["retry"]["backoff"]) == (3, "fixed")
    app.client.cancel(by_name.id)
    with pytest.raises(quern.Unprocessable) as bad:
        app.client.submit("t.add", {"args": [], "kwargs": {"x": "one", "y": 2}})
    assert bad.value.code == "invalid_input"
    for refused in ({"kwargs": {"x": "one", "y": 2}}, {"args": ["a", "b"]}, {"args": [1], "kwargs": {"y": "b"}}):
        with pytest.raises(quern.Unprocessable):
            app.client.submit("t.add", refused)
    with pytest.raises(quern.Unprocessable):
        tasks_app.add.delay("a", "b")
    assert app.client.submit("t.add", {"args": [1, 2]}, queue="unserved").status == "queued"
    chain_step = {"parent": "prepend", "args": [2]}
    assert app.client.submit("t.add", chain_step, queue="unserved").status == "queued", "the parent's result goes first"
    assert any(w["id"].startswith("py-") for w in app.client.list_workers())


def test_sigterm_finishes_running_tasks_and_hands_back_the_rest(server_url: str, app: quern.App) -> None:
    import tasks_app

    proc = start_worker(server_url, "--queues", "drain", "--grace", "0.5")
    slow = tasks_app.async_sleep.apply_async((10,), queue="drain")
    quick = tasks_app.async_sleep.apply_async((0.3,), queue="drain")
    deadline = time.monotonic() + 20
    while app.client.get(slow.id).status != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert app.client.wait(quick.id, timeout=5).status == "succeeded", "in-flight work finished"
    assert app.client.get(slow.id).status == "queued", "the unfinished one went back at once"


def test_input_too_deep_is_refused_and_the_worker_keeps_running(server_url: str, app: quern.App) -> None:
    # 5,000 levels: far past what Python's json module decodes. The server
    # refuses it (over 64 levels), so no worker ever leases it; a worker
    # that meets such a value anyway (an older server) fails that task
    # alone, which tests/test_answers.py covers on hand-written answers.
    deep = "[" * 5000 + "]" * 5000
    first = app.client.submit("t.echo", {"args": ["first"], "kwargs": {}}, queue="deep")
    body = '{"name": "t.echo", "queue": "deep", "input": {"args": [' + deep + '], "kwargs": {}}}'
    with httpx.Client(base_url=server_url, timeout=30) as h:
        answer = h.post("/v1/tasks", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text[:200]
    assert answer.json()["error"]["code"] == "json_too_deep"
    last = app.client.submit("t.echo", {"args": ["last"], "kwargs": {}}, queue="deep")
    proc = start_worker(server_url, "--queues", "deep")
    try:
        assert app.client.wait(first.id, timeout=20).result == "first"
        assert app.client.wait(last.id, timeout=20).result == "last"
        assert proc.poll() is None, "the worker is still running"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr


def test_an_idle_worker_says_what_it_serves_and_stops_within_a_second(server_url: str, app: quern.App) -> None:
    proc = start_worker(server_url, "--queues", "idle-stop")
    try:
        deadline = time.monotonic() + 20
        while not any(
            w["id"].startswith("py-") and "idle-stop" in w.get("queues", []) for w in app.client.list_workers()
        ):
            assert time.monotonic() < deadline, "the worker registered"
            time.sleep(0.05)
        time.sleep(0.5)
        asked = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        took = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stderr is not None
    log = proc.stderr.read()
    assert "queues idle-stop" in log and "t.add" in log, log
    assert "stopped" in log, log
    assert took < 1.5, f"an idle worker took {took:.1f} s to stop"


def test_a_worker_declares_its_types_again_after_the_server_restarts(tmp_path: Path) -> None:
    from conftest import _binary

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    data = str(tmp_path / "data")

    def serve() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [_binary(), "server", "--listen", f"127.0.0.1:{port}", "--data", data],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().startswith("listening on ")
        return proc

    def serving() -> int:
        types = httpx.get(f"{url}/v1/task-types").json()["task_types"]
        return sum(t.get("workers", 0) for t in types if t["name"] == "t.add")

    server = serve()
    worker = start_worker(url)
    try:
        deadline = time.monotonic() + 20
        while serving() == 0:
            assert time.monotonic() < deadline, "declared at start"
            time.sleep(0.05)
        server.kill()
        server.wait()
        time.sleep(1.0)
        server = serve()
        deadline = time.monotonic() + 20
        while serving() == 0:
            assert time.monotonic() < deadline, "declared again after the restart"
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(timeout=20)
        server.terminate()
        server.wait(timeout=10)
