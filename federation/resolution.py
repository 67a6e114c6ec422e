"""The resolve answer of SPEC §4 (``gns resolve PATH`` and the Resolve RPC), in one place."""
from __future__ import annotations

import time
from typing import Any

from namespace.cache import NamespaceView
from namespace.control import resolve_in
from namespace.errors import Unavailable


def replicas_of(view: NamespaceView, volume: str) -> list[dict[str, Any]]:
    """Mirror targets holding ``volume``, nearest (least lag, clusters first) first.

    Only targets the owner mirrors to now count (:func:`effective_targets` of the stored
    policies of ``volume``): never the owner itself. After a failover the status record of
    the new owner from when it was a target stays in etcd, frozen at the version it last
    received; listing it showed the owner as its own replica, its lag growing for ever."""
    now = time.time()
    head = view.volstates.get(volume)
    vol = view.volumes.get(volume)
    owner = vol.owner if vol is not None else None
    targets: dict[str, set[str]] = {}  # policy -> the targets its owner mirrors to now
    best: dict[str, dict[str, Any]] = {}
    for status in view.mirror_status.values():
        if status.get("volume") != volume or not status.get("version"):
            continue
        pname, target = status.get("policy"), status.get("target")
        if not isinstance(pname, str) or target == owner:
            continue
        if pname not in targets:
            # Here, not at the top: the client imports this module, and policies (pydantic
            # models, YAML) are needed only once a volume has a mirror record (CLI start-up).
            from mirroring.policy import stored_policy
            from mirroring.status import effective_targets

            policy = stored_policy(view, pname)
            targets[pname] = set() if policy is None or policy.spec.volume != volume else {
                name for name, _ in effective_targets(view, policy)}
        if target not in targets[pname]:
            continue
        behind = head is not None and head.version > int(status["version"])
        # Behind since the first change it lacks (as `mirror status` counts lag).
        since = status.get("pending_since") or (head.updated if head else 0.0)
        lag = max(0.0, now - float(since)) if behind else 0.0
        entry = {"target": status["target"], "version": int(status["version"]), "lag_seconds": round(lag, 3)}
        old = best.get(entry["target"])
        if old is None or entry["version"] > old["version"]:
            best[entry["target"]] = entry
    return sorted(best.values(), key=lambda r: (r["lag_seconds"], "://" in r["target"], r["target"]))


HEDGE_AFTER_S = 2.0
"""How long a ``consistency="any"`` stat or listing waits for the owner before asking a
fresh replica instead: an owner that does not answer at all (frozen, cut off by a partition
that drops packets) cost the read its whole deadline (30 s) first. An owner answers these in
milliseconds; HDFS's hedged reads wait 0.5 s, but ask both at once."""


def fresh_replicas(view: NamespaceView, volume: str, max_staleness: float) -> list[str]:
    """The Ready replica clusters of ``volume`` within ``max_staleness`` seconds, nearest
    first: those that may answer a read under ``consistency="any"`` (SPEC §5)."""
    return [str(r["target"]) for r in replicas_of(view, volume)
            if r["target"] in view.clusters and r["target"] in view.alive and r["lag_seconds"] <= max_staleness]


def away_site_replica(view: NamespaceView, volume: str) -> dict[str, Any] | None:
    """SPEC §8: while the edge site owning ``volume`` is away, the core mirror to read from.

    None if the owner is not an edge site that is Down; :class:`Unavailable` if it is and
    no Ready cluster holds a mirror of the volume.
    """
    vol = view.volumes.get(volume)
    if vol is None or vol.owner in view.alive:
        return None
    spec = view.clusters.get(vol.owner)
    if spec is None or spec.provider != "edge":
        return None
    for r in replicas_of(view, volume):
        if r["target"] in view.clusters and r["target"] in view.alive:
            return r
    raise Unavailable(f"edge site {vol.owner} owning volume {volume!r} is away and no core mirror holds it")


def describe(view: NamespaceView, path: str) -> dict[str, Any]:
    res = resolve_in(view, path)
    vol = view.volumes[res.volume]
    spec = view.clusters.get(vol.owner)
    return {
        "path": res.path,
        "mount": res.mount,
        "volume": res.volume,
        "relative_path": res.relative_path,
        "owner": {
            "cluster": vol.owner,
            "endpoint": spec.endpoint if spec else "",
            "epoch": vol.epoch,
        },
        "replicas": replicas_of(view, res.volume),
        **_stale_fields(view, res.volume),
    }


def _stale_fields(view: NamespaceView, volume: str) -> dict[str, Any]:
    away = away_site_replica(view, volume)
    return {} if away is None else {"stale": True, "mirrored_version": away["version"], "served_by": away["target"]}
