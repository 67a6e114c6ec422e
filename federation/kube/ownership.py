"""Which Kubernetes resource made which mirror policy or mount (SPEC §9 ``Conflict``).

One marker key per made thing, ``/gns/v1/kube-owners/<kind>/<name>`` -> a JSON record
naming the owning resource (``<cluster>/<namespace>/<name>``) and how to tell that the thing
now in the namespace is still the one it made. The marker alone proves nothing: the thing
can be removed and made again outside Kubernetes (``gns mount remove`` then ``gns mount
add``) while the marker stays, and such a thing must never be changed or removed by the
resource. So every decision reads the marker and the thing at one revision
(:func:`read`) and commits with both compared to what was read (:func:`commit`): a change
made meanwhile fails the transaction (:class:`~namespace.errors.Conflict`, which the
reconciler retries) instead of acting on a stale picture.

How a handler proves "still the one made here" is its own (a mount and its marker are
written in one transaction, so their mod revisions are equal; a policy is stored by
:mod:`mirroring.policy_store`, so its marker records the policy's create revision).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from namespace.errors import Conflict
from namespace.etcd import Etcd
from namespace.schema import ROOT

PREFIX = ROOT + "kube-owners/"
POLICY = "policies"
MOUNT = "mounts"


@dataclass(frozen=True)
class Marker:
    owner: str
    """The resource that made the thing: ``<cluster>/<namespace>/<name>``."""
    record: dict[str, Any]
    """The whole marker, ``owner`` and what the handler recorded about the thing."""
    mod: int
    """The marker key's mod revision."""


@dataclass(frozen=True)
class Held:
    """The made thing's key as etcd holds it."""

    value: bytes
    create: int
    mod: int


@dataclass(frozen=True)
class Snapshot:
    """A marker and the key of the thing it names, read at one revision."""

    kind: str
    name: str
    thing: bytes
    """The etcd key of the policy or mount."""
    marker: Marker | None
    held: Held | None


def key(kind: str, name: str) -> bytes:
    return f"{PREFIX}{kind}/{quote(name, safe='')}".encode()


def _marker(raw: bytes, mod: int) -> Marker:
    try:
        record = json.loads(raw)
        return Marker(owner=str(record["owner"]), record=record, mod=mod)
    except (ValueError, KeyError, TypeError):
        # Someone's claim all the same: never taken over, and never anyone's to remove.
        return Marker(owner="an unreadable ownership marker", record={}, mod=mod)


async def read(etcd: Etcd, kind: str, name: str, thing: bytes) -> Snapshot:
    tx = etcd.tx
    _, (markers, things) = await etcd.txn([], [tx.get(key(kind, name)), tx.get(thing)])
    marker = next((_marker(v, m.mod_revision) for v, m in markers), None)
    held = next((Held(v, m.create_revision, m.mod_revision) for v, m in things), None)
    return Snapshot(kind, name, thing, marker, held)


async def commit(etcd: Etcd, snap: Snapshot, ops: list[Any], record: dict[str, Any] | None,
                 require: list[Any] | None = None) -> None:
    """Run ``ops`` and put the marker ``record`` (``None``: delete the marker) in one
    transaction, if neither the marker nor the thing changed since ``snap`` and the
    ``require`` comparisons hold; else raise ``Conflict`` (read again and retry)."""
    tx = etcd.tx
    marker = key(snap.kind, snap.name)
    compare = [*unchanged(etcd, snap), *(require or [])]
    marker_op = tx.delete(marker) if record is None else tx.put(marker, json.dumps(record).encode())
    ok, _ = await etcd.txn(compare, [*ops, marker_op])
    if not ok:
        raise Conflict(f"{snap.kind} {snap.name}: changed while the reconciler was deciding; "
                       "reading it again")


def unchanged(etcd: Etcd, snap: Snapshot) -> list[Any]:
    """etcd comparisons that hold while neither the marker nor the thing changed since
    ``snap`` (for a write made elsewhere that must rest on the same picture)."""
    tx = etcd.tx
    marker = key(snap.kind, snap.name)
    return [
        tx.create(marker) == 0 if snap.marker is None else tx.mod(marker) == snap.marker.mod,
        tx.create(snap.thing) == 0 if snap.held is None else tx.mod(snap.thing) == snap.held.mod,
    ]


async def owned_by(etcd: Etcd, kind: str, owner: str) -> list[str]:
    prefix = f"{PREFIX}{kind}/".encode()
    kvs, _ = await etcd.get_prefix(prefix)
    out = []
    for k, v in kvs:
        if _marker(v, 0).owner == owner:
            out.append(unquote(k.decode()[len(prefix):]))
    return sorted(out)


__all__ = ["POLICY", "MOUNT", "Held", "Marker", "Snapshot", "key", "read", "commit", "unchanged",
           "owned_by"]
