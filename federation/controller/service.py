"""The gRPC ``Federation`` service of one controller: local data plane plus forwarding.

A request either names a volume (the client resolved it) or a global path (this controller
resolves it from its cache). Requests for volumes owned here are served from disk through a
bounded thread pool; requests for volumes owned elsewhere are forwarded to the owner,
relaying the stream chunk by chunk so a forwarder never holds a whole file.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.errors import from_rpc_error
from federation.channels import MAX_PUT_BATCH, Peers
from federation.controller import read_relay, write_relay
from federation.controller.global_names import Anchor, named_globally
from federation.controller.handler_io import IOPool, read_header
from federation.controller.metrics import ControllerMetrics
from federation.controller.mirrors import MirrorRunner
from federation.controller.rpc_errors import put_failure
from federation.controller.volumes import VolumeManager
from federation.resolution import HEDGE_AFTER_S, away_site_replica, fresh_replicas, replicas_of
from federation.storage import (
    INLINE_MAX,
    DirEntry,
    FileMeta,
    JournalEntry,
    PutWriter,
    VolumeStorage,
)
from namespace import schema
from namespace.cache import NamespaceCache
from namespace.control import resolve_in
from namespace.errors import (
    Conflict,
    EpochNotSeen,
    FileNotFound,
    InvalidInput,
    NotFound,
    StaleEpoch,
    Unavailable,
)
from namespace.models import HUB_LABEL, Volume
from namespace.mounts import MOUNT_DIR_MODE, with_mount_points
from namespace.paths import check_writable_name, normalize, normalize_relative

log = logging.getLogger(__name__)

API_VERSIONS = ["v1"]
RELEASE = "0.1.0"
_HOPS = "gns-hops"
_MAX_HOPS = 2
_WATCH_POLL_S = 0.05  # how often an idle Watch looks for new commits


class Resolved:
    """A request target after resolution: which volume, where inside, which epoch."""

    __slots__ = ("volume", "rel", "epoch", "global_path")

    def __init__(self, volume: str, rel: str, epoch: int, global_path: str) -> None:
        self.volume, self.rel, self.epoch, self.global_path = volume, rel, epoch, global_path


class FederationService(pb_grpc.FederationServicer):
    def __init__(
        self,
        cluster: str,
        cache: NamespaceCache,
        volumes: VolumeManager,
        metrics: ControllerMetrics,
        peers: Peers,
        pool: ThreadPoolExecutor,
        chunk_size: int = 1 << 20,
        *,
        mirrors: MirrorRunner | None = None,
        edge_relay: Callable[[str], str | None] | None = None,
        may_read: Callable[[list[str]], bool] | None = None,
    ) -> None:
        self.cluster = cluster
        self.cache = cache
        self.volumes = volumes
        self.metrics = metrics
        self.peers = peers
        self.pool = pool
        self._io = IOPool(pool).run
        self._io_to_end = IOPool(pool).run_to_end
        self.chunk_size = chunk_size
        # Writes wait for `mode: sync` mirror targets (None: no mirroring here).
        self.mirrors = mirrors
        # On a hub: owner id -> pseudo endpoint down an edge site's link (None: not linked here).
        self.edge_relay = edge_relay
        # Whether the current caller may read any of some global paths (Authorizer.may_read;
        # None: access control is off). A change stream shows a caller only what it may read.
        self.may_read = may_read

    # -- helpers --------------------------------------------------------------------------
    async def _resolved(self, t: pb.Target) -> Resolved:
        """:meth:`_resolve`, once this controller's cache shows the volume or mount the
        request names, if etcd has it (:meth:`NamespaceCache.learn`): a volume or mount
        made a moment ago is "not found" nowhere (read-your-writes across processes)."""
        try:
            r = self._resolve(t)
        except NotFound:
            if not await self._learn(t):
                raise
            return self._resolve(t)
        if r.volume and r.volume not in self.cache.view.volumes:
            await self._learn(t)
        return r

    async def _learn(self, t: pb.Target) -> bool:
        if t.volume:
            return await self.cache.learn(volume=t.volume)
        return bool(t.global_path) and await self.cache.learn(path=t.global_path)

    def _resolve(self, t: pb.Target) -> Resolved:
        if t.volume:
            return Resolved(t.volume, normalize_relative(t.relative_path), t.epoch, t.global_path)
        if not t.global_path:
            raise InvalidInput("request names neither a global path nor a volume")
        path = normalize(t.global_path)
        res = resolve_in(self.cache.view, path)
        vol = self.cache.view.volumes[res.volume]
        return Resolved(res.volume, res.relative_path, t.epoch or vol.epoch, path)

    def _replica_fresh(self, volume: str, t: pb.Target) -> bool:
        """May this cluster's replica answer a read of ``volume`` (``--consistency any``, or
        the owner is an edge site that is away: SPEC §8, answered stale)?"""
        if self._away_site_mirror(volume) == self.cluster and self.volumes.has_local(volume):
            return True
        if t.consistency != "any" or not self.volumes.has_local(volume):
            return False
        vol = self.cache.view.volumes.get(volume)
        if vol is None or vol.owner == self.cluster:
            return False
        bound = _staleness_bound(t)
        return any(r["target"] == self.cluster and r["lag_seconds"] <= bound
                   for r in replicas_of(self.cache.view, volume))

    def _away_site_mirror(self, volume: str) -> str | None:
        try:
            away = away_site_replica(self.cache.view, volume)
        except Unavailable:
            return None
        return None if away is None else str(away["target"])

    def _read_endpoint(self, volume: str) -> tuple[str, str] | None:
        """Where a read goes: the owner, or the core mirror of an edge site that is away."""
        mirror = self._away_site_mirror(volume)
        if mirror is not None and mirror in self.cache.view.clusters:
            return mirror, self.cache.view.clusters[mirror].endpoint
        return self._owner_endpoint(volume)

    def _read_endpoints(self, volume: str, t: pb.Target) -> list[tuple[str, str]]:
        """Where a read this controller does not serve goes, in order (empty: we serve it):
        the owner (or an away site's mirror); under ``consistency any`` then each fresh
        replica elsewhere, which also answer for an owner that is Down or does not answer
        (killed, its lease not yet expired), as a client that routes itself does (SPEC §5)."""
        try:
            first = self._read_endpoint(volume)
        except Unavailable:
            if t.consistency != "any" or not (ends := self._replicas_elsewhere(volume, t)):
                raise
            return ends
        if first is None:
            return []
        if t.consistency != "any":
            return [first]
        return [first, *(end for end in self._replicas_elsewhere(volume, t) if end[0] != first[0])]

    def _replicas_elsewhere(self, volume: str, t: pb.Target) -> list[tuple[str, str]]:
        """(cluster, endpoint) of the replicas that may answer ``t``, other than this one."""
        view = self.cache.view
        return [(cid, view.clusters[cid].endpoint)
                for cid in fresh_replicas(view, volume, _staleness_bound(t)) if cid != self.cluster]

    async def _read_forwarded(self, method: str, ends: list[tuple[str, str]], request: Any,
                              context: grpc.aio.ServicerContext) -> Any:
        """Unary ``method`` (``Stat``, ``List``) with ``request`` at the first of ``ends`` that
        answers: one that cannot be reached (UNAVAILABLE), or does not answer within
        ``HEDGE_AFTER_S`` while another end is left (a frozen owner, under ``consistency
        any``), passes to the next; any other error is the answer."""
        for i, (cid, endpoint) in enumerate(ends):
            self.metrics.forwarded.labels(method, cid).inc()
            last = i + 1 == len(ends)
            try:
                return await getattr(self._stub(endpoint), method)(
                    request, metadata=self._hops(context), timeout=None if last else HEDGE_AFTER_S)
            except grpc.RpcError as exc:
                if last or exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise from_rpc_error(exc, f"cluster {cid}") from None
        raise AssertionError("no endpoint to read from")

    def _owner_endpoint(self, volume: str) -> tuple[str, str] | None:
        """(owner id, endpoint) if another cluster owns ``volume``; None if we do."""
        vol = self.cache.view.volumes.get(volume)
        if vol is None:
            raise NotFound(f"volume {volume!r} not found")
        if vol.owner == self.cluster:
            return None
        if vol.owner not in self.cache.view.alive:
            raise Unavailable(
                f"owner {vol.owner} of volume {volume!r} is Down and no usable replica answered"
            )
        relay = self.edge_relay(vol.owner) if self.edge_relay is not None else None
        if relay is not None:
            return vol.owner, relay
        spec = self.cache.view.clusters.get(vol.owner)
        if spec is None or not spec.endpoint:
            raise Unavailable(f"owner {vol.owner} of volume {volume!r} has no endpoint")
        if spec.linked_site and spec.labels.get(HUB_LABEL) == self.cluster:
            # Its hub, with no link to it: the address it registered is this one, so
            # forwarding there came back here until the hop limit ("routing loop?"), for
            # the seconds until etcd says the site is Down and its mirror answers.
            raise Unavailable(f"edge site {vol.owner}, the owner of volume {volume!r}, is not "
                              f"connected to its hub {self.cluster}")
        return vol.owner, spec.endpoint

    def _forward_target(self, r: Resolved, t: pb.Target) -> pb.Target:
        return pb.Target(
            global_path=r.global_path, volume=r.volume, relative_path=r.rel, epoch=r.epoch,
            consistency=t.consistency, max_staleness_s=t.max_staleness_s,
        )

    def _hops(self, context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
        hops = 0
        for key, value in context.invocation_metadata() or ():
            if key == _HOPS:
                hops = int(value)
        if hops >= _MAX_HOPS:
            raise Unavailable("request forwarded too many times (routing loop?)")
        from federation.controller.authz import forward_metadata

        # The owner decides on the caller's identity, not ours (SPEC §10).
        return ((_HOPS, str(hops + 1)), *forward_metadata())

    def _stub(self, endpoint: str) -> pb_grpc.FederationStub:
        return pb_grpc.FederationStub(self.peers.get(endpoint))

    def _info(self, meta: FileMeta | DirEntry, r: Resolved) -> pb.FileInfo:
        shown = r.global_path or r.rel
        if isinstance(meta, DirEntry):
            mtime = meta.mtime
            if not mtime and not r.rel:
                # A volume root whose journal records no change (a new volume, or one
                # reset from a copy): it last changed when the volume was made.
                vol = self.cache.view.volumes.get(r.volume)
                mtime = vol.created if vol is not None else 0.0
            return pb.FileInfo(path=shown, type="dir", served_by=self.cluster,
                               mtime=mtime, mode=meta.mode)
        return pb.FileInfo(
            path=shown, size=meta.size, mtime=meta.mtime, sha256=meta.sha256,
            version=meta.version, type="file", served_by=self.cluster, mode=meta.mode,
        )

    def _local_storage(self, volume: str) -> VolumeStorage:
        vol = self.volumes.volume(volume)
        return self.volumes.storage(volume, create=vol.owner == self.cluster)

    def _named(self, r: Resolved, *more: Anchor) -> contextlib.AbstractContextManager[None]:
        """Around local storage calls for ``r``: errors name the caller's global paths."""
        return named_globally(self.cache.view, r.volume, (r.rel, r.global_path), *more)

    @contextlib.contextmanager
    def _named_stale(self, r: Resolved, stale: bool, version: int) -> Iterator[None]:
        """``_named``, and a miss in this cluster's copy answering for the owner (an away
        edge site's mirror, a replica under ``--consistency any``) says so: stat and cat
        marked what they found stale, while "no such file" left out that the owner may
        hold a file written since (SPEC §8: a disconnected site keeps taking writes)."""
        try:
            with self._named(r):
                yield
        except FileNotFound as exc:
            if not stale:
                raise
            vol = self.cache.view.volumes.get(r.volume)
            why = (f" (answered stale by {self.cluster}'s copy of volume {r.volume!r} at version "
                   f"{version}; its owner {vol.owner if vol else '?'} may hold newer files)")
            raise (type(exc).naming(exc.template + why, *exc.paths) if exc.template
                   else type(exc)(str(exc) + why)) from None

    # -- unary ----------------------------------------------------------------------------
    async def Health(self, request: pb.HealthRequest, context: grpc.aio.ServicerContext) -> pb.HealthReply:
        return pb.HealthReply(
            cluster=self.cluster,
            ready=self.volumes.lease.lease_id is not None and self.cluster in self.cache.view.alive,
            fenced=self.volumes.suspended or self.volumes.lease.fenced(),
            api_versions=API_VERSIONS,
            release=RELEASE,
        )

    async def Resolve(self, request: pb.ResolveRequest, context: grpc.aio.ServicerContext) -> pb.ResolveReply:
        # The answer of federation.resolution.describe, built straight into the reply (no
        # dicts in between): this is the RPC clients call most (issue 14).
        try:
            res = resolve_in(self.cache.view, request.path)
        except NotFound:  # made a moment ago? (see _resolved)
            if not await self.cache.learn(path=request.path):
                raise
            res = resolve_in(self.cache.view, request.path)
        view = self.cache.view
        vol = view.volumes[res.volume]
        away_site_replica(view, res.volume)  # an away edge site with no mirror: Unavailable
        spec = view.clusters.get(vol.owner)
        reply = pb.ResolveReply(
            path=res.path, mount=res.mount, volume=res.volume, relative_path=res.relative_path,
            owner=pb.Owner(cluster=vol.owner, endpoint=spec.endpoint if spec else "", epoch=vol.epoch),
        )
        if view.mirror_status:
            reply.replicas.extend(pb.Replica(**r) for r in replicas_of(view, res.volume))
        return reply

    async def Stat(self, request: pb.StatRequest, context: grpc.aio.ServicerContext) -> pb.FileInfo:
        t = request.target
        if t.volume or not t.global_path:
            return await self._stat(request, context)
        # A global path this controller resolves itself (``--controller``, ``--via``): a
        # mount point or a prefix of mount points is a directory whatever its volume holds
        # there, as ls shows it (and the etcd-path client's stat answers).
        path = normalize(t.global_path)
        try:
            return await self._stat(request, context)
        except NotFound:
            if not self.cache.view.mounts.at(path).is_dir:
                raise
        # The mount table's directory, no volume's: no size, time, hash or version of its
        # own, and nobody served it (as the etcd-path client's answer has no server).
        return pb.FileInfo(path=path, type="dir", mode=MOUNT_DIR_MODE)

    async def _stat(self, request: pb.StatRequest, context: grpc.aio.ServicerContext) -> pb.FileInfo:
        """The volume's own answer: served here or by the owner (or a fresh replica)."""
        r = await self._resolved(request.target)
        if self._replica_fresh(r.volume, request.target):
            vs = await self._io(self.volumes.storage, r.volume)
            with self._named_stale(r, True, vs.version):
                info = self._info(await self._io(vs.stat, r.rel), r)
            info.stale = True
            return info
        ends = self._read_endpoints(r.volume, request.target)
        if ends:
            fwd = pb.StatRequest(target=self._forward_target(r, request.target))
            answer: pb.FileInfo = await self._read_forwarded("Stat", ends, fwd, context)
            return answer
        vs = await self._io(self._local_storage, r.volume)
        with self._named(r):
            return self._info(await self._io(vs.stat, r.rel), r)

    async def List(self, request: pb.ListRequest, context: grpc.aio.ServicerContext) -> pb.ListReply:
        t = request.target
        if t.volume or not t.global_path:
            return await self._list(request, context)
        # A global path this controller resolves itself (``--controller``, ``--via``): its
        # listing shows the mount points below it as directories, as the etcd-path client's
        # does (Client.ls), and a path that is only a prefix of mounts lists just those.
        path = normalize(t.global_path)
        at = self.cache.view.mounts.at(path)
        below = at.below
        if below and not at.mounted:
            return pb.ListReply(entries=with_mount_points([], below, _mount_dir), served_by=self.cluster)
        try:
            reply = await self._list(request, context)
        except FileNotFound:
            if not at.is_dir:  # a mount point lists (empty) before its subpath has files
                raise
            reply = pb.ListReply(served_by=self.cluster)
        if below:
            merged = with_mount_points(list(reply.entries), below, _mount_dir)
            del reply.entries[:]
            reply.entries.extend(merged)
        return reply

    async def _list(self, request: pb.ListRequest, context: grpc.aio.ServicerContext) -> pb.ListReply:
        """The volume's own listing: served here or by the owner (or a fresh replica)."""
        r = await self._resolved(request.target)
        stale = self._replica_fresh(r.volume, request.target)
        ends = [] if stale else self._read_endpoints(r.volume, request.target)
        if ends:
            fwd = pb.ListRequest(target=self._forward_target(r, request.target))
            listing: pb.ListReply = await self._read_forwarded("List", ends, fwd, context)
            return listing
        vs = await self._io(self._local_storage, r.volume)
        with self._named_stale(r, stale, vs.version):
            entries = await self._io(vs.listdir, r.rel)
        return pb.ListReply(
            entries=[pb.DirEntry(name=e.name, type=e.type, size=e.size, mtime=e.mtime, mode=e.mode)
                     for e in entries],
            served_by=self.cluster, stale=stale,
        )

    async def _check_writable(self, r: Resolved) -> None:
        """``check_writable``, where an epoch this controller has not seen is looked up in
        etcd: one the volume has not reached there either is no lag to wait out but a
        refusal (exit 4), or a script pinning it (``--epoch``) would retry for ever."""
        try:
            self.volumes.check_writable(r.volume, r.epoch)
        except EpochNotSeen:
            current = await self._stored_epoch(r.volume)
            if current is not None and r.epoch > current:
                raise StaleEpoch(f"write to volume {r.volume!r} names epoch {r.epoch}, which it has "
                                 f"not reached (its epoch is {current})") from None
            raise

    async def _stored_epoch(self, volume: str) -> int | None:
        """The volume's epoch as etcd holds it now (None: not there)."""
        raw = await self.cache.etcd.get(schema.volume(volume))
        return None if raw is None else Volume.model_validate_json(raw).epoch

    def _refuse_mount_directory(self, t: pb.Target, verb: str) -> None:
        """A global path under no mount with mount points below (``MountsAt.refuse``)."""
        if not t.volume and t.global_path:
            path = normalize(t.global_path)
            self.cache.view.mounts.at(path).refuse(path, verb)

    def _refuse_mount_point(self, t: pb.Target, verb: str) -> None:
        """A mount point named by its global path (``MountTable.refuse_mount_point``). A
        volume's root is refused apart, wherever it is reached from."""
        if t.global_path:
            self.cache.view.mounts.refuse_mount_point(normalize(t.global_path), verb)

    async def Delete(self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext) -> pb.DeleteReply:
        self._refuse_mount_point(request.target, "remove")
        try:
            r = await self._resolved(request.target)
        except NotFound:
            self._refuse_mount_directory(request.target, "remove")
            raise
        owner = self._owner_endpoint(r.volume)
        if owner is not None:
            self.metrics.forwarded.labels("Delete", owner[0]).inc()
            try:
                reply: pb.DeleteReply = await self._stub(owner[1]).Delete(
                    pb.DeleteRequest(target=self._forward_target(r, request.target), recursive=request.recursive,
                                     keep_parent=request.keep_parent),
                    metadata=self._hops(context),
                )
                return reply
            except grpc.RpcError as exc:
                raise from_rpc_error(exc, f"owner {owner[0]}") from None
        if not r.rel:
            raise InvalidInput("refusing to remove the root of a volume")
        await self._check_writable(r)
        self.volumes.begin_write(r.volume)
        try:
            vs = await self._io(self.volumes.storage, r.volume, create=True)
            with self._named(r):
                version = await self._io(self._gated_delete, vs, r, request.recursive, request.keep_parent)
        finally:
            self.volumes.end_write(r.volume)
        self.volumes.committed(r.volume, version)
        if self.mirrors is not None:
            await self.mirrors.wait_sync_targets(r.volume, version)
        return pb.DeleteReply(version=version)

    def _gated_delete(self, vs: Any, r: Resolved, recursive: bool, keep_parent: bool = False) -> int:
        # Re-check the fence right before the commit: the lease may have lapsed meanwhile.
        self.volumes.check_writable(r.volume, r.epoch)
        return int(vs.delete(r.rel, recursive=recursive, keep_parent=keep_parent))

    async def VolumeState(self, request: pb.VolumeStateRequest, context: grpc.aio.ServicerContext) -> pb.VolumeStateReply:
        vol = self.volumes.volume(request.volume)
        if not self.volumes.has_local(vol.name) and vol.owner != self.cluster:
            raise NotFound(f"cluster {self.cluster} holds no copy of volume {vol.name!r}")
        vs = await self._io(self.volumes.storage, vol.name, create=vol.owner == self.cluster)
        return pb.VolumeStateReply(
            volume=vol.name, version=vs.version, epoch=vs.epoch, role=vs.role,
        )

    # -- namespace edits and the change stream (SPEC §5, §12) ---------------------------
    async def _edit(
        self,
        name: str,
        r: Resolved,
        t: pb.Target,
        context: grpc.aio.ServicerContext,
        forward: Callable[[pb_grpc.FederationStub, pb.Target, Any], Awaitable[pb.MutationReply]],
        local: Callable[[Any], int],
        *more: Anchor,
    ) -> pb.MutationReply:
        """Forward a metadata edit to the volume's owner, or commit it here as one version
        (fenced like a write, waited on by `mode: sync` mirrors). Errors name ``r`` and the
        ``more`` paths the edit names globally."""
        owner = self._owner_endpoint(r.volume)
        if owner is not None:
            self.metrics.forwarded.labels(name, owner[0]).inc()
            try:
                return await forward(self._stub(owner[1]), self._forward_target(r, t), self._hops(context))
            except grpc.RpcError as exc:
                raise from_rpc_error(exc, f"owner {owner[0]}") from None
        await self._check_writable(r)
        self.volumes.begin_write(r.volume)
        try:
            vs = await self._io(self.volumes.storage, r.volume, create=True)

            def gated() -> int:
                self.volumes.check_writable(r.volume, r.epoch)
                return int(local(vs))

            with self._named(r, *more):
                version = await self._io(gated)
        finally:
            self.volumes.end_write(r.volume)
        self.volumes.committed(r.volume, version)
        if self.mirrors is not None:
            await self.mirrors.wait_sync_targets(r.volume, version)
        return pb.MutationReply(version=version)

    async def Rename(self, request: pb.RenameRequest, context: grpc.aio.ServicerContext) -> pb.MutationReply:
        self._refuse_mount_point(request.target, "move")
        if request.destination:
            self._refuse_mount_point(pb.Target(global_path=request.destination), "replace")
        try:
            r = await self._resolved(request.target)
        except NotFound:
            self._refuse_mount_directory(request.target, "move")
            raise
        if request.destination_relative and request.target.volume:
            dst_rel = normalize_relative(request.destination_relative)
        else:
            if not request.destination:
                raise InvalidInput("rename names no destination")
            dst = resolve_in(self.cache.view, normalize(request.destination))
            if dst.volume != r.volume:
                raise Conflict(
                    f"cannot rename across volumes ({r.volume!r} -> {dst.volume!r}): "
                    "copy and delete instead"
                )
            dst_rel = dst.relative_path
        check_writable_name(dst_rel, request.destination)
        return await self._edit(
            "Rename", r, request.target, context,
            lambda stub, t, md: stub.Rename(
                pb.RenameRequest(target=t, destination=request.destination,
                                 destination_relative=dst_rel), metadata=md),
            lambda vs: vs.rename(r.rel, dst_rel),
            (dst_rel, request.destination),
        )

    async def Mkdir(self, request: pb.MkdirRequest, context: grpc.aio.ServicerContext) -> pb.MutationReply:
        r = await self._resolved(request.target)
        check_writable_name(r.rel, r.global_path)
        return await self._edit(
            "Mkdir", r, request.target, context,
            lambda stub, t, md: stub.Mkdir(
                pb.MkdirRequest(target=t, mode=request.mode, mtime=request.mtime), metadata=md),
            lambda vs: vs.mkdir(r.rel, mode=request.mode or 0o755, mtime=request.mtime or None),
        )

    async def Rmdir(self, request: pb.RmdirRequest, context: grpc.aio.ServicerContext) -> pb.MutationReply:
        self._refuse_mount_point(request.target, "remove")
        r = await self._resolved(request.target)
        return await self._edit(
            "Rmdir", r, request.target, context,
            lambda stub, t, md: stub.Rmdir(pb.RmdirRequest(target=t), metadata=md),
            lambda vs: vs.rmdir(r.rel),
        )

    async def SetAttr(self, request: pb.SetAttrRequest, context: grpc.aio.ServicerContext) -> pb.MutationReply:
        r = await self._resolved(request.target)
        mode = request.mode if request.set_mode else None
        mtime = request.mtime if request.set_mtime else None
        return await self._edit(
            "SetAttr", r, request.target, context,
            lambda stub, t, md: stub.SetAttr(
                pb.SetAttrRequest(target=t, set_mode=request.set_mode, mode=request.mode,
                                  set_mtime=request.set_mtime, mtime=request.mtime), metadata=md),
            lambda vs: vs.set_attrs(r.rel, mode=mode, mtime=mtime),
        )

    async def Watch(self, request: pb.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Change]:
        """Every committed change of the volume after ``from_version``, in order, then new
        ones as they commit (the owner's journal; a forwarder relays the owner's stream).
        Ends with UNAVAILABLE when this controller stops owning the volume."""
        r = await self._resolved(request.target)
        owner = self._owner_endpoint(r.volume)
        if owner is not None:
            self.metrics.forwarded.labels("Watch", owner[0]).inc()
            call = self._stub(owner[1]).Watch(
                pb.WatchRequest(target=self._forward_target(r, request.target),
                                from_version=request.from_version),
                metadata=self._hops(context),
            )
            try:
                async for change in call:
                    yield change
            except grpc.RpcError as exc:
                raise from_rpc_error(exc, f"owner {owner[0]}") from None
            return
        vs = await self._io(self._local_storage, r.volume)
        last = int(request.from_version)
        while True:
            if vs.version > last:
                upto = vs.version
                rows = await self._io(lambda: [e for e in vs.journal(last) if e.version <= upto])
                for e in rows:
                    change = self._change(r.volume, e)
                    if change is not None:
                        yield change
                last = upto
                continue
            if self._owner_endpoint(r.volume) is not None:
                raise Unavailable(f"cluster {self.cluster} no longer owns volume {r.volume!r}")
            await asyncio.sleep(_WATCH_POLL_S)

    def _change(self, volume: str, e: JournalEntry) -> pb.Change | None:
        """``e`` as the stream shows it, by the first global path showing each path it
        names; None if the caller may read it by none (names are what a grant keeps from
        others: a user with read on /data/team saw every name, size and time under
        /data), and a rename's source left out where it may not be read."""
        view = self.cache.view
        shown = view.paths_of(volume, e.path)
        if not self._may_read(shown):
            return None
        src_shown = view.paths_of(volume, e.src) if e.src else []
        src = "" if not e.src or not self._may_read(src_shown) else next(iter(src_shown), e.src)
        return pb.Change(
            version=e.version, op=e.kind or e.op, path=next(iter(shown), e.path), src=src,
            volume=volume, size=e.size, mtime=e.mtime, mode=e.mode, relative_path=e.path,
        )

    def _may_read(self, paths: list[str]) -> bool:
        return self.may_read is None or self.may_read(paths)

    # -- streams --------------------------------------------------------------------------
    async def Read(self, request: pb.ReadRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        """Serialized ``ReadChunk`` messages: a forwarder relays the owner's bytes as they
        are (decoding and re-encoding every chunk cost it about half the throughput)."""
        try:
            r = await self._resolved(request.target)
        except NotFound:
            t = request.target
            # ``/`` and other prefixes of mounts are directories, as Stat and List answer.
            if not t.volume and self.cache.view.mounts.at(normalize(t.global_path)).is_dir:
                raise InvalidInput(f"{normalize(t.global_path)} is a directory") from None
            raise
        stale = self._replica_fresh(r.volume, request.target)
        ends = [] if stale else self._read_endpoints(r.volume, request.target)
        if ends:
            fwd = pb.ReadRequest(
                target=self._forward_target(r, request.target), offset=request.offset, length=request.length
            )
            for i, (cid, endpoint) in enumerate(ends):  # the next only if none answered (_read_forwarded)
                self.metrics.forwarded.labels("Read", cid).inc()
                sent = False
                try:
                    async for message in read_relay.relay(self.peers.get(endpoint), fwd, self._hops(context)):
                        sent = True
                        self.metrics.bytes_out.inc(len(message))
                        yield message
                    return
                except grpc.RpcError as exc:
                    if sent or exc.code() != grpc.StatusCode.UNAVAILABLE or i + 1 == len(ends):
                        raise from_rpc_error(exc, f"cluster {cid}") from None
        vs = await self._io(self._local_storage, r.volume)
        with self._named_stale(r, stale, vs.version):
            meta = await self._io(vs.stat, r.rel)
        if isinstance(meta, DirEntry):
            raise InvalidInput(f"{r.global_path or r.rel} is a directory")
        info = self._info(meta, r)
        info.stale = stale
        end = None if not request.length else request.offset + request.length
        with self._named(r):
            chunks: Iterator[bytes] = await self._io(
                lambda: vs.read(r.rel, request.offset, end, self.chunk_size)
            )
        # Read and encoded in one pool call per chunk (read_relay.Messages).
        messages = read_relay.Messages(chunks, info)
        counted = 0
        try:
            while (encoded := await self._io(messages.next_message)) is not None:
                self.metrics.bytes_out.inc(messages.sent - counted)
                counted = messages.sent
                yield encoded
        finally:
            await self._io_to_end(messages.close)

    async def Write(self, request_iterator: AsyncIterator[pb.WriteChunk], context: grpc.aio.ServicerContext) -> pb.WriteReply:
        # Data messages arrive as raw bytes (write_relay.deserialize): relayed as they are.
        header, rest = await read_header(write_relay.header_first(request_iterator), "write")
        r = await self._resolved(header.target)
        owner = self._owner_endpoint(r.volume)
        if owner is not None:
            # The end (if promised) is relayed with the data: the owner checks it.
            return await self._forward_write(owner, r, header, rest, context)
        _check_file_to_write(r)
        it = write_relay.until_end(rest, header.ends)
        await self._check_writable(r)
        self.volumes.begin_write(r.volume)
        try:
            # A small file arrives whole in one data message: store it in ONE hop to the I/O
            # pool instead of four (each hop costs the loop and a worker ~0.2 ms; issue 14).
            first = await anext(it, None)
            second = None if first is None else await anext(it, None)
            if second is None:
                _not_cancelled(context)
                data = b"" if first is None else write_relay.data_of(first)
                self.metrics.bytes_in.inc(len(data))
                with self._named(r):
                    meta = await self._store_whole(r, header, data)
            else:
                async with write_relay.drained_on_error(it):  # refused: the sender hears why
                    vs = await self._io(self.volumes.storage, r.volume, create=True)
                    with self._named(r):  # refused now: a directory there, or a file above
                        writer = await self._io(vs.writer, r.rel)
                committed = False
                try:
                    async with write_relay.drained_on_error(it):
                        await write_relay.store(_chain((first, second), it), writer.write, self._io,
                                                self.metrics.bytes_in.inc)
                    _not_cancelled(context)
                    with self._named(r):
                        meta = await self._io(self._gated_commit, writer, r, header, self._commit_gate(r))
                    committed = True
                finally:
                    if not committed:
                        await self._io_to_end(writer.abort)
        finally:
            self.volumes.end_write(r.volume)
        return await self._committed(r, meta)

    async def Put(self, request: pb.PutRequest, context: grpc.aio.ServicerContext) -> pb.WriteReply:
        """A whole small file in one message (issue 14): committed without a stream; forwarded
        to the owner as a Put too."""
        return await self._put(request, context)

    async def PutBatch(self, request: pb.PutBatchRequest, context: grpc.aio.ServicerContext) -> pb.PutBatchReply:
        """Several puts of one client, each handled as its own ``Put`` would be, all at once:
        those for this controller's volumes join the same group commit. Every put succeeds
        or fails alone; a failure is its outcome, not the call's status."""
        if len(request.puts) > MAX_PUT_BATCH:
            raise InvalidInput(f"a PutBatch holds at most {MAX_PUT_BATCH} puts, not {len(request.puts)}")
        results = await asyncio.gather(*(self._put(p, context) for p in request.puts), return_exceptions=True)
        reply = pb.PutBatchReply()
        for result in results:
            if isinstance(result, pb.WriteReply):
                reply.outcomes.add(reply=result)
            elif isinstance(result, Exception):
                reply.outcomes.append(put_failure(result, "Federation/PutBatch", f"cluster {self.cluster}"))
            else:  # cancelled (the call went away) or interrupted: not a put's outcome
                raise result
        return reply

    async def _put(self, request: pb.PutRequest, context: grpc.aio.ServicerContext) -> pb.WriteReply:
        header = request.header
        if not header.HasField("target"):
            raise InvalidInput("put names no target")
        r = await self._resolved(header.target)
        owner = self._owner_endpoint(r.volume)
        if owner is not None:
            return await self._forward_put(owner, r, header, request.data, context)
        _check_file_to_write(r)
        await self._check_writable(r)
        self.volumes.begin_write(r.volume)
        try:
            self.metrics.bytes_in.inc(len(request.data))
            with self._named(r):
                meta = await self._store_whole(r, header, request.data)
        finally:
            self.volumes.end_write(r.volume)
        return await self._committed(r, meta)

    async def _forward_put(
        self,
        owner: tuple[str, str],
        r: Resolved,
        header: pb.WriteHeader,
        data: bytes,
        context: grpc.aio.ServicerContext,
    ) -> pb.WriteReply:
        """A Put relayed to the owner as one unary call; an owner of a release without Put
        (UNIMPLEMENTED) gets the same header and data as the Write stream it knows."""
        fwd_header = pb.WriteHeader(
            target=self._forward_target(r, header.target), mtime=header.mtime,
            expect_sha256=header.expect_sha256, size_hint=header.size_hint, mode=header.mode,
            if_absent=header.if_absent,
        )
        try:
            reply: pb.WriteReply = await self._stub(owner[1]).Put(
                pb.PutRequest(header=fwd_header, data=data), metadata=self._hops(context))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise from_rpc_error(exc, f"owner {owner[0]}") from None
            return await self._forward_write(owner, r, header, _one(pb.WriteChunk(data=data)), context)
        self.metrics.forwarded.labels("Put", owner[0]).inc()
        self.metrics.bytes_in.inc(len(data))
        return reply

    async def _committed(self, r: Resolved, meta: FileMeta) -> pb.WriteReply:
        """After a local commit (Write or Put): publish the version, wait for the volume's
        synchronous mirrors, answer."""
        self.volumes.committed(r.volume, meta.version)
        if self.mirrors is not None:
            await self.mirrors.wait_sync_targets(r.volume, meta.version)
        return pb.WriteReply(info=self._info(meta, r))

    async def _store_whole(self, r: Resolved, header: pb.WriteHeader, data: bytes | memoryview) -> FileMeta:
        """Commit a file that came in one message (a Put, or a Write of one data message)."""
        gate = self._commit_gate(r)
        vs = self.volumes.opened(r.volume)
        if vs is None or len(data) > INLINE_MAX:
            return await self._io(self._put_whole, r, header, data, gate)
        # Small: queued for the next group commit straight from the loop, so no pool thread
        # waits for it (issue 14).
        return await vs.put_small_async(
            r.rel, bytes(data), self.pool.submit, mtime=header.mtime or None,
            expect_sha256=header.expect_sha256 or None, mode=header.mode or None,
            if_absent=header.if_absent, gate=gate,
        )

    def _put_whole(self, r: Resolved, header: pb.WriteHeader, data: bytes | memoryview,
                   gate: Callable[[], None]) -> FileMeta:
        """A file that came in one message: open, write and commit in one pool call."""
        vs = self.volumes.storage(r.volume, create=True)
        with vs.writer(r.rel) as writer:
            writer.write(data)
            return self._gated_commit(writer, r, header, gate)

    def _gated_commit(self, writer: PutWriter, r: Resolved, header: pb.WriteHeader,
                      gate: Callable[[], None]) -> FileMeta:
        self.volumes.check_writable(r.volume, r.epoch)  # refused before the content's fsync
        return writer.commit(
            mtime=header.mtime or None, expect_sha256=header.expect_sha256 or None,
            mode=header.mode or None, if_absent=header.if_absent, gate=gate,
        )

    def _commit_gate(self, r: Resolved) -> Callable[[], None]:
        """The check a put runs inside its commit's batch, its last moment to refuse: the
        write gate (fencing) again, and the caller still there. gRPC cancels the handler's
        task when the caller cancels or its deadline passes, but a commit already on a pool
        thread would go on; a client that gave up (a FUSE close answered EIO) must not find
        the file committed later. An owner frozen with a whole request, its end and its
        cancellation in its socket reads all three at once when it thaws: the content's
        fsync gives the cancellation time to arrive. Call it from the handler's task."""
        gone = threading.Event()
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(lambda t: gone.set() if t.cancelled() else None)
        check_writable, volume, epoch = self.volumes.check_writable, r.volume, r.epoch

        def gate() -> None:
            check_writable(volume, epoch)
            if gone.is_set():
                raise Unavailable("the caller gave up on this write; nothing committed")

        return gate

    async def _forward_write(
        self,
        owner: tuple[str, str],
        r: Resolved,
        header: pb.WriteHeader,
        rest: AsyncIterator[pb.WriteChunk],
        context: grpc.aio.ServicerContext,
    ) -> pb.WriteReply:
        self.metrics.forwarded.labels("Write", owner[0]).inc()
        fwd_header = pb.WriteHeader(
            target=self._forward_target(r, header.target), mtime=header.mtime,
            expect_sha256=header.expect_sha256, size_hint=header.size_hint, mode=header.mode,
            if_absent=header.if_absent, ends=header.ends,
        )

        async def relay() -> AsyncIterator[bytes]:
            yield pb.WriteChunk(header=fwd_header).SerializeToString()
            async for msg in rest:
                raw = write_relay.serialized(msg)
                self.metrics.bytes_in.inc(len(raw))
                yield raw

        raw_write = self.peers.get(owner[1]).stream_unary(
            write_relay.WRITE_METHOD, request_serializer=None,
            response_deserializer=pb.WriteReply.FromString,
        )
        try:
            reply: pb.WriteReply = await raw_write(relay(), metadata=self._hops(context))
            return reply
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"owner {owner[0]}") from None


def _mount_dir(name: str) -> pb.DirEntry:
    """A mount point's entry in a listing: a directory with no size, mtime or mode."""
    return pb.DirEntry(name=name, type="dir")


def _check_file_to_write(r: Resolved) -> None:
    """A put's target: a file below its volume's root, under a name left to users."""
    if not r.rel:
        raise InvalidInput("cannot write to the root of a volume")
    check_writable_name(r.rel, r.global_path)


def _staleness_bound(t: pb.Target) -> float:
    """The lag a replica may answer ``t`` with (``--max-staleness``; 60 s if unset)."""
    return t.max_staleness_s if t.max_staleness_s > 0 else 60.0


def _not_cancelled(context: grpc.aio.ServicerContext) -> None:
    """Before a commit: a call already seen as cancelled commits nothing. Only a partial
    guard (a cut stream often shows as cancelled only later, see ``write_relay.until_end``),
    kept for senders that promise no end."""
    if context.cancelled():
        raise Unavailable("the write's call was cancelled; nothing committed")


async def _one(msg: Any) -> AsyncIterator[Any]:
    yield msg


async def _chain(head: tuple[Any, ...], rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The messages already taken from a stream, then the rest of it."""
    for msg in head:
        yield msg
    async for msg in rest:
        yield msg


def add_to_server(service: FederationService, server: grpc.aio.Server) -> None:
    """Register the service as generated, except ``Read``, whose responses are already
    serialized (so a forwarder can relay the owner's bytes without re-encoding them), and
    ``Write``, whose data messages stay the bytes they came in (``write_relay``). Generic
    handlers only, as :class:`~federation.channels.GenericHandlersOnly` says why."""

    class _Capture:
        handlers: dict[str, grpc.RpcMethodHandler] = {}

        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            pass

        def add_registered_method_handlers(self, name: str, handlers: dict[str, Any]) -> None:
            self.handlers = dict(handlers)

    capture = _Capture()
    pb_grpc.add_FederationServicer_to_server(service, capture)
    handlers = capture.handlers
    handlers["Read"] = grpc.unary_stream_rpc_method_handler(
        service.Read, request_deserializer=pb.ReadRequest.FromString, response_serializer=None)
    handlers["Write"] = grpc.stream_unary_rpc_method_handler(
        service.Write, request_deserializer=write_relay.deserialize,
        response_serializer=pb.WriteReply.SerializeToString)
    name = "gns.federation.v1.Federation"
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
