"""``quern.local()``: a private server and an in-process worker for one
asyncio script — submit a coroutine function, watch its progress, cancel
one, wait for another, with nothing else started."""

from __future__ import annotations

import asyncio

from conftest import _binary

import quern


def test_a_script_runs_its_coroutines_through_a_private_server() -> None:
    app = quern.App()

    @app.task(name="local.double")
    async def double(x: int) -> int:
        quern.current_task().progress(50, "half way")
        await asyncio.sleep(0.2)
        return 2 * x

    @app.task(name="local.forever")
    async def forever() -> None:
        await asyncio.sleep(3600)

    async def main() -> None:
        async with quern.local(app, binary=_binary()) as local:
            assert local.aio is not None
            task = await local.aio.submit("local.double", {"args": [21], "kwargs": {}})
            seen = []
            while not (t := await local.aio.get(task.id)).done:
                if t.progress is not None:
                    seen.append(t.progress.percent)
                await asyncio.sleep(0.02)
            assert (t.status, t.result) == ("succeeded", 42)
            assert seen == [] or seen[-1] == 50
            stuck = await local.aio.submit("local.forever", {"args": [], "kwargs": {}})
            while (await local.aio.get(stuck.id)).status != "running":
                await asyncio.sleep(0.02)
            await local.aio.cancel(stuck.id)
            assert (await local.aio.wait(stuck.id, timeout=10)).status == "cancelled"
            assert double.delay(5).get(timeout=10) == 10, "the sync helpers reach it too"

    asyncio.run(main())
