"""Controller configuration, validated at start-up (flag > environment > default)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from namespace.errors import InvalidInput
from namespace.etcd import EtcdConfig
from namespace.models import PROVIDERS, ClusterSpec
from namespace.paths import check_name


@dataclass(frozen=True)
class ControllerConfig:
    cluster: str
    """This cluster's id (a DNS-1123 label)."""
    listen: str
    """HOST:PORT for the gRPC server."""
    data_dir: Path
    """Where volumes live (``<data_dir>/volumes/<name>``)."""
    etcd: EtcdConfig
    provider: str = "onprem"
    region: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    lease_ttl: int = 10
    """Seconds; the cluster turns Down this long after its controller stops renewing."""
    advertise: str = ""
    """Endpoint others dial (defaults to ``listen``)."""
    metrics_port: int | None = None
    tls_dir: Path | None = None
    insecure: bool = False
    """Allow a non-loopback ``listen`` without TLS."""
    io_threads: int = 16
    """Bound on concurrent blocking disk operations."""
    chunk_size: int = 1 << 20
    kubernetes: bool = False
    """Reconcile MirrorPolicy and GlobalMount resources (kubeconfig in-cluster or KUBECONFIG)."""
    audit_log: Path | None = None
    """Where access-control decisions are logged (default ``<data_dir>/audit.log``)."""
    tunnel: str = "auto"
    """HOST:PORT for bulk tunnels (``federation.controller.tunnel``); ``auto``: the listen
    host on a free port; ``off``: none (forwarded streams are relayed as gRPC messages)."""

    def __post_init__(self) -> None:
        check_name("cluster", self.cluster)
        if self.provider not in PROVIDERS:
            raise InvalidInput(f"invalid provider {self.provider!r}: one of {', '.join(PROVIDERS)}")
        self._check_listener("--listen", self.listen)
        if not 2 <= self.lease_ttl <= 3600:
            raise InvalidInput(f"invalid --lease-ttl {self.lease_ttl}: 2..3600 seconds")
        if self.tunnel not in ("auto", "off"):
            self._check_listener("--tunnel", self.tunnel, expected="HOST:PORT, auto or off", host_required=True)

    def _check_listener(self, flag: str, address: str, *, expected: str = "HOST:PORT",
                        host_required: bool = False) -> None:
        """``address`` is HOST:PORT, and a non-loopback one only with TLS (or --insecure)."""
        host, sep, port = address.rpartition(":")
        if (not sep or (host_required and not host) or not port.isdigit()
                or not 0 <= int(port) < 65536):
            raise InvalidInput(f"invalid {flag} {address!r}: expected {expected}")
        from federation.tls import is_loopback

        if self.tls_dir is None and not self.insecure and not is_loopback(host.strip("[]")):
            raise InvalidInput(
                f"refusing to listen on non-loopback {address} ({flag}) without TLS: "
                "pass --tls-dir (see `gns certs init`) or --insecure"
            )

    @property
    def endpoint(self) -> str:
        return self.advertise or self.listen

    @property
    def tunnel_listen(self) -> str | None:
        """Where the tunnel listener binds (None: no tunnel)."""
        if self.tunnel == "off":
            return None
        if self.tunnel == "auto":
            return self.listen.rpartition(":")[0] + ":0"
        return self.tunnel

    def tunnel_endpoint(self, port: int) -> str:
        """What clients dial for the tunnel bound on ``port``: its own host unless that is a
        wildcard, else the host others dial for gRPC."""
        host = (self.tunnel_listen or "").rpartition(":")[0]
        if self.tunnel == "auto" or host.strip("[]") in ("0.0.0.0", "::", ""):
            host = self.endpoint.rpartition(":")[0]
        return f"{host}:{port}"

    def spec(self, metrics_endpoint: str = "") -> ClusterSpec:
        return ClusterSpec(
            id=self.cluster,
            provider=self.provider,
            region=self.region,
            labels=self.labels,
            endpoint=self.endpoint,
            metrics_endpoint=metrics_endpoint,
            lease_ttl=self.lease_ttl,
            tls=self.tls_dir is not None,
        )


def parse_labels(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"invalid --label {pair!r}: expected key=value")
        labels[key] = value
    return labels
