"""Retry backoff, the transfer pool and the error tree: no servers."""

from __future__ import annotations

import pickle
import random
import threading
import time
from collections.abc import Iterator

import pytest

from cloud_adapters import errors as E
from cloud_adapters.retry import backoff_delay, with_retries
from cloud_adapters.transfer import TransferPool


def test_backoff_is_full_jitter_and_capped() -> None:
    rng = random.Random(1)
    for attempt in range(40):
        d = backoff_delay(attempt, base=0.1, cap=5.0, rng=rng)
        assert 0.0 <= d <= min(5.0, 0.1 * 2**attempt)
    spread = [backoff_delay(3, base=0.1, cap=5.0, rng=rng) for _ in range(200)]
    assert min(spread) < 0.2 < max(spread) <= 0.8


def test_retries_only_transient() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise E.TransientError("blip", uri="s3://b/k")
        return "ok"

    assert with_retries(flaky, attempts=5, sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2

    def denied() -> None:
        calls.append(1)
        raise E.PermissionDenied("no", uri="s3://b")

    calls.clear()
    with pytest.raises(E.PermissionDenied):
        with_retries(denied, attempts=5, sleep=sleeps.append)
    assert len(calls) == 1


def test_retries_are_bounded() -> None:
    n = 0

    def dead() -> None:
        nonlocal n
        n += 1
        raise E.TransientError("down", uri="gs://b")

    sleeps: list[float] = []
    with pytest.raises(E.TransientError, match="gs://b"):
        with_retries(dead, attempts=4, base=1.0, cap=2.0, sleep=sleeps.append)
    assert n == 4 and len(sleeps) == 3 and max(sleeps) <= 2.0


def test_error_tree() -> None:
    expected = {E.InvalidURI: (2, ValueError), E.MissingDependency: (1, ImportError),
                E.ObjectNotFound: (3, FileNotFoundError), E.PreconditionFailed: (4, None),
                E.PermissionDenied: (1, PermissionError), E.IntegrityError: (1, None),
                E.TransientError: (5, ConnectionError)}
    for cls, (code, builtin) in expected.items():
        err = cls("boom", uri="az://c/k")
        assert isinstance(err, E.ObjectStoreError) and err.exit_code == code
        assert builtin is None or isinstance(err, builtin)
        assert str(err) == "az://c/k: boom" and err.uri == "az://c/k"
        assert err.retryable is (cls is E.TransientError)
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is cls and str(again) == str(err)


def test_pool_bounded_lazy_and_complete() -> None:
    pulled = 0
    running = 0
    peak = 0
    lock = threading.Lock()

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(200):
            pulled += 1
            yield i

    def work(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.001)
        with lock:
            running -= 1
        return i * 2

    pool = TransferPool(workers=4, max_in_flight=6)
    it = pool.map_unordered(work, items())
    first = next(it)
    assert pulled <= 7  # never materialises the items
    rest = list(it)
    assert sorted([first, *rest]) == [i * 2 for i in range(200)]
    assert peak <= 4


def test_pool_propagates_first_error_and_stops() -> None:
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        if i == 5:
            raise E.ObjectNotFound("gone", uri="s3://b/5")
        time.sleep(0.002)
        return i

    with pytest.raises(E.ObjectNotFound, match="s3://b/5"):
        list(TransferPool(workers=2, max_in_flight=2).map_unordered(work, range(10_000)))
    assert len(started) < 100  # stopped submitting soon after the failure
