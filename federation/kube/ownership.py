"""Which Kubernetes resource made which mirror policy or mount (SPEC §9 ``Conflict``).

One marker key per made thing, ``/gns/v1/kube-owners/<kind>/<name>`` -> the owning
resource (``<cluster>/<namespace>/<name>``). A policy or mount that exists without a marker
of ours was made elsewhere (the CLI, another cluster's reconciler, another resource) and is
never changed or removed by this one. Markers are claimed with a create-if-absent
transaction, so two resources racing for one name cannot both win.
"""
from __future__ import annotations

import json
from urllib.parse import quote, unquote

from namespace.etcd import Etcd
from namespace.schema import ROOT

PREFIX = ROOT + "kube-owners/"
POLICY = "policies"
MOUNT = "mounts"


def _key(kind: str, name: str) -> bytes:
    return f"{PREFIX}{kind}/{quote(name, safe='')}".encode()


async def owner_of(etcd: Etcd, kind: str, name: str) -> str | None:
    raw = await etcd.get(_key(kind, name))
    return None if raw is None else str(json.loads(raw)["owner"])


async def claim(etcd: Etcd, kind: str, name: str, owner: str) -> str:
    """Make ``owner`` the owner of ``name`` unless someone else is; return the owner."""
    key = _key(kind, name)
    tx = etcd.tx
    ok, _ = await etcd.txn([tx.create(key) == 0],
                           [tx.put(key, json.dumps({"owner": owner}).encode())])
    if ok:
        return owner
    return await owner_of(etcd, kind, name) or await claim(etcd, kind, name, owner)


async def release(etcd: Etcd, kind: str, name: str, owner: str) -> None:
    """Drop the marker if it is ``owner``'s (compare-and-delete on the value)."""
    key = _key(kind, name)
    tx = etcd.tx
    await etcd.txn([tx.value(key) == json.dumps({"owner": owner}).encode()], [tx.delete(key)])


async def owned_by(etcd: Etcd, kind: str, owner: str) -> list[str]:
    prefix = f"{PREFIX}{kind}/".encode()
    kvs, _ = await etcd.get_prefix(prefix)
    out = []
    for k, v in kvs:
        if json.loads(v).get("owner") == owner:
            out.append(unquote(k.decode()[len(prefix):]))
    return sorted(out)


__all__ = ["POLICY", "MOUNT", "owner_of", "claim", "release", "owned_by"]
