"""``quern.local()``: a private Quern server and a worker of an app's tasks
inside one script, for asyncio users who want durable tasks, progress and
cancel without starting anything else.

The server is the ``quern`` binary (``binary=``, else ``$QUERN_BIN``, else
the one the ``quern`` wheel installed beside this interpreter, else the one
on ``PATH``) on a free loopback port with a temporary data directory
(removed at the end) unless ``data`` names one to keep; the worker runs in a
thread of this process. Leaving the block stops the worker (running tasks
get ``grace`` seconds), then the server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sysconfig
import tempfile
import threading
from pathlib import Path
from typing import AsyncIterator, Optional

from ._app import App
from ._client import AsyncQuern, Quern
from ._worker import Worker


def _bundled() -> Optional[str]:
    """The binary the `quern` wheel installed beside this interpreter's scripts."""
    candidate = Path(sysconfig.get_path("scripts")) / "quern"
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def _binary(binary: Optional[str]) -> str:
    found = binary or os.environ.get("QUERN_BIN") or _bundled() or shutil.which("quern")
    if not found:
        raise FileNotFoundError(
            "no quern binary: pip install the quern wheel, pass binary=, set QUERN_BIN, or put `quern` on PATH"
        )
    return found


@contextlib.asynccontextmanager
async def local(
    app: Optional[App] = None,
    data: Optional[str] = None,
    binary: Optional[str] = None,
    concurrency: int = 8,
    grace: float = 5.0,
) -> AsyncIterator[App]:
    """Runs a private server and a worker of ``app``'s tasks (a new, empty
    app when none is given) for the block; answers the app, its ``client``
    (and ``aio``, an ``AsyncQuern``) pointed at that server."""
    app = app or App()
    scratch = None if data else tempfile.mkdtemp(prefix="quern-local-")
    directory = data or scratch or ""
    server = subprocess.Popen(
        [_binary(binary), "server", "--listen", "127.0.0.1:0", "--data", directory],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    worker: Optional[Worker] = None
    thread: Optional[threading.Thread] = None
    try:
        assert server.stdout is not None
        line = (await asyncio.to_thread(server.stdout.readline)).strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the local quern server did not start (exit code {server.poll()})")
        url = line.removeprefix("listening on ")
        app.client = Quern(url)
        app.aio = AsyncQuern(url)
        worker = Worker(app, queues=[app.queue or "default"], concurrency=concurrency, grace_s=grace)
        thread = threading.Thread(target=worker.run, name="quern-local-worker", daemon=True)
        thread.start()
        yield app
    finally:
        if worker is not None and thread is not None:
            worker.stop()
            await asyncio.to_thread(thread.join, grace + 5)
        if app.aio is not None:
            await app.aio.aclose()
            app.aio = None
        server.terminate()
        await asyncio.to_thread(server.wait, 10)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
