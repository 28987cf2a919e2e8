"""Every client call against a real server: tasks, waiting, workflows,
schedules, events, queues, health, typed errors, the async client, and tasks
whose values are nested too deeply to decode."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import httpx
import pytest

import quern
from quern import AsyncQuern, Quern


def run_one(url: str, result: Any = None, fail: bool = False, queue: str = "default") -> Dict[str, Any]:
    """Leases one task and completes it, as a worker would."""
    with httpx.Client(base_url=url, timeout=30) as h:
        tasks = h.post("/v1/lease", json={"worker": "t", "queues": [queue], "max": 1, "wait_ms": 5000}).json()["tasks"]
        assert tasks, "a task was ready"
        t = tasks[0]
        outcome: Dict[str, Any] = {"task": t["id"], "token": t["lease"]["token"]}
        if fail:
            outcome.update(outcome="failed", error={"kind": "exception", "message": "boom"})
        else:
            outcome.update(outcome="succeeded", result=result)
        assert h.post("/v1/complete", json={"worker": "t", "results": [outcome]}).json()["results"][0]["ok"]
        return dict(t)


def test_submit_get_wait_and_list(server_url: str, caplog: pytest.LogCaptureFixture) -> None:
    q = Quern(server_url)
    task = q.submit(
        "report.build", {"month": "2026-11"}, priority=5, metadata={"team": "finance"}, max_attempts=3, timeout=60
    )
    assert (task.status, task.priority, task.max_attempts, task.timeout_ms) == ("queued", 5, 3, 60_000)
    assert q.get(task.id).input == {"month": "2026-11"}
    # wait() is a long-poll: it returns as soon as the worker finishes.
    threading.Timer(0.3, run_one, args=(server_url, {"pages": 12})).start()
    started = time.monotonic()
    done = q.wait(task.id, timeout=20)
    assert done.status == "succeeded" and done.result == {"pages": 12} and done.done
    assert time.monotonic() - started < 10
    page = q.list_tasks(metadata={"team": "finance"}, status=["succeeded"])
    assert [t.id for t in page.tasks] == [task.id]
    assert [h["to"] for h in q.history(task.id)][-1] == "succeeded"
    delayed = q.submit("later", delay=60)
    assert delayed.status == "pending"
    with pytest.raises(quern.TimeoutWaiting) as ran_out:
        q.wait(delayed.id, timeout=0.3)
    assert isinstance(ran_out.value, TimeoutError), "a TimeoutError, as the standard library's waits raise"
    assert ran_out.value.task is not None and ran_out.value.task.status == "pending", "it holds the task as it stands"
    assert delayed.id in [t.id for t in q.list_tasks(status="pending").tasks], "one status as a string"
    assert q.cancel(delayed.id).status == "cancelled"
    assert q.retry(delayed.id).status == "queued"
    # Metadata is typed, and filters compare by type.
    labelled = q.submit("labelled", metadata={"n": 5, "ok": True, "s": "5"})
    assert labelled.metadata == {"n": 5, "ok": True, "s": "5"}
    for filters, found in (({"n": 5}, 1), ({"s": "5"}, 1), ({"n": "5"}, 0), ({"ok": True}, 1), ({"ok": "true"}, 0)):
        assert len(q.list_tasks(name="labelled", metadata=filters).tasks) == found, filters
    # A task no live worker serves: the wait says so, in its error and its log.
    unserved = q.submit("thumbnail", queue="nobody-here")
    with caplog.at_level(logging.WARNING, logger="quern"), pytest.raises(quern.TimeoutWaiting) as ran_out:
        q.wait(unserved.id, timeout=1.5)
    assert "no live worker serves `thumbnail` on queue `nobody-here`" in str(ran_out.value)
    assert ran_out.value.task is not None and ran_out.value.task.notice is not None
    assert [r.getMessage() for r in caplog.records].count(f"task {unserved.id}: {ran_out.value.task.notice}") == 1
    batch = q.submit_batch([quern.task_spec("b", i, queue="batchq") for i in range(3)])
    assert [t.input for t in batch] == [0, 1, 2]


def test_monitor_calls_back_on_changes(server_url: str) -> None:
    q = Quern(server_url)
    task = q.submit("monitored", queue="mon")
    seen: List[str] = []
    threading.Timer(0.3, run_one, args=(server_url, None, False, "mon")).start()
    final = q.monitor(task.id, lambda t: seen.append(t.status), timeout=20)
    assert final.status == "succeeded"
    assert seen[0] == "queued" and seen[-1] == "succeeded"


def test_errors_are_typed_and_carry_the_code(server_url: str) -> None:
    q = Quern(server_url)
    with pytest.raises(quern.BadRequest) as bad:
        q.submit("bad name")
    assert bad.value.code == "invalid_request" and bad.value.details.get("field") == "name"
    with pytest.raises(quern.NotFound):
        q.get("00000000-0000-0000-0000-000000000000")
    done = q.submit("x", queue="errq")
    run_one(server_url, queue="errq")
    with pytest.raises(quern.Conflict) as conflict:
        q.cancel(done.id)
    assert conflict.value.code == "invalid_transition"
    with pytest.raises(quern.Unprocessable) as cyclic:
        q.submit_workflow(
            {
                "name": "c",
                "tasks": [
                    {"key": "a", "name": "a", "depends_on": [{"key": "b"}]},
                    {"key": "b", "name": "b", "depends_on": [{"key": "a"}]},
                ],
            }
        )
    assert cyclic.value.code == "invalid_workflow" and "a -> b -> a" in cyclic.value.message
    with pytest.raises(quern.TransportError):
        Quern("http://127.0.0.1:9", timeout=2).health()


def test_workflows(server_url: str) -> None:
    q = Quern(server_url)
    wf = q.submit_workflow(
        {"name": "pipeline", "chain": [{"name": "step", "queue": "wfq"}, {"name": "step", "queue": "wfq"}]}
    )
    run_one(server_url, 1, queue="wfq")
    run_one(server_url, 2, queue="wfq")
    status = q.wait_workflow(wf["id"], timeout=20)
    assert (status.status, status.total, status.counts) == ("succeeded", 2, {"succeeded": 2})
    graph = q.workflow_graph(wf["id"], "json")
    assert len(graph["edges"]) == 1


def test_a_large_workflow_comes_in_pages(server_url: str) -> None:
    q = Quern(server_url)
    wf = q.submit_workflow({"name": "long", "chain": [{"name": "step", "queue": "pages"} for _ in range(150)]})
    first = q.workflow(wf["id"])
    assert (first.total, first.counts, len(first.tasks)) == (150, {"queued": 1, "pending": 149}, 100)
    assert first.next_cursor is not None
    rest = q.workflow(wf["id"], limit=1000, cursor=first.next_cursor)
    assert (len(rest.tasks), rest.next_cursor) == (50, None)
    keys = [t.raw["key"] for t in first.tasks + rest.tasks]
    assert keys == [f"step-{i}" for i in range(1, 151)]


def test_schedules(server_url: str) -> None:
    q = Quern(server_url)
    s = q.put_schedule("daily", {"cron": "0 9 * * *", "timezone": "Europe/Berlin", "task": {"name": "report"}})
    assert s.enabled and s.next_fire_at and s.timezone == "Europe/Berlin"
    assert [x.name for x in q.schedules()] == ["daily"]
    assert not q.disable_schedule("daily").enabled
    assert q.enable_schedule("daily").enabled
    run = q.trigger_schedule("daily")
    assert run.metadata["schedule"] == "daily"
    assert [t.id for t in q.schedule_runs("daily")] == [run.id]
    report = q.apply_schedules("schedules:\n  - name: hourly\n    every: 1 hour\n    task: {name: sync}\n", prune=True)
    assert (report.created, report.deleted) == (["hourly"], ["daily"])
    with pytest.raises(quern.Unprocessable) as bad:
        q.put_schedule("bad", {"cron": "61 * * * *", "task": {"name": "t"}})
    assert bad.value.code == "invalid_schedule" and bad.value.details["field"] == "cron"
    assert q.delete_schedule("hourly").name == "hourly"
    with pytest.raises(quern.NotFound):
        q.schedule("hourly")


def test_events(server_url: str) -> None:
    q = Quern(server_url)
    first = q.publish("email.processed", {"n": 1}, source="email-agent")
    q.publish_batch([{"type": "email.failed", "source": "email-agent"}, {"type": "other", "source": "x"}])
    page = q.events(after=first.offset - 1, type="email.*")
    assert [e.type for e in page.events] == ["email.processed", "email.failed"]
    assert page.events[0].payload == {"n": 1}
    got = q.events(after=page.next_after, type="email.*", wait=0.2)
    assert got.events == []
    group = q.events(after=0, type="email.*", group="g", member="m1")
    assert q.ack("g", [e.offset for e in group.events], member="m1")["acked"] == len(group.events)
    with pytest.raises(quern.BadRequest):
        q.publish("bad type")


def test_queues_health_and_registry(server_url: str) -> None:
    q = Quern(server_url)
    q.submit("held", queue="pausable")
    q.pause_queue("pausable")
    assert next(x for x in q.queues() if x.name == "pausable").paused
    q.resume_queue("pausable")
    assert q.health()["store"]
    assert isinstance(q.list_task_types(), list) and isinstance(q.list_workers(), list)


def test_async_client(server_url: str) -> None:
    async def main() -> None:
        async with AsyncQuern(server_url) as q:
            task = await q.submit("async.job", {"x": 1}, queue="aq")
            loop = asyncio.get_running_loop()
            waiter = asyncio.ensure_future(q.wait(task.id, timeout=20))
            await loop.run_in_executor(None, run_one, server_url, {"ok": True}, False, "aq")
            done = await waiter
            assert done.result == {"ok": True}
            event = await q.publish("async.event", {"y": 2})
            assert (await q.events(after=event.offset - 1)).events[0].payload == {"y": 2}
            assert (await q.health())["store"]
            s = await q.put_schedule("async-s", {"every": "1 hour", "task": {"name": "t"}})
            assert s.name == "async-s" and (await q.schedule("async-s")).enabled
            assert not (await q.disable_schedule("async-s")).enabled
            assert (await q.trigger_schedule("async-s")).metadata["schedule"] == "async-s"
            assert len(await q.schedule_runs("async-s")) == 1
            assert (await q.apply_schedules("schedules: []", dry_run=True)).dry_run
            assert (await q.delete_schedule("async-s")).name == "async-s"
            wf = await q.submit_workflow({"name": "aw", "group": [{"name": "g", "queue": "awq"}]})
            assert (await q.cancel_workflow(wf["id"]))["cancelled"] == 1
            assert (await q.wait_workflow(wf["id"], timeout=5)).status == "cancelled"
            batch = await q.publish_batch([{"type": "a.one", "source": "s"}])
            assert (await q.ack("ag", [batch[0].offset]))["acked"] == 0, "not handed out to the group"
            await q.pause_queue("apq")
            await q.resume_queue("apq")
            assert isinstance(await q.list_task_types(), list) and isinstance(await q.list_workers(), list)

    asyncio.run(main())


#: 5,000 levels: far past what Python's json module decodes (about 1,000)
#: and the server's limit of 64.
DEEP = "[" * 5000 + "]" * 5000


def test_a_value_too_deep_is_refused_and_listing_goes_on(server_url: str) -> None:
    q = Quern(server_url)
    plain = q.submit("deep.plain", {"n": 1}, queue="deepc")
    body = '{"name": "deep.input", "queue": "deepc", "input": ' + DEEP + "}"
    with httpx.Client(base_url=server_url, timeout=30) as h:
        answer = h.post("/v1/tasks", content=body, headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "json_too_deep")
    assert [t.id for t in q.list_tasks(queue="deepc").tasks] == [plain.id]

    async def listed() -> List[str]:
        async with AsyncQuern(server_url) as aq:
            return [t.id for t in (await aq.list_tasks(queue="deepc")).tasks]

    assert asyncio.run(listed()) == [plain.id]


def test_https_with_a_private_certificate(tmp_path: Path) -> None:
    """A server with a self-signed certificate: trusted through ``ca_file``
    (or ``$QUERN_CA_FILE``), refused without it."""
    import ssl
    import subprocess

    from conftest import _binary

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [
            _binary(),
            "server",
            "--listen",
            "127.0.0.1:0",
            "--data",
            str(tmp_path / "data"),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().removeprefix("listening on ")
        assert url.startswith("https://"), url
        with quern.Quern(url, ca_file=str(cert)) as q:
            assert q.submit("tls.ping").status == "queued"
        with quern.Quern(url) as untrusting:
            with pytest.raises(quern.QuernError) as refused:
                untrusting.submit("tls.ping")
            assert isinstance(refused.value.__cause__, ssl.SSLError) or refused.value.code == "transport"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_subscribe_and_stream_follow_the_event_log(server_url: str) -> None:
    q = Quern(server_url)
    head = q.publish("sub.first", 1).offset
    q.publish("sub.second", 2)
    q.publish("other.x", 3)
    got = []
    for event in q.subscribe(type="sub.*", after=head - 1, wait=1.0):
        got.append((event.type, event.payload))
        if len(got) == 2:
            break
    assert got == [("sub.first", 1), ("sub.second", 2)]

    async def streamed() -> list[tuple[str, object]]:
        async with AsyncQuern(server_url) as aq:
            seen: list[tuple[str, object]] = []
            stream = aq.stream(type="live.*", after=head)
            async for event in stream:
                seen.append((event.type, event.payload))
                if len(seen) == 2:
                    break
            return seen

    q.publish("live.a", "x")
    q.publish("live.b", "y")
    assert asyncio.run(streamed()) == [("live.a", "x"), ("live.b", "y")]
    assert Quern(server_url.removeprefix("http://")).health()["status"] in ("ok", "degraded"), "host:port means http"


def test_a_consumer_group_acks_after_the_handler_returns(server_url: str) -> None:
    q = Quern(server_url)
    stop = threading.Event()
    handled: list[object] = []

    def handler(event: quern.Event) -> None:
        if event.payload == "boom" and "boom" not in handled:
            handled.append("boom")
            raise RuntimeError("first time")
        handled.append(event.payload)
        if len(handled) >= 3:
            stop.set()

    head = q.publish("grp.start", None).offset
    q.publish("grp.x", "ok")
    q.publish("grp.x", "boom")
    q.consume("py-grp", handler, type="grp.x", visibility=0.5, stop=stop, after=head)
    assert handled == ["ok", "boom", "boom"], "the failed one came back and was handled again"
