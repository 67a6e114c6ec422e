"""``gns csi``: the three CSI services on one gRPC server on a Unix socket."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from federation.api._gen.csi.v1 import csi_pb2_grpc as csi_grpc
from federation.client import Client
from federation.csi.controller import ControllerService
from federation.csi.identity import IdentityService
from federation.csi.node import NodeService
from federation.csi.publisher import Publisher
from namespace.errors import InvalidInput, NotFound, Unavailable
from namespace.paths import check_name

log = logging.getLogger(__name__)

_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass
class CsiConfig:
    endpoint: str
    """``unix:///csi/csi.sock`` (or ``unix:/path``)."""
    node_id: str
    cluster: str | None = None
    etcd: str | None = None
    tls_dir: str | None = None
    controller: str | None = None
    """``--controller``: reach the federation through this controller, never etcd (the
    driver then needs no etcd credentials; with TLS its identity needs ``admin`` on ``/``
    to provision)."""
    identity: str | None = None
    state_dir: Path = field(default_factory=lambda: Path("/var/lib/gns-csi"))

    def socket_path(self) -> str:
        ep = self.endpoint
        prefix = "unix://" if ep.startswith("unix://") else "unix:"
        if ep.startswith(prefix) and ep[len(prefix):].startswith("/"):
            return ep[len(prefix):]
        raise InvalidInput(f"invalid --endpoint {ep!r}: expected unix:///absolute/path.sock")

    def check(self) -> None:
        self.socket_path()
        if not self.node_id:
            raise InvalidInput("--node-id must not be empty")
        if len(self.node_id) > 253 or not _NODE_NAME.fullmatch(self.node_id):
            # kubelet registers the plugin under this id and the CO matches it against the
            # Node object's name: anything else would fail later, far from the typo
            raise InvalidInput(f"--node-id {self.node_id!r} is not a Kubernetes node name "
                               "(DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
                               "starting and ending with a letter or digit, at most 253)")
        if self.cluster is not None:
            check_name("cluster", self.cluster)
        if self.controller is not None:
            from federation.remote import find_controller

            find_controller(self.controller)

    def fuse_command(self, target: str, path: str, readonly: bool) -> list[str]:
        argv: list[str] = []
        if self.etcd:
            argv += ["--etcd", self.etcd]
        if self.tls_dir:
            argv += ["--tls-dir", self.tls_dir]
        if self.controller:
            argv += ["--controller", self.controller]
        if self.identity:
            argv += ["--identity", self.identity]
        # each publication stages its writes apart: two pods' FUSE processes share nothing
        cache = self.state_dir / "cache" / hashlib.sha256(target.encode()).hexdigest()[:16]
        # --allow-non-empty: the publisher refuses a new target that holds files itself; a
        # target it re-attaches may have gained some while its mount was down, and must
        # not stay unmounted for them (the publisher logs that they are hidden)
        argv += ["fuse", target, "--root", path, "--cache-dir", str(cache), "--allow-non-empty"]
        return argv + (["--read-only"] if readonly else [])


class CsiDriver:
    """The server and what it owns; ``start``/``stop`` so tests and benchmarks can embed it."""

    def __init__(self, config: CsiConfig) -> None:
        config.check()
        self.config = config
        self.client = Client(config.etcd, tls_dir=config.tls_dir, controller=config.controller,
                             identity=config.identity)
        self.publisher = Publisher(config.fuse_command, config.state_dir)
        self.server = grpc.server(ThreadPoolExecutor(max_workers=8, thread_name_prefix="csi"))
        csi_grpc.add_IdentityServicer_to_server(IdentityService(), self.server)
        csi_grpc.add_ControllerServicer_to_server(
            ControllerService(self.client, config.cluster), self.server)
        csi_grpc.add_NodeServicer_to_server(
            NodeService(self.client, self.publisher, config.node_id, config.cluster), self.server)

    def check_cluster(self) -> None:
        """Refuse an unknown ``--cluster`` (NotFound: exit 3) before serving: it is the
        default owner of every new volume and the node's topology, so a typo would
        otherwise surface only as failed provisioning. Checking costs one lookup; if the
        federation cannot be reached now, serve anyway (kubelet needs the socket, and the
        RPCs report UNAVAILABLE themselves) but say so."""
        if self.config.cluster is None:
            return
        try:
            self.client.cluster(self.config.cluster)
        except Unavailable as exc:
            log.error("cannot check --cluster %s now: %s", self.config.cluster, exc)
        except NotFound:
            raise NotFound(f"--cluster {self.config.cluster!r}: no such cluster in the "
                           "federation") from None

    def start(self) -> None:
        sock = self._prepare_socket()
        self.check_cluster()
        if self.server.add_insecure_port(f"unix://{sock}") == 0:
            raise InvalidInput(f"--endpoint {self.config.endpoint}: cannot listen on {sock}")
        self.publisher.start()
        self.server.start()
        log.info("csi.gns.io serving on %s (node %s)", sock, self.config.node_id)

    def _prepare_socket(self) -> str:
        """The socket's path, its directory made and a previous instance's socket removed
        (kubelet reconnects to the new one); a path that cannot be is a bad --endpoint."""
        sock = self.config.socket_path()
        try:
            Path(sock).parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(sock):
                os.unlink(sock)
        except OSError as exc:
            raise InvalidInput(f"--endpoint {self.config.endpoint}: cannot make the socket "
                               f"{sock}: {exc.strerror}") from None
        return sock

    def stop(self, unmount: bool = False) -> None:
        self.server.stop(grace=2).wait()
        self.publisher.stop(unmount=unmount)
        self.client.close()


def run_csi(config: CsiConfig) -> None:
    """Serve until SIGTERM/SIGINT. Published volumes stay mounted: the next driver process
    adopts them (see :mod:`federation.csi.publisher`)."""
    driver = CsiDriver(config)
    driver.start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    driver.stop()
