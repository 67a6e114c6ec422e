"""CSI Controller: dynamic provisioning (a volume, its mount and its mirror policy per claim).

The volume id is the global mount path: static PersistentVolumes name any global path the
same way, so NodePublishVolume needs nothing else, and DeleteVolume finds the mount, and
through it the volume and the policy named after it. Every step is idempotent, so the
external-provisioner can retry a call that failed half-way and end with the same result;
once a volume is made in full (mounted, the last step), a repeat with other parameters is
ALREADY_EXISTS and changes nothing, and a refused call takes back what it made itself.

What this driver made is told by the volume's own etcd record: it is created with labels
(:data:`PATH_LABEL` and the capacity asked for) in the same transaction that creates it, so
no volume is ever ours without them, a volume made by hand never is, and nothing is kept
inside the volume, whose files are the pod's alone (a fresh claim is empty, as ``initdb``
requires, and a pod cannot forge ownership of another volume). Provisioning is etcd's
alone and never waits for the owner; an owner that is Down is UNAVAILABLE at once all the
same, since the claim's pods could not use the volume.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from federation.api._gen.csi.v1 import csi_pb2 as csi
from federation.api._gen.csi.v1 import csi_pb2_grpc as csi_grpc
from federation.client import Client
from federation.csi import fields, params
from federation.csi.deadline import check_directory
from federation.csi.errors import AlreadyExists, FailedPrecondition, OperationPending, rpc
from namespace.cache import NamespaceView
from namespace.errors import Conflict, InvalidInput, NotFound, Unavailable
from namespace.models import Volume
from namespace.paths import check_name

log = logging.getLogger(__name__)

TOPOLOGY_KEY = "topology.gns.io/cluster"
DRIVER = "csi.gns.io"
PATH_LABEL = "csi.gns.io/path"
"""The volume label naming the global path CreateVolume mounted it at: ours if present."""
REQUIRED_LABEL = "csi.gns.io/required-bytes"
LIMIT_LABEL = "csi.gns.io/limit-bytes"


def _topology_cluster(req: csi.CreateVolumeRequest) -> str | None:
    """The cluster the CO would like the volume in (the node's, with late binding)."""
    reqs = req.accessibility_requirements
    for topo in list(reqs.preferred) + list(reqs.requisite):
        cluster: str = topo.segments.get(TOPOLOGY_KEY, "")
        if cluster:
            return cluster
    return None


class ControllerService(csi_grpc.ControllerServicer):
    def __init__(self, client: Client, cluster: str | None) -> None:
        self.client = client
        self.cluster = cluster
        self._names: dict[str, threading.Lock] = {}
        """One lock per requested volume name (a few bytes each; names are few)."""
        self._names_lock = threading.Lock()

    # -- CreateVolume -------------------------------------------------------------------------
    @rpc
    def CreateVolume(self, req: csi.CreateVolumeRequest,
                     context: grpc.ServicerContext) -> csi.CreateVolumeResponse:
        problems = []
        try:
            fields.check_capabilities(req.volume_capabilities, "volume_capabilities")
        except InvalidInput as exc:
            problems.append(str(exc))
        cap = req.capacity_range
        if cap.required_bytes < 0 or cap.limit_bytes < 0:
            problems.append("capacity_range must not be negative")
        elif cap.limit_bytes and cap.required_bytes > cap.limit_bytes:
            problems.append("capacity_range.required_bytes is larger than limit_bytes")
        if req.HasField("volume_content_source"):
            problems.append("volume_content_source: gns volumes cannot be cloned or restored "
                            "from snapshots")
        owner = (req.parameters.get("cluster", "").strip()
                 or _topology_cluster(req) or self.cluster)
        plan: params.VolumePlan | None = None
        try:
            plan = params.plan(req.name, dict(req.parameters), owner)
        except InvalidInput as exc:
            problems.append(str(exc))
        if owner and _valid_cluster_name(owner):  # a malformed name is reported by plan
            try:
                self.client.cluster(owner)
            except NotFound:
                problems.append(f"parameters.cluster: cluster {owner!r} not found")
        if plan is not None:
            view = self.client.view()
            if plan.volume not in view.volumes:  # an existing one is compared in _ensure
                problems += params.policy_problems(plan, view)
        if problems or plan is None:
            raise InvalidInput("; ".join(problems))
        record = self._ensure(plan, _Capacity(cap.required_bytes, cap.limit_bytes))
        return csi.CreateVolumeResponse(volume=csi.Volume(
            volume_id=plan.path,
            capacity_bytes=record.capacity_bytes,
            volume_context=plan.context(),
        ))

    def _ensure(self, plan: params.VolumePlan, asked: _Capacity) -> _Capacity:
        """Make what ``plan`` names, or find it made by an earlier compatible call; return the
        capacity recorded for the volume. Calls for one name run one at a time: two at once
        (the external-provisioner retrying while the first still runs) must not each make
        half of it."""
        with self._name_lock(plan.volume):
            view = self.client.view()
            existing = view.volumes.get(plan.volume)
            owner = existing.owner if existing is not None else plan.cluster
            if owner not in view.alive:  # every path below ends at the owner: fail fast
                raise Unavailable(f"cluster {owner}, the owner of volume {plan.volume}, is "
                                  "Down; try again when it is back")
            mounted = view.mounts.get(plan.path)
            if mounted is not None and mounted != (plan.volume, ""):
                raise AlreadyExists(f"global path {plan.path} is already mounted "
                                    f"({mounted[0]}{':' + mounted[1] if mounted[1] else ''})")
            if existing is not None:
                done = self._existing(plan, existing, view, asked)
                if done is not None:
                    return done
                made = _provisioned(existing)
                asked = made[1] if made is not None else asked  # what the first call asked
            return self._provision(plan, asked, make_volume=existing is None,
                                   make_mount=mounted is None)

    def _name_lock(self, volume: str) -> threading.Lock:
        with self._names_lock:
            return self._names.setdefault(volume, threading.Lock())

    def _existing(self, plan: params.VolumePlan, existing: Volume, view: NamespaceView,
                  asked: _Capacity) -> _Capacity | None:
        """Judge a volume of the requested name that exists already: its recorded capacity
        if an earlier call made it as ``plan`` asks, None if an earlier call stopped
        half-way (this one finishes it); ALREADY_EXISTS for anything else."""
        if existing.epoch == 1 and existing.owner != plan.cluster:
            raise AlreadyExists(f"volume {plan.volume} exists with owner {existing.owner}, "
                                f"not {plan.cluster}")
        made = _provisioned(existing)
        if made is None:  # never adopted: DeleteVolume would later destroy what it holds
            raise AlreadyExists(f"volume {plan.volume} exists but was not provisioned by "
                                "csi.gns.io")
        path, recorded = made
        if path != plan.path:
            raise AlreadyExists(f"volume {plan.volume} was provisioned by csi.gns.io at "
                                f"{path}; this request would mount it at {plan.path}")
        _check_capacity(plan.volume, recorded, asked)
        if view.mounts.get(plan.path) == (plan.volume, ""):
            # made in full: only a request for the same policy is the same request
            self._check_policy(plan, provisioned=True)
            return recorded
        return None

    def _provision(self, plan: params.VolumePlan, asked: _Capacity, make_volume: bool,
                   make_mount: bool) -> _Capacity:
        """Make the volume, its policy and its mount (what is missing of them) and write the
        record; a call that fails undoes what it made itself, so a refused request leaves
        nothing behind (what an earlier call made stays for its retry)."""
        undo: list[Callable[[], None]] = []
        try:
            if make_volume:
                try:
                    self.client.create_volume(plan.volume, plan.cluster, {
                        PATH_LABEL: plan.path,
                        REQUIRED_LABEL: str(asked.required),
                        LIMIT_LABEL: str(asked.limit)})
                except Conflict:  # another driver process is making it right now
                    raise OperationPending(f"volume {plan.volume} is being created by another "
                                           "request; try again") from None
                undo.append(lambda: self.client.remove_volume(plan.volume))
            if self._check_policy(plan, provisioned=False):
                self.client.mirror_apply(json.dumps(plan.policy))
                undo.append(lambda: self.client.mirror_remove(plan.volume))
            if make_mount:
                try:
                    self.client.add_mount(plan.path, plan.volume)
                    undo.append(lambda: self.client.remove_mount(plan.path))
                except Conflict:
                    if self.client.view().mounts.get(plan.path) != (plan.volume, ""):
                        raise AlreadyExists(f"global path {plan.path} was mounted by someone "
                                            "else meanwhile") from None
            self._wait_mounted(plan.path, plan.volume)
            return asked
        except BaseException:
            self._undo(plan.volume, undo)
            raise

    def _undo(self, volume: str, steps: list[Callable[[], None]]) -> None:
        """Take back what a failed call made, the last thing first (a volume cannot go while
        its mount or policy names it)."""
        for step in reversed(steps):
            try:
                step()
            except NotFound:
                pass
            except Exception:  # the first error is the one the caller must see
                log.warning("taking back what a failed CreateVolume made of volume %s failed",
                            volume, exc_info=True)

    def _wait_mounted(self, path: str, volume: str, timeout: float = 10.0) -> None:
        """Wait until the client's watch-fed view shows the mount just added, so a retry of
        this call, or a publication right after it, finds what it made."""
        deadline = time.monotonic() + timeout
        while self.client.view().mounts.get(path) != (volume, ""):
            if time.monotonic() > deadline:
                raise Unavailable(f"the mount of {path} is not visible yet; try again")
            time.sleep(0.05)

    def _check_policy(self, plan: params.VolumePlan, provisioned: bool) -> bool:
        """Compare the stored mirror policy with the requested one; True if the requested
        one is still to be applied (none stored, and the volume not made in full yet: once
        it is, a request for a policy it was made without asks for another volume)."""
        stored = self.client.view().policies.get(plan.volume)
        if plan.policy is None:
            if stored is not None:
                raise AlreadyExists(f"volume {plan.volume} exists with mirror policy "
                                    f"{plan.volume}; this request asks for none")
            return False
        from mirroring.policy import MirrorPolicy, parse_policy

        want = parse_policy(json.dumps(plan.policy)).to_dict()
        if stored is None:
            if provisioned:
                raise AlreadyExists(f"volume {plan.volume} exists without a mirror policy; "
                                    f"this request asks for one ({_summary(want)})")
            return True
        have = MirrorPolicy.from_stored(stored).to_dict()
        if want != have:
            raise AlreadyExists(f"volume {plan.volume} exists with a different mirror "
                                f"policy ({_summary(have)}; asked {_summary(want)})")
        return False

    # -- DeleteVolume -------------------------------------------------------------------------
    @rpc
    def DeleteVolume(self, req: csi.DeleteVolumeRequest,
                     context: grpc.ServicerContext) -> csi.DeleteVolumeResponse:
        """Remove what CreateVolume made; everything is checked before the first change, so a
        refused call changes nothing.

        An id this driver did not provision (a static PV's path, a hand-made volume) is
        answered OK without touching it: for this plugin there is no such volume, and the
        spec makes DeleteVolume of an unknown id OK. FAILED_PRECONDITION would leave the
        external-provisioner retrying forever, and deleting would destroy data we never made."""
        fields.required("volume_id", req.volume_id)
        if not req.volume_id.startswith("/"):
            return csi.DeleteVolumeResponse()  # not an id this driver made: nothing to delete
        path = fields.global_path("volume_id", req.volume_id)
        view = self.client.view()
        mounted = view.mounts.get(path)
        if mounted is None:
            return csi.DeleteVolumeResponse()  # deleted already (or never made): OK per spec
        volume, subpath = mounted
        made = _provisioned(view.volumes[volume]) if volume in view.volumes else None
        if subpath or made is None or made[0] != path:
            log.warning("DeleteVolume %s: %s%s was not provisioned by csi.gns.io; left as it is",
                        path, volume, f":{subpath}" if subpath else "")
            return csi.DeleteVolumeResponse()
        users = [p for p, _ in view.mounts.mounts_of(volume) if p != path]
        own = view.policies.get(volume)
        own_policy = isinstance(own, dict) and own.get("spec", {}).get("volume") == volume
        users += sorted(f"mirror policy {name}" for name, d in view.policies.items()
                        if name != volume and isinstance(d, dict)
                        and d.get("spec", {}).get("volume") == volume)
        if users:
            raise FailedPrecondition(
                f"volume {volume} (mounted at {path}) is still used by {', '.join(users)}; "
                "remove those first")
        if own_policy:
            try:
                self.client.mirror_remove(volume)
            except NotFound:
                pass
        try:
            self.client.remove_mount(path)
        except NotFound:
            pass
        try:
            self.client.remove_volume(volume)
        except NotFound:
            pass
        except Conflict as exc:  # a mount or policy added since the checks above
            raise FailedPrecondition(str(exc)) from None
        return csi.DeleteVolumeResponse()

    # -- the rest ------------------------------------------------------------------------------
    @rpc
    def ValidateVolumeCapabilities(
        self, req: csi.ValidateVolumeCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi.ValidateVolumeCapabilitiesResponse:
        path = fields.global_path("volume_id", req.volume_id)
        if not req.volume_capabilities:
            raise InvalidInput("volume_capabilities is required")
        check_directory(self.client, path)  # what NodePublishVolume would publish
        problems = [p for i, c in enumerate(req.volume_capabilities)
                    for p in fields.capability_problems(c, f"volume_capabilities[{i}]")]
        if problems:
            return csi.ValidateVolumeCapabilitiesResponse(message="; ".join(problems))
        return csi.ValidateVolumeCapabilitiesResponse(
            confirmed=csi.ValidateVolumeCapabilitiesResponse.Confirmed(
                volume_context=req.volume_context,
                volume_capabilities=req.volume_capabilities,
                parameters=req.parameters,
            ))

    @rpc
    def ControllerGetCapabilities(
        self, req: csi.ControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi.ControllerGetCapabilitiesResponse:
        rpc_cap = csi.ControllerServiceCapability.RPC
        return csi.ControllerGetCapabilitiesResponse(capabilities=[
            csi.ControllerServiceCapability(rpc=rpc_cap(type=rpc_cap.CREATE_DELETE_VOLUME)),
        ])


@dataclass(frozen=True)
class _Capacity:
    """A CreateVolume capacity_range (0: not given)."""

    required: int
    limit: int

    @property
    def capacity_bytes(self) -> int:
        """What the volume is said to hold: gns volumes are not sized, so what was asked."""
        return self.required or self.limit


def _provisioned(volume: Volume) -> tuple[str, _Capacity] | None:
    """The global path and capacity CreateVolume recorded in ``volume``'s labels, or None
    if this driver did not make it."""
    labels = volume.labels
    path = labels.get(PATH_LABEL)
    if path is None:
        return None
    try:
        capacity = _Capacity(int(labels.get(REQUIRED_LABEL, "0")),
                             int(labels.get(LIMIT_LABEL, "0")))
    except ValueError:  # labels are set once, by us; a garbled one is not ours to trust
        return None
    return path, capacity


def _check_capacity(volume: str, recorded: _Capacity, asked: _Capacity) -> None:
    """A repeated CreateVolume is idempotent only if the volume it made fits the new range."""
    have = recorded.capacity_bytes
    if (asked.required and have < asked.required) or (asked.limit and have > asked.limit):
        raise AlreadyExists(
            f"volume {volume} exists with capacity {have} bytes, outside the requested "
            f"capacity_range (required_bytes {asked.required}, limit_bytes {asked.limit})")


def _valid_cluster_name(name: str) -> bool:
    try:
        check_name("cluster", name)
    except InvalidInput:
        return False
    return True


def _summary(policy: dict[str, Any]) -> str:
    spec = policy.get("spec", {})
    names = [t.get("cluster") or t.get("uri") for t in spec.get("targets", [])]
    return f"mode {spec.get('mode')}, targets {', '.join(map(str, names))}"
