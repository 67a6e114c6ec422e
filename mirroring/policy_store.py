"""Storing, listing and removing mirror policies in etcd (what the client's ``mirror_*`` call).

Every change is validated against a fresh snapshot of the namespace and stored with one
transaction whose comparisons re-check, at commit time, what the validation relied on: the
volume (present, same owner), every named cluster, and the policy key itself. A concurrent
change makes the transaction fail; the operation then validates again against the new
state (a few times, then :class:`~namespace.errors.Conflict`). A refused policy stores
nothing. Nothing here talks to a controller: the scheduler picks changes up by its watch.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mirroring.policy import MirrorPolicy, load_and_validate, stored_policies
from mirroring.status import effective_targets, status_key
from namespace import schema
from namespace.cache import NamespaceView, load_view
from namespace.errors import Conflict, NotFound
from namespace.etcd import Etcd, prefix_end
from namespace.paths import check_name

__all__ = ["apply_policy", "list_policies", "get_policy", "remove_policy", "policy_summary", "plan"]

_ATTEMPTS = 5


async def apply_policy(etcd: Etcd, text: str, *, dry_run: bool = False,
                       require: Sequence[Any] = ()) -> dict[str, Any]:
    """Validate and store a policy document (YAML or JSON).

    Returns ``{"policy", "action", "volume", "mode", "targets"}`` with action ``created``,
    ``updated``, ``unchanged`` or ``dry-run`` (then ``"change"`` says which of the first
    three it would have been, and ``"plan"`` what a first pass would copy per target), and
    ``"previous_volume"`` when the document moves the policy to another volume (which the
    policy then no longer mirrors). Raises ``InvalidInput`` listing every problem.

    ``targets`` (and the plan) are what the volume's owner mirrors to once the policy is
    stored, as ``mirror list`` and ``mirror status`` will show them: the document's targets
    (none of which may be the owner), then any former owner of the volume the document does
    not name, which stays a target of the new owner whatever the document says (SPEC §7:
    it resyncs, and its diverged writes are kept aside, through that replica).

    ``require``: etcd comparisons the store's transaction must also hold (a caller's
    picture of other keys, such as the Kubernetes reconciler's ownership marker); one that
    fails makes every attempt fail, and the call ends in ``Conflict``.
    """
    for _ in range(_ATTEMPTS):
        view = await load_view(etcd)
        policy = load_and_validate(text, view)
        name = policy.name
        stored = view.policies.get(name)
        if stored is None:
            change = "created"
        elif stored == policy.to_dict():
            change = "unchanged"
        else:
            change = "updated"
        result: dict[str, Any] = {
            "policy": name,
            "action": change,
            "volume": policy.spec.volume,
            "mode": policy.spec.mode,
            "targets": [n for n, _ in effective_targets(view, policy)],
        }
        before = stored.get("spec", {}).get("volume") if isinstance(stored, dict) else None
        if isinstance(before, str) and before != policy.spec.volume:
            result["previous_volume"] = before
        if dry_run:
            return {**result, "action": "dry-run", "change": change, "plan": plan(view, policy)}
        if change == "unchanged":
            return result
        if await _store(etcd, view, policy, require):
            return result
    raise Conflict(
        f"mirror policy {policy.name!r}: the namespace kept changing while applying it; try again"
    )


async def _store(etcd: Etcd, view: NamespaceView, policy: MirrorPolicy,
                 require: Sequence[Any] = ()) -> bool:
    tx = etcd.tx
    rev = view.revision + 1
    name = policy.name
    volume_key = schema.volume(policy.spec.volume)
    compare = [
        *require,
        # The volume still exists and is unchanged (same owner) since validation read it.
        tx.create(volume_key) != 0,
        tx.mod(volume_key) < rev,
        # Nobody else created, changed or removed this policy in between.
        tx.mod(schema.policy(name)) < rev,
    ]
    if name in view.policies:
        compare.append(tx.create(schema.policy(name)) != 0)
    clusters = {t.cluster for t in policy.spec.targets if t.cluster is not None}
    if policy.spec.failover.promote_to:
        clusters.add(policy.spec.failover.promote_to)
    for cid in sorted(clusters):
        compare.append(tx.create(schema.cluster(cid)) != 0)

    success = [tx.put(schema.policy(name), policy.to_json())]
    # Status of targets the policy no longer has (or of another volume) is meaningless now;
    # a former owner the new owner mirrors to (SPEC §7) is still a target.
    old = view.policies.get(name)
    old_volume = old.get("spec", {}).get("volume") if isinstance(old, dict) else None
    keep = set() if old_volume != policy.spec.volume else {
        status_key(name, t) for t, _ in effective_targets(view, policy)
    }
    prefix = name + "/"
    for key in sorted(view.mirror_status):
        if key.startswith(prefix) and key not in keep:
            success.append(tx.delete((schema.MIRRORS + key).encode()))
    ok, _ = await etcd.txn(compare, success)
    return ok


def plan(view: NamespaceView, policy: MirrorPolicy) -> list[dict[str, Any]]:
    """What a first pass would copy per target the owner mirrors to (the targets
    :func:`apply_policy` reports), from what etcd knows: the whole volume to a target that
    holds nothing yet, nothing to one at the volume's version, and ``None`` (unknown: only
    the owner's journal can tell) to one part-way behind."""
    vs = view.volstates.get(policy.spec.volume)
    head, files, size = (vs.version, vs.files, vs.bytes) if vs is not None else (0, 0, 0)
    out: list[dict[str, Any]] = []
    old = view.policies.get(policy.name)
    same_volume = isinstance(old, dict) and old.get("spec", {}).get("volume") == policy.spec.volume
    for name, _ in effective_targets(view, policy):
        raw = view.mirror_status.get(status_key(policy.name, name)) if same_volume else None
        version = raw.get("version", 0) if isinstance(raw, dict) else 0
        if not isinstance(version, int) or version <= 0:
            out.append({"target": name, "files": files, "bytes": size})
        elif version >= head:
            out.append({"target": name, "files": 0, "bytes": 0})
        else:
            out.append({"target": name, "files": None, "bytes": None})
    return out


def policy_summary(policy: MirrorPolicy, view: NamespaceView | None = None) -> dict[str, Any]:
    """One row of ``mirror list``.

    With ``view``, ``targets`` are the ones the volume's owner mirrors to now, as
    ``mirror status`` lists them: after a failover the policy may name the new owner, which
    is the source now and not a target of itself, and the former owner has become a target
    of the new one (SPEC §7). Without a failover they are the policy's targets."""
    f = policy.spec.failover
    targets = [n for n, _ in effective_targets(view, policy)] if view is not None else policy.target_names
    return {
        "name": policy.name,
        "volume": policy.spec.volume,
        "mode": policy.spec.mode,
        "interval": None if policy.spec.interval is None else str(policy.spec.interval),
        "targets": targets,
        "failover": {
            "automatic": f.automatic,
            "after": str(f.after),
            "priority": list(f.priority),
            "promoteTo": f.promote_to,
        },
        "maxLag": str(policy.spec.max_lag),
    }


async def list_policies(etcd: Etcd) -> list[dict[str, Any]]:
    """Every stored policy, sorted by name (malformed stored documents are skipped), with
    the targets its volume's owner mirrors to now (:func:`policy_summary`)."""
    view = await load_view(etcd)
    return [policy_summary(p, view) for p in stored_policies(view)]


async def get_policy(etcd: Etcd, name: str) -> MirrorPolicy:
    """The stored policy ``name``; :class:`NotFound` if there is none."""
    check_name("policy", name)
    raw = await etcd.get(schema.policy(name))
    if raw is None:
        raise NotFound(f"mirror policy {name!r} not found")
    return MirrorPolicy.from_stored(raw)


async def remove_policy(etcd: Etcd, name: str) -> None:
    """Delete policy ``name`` and every status record of its targets, in one transaction."""
    check_name("policy", name)
    tx = etcd.tx
    key = schema.policy(name)
    prefix = schema.mirror_status_prefix(name)
    ok, _ = await etcd.txn(
        [tx.create(key) != 0],
        [tx.delete(key), tx.delete(prefix, range_end=prefix_end(prefix))],
    )
    if not ok:
        raise NotFound(f"mirror policy {name!r} not found")
