"""The ``Mirroring`` gRPC service: run passes now (``gns mirror sync``) and verify targets.

Served by every controller; a request for a policy whose volume is owned elsewhere is
forwarded to the owner, so the CLI and the leader can call any controller. An edge site's
registered endpoint is its hub's: a hub forwards down the link of a site linked to it
(the site serves ``Mirroring`` for its own volumes, ``edge.mirroring``), another controller
to that hub. A request is never forwarded to this controller's own endpoint (a site that
is registered here but not linked any more would otherwise send it round in a loop until
the caller gave up), and a forwarded call keeps the caller's deadline.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc

from cloud_adapters.errors import ObjectStoreError
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.errors import from_rpc_error
from federation.channels import Peers
from federation.controller.mirrors import MirrorRunner, Worker
from mirroring.policy import stored_policy
from namespace.errors import GnsError, NotFound, Unavailable


class MirroringService(pb_grpc.MirroringServicer):
    def __init__(self, runner: MirrorRunner, peers: Peers,
                 edge_relay: Callable[[str], str | None] | None = None) -> None:
        self.runner = runner
        self.peers = peers
        # On a hub: owner id -> pseudo endpoint down an edge site's link (None: not linked here).
        self.edge_relay = edge_relay

    def _owner_stub(self, policy: str) -> pb_grpc.MirroringStub | None:
        view = self.runner.cache.view
        p = stored_policy(view, policy)
        if p is None:
            raise NotFound(f"mirror policy {policy!r} not found")
        volume = p.spec.volume
        vol = view.volumes.get(volume)
        if vol is None:
            raise NotFound(f"volume {volume!r} not found")
        if vol.owner == self.runner.cluster:
            return None
        if vol.owner not in view.alive:
            raise Unavailable(f"owner {vol.owner} of volume {volume!r} is Down")
        relay = self.edge_relay(vol.owner) if self.edge_relay is not None else None
        if relay is not None:
            return pb_grpc.MirroringStub(self.peers.get(relay))
        spec = view.clusters.get(vol.owner)
        if spec is None or not spec.endpoint:
            raise Unavailable(f"owner {vol.owner} of volume {volume!r} has no endpoint")
        own = view.clusters.get(self.runner.cluster)
        if own is not None and spec.endpoint == own.endpoint:
            # An edge site registered through this hub whose link is gone (its lease not
            # yet revoked): the endpoint is our own, and forwarding would call ourselves.
            raise Unavailable(f"owner {vol.owner} of volume {volume!r} is not connected to "
                              f"{self.runner.cluster}, its hub")
        return pb_grpc.MirroringStub(self.peers.get(spec.endpoint))

    async def Sync(self, request: pb.MirrorSyncRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.MirrorProgress]:
        stub = self._owner_stub(request.policy)
        if stub is not None:
            call = stub.Sync(request, timeout=context.time_remaining())
            try:
                async for msg in call:
                    yield msg
            except grpc.RpcError as exc:
                raise from_rpc_error(exc, "owner") from None
            finally:
                call.cancel()
            return
        workers = self.runner.workers_for(request.policy, request.target)
        if not request.wait:
            for w in workers:
                w.kick.set()
            for w in workers:
                yield pb.MirrorProgress(target=w.name, done=False)
            return
        queue: asyncio.Queue[pb.MirrorProgress] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def one(w: Worker) -> None:
            def progress(nbytes: int, nfiles: int) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, pb.MirrorProgress(
                    target=w.name, bytes=nbytes, files=nfiles))

            w.listeners.append(progress)
            try:
                st = await self.runner.run_now(w)
            except (GnsError, ObjectStoreError) as exc:  # reported per target, like a failed pass
                await queue.put(pb.MirrorProgress(target=w.name, done=True, error=str(exc)))
                return
            finally:
                w.listeners.remove(progress)
            failed = self.runner.failed_since_last_sync(w)
            await queue.put(pb.MirrorProgress(
                target=w.name, done=True, version=st.version if st else 0,
                error=(st.last_error or "") if (st and failed) else ""))

        tasks = [asyncio.create_task(one(w), name=f"mirror-sync-{w.name}") for w in workers]
        try:
            remaining = len(tasks)
            while remaining:
                msg = await queue.get()
                if msg.done:
                    remaining -= 1
                yield msg
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()  # the caller went away: stop waiting for its passes

    async def Verify(self, request: pb.MirrorVerifyRequest, context: grpc.aio.ServicerContext) -> pb.MirrorVerifyReply:
        stub = self._owner_stub(request.policy)
        if stub is not None:
            try:
                reply: pb.MirrorVerifyReply = await stub.Verify(request, timeout=context.time_remaining())
                return reply
            except grpc.RpcError as exc:
                raise from_rpc_error(exc, "owner") from None
        reports = []
        for w in self.runner.workers_for(request.policy):
            try:
                r = await self.runner.run_io(self.runner.verify, w, request.repair, request.deep)
                reports.append(pb.MirrorVerifyReport(
                    target=w.name, version=r.version, missing=list(r.missing), extra=list(r.extra),
                    mismatched=list(r.mismatched), repaired=r.repaired, deep=r.deep))
                if r.repaired:
                    w.kick.set()  # republish the status of the repaired target
            except (GnsError, ObjectStoreError) as exc:
                # One target's failure is that target's report, not the whole call's.
                reports.append(pb.MirrorVerifyReport(target=w.name, error=str(exc)))
        return pb.MirrorVerifyReply(reports=reports)
