"""Failover decisions: when a volume's owner has been Down long enough, and who takes over.

Pure logic plus the one etcd transaction that moves ownership; gathering candidates'
versions (gRPC to replicas, manifests in object stores) and hydration are done by
``federation``, which calls in here. The promotion transaction compares the whole volume
record, so of two leaders racing (one dying mid-failover) exactly one promotion lands.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from mirroring.policy import MirrorPolicy, stored_policies
from namespace import schema
from namespace.cache import NamespaceView
from namespace.errors import Conflict, NotFound
from namespace.etcd import Etcd
from namespace.models import Volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A target that could take a volume over, with the version it fully holds."""

    name: str
    version: int
    is_cluster: bool
    promote_to: str
    """The cluster that would own the volume (itself, or ``promoteTo`` for a store)."""


def choose(candidates: list[Candidate], priority: list[str]) -> Candidate | None:
    """Highest mirrored version wins; ties go by ``priority`` order, then clusters, then name."""
    if not candidates:
        return None

    def rank(c: Candidate) -> tuple[int, int, int, str]:
        prio = priority.index(c.name) if c.name in priority else len(priority)
        return (-c.version, prio, 0 if c.is_cluster else 1, c.name)

    return sorted(candidates, key=rank)[0]


def automatic_policies(view: NamespaceView) -> list[MirrorPolicy]:
    return [p for p in stored_policies(view) if p.spec.failover.automatic]


def due(view: NamespaceView, gone_since: dict[str, float], now: float | None = None) -> list[tuple[MirrorPolicy, Volume]]:
    """(policy, volume) pairs whose owner is Down (lease expired: it has fenced itself) and
    has been gone for the policy's ``failover.after`` (``gone_since``: when it went)."""
    now = time.time() if now is None else now
    out = []
    for p in automatic_policies(view):
        vol = view.volumes.get(p.spec.volume)
        if vol is None or vol.owner in view.alive:
            continue
        owner = view.clusters.get(vol.owner)
        if owner is not None and owner.provider == "edge":
            continue  # an edge site is expected to go away and come back: never promoted (SPEC §8)
        since = gone_since.get(vol.owner)
        if since is not None and now - since >= p.spec.failover.after.seconds:
            out.append((p, vol))
    return out


async def promote(etcd: Etcd, volume: str, new_owner: str, base_version: int, *,
                  expect: Volume | None = None) -> Volume:
    """Make ``new_owner`` own ``volume`` at epoch + 1 in one transaction.

    ``expect`` pins the record the decision was made on: if anything changed since (another
    leader promoted first), :class:`Conflict` and nothing is written.
    """
    key = schema.volume(volume)
    raw = await etcd.get(key)
    if raw is None:
        raise NotFound(f"volume {volume!r} not found")
    current = Volume.model_validate_json(raw)
    if expect is not None and current != expect:
        raise Conflict(f"volume {volume!r} changed during failover (owner {current.owner}, epoch {current.epoch})")
    if current.owner == new_owner:
        raise Conflict(f"{new_owner} already owns volume {volume!r}")
    former = [c for c in current.former_owners if c != new_owner]
    if current.owner not in former:
        former.append(current.owner)
    new = current.model_copy(update={
        "owner": new_owner, "epoch": current.epoch + 1, "base_version": base_version,
        "former_owners": former,
    })
    tx = etcd.tx
    ok, _ = await etcd.txn([tx.value(key) == raw], [tx.put(key, new.dump())])
    if not ok:
        raise Conflict(f"volume {volume!r} changed during failover; not promoted")
    log.warning("volume %s promoted: %s -> %s, epoch %d -> %d, from version %d",
                volume, current.owner, new_owner, current.epoch, new.epoch, base_version)
    return new
