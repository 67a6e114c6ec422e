"""``MirrorPolicy`` -> a stored mirror policy, through :func:`mirroring.policy_store.apply_policy`
(the validation and the transaction ``gns mirror apply`` uses).

The policy store writes the policy key in its own transaction, so the ownership marker
cannot be written with it. Instead the marker is claimed first (``{"owner"}``: a racing
resource loses there) and, once the policy is stored, records the policy's create revision
(``created``). An update in place keeps that revision, and is ours to revert; a policy
removed and applied again elsewhere has a new one, and is never changed or removed by the
resource. A marker without ``created`` (claimed but not yet recorded, or from before this
rule) counts as made here only while the stored policy is exactly what the resource asks.
The marker also keeps what applying the resource's current generation did (``created``,
``updated``, ``unchanged``), which its ``Ready`` message repeats on every later pass.
"""
from __future__ import annotations

import json
from typing import Any

from federation.kube import ownership
from federation.kube.api import MIRROR_POLICIES
from federation.kube.conditions import condition
from federation.kube.handlers import base_status, not_ready, owner_id
from mirroring.policy import MirrorPolicy, validate_document
from mirroring.policy_store import apply_policy
from mirroring.status import statuses
from namespace import schema
from namespace.cache import load_view
from namespace.errors import Conflict, InvalidInput
from namespace.etcd import Etcd, prefix_end

OUTSIDE = "outside Kubernetes (gns mirror apply)"


def _stored(held: ownership.Held) -> Any:
    try:
        return json.loads(held.value)
    except ValueError:
        return None


def made_here(marker: ownership.Marker, held: ownership.Held | None,
              wanted: dict[str, Any] | None) -> bool:
    """Whether the policy etcd holds is the one this marker's resource made (``wanted``:
    the document the resource asks for now, which only a marker without ``created`` needs)."""
    if held is None:
        return False
    if "created" in marker.record:
        return bool(marker.record["created"] == held.create)
    return wanted is not None and _stored(held) == wanted


def _wanted(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The policy the resource asks for as it would be stored, if it is well formed."""
    try:
        return MirrorPolicy.model_validate(MirrorPolicy.from_kubernetes(obj)).to_dict()
    except ValueError:
        return None


def _synced(targets: list[dict[str, Any]]) -> dict[str, Any]:
    behind = [t for t in targets if t.get("state") != "Synced"]
    if not behind:
        return condition("Synced", True, "Synced", "every target holds the volume's version")
    order = ("Error", "Lagging", "Syncing")
    reason = next((s for s in order if any(t.get("state") == s for t in behind)), "Syncing")
    return condition("Synced", False, reason, "; ".join(
        f"{t['target']}: {t.get('state')}"
        + (f" ({t['last_error']})" if t.get("last_error") else "") for t in behind))


class MirrorPolicyHandler:
    resource = MIRROR_POLICIES

    def __init__(self, cluster: str, etcd: Etcd) -> None:
        self.cluster = cluster
        self.etcd = etcd

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        owner = owner_id(self.cluster, obj)
        name = obj["metadata"]["name"]
        doc = MirrorPolicy.from_kubernetes(obj)
        try:
            policy = validate_document(doc, await load_view(self.etcd))
        except InvalidInput as exc:
            return not_ready(obj, "Invalid", str(exc), also=("Synced",))
        conflict = await self._take(name, owner, policy.to_dict())
        if conflict is not None:
            return not_ready(obj, "Conflict", conflict, also=("Synced",))
        # The store rests on the picture the claim was made on: a policy removed and made
        # again elsewhere meanwhile (`gns mirror remove` + `apply`) fails it with Conflict,
        # and the next pass reads again, instead of being overwritten as this resource's.
        claimed = await ownership.read(self.etcd, ownership.POLICY, name, schema.policy(name))
        marker, held = claimed.marker, claimed.held
        if marker is None or marker.owner != owner or (
                held is not None and not made_here(marker, held, policy.to_dict())):
            raise Conflict(f"mirror policy {name}: changed while the reconciler was "
                           "applying it; reading it again")
        try:
            result = await apply_policy(self.etcd, json.dumps(doc),
                                        require=ownership.unchanged(self.etcd, claimed))
        except InvalidInput as exc:  # the namespace changed since the check above
            return not_ready(obj, "Invalid", str(exc), also=("Synced",))
        action = await self._record(name, owner, policy.to_dict(), obj, result["action"])
        found = statuses(await load_view(self.etcd), name)
        targets = found[0]["targets"] if found else []
        return {
            **base_status(obj),
            "volume": result["volume"],
            "mode": result["mode"],
            "targets": [dict(t) for t in targets],
            "conditions": [
                condition("Ready", True, "Applied", f"mirror policy {name} {action}"),
                _synced(targets),
            ],
        }

    async def _take(self, name: str, owner: str, wanted: dict[str, Any]) -> str | None:
        """Claim policy ``name`` for this resource unless it is someone else's; or say
        why not (a Conflict)."""
        snap = await ownership.read(self.etcd, ownership.POLICY, name, schema.policy(name))
        marker, held = snap.marker, snap.held
        if marker is not None and marker.owner != owner:
            return f"mirror policy {name!r} already exists, made by {marker.owner}; nothing was changed"
        if held is not None and (marker is None or not made_here(marker, held, wanted)):
            if marker is not None:  # ours once, made again elsewhere since: not ours now
                await ownership.commit(self.etcd, snap, [], None)
            return f"mirror policy {name!r} already exists, made {OUTSIDE}; nothing was changed"
        if marker is None:
            await ownership.commit(self.etcd, snap, [], {"owner": owner})
        return None

    async def _record(self, name: str, owner: str, wanted: dict[str, Any],
                      obj: dict[str, Any], action: str) -> str:
        """Note in the marker the stored policy's create revision and what applying this
        generation of the resource did, if the policy is the one just applied (anything else
        written meanwhile is left to the next pass); return what to report.

        Every pass after the first finds the policy ``unchanged`` (the first pass's status
        patch alone triggers one, and it may read the object from before that patch), so
        the first pass's word is kept for the generation: ``unchanged`` is reported only
        when the policy was already as asked when the generation was first applied."""
        snap = await ownership.read(self.etcd, ownership.POLICY, name, schema.policy(name))
        marker, held = snap.marker, snap.held
        if marker is None or marker.owner != owner or held is None or _stored(held) != wanted:
            return action
        meta = obj["metadata"]
        applied = {"uid": meta.get("uid"), "generation": meta.get("generation")}
        first = marker.record.get("applied")
        if action == "unchanged" and isinstance(first, dict) \
                and {k: first.get(k) for k in applied} == applied:
            action = str(first.get("action", action))
        record = {"owner": owner, "created": held.create, "applied": {**applied, "action": action}}
        if record != marker.record:
            await ownership.commit(self.etcd, snap, [], record)
        return action

    async def remove(self, obj: dict[str, Any]) -> None:
        """Remove the policy (and its targets' status records, as ``gns mirror remove``
        does) with its marker, in one transaction, if this resource made it; if it was made
        elsewhere since, leave it and drop only the stale marker."""
        owner = owner_id(self.cluster, obj)
        name = obj["metadata"]["name"]
        snap = await ownership.read(self.etcd, ownership.POLICY, name, schema.policy(name))
        marker = snap.marker
        if marker is None or marker.owner != owner:
            return  # made elsewhere (a Conflict): not ours to remove
        ops = []
        if made_here(marker, snap.held, _wanted(obj)):
            tx = self.etcd.tx
            records = schema.mirror_status_prefix(name)
            ops = [tx.delete(snap.thing), tx.delete(records, range_end=prefix_end(records))]
        await ownership.commit(self.etcd, snap, ops, None)
