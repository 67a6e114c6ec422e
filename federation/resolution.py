"""The resolve answer of SPEC §4 (``gns resolve PATH`` and the Resolve RPC), in one place."""
from __future__ import annotations

import time
from typing import Any

from namespace.cache import NamespaceView
from namespace.control import resolve_in


def replicas_of(view: NamespaceView, volume: str) -> list[dict[str, Any]]:
    """Mirror targets holding ``volume``, nearest (least lag, clusters first) first."""
    now = time.time()
    head = view.volstates.get(volume)
    best: dict[str, dict[str, Any]] = {}
    for status in view.mirror_status.values():
        if status.get("volume") != volume or not status.get("version"):
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
    }
