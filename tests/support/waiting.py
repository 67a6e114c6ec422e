"""Poll a condition until it holds or a deadline passes: never sleep-then-assert."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 15.0, message: str = "the condition",
             *, every: float = 0.05) -> T:
    """Call ``condition`` until it returns something truthy, and return that; after
    ``timeout`` seconds fail with ``message`` (what was awaited) and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")
        time.sleep(every)


def holds_for(condition: Callable[[], object], duration: float, message: str = "the condition",
              *, every: float = 0.1) -> None:
    """Check ``condition`` again and again for ``duration`` seconds: it must hold every time
    (what a test means by "nothing changes after things settle")."""
    deadline = time.monotonic() + duration
    while True:
        assert condition(), f"{message} stopped holding"
        if time.monotonic() > deadline:
            return
        time.sleep(every)


def wait_still(read: Callable[[], T], timeout: float, message: str = "the value", *,
               every: float = 0.5) -> T:
    """Call ``read`` until two calls ``every`` seconds apart return the same, and return it:
    what a dead process was still delivering has landed (or was dropped)."""
    seen = [read()]

    def still() -> bool:
        seen.append(read())
        return seen[-1] == seen[-2]

    wait_for(still, timeout, f"{message} to hold still", every=every)
    return seen[-1]
