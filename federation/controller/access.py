"""What a controller adds for ``--controller`` clients and access control, in one piece.

The process wires this in four calls (interceptors at server creation, ``start`` after the
namespace cache, ``add_services``, ``stop``) so that ``process.py`` stays about start-up
order. Without TLS there is no identity to check: the ``Control`` service still serves
``--controller`` clients, and no grant is consulted (SPEC §10: access control is on
wherever TLS is). ``GNS_ACCESS_CONTROL=off`` in a controller's environment turns it off
under TLS too; it exists only so ``bench.security`` can measure what the checks cost.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

import grpc

from federation.controller.authz import AuditLog, Authorizer, AuthzInterceptor
from federation.controller.config import ControllerConfig
from federation.controller.control_service import ControlService
from federation.controller.metrics import ControllerMetrics
from namespace.acl import AclCache
from namespace.cache import NamespaceCache
from namespace.etcd import Etcd

if TYPE_CHECKING:
    from federation.client import Client

log = logging.getLogger(__name__)


class Access:
    def __init__(self, cfg: ControllerConfig, etcd: Etcd, cache: NamespaceCache,
                 metrics: ControllerMetrics) -> None:
        self.cfg = cfg
        self.cache = cache
        self.acl: AclCache | None = None
        self.authz: Authorizer | None = None
        self.audit: AuditLog | None = None
        self._client: Client | None = None
        if cfg.tls_dir is not None and os.environ.get("GNS_ACCESS_CONTROL", "on") == "off":
            # Only for measuring what access control costs (bench.security): never in service.
            log.warning("GNS_ACCESS_CONTROL=off: TLS without access control on %s", cfg.cluster)
        elif cfg.tls_dir is not None:
            self.acl = AclCache(etcd)
            audit_path = cfg.audit_log or cfg.data_dir / "audit.log"
            self.audit = AuditLog(audit_path)
            self.authz = Authorizer(self.acl, lambda: cache.view, self.audit, metrics.registry)

    @property
    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [AuthzInterceptor(self.authz)] if self.authz is not None else []

    async def start(self) -> None:
        if self.acl is not None:
            await self.acl.start()

    def add_services(self, server: grpc.aio.Server) -> None:
        from federation.client import Client

        # The etcd-path client, run by the controller for its Control service; it dials
        # peers as this cluster (a trusted identity), after the caller has been checked.
        self._client = Client(self.cfg.etcd, tls_dir=self.cfg.tls_dir, identity=self.cfg.cluster)
        ControlService(self._client, self.cache, self.authz).add_to_server(server)

    async def stop(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
        if self.acl is not None:
            await self.acl.stop()
        if self.audit is not None:
            self.audit.close()
