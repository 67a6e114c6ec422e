"""A private asyncio loop on a daemon thread, so blocking callers can use asyncio libraries.

The same idea as fsspec's ``fsspec.asyn`` IO thread: the sync :class:`~federation.client.Client`
keeps its etcd connection and watch-fed cache on this loop and waits on results.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "gns-client-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        try:  # let whatever still runs (a watch, a call's status task) end cleanly
            self.run(_cancel_all(), timeout=5)
        except (TimeoutError, RuntimeError):  # busy or already stopping: stop it anyway
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_all() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
