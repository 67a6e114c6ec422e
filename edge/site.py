"""What an edge site serves locally, and how it knows what is its own without etcd.

Why it exists: an edge site must answer apps at the site while its link is down, so it keeps
the slice of the namespace its hub last sent (its volumes, their mounts and mirror
policies, the target clusters, and with access control the grants on its paths) in
``<data-dir>/view.json`` and serves from that. The
Federation gRPC API at the site is the controller's own :class:`FederationService`; this
module only changes where a request goes:

- a path under a mount of a volume the site owns: served from local storage;
- anything else: up the link (the ``uplink`` pseudo endpoint), where the hub resolves and
  runs it as any controller would.

An edge site never fences itself (SPEC §8): its writes need no lease, only ownership at
the epoch the hub last confirmed. Nothing here talks to etcd.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.errors import from_rpc_error
from federation.edge_mux import forwardable
from federation.sitekit import (
    API_VERSIONS,
    RELEASE,
    FederationService,
    Resolved,
    VolumeManager,
    disk_full_reason,
    forward_metadata,
)
from namespace.acl import Grant, Grants, check_subject, parse_perms
from namespace.cache import NamespaceView
from namespace.errors import InvalidInput, Unavailable
from namespace.models import ClusterSpec, Volume
from namespace.paths import normalize, normalize_relative

log = logging.getLogger(__name__)

UPLINK = "uplink"
"""The pseudo endpoint of the hub, reached over the link."""

Listener = Callable[[str, str, "bytes | None"], None]


class LocalNamespace:
    """The site's slice of the namespace (the hub's last word), kept on disk.

    Quacks like ``NamespaceCache`` for what the volume manager and the Federation service
    use: ``view``, ``subscribe``; ``etcd`` is None on purpose.
    """

    def __init__(self, site: str, data_dir: Path) -> None:
        self.site = site
        self.path = data_dir / "view.json"
        self.view = NamespaceView()
        # The grants on the site's paths (None: the hub sent none, access control is off or
        # the hub predates it); the site decides on them for what it serves itself.
        self.grants: Grants | None = None
        self.etcd: Any = _NoEtcd()
        self.raw: dict[str, Any] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def load(self) -> None:
        try:
            self._apply(json.loads(self.path.read_text()), notify=False)
        except FileNotFoundError:
            self._apply({}, notify=False)
        except ValueError:
            log.error("site %s: %s is unreadable; serving nothing locally until the hub answers",
                      self.site, self.path)
            self._apply({}, notify=False)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def learn(self, *, volume: str = "", path: str = "") -> bool:
        """What the site does not know, it cannot look up: the hub sends its slice."""
        return volume in self.view.volumes if volume else self.view.resolve(path) is not None

    def update(self, raw_json: bytes) -> None:
        """A new slice from the hub: persist it (durably) first, then apply it."""
        data = json.loads(raw_json)
        tmp = self.path.with_name("view.json.tmp")
        with open(tmp, "wb") as f:
            f.write(raw_json)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._apply(data, notify=True)

    def _apply(self, data: dict[str, Any], *, notify: bool) -> None:
        view = NamespaceView()
        for name, v in (data.get("volumes") or {}).items():
            view.volumes[name] = Volume.model_validate(v)
        for m in data.get("mounts") or []:
            view.mounts.set(m["path"], m["volume"], m.get("subpath", ""))
        view.policies = dict(data.get("policies") or {})
        for cid, spec in (data.get("clusters") or {}).items():
            view.clusters[cid] = ClusterSpec.model_validate(spec)
        view.alive = {c: b"" for c in data.get("alive") or []}
        view.alive[self.site] = b""  # the site is always alive to itself
        grants = None if data.get("grants") is None else _grants(data["grants"])
        with self._lock:
            old, self.view, self.raw, self.grants = self.view, view, data, grants
        if not notify:
            return
        for name in set(old.volumes) | set(view.volumes):
            if old.volumes.get(name) != view.volumes.get(name):
                vol = view.volumes.get(name)
                for cb in list(self._listeners):
                    cb("volume", name, None if vol is None else vol.dump())
        for cb in list(self._listeners):
            cb("policy", "", None)

    def owned(self) -> list[str]:
        return sorted(n for n, v in self.view.volumes.items() if v.owner == self.site)


def _grants(raw: list[dict[str, Any]]) -> Grants:
    grants = Grants()
    for g in raw:
        try:
            grants.set(Grant(normalize(g["path"]), check_subject(g["subject"]), parse_perms(g["perms"])))
        except (KeyError, TypeError, ValueError) as exc:  # the hub's word, but never a crash
            log.warning("ignoring a malformed grant from the hub: %s (%s)", g, exc)
    return grants


class _NoEtcd:
    """What an edge site has instead of etcd: every attempt to use it says so."""

    async def put(self, *args: Any, **kw: Any) -> None:
        raise Unavailable("an edge site has no etcd access; its hub publishes for it")

    async def txn(self, *args: Any, **kw: Any) -> Any:
        raise Unavailable("an edge site has no etcd access; its hub publishes for it")


class EdgeVolumes(VolumeManager):
    """The controller's volume manager, minus publishing to etcd (heartbeats carry versions).

    Diverged writes (a volume promoted away while the site was cut off, SPEC §7) are kept
    aside by the controller's own fail-back; the report it would write to etcd is kept in
    ``<data-dir>/diverged.json`` instead (durably: it must outlive a restart before the hub
    has it) and rides every heartbeat until the site's volume is gone from its view."""

    @property
    def diverged_path(self) -> Path:
        return self.root.parent / "diverged.json"

    def diverged_reports(self) -> list[dict[str, Any]]:
        try:
            reports = json.loads(self.diverged_path.read_text())
        except (FileNotFoundError, ValueError):
            return []
        return [r for r in reports if isinstance(r, dict)] if isinstance(reports, list) else []

    async def publish_now(self) -> None:
        self._dirty.clear()

    async def _publish_diverged(self, name: str, epoch: int, kept: list[str]) -> None:
        record = {"volume": name, "cluster": self.cluster, "epoch": epoch, "paths": kept, "at": time.time()}
        reports = [r for r in self.diverged_reports()
                   if (r.get("volume"), r.get("epoch")) != (name, epoch)] + [record]
        await asyncio.to_thread(_write_durably, self.diverged_path, json.dumps(reports).encode())
        log.warning("site %s: volume %s: %d diverged path(s) kept aside; reported through the hub",
                    self.cluster, name, len(kept))


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class NeverFenced:
    """The lease stand-in of an edge site: it never fences itself (SPEC §8)."""

    lease_id = 1

    def fenced(self) -> bool:
        return False


class EdgeFederationService(FederationService):
    """The controller's Federation service, routing what the site does not own up the link."""

    def _local(self, volume: str) -> bool:
        vol = self.cache.view.volumes.get(volume)
        return vol is not None and vol.owner == self.cluster

    def _resolve(self, t: pb.Target) -> Resolved:
        if t.volume:
            if self._local(t.volume):
                return super()._resolve(t)
            return Resolved(t.volume, normalize_relative(t.relative_path), t.epoch, t.global_path)
        if not t.global_path:
            raise InvalidInput("request names neither a global path nor a volume")
        path = normalize(t.global_path)
        res = self.cache.view.mounts.resolve_normal(path)
        if res is None or not self._local(res.volume):
            return Resolved("", "", t.epoch, path)  # the hub resolves it
        vol = self.cache.view.volumes[res.volume]
        return Resolved(res.volume, res.relative_path, t.epoch or vol.epoch, path)

    async def _stored_epoch(self, volume: str) -> int | None:
        return None  # a site cannot look past its hub's word: an unseen epoch stays "retry"

    def _owner_endpoint(self, volume: str) -> tuple[str, str] | None:
        if volume and self._local(volume):
            return None
        return "hub", UPLINK

    def _replica_fresh(self, volume: str, t: pb.Target) -> bool:
        return False  # a site holds no replicas; reads of other volumes go up

    async def Health(self, request: pb.HealthRequest, context: grpc.aio.ServicerContext) -> pb.HealthReply:
        return pb.HealthReply(cluster=self.cluster, ready=True, fenced=False,
                              api_versions=API_VERSIONS, release=RELEASE)

    async def Write(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> pb.WriteReply:
        with self._refused_when_disk_full():
            return await super().Write(request_iterator, context)

    async def _put(self, request: pb.PutRequest, context: grpc.aio.ServicerContext) -> pb.WriteReply:
        # Put and each put of a PutBatch
        with self._refused_when_disk_full():
            return await super()._put(request, context)

    @contextlib.contextmanager
    def _refused_when_disk_full(self) -> Iterator[None]:
        try:
            yield
        except (OSError, sqlite3.Error) as exc:
            # a file's blocks (ENOSPC, EDQUOT), or a small file's row in the catalog (SQLITE_FULL)
            if disk_full_reason(exc) is None:
                raise
            # The journal is bounded only by the disk: refuse the new write, drop nothing old.
            # Unavailable (retryable), not a controller's OutOfSpace: here shipping the
            # backlog to the hub is what frees the disk, so the same write soon succeeds.
            raise Unavailable(f"edge site {self.cluster}: disk full, write refused "
                              "(every change already accepted is kept until it is shipped)") from None

    async def List(self, request: pb.ListRequest, context: grpc.aio.ServicerContext) -> pb.ListReply:
        """A directory no volume of the site's holds (``/``, a prefix of mounts) is listed
        by the hub, which knows every mount: the site's slice holds only its own, so ``ls /``
        at the site showed ``edge/`` and not ``health/``, which it reads all the same.
        While the link is down, the site lists what it knows."""
        t = request.target
        if t.global_path and not t.volume:
            path = normalize(t.global_path)
            res = self.cache.view.mounts.resolve_normal(path)
            if res is None or not self._local(res.volume):
                try:
                    listed: pb.ListReply = await self._up(
                        context, lambda stub, md: stub.List(request, metadata=md))
                    return listed
                except Unavailable:
                    if not self.cache.view.mounts.at(path).below:
                        raise
        return await super().List(request, context)

    async def _up(self, context: grpc.aio.ServicerContext, call: Callable[..., Any]) -> Any:
        """``call(stub, metadata)`` on the hub, over the link, with the app's identity (as
        every call the site relays carries it)."""
        stub = pb_grpc.FederationStub(self.peers.get(UPLINK))
        md = [*forwardable(context.invocation_metadata()), *forward_metadata()]
        try:
            return await call(stub, md)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, "hub") from None

    async def Resolve(self, request: pb.ResolveRequest, context: grpc.aio.ServicerContext) -> pb.ResolveReply:
        path = normalize(request.path)
        res = self.cache.view.mounts.resolve_normal(path)
        if res is not None and self._local(res.volume):
            return await super().Resolve(request, context)
        reply: pb.ResolveReply = await self._up(
            context, lambda stub, md: stub.Resolve(request, metadata=md))
        return reply
