"""CSI Identity: who the plugin is and which services it offers."""
from __future__ import annotations

import grpc
from google.protobuf import wrappers_pb2

from federation.api._gen.csi.v1 import csi_pb2 as csi
from federation.api._gen.csi.v1 import csi_pb2_grpc as csi_grpc
from federation.csi.errors import rpc

DRIVER_NAME = "csi.gns.io"
VERSION = "0.1.0"


class IdentityService(csi_grpc.IdentityServicer):
    def __init__(self, ready: bool = True) -> None:
        self.ready = ready

    @rpc
    def GetPluginInfo(self, request: csi.GetPluginInfoRequest,
                      context: grpc.ServicerContext) -> csi.GetPluginInfoResponse:
        return csi.GetPluginInfoResponse(name=DRIVER_NAME, vendor_version=VERSION)

    @rpc
    def GetPluginCapabilities(self, request: csi.GetPluginCapabilitiesRequest,
                              context: grpc.ServicerContext) -> csi.GetPluginCapabilitiesResponse:
        svc = csi.PluginCapability.Service
        return csi.GetPluginCapabilitiesResponse(capabilities=[
            csi.PluginCapability(service=svc(type=svc.CONTROLLER_SERVICE)),
            csi.PluginCapability(service=svc(type=svc.VOLUME_ACCESSIBILITY_CONSTRAINTS)),
        ])

    @rpc
    def Probe(self, request: csi.ProbeRequest, context: grpc.ServicerContext) -> csi.ProbeResponse:
        return csi.ProbeResponse(ready=wrappers_pb2.BoolValue(value=self.ready))
