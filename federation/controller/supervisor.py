"""The owner of a controller's long-lived tasks (after kopf's ``reactor/running.py``).

Every loop that should run as long as the process does (the namespace watch, lease renewal,
publishing volume versions, the mirror ticker, leader election, ...) is spawned here. Such a
loop never ends on its own: if one returns or raises, the controller is half alive, so
:meth:`Supervisor.wait` returns (re-raising the failure) and the process shuts down cleanly
instead of limping on. :meth:`Supervisor.stop` cancels the tasks in reverse order of start
and waits for each to end.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskEnded(RuntimeError):
    """A long-lived task returned although it should run until cancelled."""


class Supervisor:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self.failure: BaseException | None = None
        self.stop_requested = False

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` until the supervisor stops; its end (of any kind) stops the process."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.append(task)
        task.add_done_callback(self._ended)

    def request_stop(self) -> None:
        """A clean stop (SIGTERM): :meth:`wait` returns without an error."""
        self.stop_requested = True
        self._wake.set()

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping:
            return
        if task.cancelled():
            exc: BaseException = TaskEnded(f"task {task.get_name()} was cancelled")
        else:
            exc = task.exception() or TaskEnded(f"task {task.get_name()} returned")
        if self.failure is None:
            self.failure = exc
            log.error("%s ended; stopping the controller", task.get_name(), exc_info=exc)
        self._wake.set()

    async def wait(self) -> None:
        """Until a stop is requested (returns) or a task ends (raises what ended it)."""
        await self._wake.wait()
        if self.failure is not None and not self.stop_requested:
            raise self.failure

    async def stop(self) -> None:
        """Cancel every task, newest first, and wait for each to finish."""
        self._stopping = True
        tasks, self._tasks = self._tasks[::-1], []
        for task in tasks:
            task.cancel()
            (result,) = await asyncio.gather(task, return_exceptions=True)
            if isinstance(result, Exception) and result is not self.failure:
                log.warning("%s failed while stopping", task.get_name(), exc_info=result)
