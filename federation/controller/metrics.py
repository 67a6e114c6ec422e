"""Prometheus metrics of one controller (served on ``--metrics-port``).

A private registry per controller keeps tests that run several controllers in one process
from colliding, and keeps the default process collectors out of the way.
"""
from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class ControllerMetrics:
    def __init__(self, cluster: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gns_requests", "gRPC requests by method and status code", ["method", "code"], registry=r
        )
        self.latency = Histogram(
            "gns_request_seconds", "gRPC request latency", ["method"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
        )
        self.bytes_in = Counter("gns_bytes_in", "file bytes received", registry=r)
        self.bytes_out = Counter("gns_bytes_out", "file bytes sent", registry=r)
        self.forwarded = Counter(
            "gns_forwarded", "requests forwarded to another cluster", ["method", "to"], registry=r
        )
        self.tunnels_open = Gauge("gns_tunnels_open", "bulk tunnels open through this controller", registry=r)
        self.tunnel_bytes = Counter(
            "gns_tunnel_bytes", "bytes moved through bulk tunnels", ["direction", "to"], registry=r
        )
        self.tunnels_refused = Counter(
            "gns_tunnels_refused", "bulk tunnel requests refused, by reason", ["reason"], registry=r
        )
        self.lease_renewals = Gauge("gns_lease_renewals", "successful lease renewals", registry=r)
        self.lease_failures = Gauge("gns_lease_renewal_failures", "failed lease renewals", registry=r)
        self.lease_losses = Gauge("gns_lease_losses", "times the lease was lost", registry=r)
        self.fenced = Gauge("gns_fenced", "1 while this controller refuses writes (fenced)", registry=r)
        self.fences = Counter("gns_fences", "fencing events by reason", ["reason"], registry=r)
        self.volume_version = Gauge(
            "gns_volume_version", "committed version of owned volumes", ["volume"], registry=r
        )
        self.mirror_lag_versions = Gauge(
            "gns_mirror_lag_versions", "mirror lag in versions", ["policy", "target"], registry=r
        )
        self.mirror_lag_seconds = Gauge(
            "gns_mirror_lag_seconds", "mirror lag in seconds", ["policy", "target"], registry=r
        )
        self.promotions = Counter(
            "gns_promotions", "volume promotions by reason", ["reason"], registry=r
        )
        self.disk_free = Gauge(
            "gns_data_dir_free_bytes", "bytes free for this controller's volumes on its data directory's file system",
            registry=r,
        )
        self.disk_size = Gauge(
            "gns_data_dir_size_bytes", "size of the file system of this controller's data directory", registry=r
        )
        self.cluster = cluster

    def watch_disk(self, data_dir: Path) -> None:
        """Report the data directory's file system at every scrape: an operator sees a disk
        filling before its writes fail with OutOfSpace (``federation.storage.space``)."""

        def free() -> float:
            st = os.statvfs(data_dir)
            return float(st.f_bavail * st.f_frsize)  # what an unprivileged writer may still use

        def size() -> float:
            st = os.statvfs(data_dir)
            return float(st.f_blocks * st.f_frsize)

        self.disk_free.set_function(free)
        self.disk_size.set_function(size)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve on the gRPC listen host (loopback unless the controller listens wider)."""
        start_http_server(port, addr=host, registry=self.registry)
