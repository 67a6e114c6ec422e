"""The controller's and edge site's event loop: uvloop unless GNS_EVENT_LOOP=asyncio."""
from __future__ import annotations

import asyncio

import pytest

from federation import event_loop

uvloop = pytest.importorskip("uvloop", reason="uvloop is a core dependency on Linux")


async def _loop_type(out: list[type]) -> None:
    out.append(type(asyncio.get_running_loop()))


def test_runs_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.ENV, raising=False)
    seen: list[type] = []
    event_loop.run(_loop_type(seen))
    assert seen == [uvloop.Loop]


@pytest.mark.parametrize("value", ["asyncio", " AsyncIO "])
def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(event_loop.ENV, value)
    assert event_loop.loop_factory() is None
    seen: list[type] = []
    event_loop.run(_loop_type(seen))
    assert not issubclass(seen[0], uvloop.Loop)
