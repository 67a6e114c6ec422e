"""Failover in the federation: promotion (automatic or manual), planned hand-over, and
hydration of a volume from an object-store mirror onto a cluster.

Decisions and the ownership transaction live in :mod:`mirroring.promotion`; this module
gathers what they need over gRPC (replica versions, a final sync from a Ready owner) and
runs the automatic loop on the federation leader. Every promotion is logged and counted
with its reason.
"""
from __future__ import annotations

import asyncio
import logging
import time

import grpc

from cloud_adapters.errors import ObjectStoreError
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.errors import from_rpc_error
from federation.channels import AioChannelPool
from federation.controller.handler_io import IOPool
from federation.controller.liveness import OwnerLiveness
from federation.controller.metrics import ControllerMetrics
from federation.controller.mirrors import MirrorRunner
from federation.controller.replication import ClusterTarget
from federation.controller.volumes import VolumeManager
from federation.storage import FileMeta
from mirroring import promotion as decide
from mirroring.engine import run_pass
from mirroring.policy import MirrorPolicy, Target
from mirroring.status import replica_targets, target_record
from namespace.cache import NamespaceCache
from namespace.errors import Conflict, GnsError, InvalidInput, NotFound, Unavailable
from namespace.models import Volume
from namespace.paths import check_name

log = logging.getLogger(__name__)


def in_lineage(vol: Volume, version: int, epoch: int) -> bool:
    """Whether a replica at (``version``, ``epoch``) holds a state the volume really passed
    through: committed by the current owner (its epoch), or from an earlier epoch but not
    past the version the current owner started from. A former owner not yet resynced holds
    its own diverged writes past that version: promoting it would bring them back and drop
    the current owner's."""
    return epoch >= vol.epoch or version <= vol.base_version


class FailoverOps:
    """What a controller can do for failover; shared by the RPC service and the leader."""

    def __init__(self, cluster: str, cache: NamespaceCache, volumes: VolumeManager,
                 mirrors: MirrorRunner, peers: AioChannelPool, metrics: ControllerMetrics) -> None:
        self.cluster = cluster
        self.cache = cache
        self.volumes = volumes
        self.mirrors = mirrors
        self.peers = peers
        self.metrics = metrics
        self.run_io = IOPool(mirrors.pool).run

    def _stub(self, cluster: str) -> pb_grpc.FailoverStub:
        view = self.cache.view
        if cluster not in view.clusters:
            raise NotFound(f"cluster {cluster!r} not found")
        if cluster not in view.alive:
            raise Unavailable(f"cluster {cluster} is Down")
        return pb_grpc.FailoverStub(self.peers.get(view.clusters[cluster].endpoint))

    def _policies(self, volume: str) -> list[MirrorPolicy]:
        return self.mirrors.policies_of(volume)

    # -- candidates ----------------------------------------------------------------------
    async def replica_state(self, cluster: str, volume: str) -> tuple[int, int] | None:
        """(version, epoch) a cluster's replica fully holds (None: no replica, unreachable,
        or a former owner that has not yet turned its copy into a replica)."""
        if cluster == self.cluster:
            if not self.volumes.has_local(volume):
                return None
            vs = await self.run_io(self.volumes.storage, volume)
            if vs.role == "primary":  # as Replication.State answers: failing back, not yet
                return None
            return int(vs.version), int(vs.epoch)
        view = self.cache.view
        if cluster not in view.alive or cluster not in view.clusters:
            return None
        stub = pb_grpc.ReplicationStub(self.peers.get(view.clusters[cluster].endpoint))
        try:
            r = await stub.State(pb.ReplicaStateRequest(volume=volume), timeout=5)
        except grpc.RpcError:
            return None
        return (int(r.version), int(r.epoch)) if r.exists else None

    async def replica_version(self, cluster: str, volume: str) -> int | None:
        """The version a cluster's replica fully holds (None: no replica, or unreachable)."""
        st = await self.replica_state(cluster, volume)
        return None if st is None else st[0]

    def _store_version(self, uri: str, volume: str) -> int:
        from cloud_adapters.registry import open_store
        from mirroring.targets import ObjectStoreTarget

        return ObjectStoreTarget(open_store(uri), uri, volume=volume).state().version

    async def candidates(self, policy: MirrorPolicy, vol: Volume) -> list[decide.Candidate]:
        """The targets that could take ``vol`` over now, with the version each fully holds."""
        return (await self.search(policy, vol))[0]

    async def search(self, policy: MirrorPolicy, vol: Volume) -> tuple[list[decide.Candidate], list[str]]:
        """(candidates, why each other target is not one): over the targets the (Down)
        owner sent copies to (:func:`mirroring.status.replica_targets`: the policy's and
        its former owners, which no policy names; after a failover they are often the only
        cluster holding the volume)."""
        found: list[decide.Candidate] = []
        skipped: list[str] = []
        targets = replica_targets(self.cache.view, policy, vol.owner)
        # All at once: a Down or frozen target costs its probe's timeout once, not once
        # per target before it (the volume is unowned meanwhile).
        answers = await asyncio.gather(*(
            self._cluster_candidate(t.name, vol) if t.is_cluster else self._store_candidate(t, policy, vol)
            for t in targets))
        for i, t in enumerate(targets):
            record = target_record(self.cache.view, policy.name, t.name)
            if record is not None and record.out_of_sync and not isinstance(answers[i], str):
                answers[i] = ("out of sync: mode sync acknowledged writes it does not hold "
                              "(promoting it would lose them)")
        for t, got in zip(targets, answers, strict=True):
            if isinstance(got, str):
                skipped.append(f"{t.name}: {got}")
            else:
                found.append(got)
        return found, skipped

    async def _cluster_candidate(self, cluster: str, vol: Volume) -> decide.Candidate | str:
        st = await self.replica_state(cluster, vol.name)
        if st is None:
            return "no replica" if cluster in self.cache.view.alive else "Down"
        version, epoch = st
        if not in_lineage(vol, version, epoch):
            return (f"holds version {version} of epoch {epoch}, past the version {vol.base_version} "
                    f"epoch {vol.epoch} started from (not yet resynced)")
        return decide.Candidate(cluster, version, True, cluster)

    async def _store_candidate(self, t: Target, policy: MirrorPolicy, vol: Volume) -> decide.Candidate | str:
        to = policy.spec.failover.promote_to
        # An object store only becomes an owner by being loaded onto promoteTo: a promoteTo
        # that is missing, Down, or the Down owner itself (after a failover onto it) rules
        # the store out, never the cluster targets.
        if not to:
            return "no failover.promoteTo to load it onto"
        if to == vol.owner:
            return f"promoteTo {to} is the Down owner itself"
        if to not in self.cache.view.alive:
            return f"promoteTo {to} is Down"
        try:
            v = await self.run_io(self._store_version, t.uri or "", vol.name)
        except (GnsError, ObjectStoreError) as exc:
            log.warning("volume %s: failover candidate %s unreadable: %s", vol.name, t.name, exc)
            return f"unreadable ({exc})"
        if v <= 0:
            return "holds no committed version"
        return decide.Candidate(t.name, v, False, to)

    # -- promotion -----------------------------------------------------------------------
    async def promote(self, volume: str, to: str, *, force: bool, reason: str) -> Volume:
        check_name("volume", volume)
        view = self.cache.view
        vol = view.volumes.get(volume)
        if vol is None:
            raise NotFound(f"volume {volume!r} not found")
        if to == vol.owner:
            raise Conflict(f"{to} already owns volume {volume!r}")
        is_uri = "://" in to
        if not is_uri:
            check_name("cluster", to)
            if to not in view.clusters:
                raise NotFound(f"cluster {to!r} not found")
            if to not in view.alive:
                raise Unavailable(f"cluster {to} is Down; it cannot take volume {volume!r} over")
        if vol.owner in view.alive:
            if not force:
                raise Conflict(
                    f"owner {vol.owner} of volume {volume!r} is Ready; use --force for a planned "
                    "hand-over (drain, final sync, switch)")
            if is_uri:
                raise InvalidInput("a planned hand-over goes to a cluster, not to an object store")
            try:
                r = await self._stub(vol.owner).Handover(pb.HandoverRequest(volume=volume, to=to), timeout=600)
            except grpc.RpcError as exc:
                raise from_rpc_error(exc, f"owner {vol.owner}") from None
            self.metrics.promotions.labels("planned").inc()
            return self.cache.view.volumes.get(volume) or vol.model_copy(update={"owner": r.owner, "epoch": r.epoch})
        owner = view.clusters.get(vol.owner)
        if not force and owner is not None and owner.provider == "edge":
            # SPEC §8: a site away keeps taking writes; moving its volume is a decision.
            raise Conflict(
                f"volume {volume!r} belongs to edge site {vol.owner}, which keeps accepting writes "
                "while away: it moves only with --force (the site's writes since are then kept "
                "aside as diverged)")
        missing = [p.name for p in self._policies(vol.name) if p.spec.mode == "sync" and to in p.target_names
                   and (r := target_record(view, p.name, to)) is not None and r.out_of_sync]
        if missing and not force:
            raise Conflict(
                f"{to} is out of sync under mode sync policy {missing[0]!r}: writes were acknowledged "
                f"that it does not hold; promoting it loses them (kept aside as diverged when "
                f"{vol.owner} returns): only with --force")
        return await self.promote_from_down(vol, to, reason)

    async def promote_from_down(self, vol: Volume, to: str, reason: str) -> Volume:
        if "://" in to:
            policy = next((p for p in self._policies(vol.name) if to in p.target_names), None)
            if policy is None:
                raise NotFound(f"{to} is not a mirror target of volume {vol.name!r}")
            dest = policy.spec.failover.promote_to
            if not dest:
                raise InvalidInput(f"policy {policy.name!r} has no failover.promoteTo cluster to hydrate onto")
            try:
                r = await self._stub(dest).Hydrate(pb.HydrateRequest(volume=vol.name, uri=to), timeout=3600)
            except grpc.RpcError as exc:
                raise from_rpc_error(exc, f"cluster {dest}") from None
            version, new_owner = int(r.version), dest
        else:
            v = await self.replica_version(to, vol.name)
            if v is None:
                raise Conflict(f"cluster {to} holds no replica of volume {vol.name!r}; promoting it would lose the data")
            version, new_owner = v, to
        new = await decide.promote(self.cache.etcd, vol.name, new_owner, version, expect=vol)
        self.cache.own_write(volume=new)
        self.metrics.promotions.labels(reason).inc()
        log.warning("volume %s: promoted %s (via %s) at version %d, epoch %d; reason: %s",
                    vol.name, new_owner, to, version, new.epoch, reason)
        return new

    # -- on the owner: planned hand-over ---------------------------------------------------
    async def handover(self, volume: str, to: str) -> pb.PromoteReply:
        vol = self.volumes.volume(volume)
        if vol.owner != self.cluster:
            raise Conflict(f"cluster {self.cluster} does not own volume {volume!r}")
        view = self.cache.view
        if to not in view.alive or to not in view.clusters:
            raise Unavailable(f"cluster {to} is not Ready")
        self.volumes.draining.add(volume)
        try:
            await self.volumes.wait_idle(volume, timeout=60)
            # create: a volume never written has no storage yet, and hands over empty
            vs = await self.run_io(self.volumes.storage, volume, create=True)
            target = ClusterTarget(to, volume, self.cluster, view.clusters[to].endpoint,
                                   self.mirrors.tls_dir, self.cluster, vs.epoch)
            try:
                result = await self.run_io(run_pass, vs, target)
            finally:
                target.close()
            if not result.committed or result.version != vs.version:
                raise Unavailable(f"final sync to {to} did not complete; volume {volume!r} stays with {self.cluster}")
            new = await decide.promote(self.cache.etcd, volume, to, result.version, expect=vol)
            self.cache.own_write(volume=new)
            log.warning("volume %s handed over to %s at version %d (epoch %d)", volume, to, result.version, new.epoch)
            return pb.PromoteReply(owner=to, epoch=new.epoch, version=result.version)
        finally:
            self.volumes.draining.discard(volume)

    # -- on promoteTo: hydration from an object store -----------------------------------------
    def hydrate(self, volume: str, uri: str) -> tuple[int, int, int]:
        from cloud_adapters.registry import open_store
        from cloud_adapters.transfer import TransferPool
        from mirroring.targets import ObjectStoreTarget

        store = open_store(uri)
        target = ObjectStoreTarget(store, uri, volume=volume)
        st = target.state()
        if st.version == 0:
            raise NotFound(f"{uri} holds no committed version of volume {volume!r}")
        entries = list(target.manifest_entries())
        vs = self.volumes.storage(volume, create=True)

        def fetch(entry: tuple[str, int, str]) -> int:
            path, size, sha = entry
            if not vs.has_blob(sha):
                vs.ingest_blob(store.open(path), expect_sha256=sha)
            return size

        total = sum(TransferPool(8).map_unordered(fetch, iter(entries)))
        now = time.time()
        vs.reset_to([FileMeta(p, s, h, now, st.version) for p, s, h in entries], st.version)
        log.warning("volume %s hydrated from %s at version %d (%d files, %d bytes)",
                    volume, uri, st.version, len(entries), total)
        return st.version, len(entries), total


class FailoverService(pb_grpc.FailoverServicer):
    def __init__(self, ops: FailoverOps) -> None:
        self.ops = ops

    async def Promote(self, request: pb.PromoteRequest, context: grpc.aio.ServicerContext) -> pb.PromoteReply:
        vol = await self.ops.promote(request.volume, request.to, force=request.force,
                                     reason=request.reason or "manual")
        return pb.PromoteReply(owner=vol.owner, epoch=vol.epoch, version=vol.base_version, via=request.to)

    async def Handover(self, request: pb.HandoverRequest, context: grpc.aio.ServicerContext) -> pb.PromoteReply:
        return await self.ops.handover(request.volume, request.to)

    async def Hydrate(self, request: pb.HydrateRequest, context: grpc.aio.ServicerContext) -> pb.HydrateReply:
        vol = self.ops.volumes.volume(request.volume)
        if vol.owner == self.ops.cluster:
            raise Conflict(f"cluster {self.ops.cluster} already owns volume {request.volume!r}")
        version, files, nbytes = await self.ops.run_io(self.ops.hydrate, request.volume, request.uri)
        return pb.HydrateReply(version=version, files=files, bytes=nbytes)


class AutomaticFailover:
    """On the leader: promote the best candidate of each volume whose owner stayed Down."""

    def __init__(self, ops: FailoverOps, liveness: OwnerLiveness, period: float = 0.5) -> None:
        self.ops = ops
        self.liveness = liveness
        self.period = period

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:  # one bad step must not end failover for good
                log.exception("failover loop step failed")
            await asyncio.sleep(self.period)

    async def step(self) -> None:
        ops = self.ops
        for policy, vol in decide.due(ops.cache.view, self.liveness.gone_since()):
            cands, skipped = await ops.search(policy, vol)
            best = decide.choose(cands, list(policy.spec.failover.priority))
            if best is None:
                log.warning("volume %s: owner %s Down, no failover candidate (%s)", vol.name, vol.owner,
                            "; ".join(skipped) or "no targets")
                continue
            try:
                await ops.promote_from_down(vol, best.name, f"owner {vol.owner} down")
            except Conflict as exc:
                log.info("failover of %s skipped: %s", vol.name, exc)
            except (GnsError, ObjectStoreError) as exc:
                log.warning("failover of %s to %s failed: %s", vol.name, best.name, exc)
