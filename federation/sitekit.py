"""The public surface an edge site builds its own small controller from.

Why it exists: an edge site (``edge/``, the layer above) serves the same Federation API from
the same on-disk volumes as a controller, but without etcd, a lease or a leader. Rather than
reach into ``federation.controller`` module by module, it takes exactly these pieces from
here, so what the edge depends on is one list that can be kept stable.
"""
from __future__ import annotations

from federation.controller.authz import AuditLog, AuthzInterceptor, SiteAuthorizer, forward_metadata
from federation.controller.handler_io import IOPool
from federation.controller.metrics import ControllerMetrics
from federation.controller.process import claim_data_dir
from federation.controller.replication import ClusterTarget
from federation.controller.rpc_errors import ErrorInterceptor
from federation.controller.service import API_VERSIONS, RELEASE, FederationService, Resolved
from federation.controller.service import add_to_server as add_federation_service
from federation.controller.volumes import VolumeManager
from federation.storage.models import FileMeta
from federation.storage.space import disk_full_reason
from federation.storage.volume import VolumeStorage

__all__ = [
    "API_VERSIONS",
    "RELEASE",
    "AuditLog",
    "AuthzInterceptor",
    "ClusterTarget",
    "ControllerMetrics",
    "ErrorInterceptor",
    "FileMeta",
    "FederationService",
    "IOPool",
    "Resolved",
    "SiteAuthorizer",
    "VolumeManager",
    "VolumeStorage",
    "add_federation_service",
    "claim_data_dir",
    "disk_full_reason",
    "forward_metadata",
]
