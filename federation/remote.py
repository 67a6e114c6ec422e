"""The ``--controller`` client (SPEC §4): every command through one controller, no etcd.

``Client(controller="host:port")`` builds a :class:`RemoteClient`. Control commands become
calls of the controller's ``Control`` service (``gns.control.v1``), which runs the same code
the etcd-path client runs and answers with the same JSON shapes; data requests go to that
controller's ``Federation`` service with global-path targets, and it resolves and forwards
them to the owner. Edge-site apps and clients that must not hold etcd credentials use it;
with TLS the controller checks every command against the caller's grants (SPEC §10).
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from federation.api._gen.gns.control.v1 import control_pb2 as cpb
from federation.api._gen.gns.control.v1 import control_pb2_grpc as cpb_grpc
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api.errors import from_rpc_error
from federation.client import Client, Progress
from federation.client.connection import FederationStub
from federation.client.models import (
    AccessReport,
    CallerIdentity,
    EdgeSite,
    EdgeToken,
    MirrorApplyResult,
    MirrorPolicySummary,
    MirrorStatus,
    MirrorVerifyReport,
    Resolution,
    Status,
    grant_from_json,
)
from federation.client.streams import ChangeStream
from namespace.cache import Listener, NamespaceView
from namespace.errors import GnsError, InvalidInput, NotFound, Unavailable
from namespace.models import (
    ClusterSpec,
    ClusterView,
    Mount,
    Volume,
    VolumeState,
    VolumeView,
    check_labels,
)
from namespace.mounts import MountsAt, mount_point_refused
from namespace.paths import check_name, normalize

if TYPE_CHECKING:
    from namespace.acl import Grant

# Control calls that may run long (a promotion drains and syncs; a verify hashes a volume).
_LONG = 3600.0
_SHORT = 30.0


_VIEW_TTL = 1.0
"""Seconds a controller's answer stands as this client's view of the namespace."""


def _view_of(status: Status) -> NamespaceView:
    """A :class:`NamespaceView` of what ``gns status`` says: clusters (``Ready`` ones
    alive), volumes with their owners, epochs and versions, and the mount table."""
    view = NamespaceView()
    for c in status.clusters:
        view.clusters[c.id] = ClusterSpec.model_validate(c.model_dump(exclude={"state"}))
        if c.state == "Ready":
            view.alive[c.id] = b""
    for v in status.volumes:
        view.volumes[v.name] = Volume(name=v.name, owner=v.owner, epoch=v.epoch, labels=v.labels)
        view.volstates[v.name] = VolumeState(version=v.version, epoch=v.epoch)
    for m in status.mounts:
        view.mounts.set(m.path, m.volume, m.subpath)
    view.leader = status.leader
    return view


def _mount_rows(view: NamespaceView) -> list[tuple[str, str, str]]:
    return sorted((p, v, s) for p, (v, s) in view.mounts.items())


def find_controller(controller: str | None) -> str | None:
    """``--controller`` > ``GNS_CONTROLLER``; validated as HOST:PORT."""
    import os

    value = controller or os.environ.get("GNS_CONTROLLER") or None
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"invalid --controller {value!r}: expected HOST:PORT")
    return value


def a_controller(etcd: str | None) -> str:
    """The endpoint of a Ready core controller (the first by id), for a command that a
    controller must check but that names none (``Env.control_client``)."""
    with Client(etcd, identity="client", watch=False) as c:
        ready = sorted((v.id, v.endpoint) for v in c.clusters() if v.state == "Ready" and v.provider != "edge")
    if not ready:
        raise Unavailable("no Ready controller to check this command (give --controller HOST:PORT)")
    return ready[0][1]


class RemoteClient(Client):
    """A :class:`~federation.client.Client` that talks to one controller only."""

    def __init__(self, etcd: str | None = None, *, controller: str | None = None,
                 home: str | Path | None = None, **kw: Any) -> None:
        address = find_controller(controller)
        if address is None:
            raise InvalidInput("no controller given")
        super().__init__(None, controller=address, home=home, **kw)
        self.controller = address
        self._view_lock = threading.Lock()
        self._remote_view: NamespaceView | None = None
        self._view_at = 0.0
        self._listeners: list[Listener] = []
        self._poller: threading.Thread | None = None
        self._closed = threading.Event()

    # -- plumbing -------------------------------------------------------------------------
    def _control(self) -> NoReturn:
        raise Unavailable("this client talks to a controller (--controller) and has no etcd access")

    def view(self) -> NamespaceView:
        """The namespace as the controller shows it to this caller: its clusters, volumes
        and mounts (``Status``, filtered by the caller's grants), asked at most once per
        :data:`_VIEW_TTL`. What a mount through ``--controller`` needs (which volume a path
        is in, the mount points to list); routing never uses it, every request enters at
        the controller. If the controller cannot answer (an edge site cut off from its
        hub) the last view stands."""
        with self._view_lock:
            now = time.monotonic()
            if self._remote_view is not None and now - self._view_at < _VIEW_TTL:
                return self._remote_view
            try:
                self._remote_view = _view_of(self.status())
                self._view_at = now
            except Unavailable:
                if self._remote_view is None:
                    raise
            return self._remote_view

    def on_namespace_change(self, listener: Listener) -> None:
        """Tell ``listener`` when the mount table this client sees changes (``kind``
        "mounts": reload all), as the controller's view is polled (:data:`_VIEW_TTL`); an
        etcd client's watch says it key by key. The poller stops with :meth:`close`."""
        self.view()
        with self._view_lock:
            self._listeners.append(listener)
            if self._poller is not None:
                return
            self._poller = threading.Thread(target=self._poll_mounts, daemon=True,
                                            name="gns-remote-view")
        self._poller.start()

    def _poll_mounts(self) -> None:
        last = self._remote_view  # on_namespace_change has asked for it
        seen = _mount_rows(last) if last is not None else None
        while not self._closed.wait(_VIEW_TTL):
            try:
                now = _mount_rows(self.view())
            except GnsError:
                continue  # the controller is away: nothing known changed
            if seen is not None and now != seen:
                for listener in list(self._listeners):
                    listener("mounts", "", None)
            seen = now

    def close(self) -> None:
        self._closed.set()
        super().close()

    def _ctl(self, method: str, timeout: float = _SHORT, **args: Any) -> Any:
        stub = cpb_grpc.ControlStub(self._channel(self.controller))
        call = getattr(stub, method)
        try:
            reply = call(cpb.Call(args_json=json.dumps(args)), timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"controller {self.controller}") from None
        return json.loads(reply.result_json) if reply.result_json else None

    # -- control plane --------------------------------------------------------------------
    def clusters(self) -> list[ClusterView]:
        return [ClusterView.model_validate(c) for c in self._ctl("ListClusters")]

    def cluster(self, cluster_id: str) -> ClusterView:
        check_name("cluster", cluster_id)
        return ClusterView.model_validate(self._ctl("GetCluster", id=cluster_id))

    def remove_cluster(self, cluster_id: str) -> None:
        check_name("cluster", cluster_id)
        self._ctl("RemoveCluster", id=cluster_id)

    def create_volume(self, name: str, cluster: str,
                      labels: dict[str, str] | None = None) -> VolumeView:
        check_name("volume", name)
        check_name("cluster", cluster)
        return VolumeView.model_validate(self._ctl(
            "CreateVolume", name=name, cluster=cluster, labels=check_labels(dict(labels or {}))))

    def remove_volume(self, name: str) -> None:
        check_name("volume", name)
        self._ctl("RemoveVolume", name=name)

    def volumes(self) -> list[VolumeView]:
        return [VolumeView.model_validate(v) for v in self._ctl("ListVolumes")]

    def volume(self, name: str) -> VolumeView:
        check_name("volume", name)
        return VolumeView.model_validate(self._ctl("GetVolume", name=name))

    def promote(self, name: str, to: str, *, force: bool = False) -> VolumeView:
        check_name("volume", name)
        if not to or ("://" not in to):
            check_name("cluster", to)
        return VolumeView.model_validate(
            self._ctl("PromoteVolume", _LONG, name=name, to=to, force=force))

    def add_mount(self, path: str, target: str) -> Mount:
        return Mount.model_validate(self._ctl("AddMount", path=normalize(path), target=target))

    def mounts(self) -> list[Mount]:
        return [Mount.model_validate(m) for m in self._ctl("ListMounts")]

    def remove_mount(self, path: str) -> None:
        self._ctl("RemoveMount", path=normalize(path))

    def resolve(self, path: str) -> Resolution:
        return Resolution.from_json(self._ctl("Resolve", path=normalize(path)))

    def volume_of(self, path: str) -> str:
        return self.resolve(path).volume

    def _refuse_unmovable(self, src: str) -> None:
        # The controller's Resolve, not this client's polled view (which a site cut off
        # from its hub cannot fetch); under no mount, its listing names the mount points.
        try:
            res = self.resolve(src)
        except NotFound:
            with contextlib.suppress(NotFound):
                MountsAt([e.name for e in self.ls(src)], False, False).refuse(src, "move")
            raise
        if res.mount == src:
            raise mount_point_refused(src, res.volume, res.relative_path, "move")

    def status(self) -> Status:
        return Status.from_json(self._ctl("Status"))

    # -- mirror policies ------------------------------------------------------------------
    def mirror_apply(self, text: str, *, dry_run: bool = False) -> MirrorApplyResult:
        return MirrorApplyResult.from_json(self._ctl("MirrorApply", text=text, dry_run=dry_run))

    def mirror_list(self) -> list[MirrorPolicySummary]:
        return [MirrorPolicySummary.from_json(p) for p in self._ctl("MirrorList")]

    def mirror_status(self, name: str | None = None) -> list[MirrorStatus]:
        if name is not None:
            check_name("policy", name)
        return [MirrorStatus.from_json(p) for p in self._ctl("MirrorStatus", name=name)]

    def mirror_remove(self, name: str) -> None:
        check_name("policy", name)
        self._ctl("MirrorRemove", name=name)

    def mirror_sync(self, name: str, *, wait: bool = False, progress: Progress | None = None,
                    timeout: float | None = None) -> list[MirrorStatus]:
        # Progress is not relayed: the controller reports the final status only. Without
        # ``wait`` the owner only starts its passes: no reason to wait on it for long.
        check_name("policy", name)
        deadline = timeout or (_LONG if wait else _SHORT)
        return [MirrorStatus.from_json(p) for p in self._ctl("MirrorSync", deadline, name=name, wait=wait)]

    def mirror_verify(self, name: str, *, repair: bool = True, deep: bool = False) -> list[MirrorVerifyReport]:
        check_name("policy", name)
        reports = self._ctl("MirrorVerify", _LONG, name=name, repair=repair, deep=deep)
        return [MirrorVerifyReport.from_json(r) for r in reports]

    # -- edge sites -----------------------------------------------------------------------
    def edge_token_create(self, site: str, *, ttl: float = 3600.0, hub: str | None = None) -> EdgeToken:
        check_name("site", site)
        if hub is not None:
            check_name("hub cluster", hub)
        return EdgeToken.from_json(self._ctl("EdgeTokenCreate", site=site, ttl=ttl, hub=hub))

    def edge_sites(self) -> list[EdgeSite]:
        return [EdgeSite.from_json(s) for s in self._ctl("EdgeList")]

    # -- access control -------------------------------------------------------------------
    def acl_grant(self, path: str, subject: str, perms: str) -> Grant:
        return grant_from_json(self._ctl("AclGrant", path=path, subject=subject, perms=perms))

    def acl_revoke(self, path: str, subject: str) -> None:
        self._ctl("AclRevoke", path=path, subject=subject)

    def acl_list(self, path: str | None = None) -> list[Grant]:
        return [grant_from_json(g) for g in self._ctl("AclList", path=path)]

    def acl_check(self, path: str, subject: str, groups: list[str] | None = None) -> AccessReport:
        return AccessReport.from_json(
            self._ctl("AclCheck", path=path, subject=subject, groups=list(groups or [])))

    def whoami(self) -> CallerIdentity:
        """Who the controller takes this client for (its certificate's identity)."""
        return CallerIdentity.from_json(self._ctl("WhoAmI"))

    # -- data: everything enters at the controller, which resolves and forwards ------------
    def _hedges(self, target: pb.Target, where: str) -> bool:
        return False  # the controller passes a silent owner for a replica itself

    def _route(self, path: str, epoch: int | None = None, **_: Any) -> tuple[FederationStub, pb.Target, str]:
        target = pb.Target(
            global_path=normalize(path), epoch=epoch or 0,
            consistency=self.consistency, max_staleness_s=self.max_staleness,
        )
        return self._stub(self.controller), target, f"controller {self.controller}"

    def watch(self, path: str | None = None, from_version: int = 0, *,
              volume: str | None = None) -> ChangeStream:
        """As :meth:`Client.watch`, through the controller (which relays the owner's
        stream) also when a volume is named: this client may reach no owner itself."""
        if volume is None or path is not None:
            return super().watch(path, from_version, volume=volume)
        check_name("volume", volume)
        call = self._stub(self.controller).Watch(
            pb.WatchRequest(target=pb.Target(volume=volume), from_version=from_version),
            timeout=None)
        return ChangeStream(call, f"controller {self.controller}")

    def _mount_points(self, path: str) -> MountsAt:
        # The controller's List adds the mount points below a global path, and its List and
        # Stat answer mount points and their prefixes itself, from its own (watch-fed) view:
        # this client's view (polled, for a FUSE mount) is not needed for them.
        return MountsAt(below=[], mount_point=False, mounted=True)

    def _refresh(self) -> None:
        # The controller's own view is watch-fed; give it a moment to catch up.
        time.sleep(0.3)
