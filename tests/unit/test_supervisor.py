"""The controller's supervisor: a root task that ends (error or not) stops the process; a
requested stop is clean; stopping cancels every task, newest first, and waits for each."""
from __future__ import annotations

import asyncio

import pytest

from federation.controller.supervisor import Supervisor, TaskEnded


async def forever(log: list[str], name: str) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        log.append(name)


def test_a_failing_task_stops_everything_and_reraises() -> None:
    async def main() -> list[str]:
        stopped: list[str] = []
        sup = Supervisor()

        async def boom() -> None:
            await asyncio.sleep(0.01)
            raise RuntimeError("watch broke")

        sup.spawn("a", forever(stopped, "a"))
        sup.spawn("boom", boom())
        sup.spawn("b", forever(stopped, "b"))
        with pytest.raises(RuntimeError, match="watch broke"):
            await sup.wait()
        await sup.stop()
        return stopped

    assert asyncio.run(main()) == ["b", "a"]


def test_a_task_that_returns_counts_as_dead() -> None:
    async def main() -> None:
        sup = Supervisor()

        async def quits() -> None:
            return None

        sup.spawn("quits", quits())
        with pytest.raises(TaskEnded, match="quits returned"):
            await asyncio.wait_for(sup.wait(), 5)
        await sup.stop()

    asyncio.run(main())


def test_requested_stop_is_clean() -> None:
    async def main() -> list[str]:
        stopped: list[str] = []
        sup = Supervisor()
        sup.spawn("a", forever(stopped, "a"))
        asyncio.get_running_loop().call_later(0.01, sup.request_stop)
        await asyncio.wait_for(sup.wait(), 5)
        await sup.stop()
        return stopped

    assert asyncio.run(main()) == ["a"]
