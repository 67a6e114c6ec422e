"""The controller process: start-up order, supervision and clean shutdown.

Start-up binds the gRPC port first (so the endpoint works the moment the cluster turns
Ready), then registers; a refused registration (the id is live elsewhere) exits non-zero.
A supervisor watches the root tasks: if one dies, the process stops cleanly instead of
limping on half-alive.
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from federation import event_loop
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.channels import SERVER_OPTIONS, AioChannelPool, GenericHandlersOnly, bind
from federation.controller.access import Access
from federation.controller.config import ControllerConfig
from federation.controller.edge_hub import EdgeHub
from federation.controller.failover import AutomaticFailover, FailoverOps, FailoverService
from federation.controller.leader import FederationLeader
from federation.controller.liveness import OwnerLiveness
from federation.controller.metrics import ControllerMetrics
from federation.controller.mirror_service import MirroringService
from federation.controller.mirrors import MirrorRunner
from federation.controller.replication import ReplicationService
from federation.controller.rpc_errors import ErrorInterceptor
from federation.controller.service import FederationService
from federation.controller.service import add_to_server as add_federation_service
from federation.controller.supervisor import Supervisor
from federation.controller.tunnel import TunnelServer, core_cluster_at
from federation.controller.volumes import VolumeManager
from federation.malloc_tuning import tune_malloc
from namespace import schema
from namespace.cache import NamespaceCache
from namespace.errors import Conflict
from namespace.etcd import Etcd
from namespace.registry import LeaseKeeper

log = logging.getLogger(__name__)


class Controller:
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.metrics = ControllerMetrics(config.cluster)
        self.supervisor = Supervisor()
        self.port: int | None = None

    def request_stop(self) -> None:
        self.supervisor.request_stop()

    async def run(self) -> None:
        cfg = self.config
        node_id = claim_data_dir(cfg.data_dir)
        self.metrics.watch_disk(cfg.data_dir)
        etcd = await Etcd.connect(cfg.etcd)
        cache = NamespaceCache(etcd)
        pool = ThreadPoolExecutor(max_workers=cfg.io_threads, thread_name_prefix=f"io-{cfg.cluster}")
        peers = AioChannelPool(cfg.tls_dir, cfg.cluster)
        # Every servicer only raises: one interceptor maps errors to statuses for all.
        # Access control sits inside the error mapping: its denials become statuses too.
        access = Access(cfg, etcd, cache, self.metrics)
        server = grpc.aio.server(
            options=SERVER_OPTIONS, interceptors=[ErrorInterceptor(self.metrics, where=f"cluster {cfg.cluster}"), *access.interceptors]
        )
        lease: LeaseKeeper | None = None
        volumes: VolumeManager | None = None
        mirrors: MirrorRunner | None = None
        leader: FederationLeader | None = None
        edge_hub: EdgeHub | None = None
        tunnel: TunnelServer | None = None
        supervisor = self.supervisor
        try:
            await cache.load()
            supervisor.spawn("namespace-watch", cache.follow())
            await access.start()
            if cfg.metrics_port is not None:
                self.metrics.serve(cfg.metrics_port, cfg.listen.rpartition(":")[0].strip("[]") or "127.0.0.1")
            metrics_ep = f"127.0.0.1:{cfg.metrics_port}" if cfg.metrics_port is not None else ""
            self.port = self._bind(server)
            spec = cfg.spec(metrics_ep)
            if cfg.listen.endswith(":0") and not cfg.advertise:
                spec = spec.model_copy(update={"endpoint": f"{cfg.listen.rpartition(':')[0]}:{self.port}"})
            if cfg.tunnel_listen is not None:
                tunnel = TunnelServer(cfg.tunnel_listen, lambda at: core_cluster_at(cache.view, at), self.metrics)
                spec = spec.model_copy(update={"tunnel": cfg.tunnel_endpoint(tunnel.bind())})
            lease = LeaseKeeper(etcd, spec, cfg.lease_ttl, node_id=node_id)
            volumes = VolumeManager(cfg.cluster, cfg.data_dir, cache, lease, self.metrics)
            lease.subscribe(volumes)  # lease lost: fence writes; regained: bump epochs
            mirrors = MirrorRunner(cfg.cluster, cache, volumes, self.metrics, pool, cfg.tls_dir)
            edge_hub = EdgeHub(cfg.cluster, cache, peers, cfg.tls_dir, lambda: spec.endpoint, self.metrics,
                               acl=access.acl)
            service = FederationService(
                cfg.cluster, cache, volumes, self.metrics, edge_hub.wrap(peers), pool, cfg.chunk_size,
                mirrors=mirrors, edge_relay=edge_hub.relay_endpoint,
                may_read=access.authz.may_read if access.authz is not None else None,
            )
            generic = GenericHandlersOnly(server)
            add_federation_service(service, server)
            edge_hub.add_to_server(server)
            access.add_services(server)
            pb_grpc.add_ReplicationServicer_to_server(ReplicationService(cfg.cluster, volumes, pool), generic)
            pb_grpc.add_MirroringServicer_to_server(
                MirroringService(mirrors, edge_hub.wrap(peers), edge_relay=edge_hub.relay_endpoint), generic)
            failover = FailoverOps(cfg.cluster, cache, volumes, mirrors, peers, self.metrics)
            liveness = OwnerLiveness(cfg.cluster, cache, peers)
            leader = FederationLeader(
                cfg.cluster, cache, lease, volumes, mirrors, peers,
                duties=[AutomaticFailover(failover, liveness).run, liveness.probe_owners],
            )
            pb_grpc.add_FailoverServicer_to_server(FailoverService(failover), generic)
            await edge_hub.start()
            await server.start()
            if tunnel is not None:
                supervisor.spawn("tunnel", tunnel.serve())
            await lease.register()
            supervisor.spawn("lease-renewal", lease.renew_forever())
            supervisor.spawn("volumes", volumes.run())
            supervisor.spawn("mirror-runner", mirrors.run())
            supervisor.spawn("lease-metrics", self._export_lease_metrics(lease))
            supervisor.spawn("leader-election", leader.run())
            supervisor.spawn("membership", _until_removed(cache, cfg.cluster))
            if cfg.kubernetes:
                from federation.kube.api import KubeConfig
                from federation.kube.reconciler import KubeReconciler

                reconciler = KubeReconciler(cfg.cluster, etcd, KubeConfig.load())
                supervisor.spawn("kubernetes-reconciler", reconciler.run())
            log.info("controller %s serving on %s", cfg.cluster, cfg.endpoint)
            await supervisor.wait()  # until SIGTERM, or re-raise what ended a root task
        finally:
            await supervisor.stop()
            if leader is not None:
                await leader.stop()
            if mirrors is not None:
                await mirrors.stop()
            if edge_hub is not None:
                await edge_hub.stop()
            if tunnel is not None:
                await tunnel.stop()
            await server.stop(grace=2.0)
            if volumes is not None:
                try:
                    await volumes.stop()
                except Exception:
                    log.warning("final publish failed", exc_info=True)
            if lease is not None:
                await lease.stop(revoke=True)
            await access.stop()
            await cache.stop()
            await peers.close()
            await etcd.close()
            pool.shutdown(wait=True, cancel_futures=True)

    def _bind(self, server: grpc.aio.Server) -> int:
        cfg = self.config
        creds = None
        if cfg.tls_dir is not None:
            from federation.tls import reloading_server_credentials

            # Re-read on rotation (`gns certs rotate`): a renewed certificate needs no restart.
            creds = reloading_server_credentials(cfg.tls_dir, cfg.cluster)
        return bind(server, cfg.listen, creds)

    async def _export_lease_metrics(self, lease: LeaseKeeper) -> None:
        while True:
            self.metrics.lease_renewals.set(lease.renewals)
            self.metrics.lease_failures.set(lease.renewal_failures)
            self.metrics.lease_losses.set(lease.losses)
            await asyncio.sleep(1.0)


async def _until_removed(cache: NamespaceCache, cluster: str) -> None:
    """End the controller once its cluster is removed (`gns cluster remove`): it served on
    unregistered for good (its record gone, its lease kept), and `gns up`, which restarts
    controllers that stopped, could neither see it Ready nor restart it. Started again, it
    registers again (rejoins). Gone from the cache twice in a row, a second apart, and then
    from etcd itself: never on a blip, nor before the cache has seen our registration."""
    missing = 0
    while True:
        await asyncio.sleep(1.0)
        missing = 0 if cluster in cache.view.clusters else missing + 1
        if missing >= 2 and await cache.etcd.get(schema.cluster(cluster)) is None:
            raise Conflict(f"cluster {cluster} was removed from the federation (gns cluster remove); "
                           "its controller stops (started again, it rejoins)")


def claim_data_dir(data_dir: Path) -> str:
    """Lock the data dir for this process's lifetime and return its persistent node id.

    Two controllers must never share one data dir; the lock (released by the kernel when
    the process dies, even by kill -9) also proves that a previous holder is gone.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "controller.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Conflict(f"data dir {data_dir} is in use by another controller") from None
    _held_locks.append(fd)
    id_file = data_dir / "node-id"
    if not id_file.exists():
        tmp = data_dir / "node-id.tmp"
        tmp.write_text(uuid.uuid4().hex)
        os.replace(tmp, id_file)
    return id_file.read_text().strip()


_held_locks: list[int] = []


def run_controller(config: ControllerConfig) -> None:
    """Run until SIGTERM/SIGINT; raises what made start-up fail."""
    tune_malloc(arenas=2)  # many threads moving chunks: see federation.malloc_tuning

    async def main() -> None:
        ctl = Controller(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, ctl.request_stop)
        await ctl.run()

    event_loop.run(main())
