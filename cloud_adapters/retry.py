"""Bounded, jittered retries for transient object-store failures.

Only :class:`~cloud_adapters.errors.TransientError` is retried: a not-found, a lost
precondition or a denied permission will not get better by waiting, and retrying them would
hide real problems. Backoff is "full jitter" (AWS architecture blog): the n-th wait is
uniform in ``[0, min(cap, base * 2**n)]``, so many workers retrying against one recovering
server spread out instead of stampeding. Attempts and the longest single wait are bounded,
so a dead server produces a clear error in bounded time.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from cloud_adapters.errors import TransientError

__all__ = ["with_retries", "backoff_delay"]

T = TypeVar("T")
log = logging.getLogger(__name__)


def backoff_delay(
    attempt: int, *, base: float = 0.1, cap: float = 5.0, rng: random.Random | None = None
) -> float:
    """Full-jitter wait before retry number ``attempt`` (0 for the first retry)."""
    ceiling = min(cap, base * (2 ** min(attempt, 62)))
    return (rng or random).uniform(0.0, ceiling)


def with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base: float = 0.1,
    cap: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, TransientError], None] | None = None,
) -> T:
    """Call ``fn()``; on ``TransientError`` wait (full jitter) and retry, ``attempts`` calls
    in total. The last ``TransientError`` propagates unchanged; other errors at once."""
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    for attempt in range(attempts):
        try:
            return fn()
        except TransientError as exc:
            if attempt + 1 >= attempts:
                raise
            delay = backoff_delay(attempt, base=base, cap=cap)
            log.info(
                "transient error on %s (attempt %d/%d), retrying in %.2fs: %s",
                exc.uri, attempt + 1, attempts, delay, exc.message,
            )
            if on_retry is not None:
                on_retry(attempt, exc)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
