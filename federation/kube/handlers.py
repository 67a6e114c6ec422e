"""One custom resource -> the global namespace, through the operations the CLI performs.

``apply`` returns the resource's ``status`` (without ``lastTransitionTime``s); ``remove``
undoes what ``apply`` made, and only that: every policy and mount made here carries an
ownership marker (:mod:`federation.kube.ownership`), and is removed only while it is still
the one made here. An invalid resource, or one naming what was made elsewhere, changes
nothing and says why in its ``Ready`` condition. One module per kind:
:mod:`federation.kube.policies` and :mod:`federation.kube.mounts`; this one holds what they
share.
"""
from __future__ import annotations

from typing import Any, Protocol

from federation.kube.api import Resource
from federation.kube.conditions import condition


def owner_id(cluster: str, obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{cluster}/{meta.get('namespace', '')}/{meta['name']}"


class Handler(Protocol):
    resource: Resource

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    async def remove(self, obj: dict[str, Any]) -> None: ...


def base_status(obj: dict[str, Any]) -> dict[str, Any]:
    return {"observedGeneration": obj["metadata"].get("generation", 0)}


def not_ready(obj: dict[str, Any], reason: str, message: str,
              also: tuple[str, ...] = ()) -> dict[str, Any]:
    """The status of a resource that changed nothing: ``Ready`` (and each of ``also``)
    False with ``reason``."""
    return {**base_status(obj), "conditions": [condition(t, False, reason, message)
                                               for t in ("Ready", *also)]}

