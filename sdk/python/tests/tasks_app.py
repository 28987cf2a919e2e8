"""The app the worker tests run: one task of each kind."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import quern

app = quern.App(os.environ.get("QUERN_URL"))


@app.task(name="t.add")
def add(x: int, y: int) -> int:
    """Adds two numbers."""
    return x + y


@app.task(name="t.progress")
def slow(steps: int = 5) -> str:
    """Reports progress, stops when cancelled."""
    ctx = quern.current_task()
    for i in range(steps):
        if ctx.cancelled:
            raise quern.Cancelled("asked to stop")
        ctx.progress(100 * i / steps, f"step {i}")
        time.sleep(0.2)
    return "done"


@app.task(name="t.spin")
def spin() -> int:
    """Busy Python code that never checks for a cancel."""
    n = 0
    while True:
        n += 1


@app.task(name="t.async_sleep")
async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


ATTEMPTS = {"flaky": 0}


@app.task(
    name="t.flaky", max_retries=2, retry_on=(ConnectionError,), retry_backoff={"backoff": "fixed", "initial_ms": 50}
)
def flaky(marker: str) -> str:
    """Fails with ConnectionError on its first attempt."""
    ATTEMPTS["flaky"] += 1
    if quern.current_task().attempt == 1:
        raise ConnectionError("the network blinked")
    return marker


@app.task(name="t.total")
def total(values: list[int]) -> int:
    """Adds up a list (a chord's callback)."""
    return sum(values)


@app.task(name="t.report")
def report() -> str:
    """Reports 50, 75 and 100 % at once, then ends."""
    ctx = quern.current_task()
    for percent in (50, 75, 100):
        ctx.progress(percent, f"{percent} %")
    return "reported"


@app.on_event("note.*")
def seen(event: quern.Event) -> None:
    """Answers each `note.*` event with a `seen.*` one."""
    if event.payload == "fail once" and event.offset not in FAILED_ONCE:
        FAILED_ONCE.add(event.offset)
        raise RuntimeError("not this time")
    app.client.publish("seen." + event.type.split(".", 1)[1], event.payload, source="tasks_app")


FAILED_ONCE: set[int] = set()


@app.task(name="t.echo")
def echo(value: Any) -> Any:
    """Answers its argument."""
    return value


@app.task(name="t.boom")
def boom() -> None:
    raise ValueError("bad value")


def plain(word: str) -> str:
    """Run by import path."""
    return word.upper()
