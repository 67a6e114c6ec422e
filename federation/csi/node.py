"""CSI Node: publish a global path into a pod's target directory through ``gns fuse``.

The volume id is a global path, whether CreateVolume made it (dynamic) or an operator wrote
it into a PersistentVolume's ``volumeHandle`` (static; any path, also one owned by another
cluster: ``gns fuse`` routes to the owner). Read-only is enforced by the FUSE layer
(``--read-only``: writes fail with EROFS) whenever the CO asks for it: the ``readonly`` flag,
a reader-only access mode, or an ``ro`` mount flag.

The volume id must name a directory (a mount, a directory in one, or a directory above
mounts such as ``/k8s``); it is normalized, so ``/k8s//a/`` and ``/k8s/a`` are one volume.
NodeUnpublishVolume unmounts only what the driver published at the target for that volume.
"""
from __future__ import annotations

import os

import grpc

from federation.api._gen.csi.v1 import csi_pb2 as csi
from federation.api._gen.csi.v1 import csi_pb2_grpc as csi_grpc
from federation.client import Client
from federation.csi import fields
from federation.csi.controller import TOPOLOGY_KEY
from federation.csi.deadline import check_directory
from federation.csi.errors import rpc
from federation.csi.publisher import Publisher
from namespace.errors import InvalidInput, NotFound


class NodeService(csi_grpc.NodeServicer):
    def __init__(self, client: Client, publisher: Publisher, node_id: str,
                 cluster: str | None) -> None:
        self.client = client
        self.publisher = publisher
        self.node_id = node_id
        self.cluster = cluster

    @rpc
    def NodePublishVolume(self, req: csi.NodePublishVolumeRequest,
                          context: grpc.ServicerContext) -> csi.NodePublishVolumeResponse:
        fields.required("volume_id", req.volume_id)
        target = _target(req.target_path)
        ro = fields.check_capability(req.volume_capability, req.HasField("volume_capability"),
                                     "volume_capability")
        if not req.volume_id.startswith("/"):
            raise NotFound(f"volume {req.volume_id!r} not found: gns volume ids are global paths")
        path = fields.global_path("volume_id", req.volume_id)
        check_directory(self.client, path)
        self.publisher.publish(path, path, target, req.readonly or ro)
        return csi.NodePublishVolumeResponse()

    @rpc
    def NodeUnpublishVolume(self, req: csi.NodeUnpublishVolumeRequest,
                            context: grpc.ServicerContext) -> csi.NodeUnpublishVolumeResponse:
        fields.required("volume_id", req.volume_id)
        target = _target(req.target_path)
        self.publisher.unpublish(target, fields.volume_key(req.volume_id))
        return csi.NodeUnpublishVolumeResponse()

    @rpc
    def NodeGetCapabilities(self, req: csi.NodeGetCapabilitiesRequest,
                            context: grpc.ServicerContext) -> csi.NodeGetCapabilitiesResponse:
        return csi.NodeGetCapabilitiesResponse()  # no staging: publish mounts directly

    @rpc
    def NodeGetInfo(self, req: csi.NodeGetInfoRequest,
                    context: grpc.ServicerContext) -> csi.NodeGetInfoResponse:
        topology = csi.Topology(segments={TOPOLOGY_KEY: self.cluster}) if self.cluster else None
        return csi.NodeGetInfoResponse(node_id=self.node_id, accessible_topology=topology)


def _target(value: str) -> str:
    fields.required("target_path", value)
    if not os.path.isabs(value) or "\x00" in value:
        raise InvalidInput(f"target_path {value!r} must be an absolute path on the node")
    return os.path.normpath(value)
