"""Which controller a data request goes to.

Global paths resolve against the client's watch-fed copy of the mount table (no etcd round
trip per request): straight to the owner, through ``via``, to a fresh-enough replica under
``consistency="any"``, or to an away-site mirror for reads while the owner is Down. When the
answer says our view lagged (a moved owner or epoch) the call is routed once more.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.errors import from_rpc_error
from federation.client.connection import Connection, FederationStub
from namespace.cache import NamespaceView
from namespace.control import resolve_in
from namespace.errors import EpochNotSeen, NotFound, NotOwner, StaleEpoch, Unavailable
from namespace.models import ClusterSpec
from namespace.mounts import Resolution
from namespace.paths import normalize

R = TypeVar("R")

_REROUTE = (StaleEpoch, NotOwner, EpochNotSeen)
"""The owner or epoch we routed by moved on: refresh the view and route once more."""


class _Bounded:
    """A stub whose unary calls wait at most ``limit`` seconds (their own timeout if it is
    shorter); past it they fail DEADLINE_EXCEEDED, which reads as Unavailable."""

    def __init__(self, stub: FederationStub, limit: float) -> None:
        self._stub = stub
        self._limit = limit

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)
        limit = self._limit

        def call(request: Any, *, timeout: float | None = None, **kw: Any) -> Any:
            return method(request, timeout=limit if timeout is None else min(timeout, limit), **kw)

        return call


class Routing(Connection):
    """The routing half of :class:`~federation.client.Client` (a base class of it)."""

    def _route(self, path: str, epoch: int | None = None, *, read: bool = False,
               bulk: bool = False) -> tuple[FederationStub, pb.Target, str]:
        """Where a request on ``path`` goes; ``bulk`` for a file's byte stream (Read, Write),
        which enters at ``via`` through its bulk tunnel where it has one."""
        path = normalize(path)
        view = self.route_view(path)
        if self.via is not None:
            spec = view.clusters.get(self.via)
            if spec is None:
                raise NotFound(f"cluster {self.via!r} not found")
            if self.via not in view.alive:
                raise Unavailable(f"cluster {self.via} (--via) is Down")
            self._check_tls(spec)
            tunneled = self._through_tunnel(view, path, spec, epoch, where=self.via) if bulk else None
            if tunneled is not None:
                return tunneled
            target = pb.Target(
                global_path=path, epoch=epoch or 0,
                consistency=self.consistency, max_staleness_s=self.max_staleness,
            )
            return self._stub(spec.endpoint), target, self.via
        res = resolve_in(view, path)
        vol = view.volumes[res.volume]
        if vol.owner not in view.alive and self.consistency == "any":
            routed = self._replica_route(view, path, res, epoch or vol.epoch)
            if routed is not None:
                return routed
        if read and vol.owner not in view.alive:
            from federation.resolution import away_site_replica

            away = away_site_replica(view, res.volume)  # SPEC §8: Unavailable if no core mirror
            if away is not None:
                target = self._target(path, res, epoch or vol.epoch, consistency="any", max_staleness=1e12)
                return self._stub(view.clusters[away["target"]].endpoint), target, away["target"]
        if vol.owner not in view.alive:
            raise Unavailable(
                f"owner {vol.owner} of volume {res.volume!r} is Down and no usable replica "
                f"can serve {path}"
            )
        spec = view.clusters.get(vol.owner)
        if spec is None or not spec.endpoint:
            raise Unavailable(f"owner {vol.owner} of volume {res.volume!r} has no endpoint")
        self._check_tls(spec)
        return self._stub(spec.endpoint), self._target(path, res, epoch or vol.epoch), vol.owner

    def _check_tls(self, spec: ClusterSpec) -> None:
        """A client without certificates cannot talk to a controller that takes TLS only:
        say so, and what to give, instead of "Socket closed" from the handshake it cannot
        make (still exit 5: the controller is unavailable to this client)."""
        if spec.tls and self.tls_dir is None:
            raise Unavailable(
                f"cluster {spec.id} takes mutual TLS only and this client has no certificates: give "
                "--tls-dir DIR (env GNS_TLS_DIR; Python: Client(tls_dir=...)), for `gns up` the "
                "tls directory under its GNS_HOME")

    def _through_tunnel(self, view: NamespaceView, path: str, via: ClusterSpec,
                        epoch: int | None, *, where: str) -> tuple[FederationStub, pb.Target, str] | None:
        """A stream entering at ``via``, run end to end with the owner through ``via``'s bulk
        tunnel (``federation.controller.tunnel``): the forwarder moves its bytes in the kernel
        instead of relaying gRPC messages. None where ``via`` must answer itself: it has no
        tunnel, may serve a replica (``consistency="any"``), or the owner is ``via``, Down,
        unknown or an edge site (reached over its link, not by address)."""
        if not (self.tunnel and via.tunnel) or self.consistency == "any":
            return None
        res = view.resolve(path)
        vol = view.volumes.get(res.volume) if res is not None else None
        if res is None or vol is None or vol.owner == where or vol.owner not in view.alive:
            return None
        owner = view.clusters.get(vol.owner)
        if owner is None or not owner.endpoint or owner.provider == "edge":
            return None
        stub = self._tunnel_stub(via.tunnel, owner.endpoint)
        if stub is None:
            return None
        return stub, self._target(path, res, epoch or vol.epoch), where

    def _target(self, path: str, res: Resolution, epoch: int, *, consistency: str | None = None,
                max_staleness: float | None = None) -> pb.Target:
        """The target of a request sent to a cluster holding ``res``'s volume itself (owner or
        replica): resolved here, so it needs no second resolution there."""
        return pb.Target(
            global_path=path, volume=res.volume, relative_path=res.relative_path, epoch=epoch,
            consistency=consistency or self.consistency,
            max_staleness_s=self.max_staleness if max_staleness is None else max_staleness,
        )

    def _replica_route(self, view: NamespaceView, path: str, res: Resolution,
                       epoch: int) -> tuple[FederationStub, pb.Target, str] | None:
        replica = self._fresh_replica(view, res.volume)
        if replica is None:
            return None
        return self._stub(view.clusters[replica].endpoint), self._target(path, res, epoch, consistency="any"), replica

    def _replica_instead(self, path: str, epoch: int | None, where: str,
                         err: Exception) -> tuple[FederationStub, pb.Target, str] | None:
        """Under ``consistency="any"``, a fresh replica for a read whose owner ``where``
        did not answer (Unavailable): a killed owner is Ready in etcd until its lease
        expires, 10 s or so, and replicas that may answer were refused meanwhile."""
        if self.consistency != "any" or self.via is not None or not isinstance(err, Unavailable):
            return None
        path = normalize(path)
        view = self.route_view(path)
        res = resolve_in(view, path)
        vol = view.volumes[res.volume]
        if where != vol.owner:
            return None
        return self._replica_route(view, path, res, epoch or vol.epoch)

    def _hedges(self, target: pb.Target, where: str) -> bool:
        """Whether a read routed to ``where`` may pass to a fresh replica if it does not
        answer in time: ``consistency="any"``, routed by this client (``target`` names the
        volume) to the volume's owner, and a fresh replica there is."""
        if self.consistency != "any" or self.via is not None or not target.volume:
            return False
        view = self.view()  # what _route used: consistency "any" routes by the whole view
        vol = view.volumes.get(target.volume)
        return vol is not None and where == vol.owner and self._fresh_replica(view, vol.name) is not None

    def _fresh_replica(self, view: NamespaceView, volume: str) -> str | None:
        """The nearest Ready replica cluster within ``max_staleness`` (None if none)."""
        from federation.resolution import fresh_replicas

        return next(iter(fresh_replicas(view, volume, self.max_staleness)), None)

    def _call(self, fn: Callable[[pb_grpc.FederationStub, pb.Target], R], path: str, epoch: int | None = None,
              *, read: bool = False, bulk: bool = False, hedge: bool = False) -> R:
        """Route and call; once, re-route after a moved owner (unless an epoch was pinned).
        ``hedge`` (a unary read): under ``consistency="any"``, the owner gets
        ``HEDGE_AFTER_S`` to answer before a fresh replica is asked."""
        for attempt in (0, 1):
            stub, target, where = self._route(path, epoch, read=read, bulk=bulk)
            if hedge and self._hedges(target, where):
                from federation.resolution import HEDGE_AFTER_S

                stub = cast(FederationStub, _Bounded(stub, HEDGE_AFTER_S))
            try:
                return fn(stub, target)
            except grpc.RpcError as exc:
                err = from_rpc_error(exc, f"cluster {where}")
            except _REROUTE as exc:  # one put's own outcome in a PutBatch reply
                err = exc
            replica = self._replica_instead(path, epoch, where, err) if read else None
            if replica is not None:
                try:
                    return fn(replica[0], replica[1])
                except grpc.RpcError as exc:
                    raise from_rpc_error(exc, f"cluster {replica[2]}") from None
            # Only errors that say our view of the namespace lagged are worth a re-route.
            retry = attempt == 0 and epoch is None and isinstance(err, _REROUTE)
            if not retry:
                raise err
            self._refresh()
        raise AssertionError("unreachable")

    def _refresh(self) -> None:
        """Give the watch a moment to deliver a newer owner or epoch."""
        time.sleep(0.3)
