"""What the federation leader schedules: interval passes, nudges for lagging continuous
targets, and retries. It decides *when*; the volume's owner runs the pass (it has the data),
reached through the ``trigger`` callback that ``federation`` provides.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from mirroring.policy import stored_policies
from mirroring.status import TargetStatus, status_key
from namespace.cache import NamespaceView
from namespace.errors import GnsError

log = logging.getLogger(__name__)

Trigger = Callable[[str, str], Awaitable[None]]
"""``trigger(policy, target)``: ask the owner to run a pass now (returns once asked)."""

NUDGE_AFTER = 3.0
"""A continuous target behind this long with no pass running gets a nudge from the leader."""


def due(view: NamespaceView, now: float) -> list[tuple[str, str]]:
    """(policy, target) pairs that need a pass now."""
    out: list[tuple[str, str]] = []
    for p in stored_policies(view):
        vol = view.volumes.get(p.spec.volume)
        if vol is None or vol.owner not in view.alive:
            continue
        head = view.volstates.get(p.spec.volume)
        head_version = head.version if head else 0
        for t in p.spec.targets:
            if t.is_cluster and t.cluster == vol.owner:
                continue
            raw = view.mirror_status.get(status_key(p.name, t.name))
            st = TargetStatus.model_validate(raw) if raw else None
            if st is not None and st.syncing and now - st.updated < 30:
                continue
            behind = st is None or st.version < head_version
            if p.spec.mode == "interval":
                interval = p.spec.interval.seconds if p.spec.interval else 300.0
                last = st.synced_at if st else 0.0
                if behind and now - last >= interval:
                    out.append((p.name, t.name))
            elif p.spec.mode in ("continuous", "sync"):
                since = (st.updated if st else 0.0) or 0.0
                if behind and now - since >= NUDGE_AFTER:
                    out.append((p.name, t.name))
    return out


class Scheduler:
    def __init__(self, view: Callable[[], NamespaceView], trigger: Trigger, period: float = 1.0) -> None:
        self._view = view
        self._trigger = trigger
        self.period = period
        self._asked: dict[tuple[str, str], float] = {}

    async def run(self) -> None:
        while True:
            now = time.time()
            for key in due(self._view(), now):
                # Don't re-ask an owner every tick while its pass is starting.
                if now - self._asked.get(key, 0.0) < max(self.period * 2, 2.0):
                    continue
                self._asked[key] = now
                try:
                    await self._trigger(*key)
                except asyncio.CancelledError:
                    raise
                except GnsError as exc:  # owner Down or unreachable: the next period retries
                    log.info("scheduling %s -> %s failed: %s", key[0], key[1], exc)
                except Exception:
                    log.exception("scheduling %s -> %s failed unexpectedly", key[0], key[1])
            await asyncio.sleep(self.period)
