"""What an edge site answers of the ``Control`` service itself: resolving its own paths.

Why it exists: control commands sent to a site (``--controller``) are its hub's to answer
(the hub holds the namespace and the grants), so the site relays them up the link. But
``gns mv`` asks ``Control/Resolve`` for both of its paths before it renames, and a site
keeps serving the volumes it owns while it is cut off from its hub (SPEC §8): relayed up,
that question failed while the link was down, and waited for the link to be declared dead
while the hub was merely silent. So a path on a volume the site owns is resolved here, from
the site's slice of the namespace (the hub's last word, kept on disk) and what its own
shipper knows of the mirror targets; every other path, and every other control command, is
still relayed up to the hub.

The caller is checked here as the site checks its own data calls (``read`` on the path, with
the grants its hub sent). Nothing here talks to etcd or dials anything but the up relay.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable

import grpc

from edge.shipping import Shipper
from edge.site import LocalNamespace
from federation.api._gen.gns.control.v1 import control_pb2 as cpb
from federation.api._gen.gns.control.v1 import control_pb2_grpc as cpb_grpc
from federation.client.models import Resolution
from federation.edge_mux import forwardable
from federation.resolution import describe
from federation.sitekit import IOPool, SiteAuthorizer, VolumeManager, forward_metadata
from namespace.cache import NamespaceView
from namespace.errors import InvalidInput
from namespace.models import VolumeState
from namespace.paths import normalize

SERVICE = "gns.control.v1.Control"


class SiteControl:
    """``Control/Resolve`` at a site: its own paths here, the rest up the link.

    Its :meth:`handler` goes on the site's server before the one that relays the Control
    service up, and takes only the one method it answers."""

    def __init__(self, site: str, cache: LocalNamespace, volumes: VolumeManager, shipper: Shipper,
                 io: IOPool, up: Callable[[], grpc.aio.Channel], authz: SiteAuthorizer | None) -> None:
        self.site = site
        self.cache = cache
        self.volumes = volumes
        self.shipper = shipper
        self._io = io.run
        self.up = up
        self.authz = authz

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {"Resolve": grpc.unary_unary_rpc_method_handler(
            self.resolve, request_deserializer=cpb.Call.FromString,
            response_serializer=cpb.Reply.SerializeToString)})

    async def resolve(self, request: cpb.Call, context: grpc.aio.ServicerContext) -> cpb.Reply:
        try:
            args = json.loads(request.args_json or "{}")
        except ValueError:
            raise InvalidInput("Resolve: arguments are not JSON") from None
        raw = args.get("path") if isinstance(args, dict) else None
        if not isinstance(raw, str):
            raise InvalidInput("missing or invalid 'path'")
        path = normalize(raw)
        view = self.cache.view
        res = view.mounts.resolve_normal(path)
        vol = view.volumes.get(res.volume) if res is not None else None
        if vol is None or vol.owner != self.site:
            return await self._relay_up(request, context)
        if self.authz is not None and self.cache.grants is not None:
            self.authz.require("read", [path], "resolve")
        answer = describe(await self._with_shipping(view, vol.name), path)
        return cpb.Reply(result_json=json.dumps(Resolution.from_json(answer).to_json()))

    async def _with_shipping(self, view: NamespaceView, volume: str) -> NamespaceView:
        """``view`` plus what the site itself knows of ``volume``'s mirror targets (its head
        version, and each target's, as its heartbeats report them to the hub): the replicas
        the hub's own answer would list."""
        statuses = {f"{s['policy']}/{s['target']}": s for s in self.shipper.statuses()
                    if s.get("volume") == volume}
        states = dict(view.volstates)
        if self.volumes.has_local(volume):
            vs = await self._io(self.volumes.storage, volume)
            states[volume] = VolumeState(version=int(vs.version), epoch=int(vs.epoch), updated=time.time())
        return dataclasses.replace(view, mirror_status=statuses, volstates=states)

    async def _relay_up(self, request: cpb.Call, context: grpc.aio.ServicerContext) -> cpb.Reply:
        """The hub's answer, word for word (status, details and trailers of a failure too),
        as the relay of every other control command gives it."""
        md = [*forwardable(context.invocation_metadata()), *forward_metadata()]
        try:
            reply: cpb.Reply = await cpb_grpc.ControlStub(self.up()).Resolve(
                request, metadata=md, timeout=context.time_remaining())
            return reply
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ()))
            raise  # abort raises; never reached
