"""SPEC §7: who automatic failover may promote when a volume's owner is Down.

After a first failover the old owner is a mirror target of the new one though no policy
names it, and ``promoteTo`` may name the new (now Down) owner itself: the candidate search
once looked only at the policy's targets, found nothing and left the volume Down for good.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar, cast

from federation.controller.failover import FailoverOps
from mirroring.policy.document import parse_policy
from mirroring.promotion import Candidate, choose
from mirroring.status import effective_targets, replica_targets
from namespace.cache import NamespaceView
from namespace.models import ClusterSpec, Volume

T = TypeVar("T")
S3 = "s3://dr-bucket/hv"


def doc(targets: str, promote_to: str = "onprem-b", priority: str = "[]") -> str:
    return f"""
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata: {{name: hv-dr}}
spec:
  volume: hv
  mode: continuous
  targets: {targets}
  failover: {{automatic: true, after: 5s, promoteTo: {promote_to}, priority: {priority}}}
"""


def view_of(alive: list[str], vol: Volume) -> NamespaceView:
    view = NamespaceView()
    view.clusters = {cid: ClusterSpec(id=cid, provider=p) for cid, p in [
        ("aws-1", "aws"), ("onprem-b", "onprem"), ("onprem-c", "onprem"), ("edge-1", "edge")]}
    view.alive = {cid: b"" for cid in alive}
    view.volumes = {vol.name: vol}
    return view


class Ops(FailoverOps):
    """The leader's failover operations over fixed replica and store states (no gRPC, no I/O)."""

    def __init__(self, view: NamespaceView, replicas: dict[str, tuple[int, int]],
                 stores: dict[str, int] | None = None) -> None:
        super().__init__("onprem-c", cast(Any, SimpleNamespace(view=view)), cast(Any, None),
                         cast(Any, SimpleNamespace(pool=None)), cast(Any, None), cast(Any, None))
        self.replicas = replicas
        self.stores = stores or {}
        self.asked: list[str] = []

        async def run_io(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
            return fn(*args, **kw)

        self.run_io = run_io

    async def replica_state(self, cluster: str, volume: str) -> tuple[int, int] | None:
        self.asked.append(cluster)
        return self.replicas.get(cluster) if cluster in self.cache.view.alive else None

    def _store_version(self, uri: str, volume: str) -> int:
        return self.stores[uri]


def search(ops: Ops, policy_doc: str) -> tuple[list[Candidate], list[str]]:
    vol = next(iter(ops.cache.view.volumes.values()))
    return asyncio.run(ops.search(parse_policy(policy_doc), vol))


# The report: hv failed over from aws-1 to onprem-b by hydration from S3; onprem-b froze.
SECOND = Volume(name="hv", owner="onprem-b", epoch=2, base_version=9, former_owners=["aws-1"])


def test_former_owner_is_promoted_when_promote_to_is_the_down_owner() -> None:
    ops = Ops(view_of(["aws-1", "onprem-c"], SECOND), {"aws-1": (9, 2)}, {S3: 9})
    policy = parse_policy(doc(f"[{{uri: '{S3}'}}]"))
    found = asyncio.run(ops.candidates(policy, SECOND))
    assert found == [Candidate("aws-1", 9, True, "aws-1")]
    assert choose(found, []) == Candidate("aws-1", 9, True, "aws-1")
    _, skipped = search(ops, doc(f"[{{uri: '{S3}'}}]"))
    assert skipped == [f"{S3}: promoteTo onprem-b is the Down owner itself"]


def test_down_promote_to_rules_out_the_store_not_a_ready_cluster_target() -> None:
    vol = Volume(name="hv", owner="aws-1", epoch=1)
    ops = Ops(view_of(["onprem-c"], vol), {"onprem-c": (7, 1)}, {S3: 9})
    found, skipped = search(ops, doc(f"[{{uri: '{S3}'}}, {{cluster: onprem-c}}]"))
    assert found == [Candidate("onprem-c", 7, True, "onprem-c")]
    assert skipped == [f"{S3}: promoteTo onprem-b is Down"]


def test_store_still_wins_with_a_ready_promote_to_and_a_higher_version() -> None:
    vol = Volume(name="hv", owner="aws-1", epoch=1)
    ops = Ops(view_of(["onprem-b", "onprem-c"], vol), {"onprem-c": (7, 1)}, {S3: 9})
    found, _ = search(ops, doc(f"[{{uri: '{S3}'}}, {{cluster: onprem-c}}]"))
    assert choose(found, []) == Candidate(S3, 9, False, "onprem-b")


def test_highest_version_wins_between_former_owner_and_policy_target_ties_by_priority() -> None:
    view = view_of(["aws-1", "onprem-c"], SECOND)
    targets = f"[{{uri: '{S3}'}}, {{cluster: onprem-c}}]"
    found, _ = search(Ops(view, {"aws-1": (9, 2), "onprem-c": (10, 2)}), doc(targets))
    assert choose(found, []) == Candidate("onprem-c", 10, True, "onprem-c")
    found, _ = search(Ops(view, {"aws-1": (10, 2), "onprem-c": (10, 2)}), doc(targets, priority="[aws-1]"))
    assert choose(found, ["aws-1"]) == Candidate("aws-1", 10, True, "aws-1")


def test_former_owner_not_yet_resynced_is_no_candidate() -> None:
    """A former owner still holding its own diverged writes (past the version the current
    owner started from, at its old epoch) must not win on that version."""
    vol = Volume(name="hv", owner="onprem-b", epoch=2, base_version=9, former_owners=["aws-1"])
    view = view_of(["aws-1", "onprem-c"], vol)
    ops = Ops(view, {"aws-1": (12, 1), "onprem-c": (10, 2)})
    found, skipped = search(ops, doc("[{cluster: onprem-c}]"))
    assert found == [Candidate("onprem-c", 10, True, "onprem-c")]
    assert len(skipped) == 1 and skipped[0].startswith("aws-1: holds version 12 of epoch 1")
    # Not past the base version: what it holds is what the current owner started from.
    found, _ = search(Ops(view, {"aws-1": (9, 1)}), doc("[{cluster: onprem-c}]"))
    assert found == [Candidate("aws-1", 9, True, "aws-1")]


def test_replica_targets_add_former_owners_once_and_never_the_owner_or_an_edge_site() -> None:
    vol = Volume(name="hv", owner="onprem-b", epoch=3, former_owners=["aws-1", "edge-1", "onprem-c"])
    policy = parse_policy(doc("[{cluster: onprem-c}, {cluster: onprem-b}]", promote_to="aws-1"))
    names = [t.name for t in replica_targets(view_of([], vol), policy, vol.owner)]
    assert names == ["onprem-c", "aws-1"]
    # What mirror status lists is the same: a returned site follows the owner by itself and
    # was shown Syncing at version 0 for good.
    assert effective_targets(view_of([], vol), policy) == [("onprem-c", "continuous"), ("aws-1", "continuous")]


def test_leader_that_is_a_former_owner_not_yet_failed_back_reports_no_replica() -> None:
    vol = Volume(name="hv", owner="onprem-b", epoch=2, former_owners=["onprem-c"])
    storage = SimpleNamespace(role="primary", version=12, epoch=1)
    volumes = SimpleNamespace(has_local=lambda name: True, storage=lambda name: storage)
    ops = FailoverOps("onprem-c", cast(Any, SimpleNamespace(view=view_of(["onprem-c"], vol))),
                      cast(Any, volumes), cast(Any, SimpleNamespace(pool=None)),
                      cast(Any, None), cast(Any, None))

    async def run_io(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return fn(*args, **kw)

    ops.run_io = run_io
    assert asyncio.run(ops.replica_state("onprem-c", "hv")) is None
    storage.role = "replica"
    assert asyncio.run(ops.replica_state("onprem-c", "hv")) == (12, 1)


def test_targets_are_asked_at_once_not_one_after_another() -> None:
    """A Down or frozen target costs its probe's timeout (5 s): asked one by one, three such
    targets kept a volume unowned 15 s longer before the one that could take it over."""
    vol = Volume(name="hv", owner="aws-1", epoch=1)
    ops = Ops(view_of(["onprem-b", "onprem-c"], vol), {"onprem-b": (5, 1), "onprem-c": (7, 1)})
    both_asked = asyncio.Event()
    waiting = 0

    async def replica_state(cluster: str, volume: str) -> tuple[int, int] | None:
        nonlocal waiting
        waiting += 1
        if waiting == 2:
            both_asked.set()
        await asyncio.wait_for(both_asked.wait(), 5)  # only if the other is asked meanwhile
        return ops.replicas[cluster]

    ops.replica_state = replica_state  # type: ignore[method-assign]
    found, skipped = search(ops, doc("[{cluster: onprem-b}, {cluster: onprem-c}]"))
    assert [(c.name, c.version) for c in found] == [("onprem-b", 5), ("onprem-c", 7)] and not skipped
