"""The event loop that gns's long-running processes (controller, edge site) run on.

uvloop where it is installed (a core dependency on Linux and macOS): it runs asyncio's own
machinery (tasks, futures, handles, the selector) in C. Profiled under small puts, that
machinery around gRPC's (``asyncio.wait`` alone: 10 % of the GIL samples) outweighed our
handlers; on uvloop the owner's CPU per 4 KiB put fell from 0.78 to 0.66 ms and per Resolve
from 457 to 423 µs (issue 14, medians of three ``bench.dataplane`` runs).

``GNS_EVENT_LOOP=asyncio`` selects the standard library's loop, to rule uvloop out when
chasing a problem.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

ENV = "GNS_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None for asyncio's default (not installed, or
    ``GNS_EVENT_LOOP=asyncio``)."""
    if os.environ.get(ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)`` on the loop ``loop_factory`` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main)
