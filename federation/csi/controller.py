"""CSI Controller: dynamic provisioning (a volume, its mount and its mirror policy per claim).

The volume id is the global mount path: static PersistentVolumes name any global path the
same way, so NodePublishVolume needs nothing else, and DeleteVolume finds the mount, and
through it the volume and the policy named after it. Every step is idempotent, so the
external-provisioner can retry a call that failed half-way and end with the same result.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import grpc

from federation.api._gen.csi.v1 import csi_pb2 as csi
from federation.api._gen.csi.v1 import csi_pb2_grpc as csi_grpc
from federation.client import Client
from federation.csi import fields, params
from federation.csi.errors import AlreadyExists, FailedPrecondition, rpc
from namespace.errors import Conflict, InvalidInput, NotFound

log = logging.getLogger(__name__)

TOPOLOGY_KEY = "topology.gns.io/cluster"


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
        try:
            plan = params.plan(req.name, dict(req.parameters),
                               _topology_cluster(req) or self.cluster)
        except InvalidInput as exc:
            problems.append(str(exc))
        if problems:
            raise InvalidInput("; ".join(problems))
        self._ensure(plan)
        return csi.CreateVolumeResponse(volume=csi.Volume(
            volume_id=plan.path,
            capacity_bytes=cap.required_bytes or cap.limit_bytes,
            volume_context=plan.context(),
        ))

    def _ensure(self, plan: params.VolumePlan) -> None:
        """Make what ``plan`` names, or find it made by an earlier identical call."""
        view = self.client.view()
        mounted = view.mounts.get(plan.path)
        if mounted is not None and mounted != (plan.volume, ""):
            raise AlreadyExists(f"global path {plan.path} is already mounted "
                                f"({mounted[0]}{':' + mounted[1] if mounted[1] else ''})")
        existing = view.volumes.get(plan.volume)
        made_volume = False
        if existing is None:
            try:
                self.client.cluster(plan.cluster)
            except NotFound:
                raise InvalidInput(f"parameters.cluster: cluster {plan.cluster!r} not found") from None
            try:
                self.client.create_volume(plan.volume, plan.cluster)
                made_volume = True
            except Conflict:
                existing = self.client.view().volumes.get(plan.volume)
        if existing is not None and existing.epoch == 1 and existing.owner != plan.cluster:
            raise AlreadyExists(f"volume {plan.volume} exists with owner {existing.owner}, "
                                f"not {plan.cluster}")
        try:
            self._ensure_policy(plan)
            if mounted is None:
                try:
                    self.client.add_mount(plan.path, plan.volume)
                except Conflict:
                    if self.client.view().mounts.get(plan.path) != (plan.volume, ""):
                        raise AlreadyExists(f"global path {plan.path} was mounted by someone "
                                            "else meanwhile") from None
        except Exception:
            if made_volume:  # a refused request leaves nothing behind
                self._forget(plan.volume, plan.path)
            raise

    def _ensure_policy(self, plan: params.VolumePlan) -> None:
        stored = self.client.view().policies.get(plan.volume)
        if plan.policy is None:
            if stored is not None:
                raise AlreadyExists(f"volume {plan.volume} exists with mirror policy "
                                    f"{plan.volume}; this request asks for none")
            return
        if stored is not None:
            from mirroring.policy import MirrorPolicy, parse_policy

            want = parse_policy(json.dumps(plan.policy)).to_dict()
            have = MirrorPolicy.from_stored(stored).to_dict()
            if want != have:
                raise AlreadyExists(f"volume {plan.volume} exists with a different mirror "
                                    f"policy ({_summary(have)}; asked {_summary(want)})")
            return
        self.client.mirror_apply(json.dumps(plan.policy))

    def _forget(self, volume: str, path: str) -> None:
        steps: list[Callable[[], None]] = [
            lambda: self.client.mirror_remove(volume),
            lambda: self.client.remove_mount(path),
            lambda: self.client.remove_volume(volume),
        ]
        for step in steps:
            try:
                step()
            except NotFound:
                pass
            except Exception:
                log.warning("cleaning up volume %s failed", volume, exc_info=True)

    # -- DeleteVolume -------------------------------------------------------------------------
    @rpc
    def DeleteVolume(self, req: csi.DeleteVolumeRequest,
                     context: grpc.ServicerContext) -> csi.DeleteVolumeResponse:
        fields.required("volume_id", req.volume_id)
        if not req.volume_id.startswith("/"):
            return csi.DeleteVolumeResponse()  # not an id this driver made: nothing to delete
        path = fields.global_path("volume_id", req.volume_id)
        view = self.client.view()
        mounted = view.mounts.get(path)
        if mounted is None:
            return csi.DeleteVolumeResponse()  # deleted already (or never made): OK per spec
        volume, subpath = mounted
        others = sorted(p for p, (v, _) in view.mounts.items() if v == volume and p != path)
        if subpath or others:
            raise FailedPrecondition(
                f"{path} mounts volume {volume}{':' + subpath if subpath else ''}, which is "
                f"also mounted at {', '.join(others) or 'its subpath'}: not a volume this driver "
                "provisioned alone; remove the other mounts first")
        policy = view.policies.get(volume)
        if isinstance(policy, dict) and policy.get("spec", {}).get("volume") == volume:
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
        except Conflict as exc:
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
        self.client.resolve(path)  # NotFound for a path under no mount
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


def _summary(policy: dict[str, Any]) -> str:
    spec = policy.get("spec", {})
    names = [t.get("cluster") or t.get("uri") for t in spec.get("targets", [])]
    return f"mode {spec.get('mode')}, targets {', '.join(map(str, names))}"
