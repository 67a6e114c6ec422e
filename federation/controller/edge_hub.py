"""The hub side of edge sites (SPEC §8): every controller serves ``EdgeLink``.

Why it exists: an edge site never talks to etcd and nothing dials in to it, so its hub does
the control-plane work on its behalf:

- ``Join`` redeems a single-use token (one etcd transaction, :mod:`namespace.edge`); the
  hub's CA fingerprint goes back so the site can check the token's pin. With TLS the
  site's CSR is signed (identity ``cluster:<site>``, ``GNS_EDGE_CERT_TTL``, default 30
  days) where this hub holds the federation CA's key; sites holding only a token reach
  a Join-only port whose address is kept across restarts (tokens name it). Without TLS
  the site gets a bearer credential instead (with TLS none is issued).
- ``Link`` is the site's one long-lived stream. Its ``Hello`` is authenticated by the
  client certificate (TLS: ``cluster:<site>`` from the federation CA, the site on
  record) or by the credential (no TLS); renewals (a new CSR, or a new credential) ride
  the link. The hub registers cluster ``<site>`` (provider ``edge``, endpoint = this
  hub) with an etcd lease of its own (TTL = 3 heartbeats, at least etcd's 2 s) that it
  refreshes only while frames arrive. Three beats of silence and the hub revokes the
  lease: the site is ``Down`` at once; if the hub itself dies the lease runs out.
- Calls relay both ways (:mod:`federation.edge_mux`): the site's calls run against this
  hub's own server (or a core cluster it names, for mirror shipping) with
  ``gns-on-behalf-of: edge:<site>``; core requests for volumes a connected site owns are
  forwarded by the Federation service to ``edge-link:<site>``, which the peer pool maps to
  a loopback relay server that pushes them down the site's stream.
- What the site reports in heartbeats (volume versions, mirror statuses, backlog, and
  writes it kept aside as diverged after a forced promotion, SPEC §7) is published to
  etcd when it changes, batched in one transaction; the backlog is also exported to
  Prometheus (``gns_edge_backlog_changes``/``_bytes{site}``), and its last count outlives
  the link (``gns edge list`` shows it, dated, for a Down site).
- The site's slice of the namespace (:func:`site_slice`: its volumes, mounts, policies, and
  with access control the grants on its paths, which the site decides on for what it
  serves itself) goes down the link as soon as it changes, in an ack with no heartbeat
  (``seq`` 0), not at the site's next beat: a revoke must not wait a heartbeat (10 s by
  default). Bursts of changes coalesce (``VIEW_PUSH_GAP``); every ack still carries the
  slice if it changed since the last one sent, so a site of any release converges.

Never blocks the event loop on disk; never trusts a site for another site's name.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Gauge

from federation.api._gen.gns.edge.v1 import edge_pb2 as epb
from federation.api._gen.gns.edge.v1 import edge_pb2_grpc as epb_grpc
from federation.api.errors import kind_of, trailing_metadata
from federation.channels import (
    BASE_OPTIONS,
    SERVER_OPTIONS,
    AioChannelPool,
    GenericHandlersOnly,
    bind,
)
from federation.controller.authz import EDGE_PROVIDER, decode_identity, peer_identity
from federation.controller.metrics import ControllerMetrics
from federation.edge_mux import ON_BEHALF_OF, InCall, LinkMux, RelayHandler, forwardable, replay
from federation.object_relay import ObjectRelayHandler, policy_allows
from namespace import edge as records
from namespace import schema
from namespace.acl import AclCache, Grants
from namespace.cache import NamespaceCache, NamespaceView
from namespace.durations import parse_duration
from namespace.errors import Conflict, GnsError, InvalidInput, PermissionDenied, Unavailable
from namespace.models import HUB_LABEL, ClusterSpec, VolumeState

log = logging.getLogger(__name__)

RELAY_PREFIX = "edge-link:"
SITE_KEY = "gns-edge-site"
API_VERSION = "v1"
DEFAULT_IDENTITY_TTL = 30 * 86400.0
DEFAULT_CERT_TTL = 30 * 86400.0
# After pushing a changed slice to a site, wait this long before the next push: a change
# after a quiet spell goes down at once, a burst (a thousand mounts made by a script, clusters
# coming and going) costs one slice a second per site, each a walk over every mount.
VIEW_PUSH_GAP = 1.0


def cert_ttl() -> float:
    """How long a site certificate lasts (env ``GNS_EDGE_CERT_TTL``, a duration)."""
    raw = os.environ.get("GNS_EDGE_CERT_TTL")
    return parse_duration(raw, bare_seconds=True) if raw else DEFAULT_CERT_TTL


def identity_ttl() -> float:
    """How long a site credential lasts (env ``GNS_EDGE_IDENTITY_TTL``, a duration)."""
    raw = os.environ.get("GNS_EDGE_IDENTITY_TTL")
    return parse_duration(raw, bare_seconds=True) if raw else DEFAULT_IDENTITY_TTL


def hub_ca_fingerprint(tls_dir: Path | None) -> str:
    if tls_dir is None:
        return records.INSECURE_CA
    from federation.tls import CA_CERT

    return records.ca_fingerprint((tls_dir / CA_CERT).read_bytes())


def site_slice(view: NamespaceView, site: str, grants: Grants | None = None) -> dict[str, Any]:
    """The part of the namespace a site needs to serve and ship its own volumes offline.

    With access control on (``grants`` given) it holds the grants on the site's mount
    paths, their ancestors and everything below them: the site decides on them for the
    paths it serves itself (SPEC §10), connected or not."""
    vols = {n: v for n, v in view.volumes.items() if v.owner == site or site in v.former_owners}
    policies = {n: p for n, p in view.policies.items()
                if isinstance(p, dict) and (p.get("spec") or {}).get("volume") in vols}
    targets: set[str] = set()
    for p in policies.values():
        for t in (p.get("spec") or {}).get("targets") or []:
            if isinstance(t, dict) and t.get("cluster"):
                targets.add(t["cluster"])
    clusters = {c: view.clusters[c].model_dump() for c in targets | {site} if c in view.clusters}
    own = [m.path for m in view.mount_list() if m.volume in vols]
    # A mount of another volume below one of the site's (a core archive at /site/archive) is
    # sent too, volume left out: else the site takes its paths for its own volume's and
    # serves and writes them itself; with it, they resolve to a volume the site does not
    # own and go up the link.
    mounts = [m for m in view.mount_list() if m.volume in vols or any(_below(m.path, o) for o in own)]
    out: dict[str, Any] = {
        "volumes": {n: v.model_dump() for n, v in sorted(vols.items())},
        "mounts": [m.model_dump() for m in mounts],
        "policies": dict(sorted(policies.items())),
        "clusters": clusters,
        "alive": sorted(c for c in clusters if c in view.alive),
    }
    if grants is not None:
        relevant = {(g.path, g.subject): g for m in mounts for g in grants.relevant(m.path)}
        out["grants"] = [relevant[k].as_dict() for k in sorted(relevant)]
    return out


def _below(path: str, mount: str) -> bool:
    """``path`` is strictly below ``mount`` (both normal global paths)."""
    return path != mount and path.startswith(mount.rstrip("/") + "/")


DIVERGED_KIND = "diverged"
"""A heartbeat report entry of writes a site kept aside (edge.link.DIVERGED_KIND)."""


def _diverged_record(site: str, report: dict[str, Any]) -> bytes:
    """The etcd record of a site's diverged writes: the controller's own shape (SPEC §7),
    named for the site that reported it, whatever the report claims."""
    paths = [str(p) for p in report.get("paths") or []][:10_000]
    return json.dumps({"volume": str(report.get("volume", "")), "cluster": site,
                       "epoch": int(report.get("epoch") or 0), "paths": paths,
                       "at": float(report.get("at") or time.time())}).encode()


class BacklogMetrics:
    """What a site's heartbeats say it still has to ship, per site linked to this hub
    (Prometheus; the alert rule ``GnsEdgeBacklogGrowing`` in deploy/monitoring watches it).

    A site's series goes when its link does: a hub knows a site's backlog only while the
    site reports it (a Down site is its own alert)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.changes = Gauge("gns_edge_backlog_changes",
                             "changes (versions) an edge site holds that its mirror targets lack",
                             ["site"], registry=r)
        self.bytes = Gauge("gns_edge_backlog_bytes", "bytes of those changes", ["site"], registry=r)

    def set(self, site: str, versions: int, nbytes: int) -> None:
        self.changes.labels(site).set(versions)
        self.bytes.labels(site).set(nbytes)

    def forget(self, site: str) -> None:
        for gauge in (self.changes, self.bytes):
            try:
                gauge.remove(site)
            except KeyError:
                pass


class SiteLink:
    """One connected site on this hub."""

    def __init__(self, site: str, heartbeat: float, mux: LinkMux) -> None:
        self.site = site
        self.heartbeat = heartbeat
        self.mux = mux
        self.ttl = max(2, math.ceil(3 * heartbeat))
        self.lease_id: int | None = None
        self.connected_since = time.time()
        self.last_rx = time.monotonic()
        self.last_refresh = time.monotonic()
        self.sent_view = b""
        self.view_generation: tuple[int, int] = (-1, -1)
        self.published: dict[bytes, bytes] = {}
        self.backlog = {"versions": 0, "bytes": 0}
        self.backlog_recorded = False  # edge/backlogs/<site> holds this link's count
        self.closed = asyncio.Event()
        self.view_stale = asyncio.Event()  # the namespace or a grant changed since the last push
        self.credential = ""


class _SiteMetadata:
    """Names the site on every call of a channel to the down-relay server."""

    def __init__(self, site: str) -> None:
        self.pair = (SITE_KEY, site)

    def _details(self, d: Any) -> Any:
        md = grpc.aio.Metadata()
        given = d.metadata or ()
        if isinstance(given, grpc.aio.Metadata):
            pairs = [(k, v) for k in dict.fromkeys(given) for v in given.get_all(k)]
        else:
            pairs = list(given)
        for key, value in pairs:
            md.add(key, value)
        md.add(*self.pair)
        return grpc.aio.ClientCallDetails(d.method, d.timeout, md, d.credentials, d.wait_for_ready)

    async def _go(self, continuation: Any, d: Any, request: Any) -> Any:
        return await continuation(self._details(d), request)


# grpc.aio files an interceptor under the FIRST kind it is an instance of: one class per kind.
# Built with type(): grpc.aio's interceptor bases are untyped, and a class statement
# subclassing them would need a type: ignore.
_SITE_INTERCEPTOR_KINDS: tuple[type, ...] = tuple(
    type(f"_Site{kind}", (_SiteMetadata, base), {f"intercept_{method}": _SiteMetadata._go})
    for kind, base, method in (
        ("UU", grpc.aio.UnaryUnaryClientInterceptor, "unary_unary"),
        ("US", grpc.aio.UnaryStreamClientInterceptor, "unary_stream"),
        ("SU", grpc.aio.StreamUnaryClientInterceptor, "stream_unary"),
        ("SS", grpc.aio.StreamStreamClientInterceptor, "stream_stream"),
    )
)


def _acting_as(site: str, metadata: Any) -> str:
    """Who a site's relayed call acts as: the user it names, else the site itself."""
    claimed = next((kv.value for kv in metadata if kv.key == ON_BEHALF_OF), None)
    if claimed:
        try:
            who = decode_identity(str(claimed))
        except InvalidInput:
            who = None
        if who is not None and not who.is_cluster:
            return str(claimed)
    return f"edge:{site}"


def site_interceptors(site: str) -> list[Any]:
    return [cls(site) for cls in _SITE_INTERCEPTOR_KINDS]


class EdgeAwarePeers:
    """The controller's peer pool, plus ``edge-link:<site>`` endpoints (down the link)."""

    def __init__(self, peers: AioChannelPool, hub: EdgeHub) -> None:
        self.peers = peers
        self.hub = hub

    def get(self, endpoint: str) -> grpc.aio.Channel:
        if endpoint.startswith(RELAY_PREFIX):
            return self.hub.site_channel(endpoint[len(RELAY_PREFIX):])
        return self.peers.get(endpoint)

    async def close(self) -> None:
        await self.peers.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.peers, name)


class _JoinOnly(epb_grpc.EdgeLinkServicer):
    """What the token-only port serves: Join, nothing else (Link stays unimplemented)."""

    def __init__(self, hub: EdgeHub) -> None:
        self.hub = hub

    async def Join(self, request: epb.JoinRequest, context: grpc.aio.ServicerContext) -> epb.JoinReply:
        if not request.csr_pem:
            err = InvalidInput("this port serves certificate joins only: send a CSR")
            await context.abort(kind_of(err).code, str(err), trailing_metadata=trailing_metadata(err))
        return await self.hub.Join(request, context)


class EdgeHub(epb_grpc.EdgeLinkServicer):
    def __init__(self, cluster: str, cache: NamespaceCache, peers: AioChannelPool,
                 tls_dir: Path | None, own_endpoint: Callable[[], str],
                 metrics: ControllerMetrics | None = None, acl: AclCache | None = None) -> None:
        self.cluster = cluster
        self.acl = acl  # access control on: sites get the grants on their paths
        self.backlog_metrics = BacklogMetrics(metrics.registry if metrics is not None else None)
        self.cache = cache
        self.etcd = cache.etcd
        self.peers = peers
        self.tls_dir = tls_dir
        self.own_endpoint = own_endpoint
        self.ca_sha256 = hub_ca_fingerprint(tls_dir)
        from federation.certs import can_issue

        self.issues_certs = can_issue(tls_dir)
        if self.issues_certs:
            log.info("edge hub %s: signs site certificates (cluster:<site>) with the federation CA", cluster)
        else:
            log.info("edge hub %s: %s; joining sites get a bearer credential only, no certificate",
                        cluster, "no TLS" if tls_dir is None else f"no CA key in {tls_dir}")
        self.links: dict[str, SiteLink] = {}
        self._relay: grpc.aio.Server | None = None
        self._join: grpc.aio.Server | None = None
        self._relay_addr = ""
        self._site_channels: dict[str, grpc.aio.Channel] = {}
        self._generation = 0
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        # The relay hop carries file data too: the same fixed stream window and message
        # limits as every other hop, so a relayed transfer's memory stays bounded.
        self._relay = grpc.aio.server(options=SERVER_OPTIONS)
        self._relay.add_generic_rpc_handlers((RelayHandler(self._route_down),))
        port = self._relay.add_insecure_port("127.0.0.1:0")
        self._relay_addr = f"127.0.0.1:{port}"
        await self._relay.start()
        self.cache.subscribe(self._on_change)
        if self.acl is not None:
            self.acl.subscribe(self._views_changed)
        if self.issues_certs:
            await self._start_join_listener()

    async def _start_join_listener(self) -> None:
        """A Join-only port with server-side TLS and NO client certificate, for sites that
        hold nothing but a token (the main port demands a client certificate at every
        handshake, and grpc cannot make one optional). Its address goes in the tokens
        (via etcd); the chain it presents includes the CA, which the site pins."""
        assert self.tls_dir is not None
        d = self.tls_dir
        from federation.tls import CA_CERT

        chain = (d / f"{self.cluster}.crt").read_bytes() + (d / CA_CERT).read_bytes()
        creds = grpc.ssl_server_credentials([((d / f"{self.cluster}.key").read_bytes(), chain)])
        host = self.own_endpoint().rpartition(":")[0] or "127.0.0.1"
        previous = await self._published_join_port(host)
        port = 0
        for want in ([previous] if previous else []) + [0]:
            # No SO_REUSEPORT (SERVER_OPTIONS): binding the old port must fail if someone
            # else holds it now, rather than share it with them.
            self._join = grpc.aio.server(options=SERVER_OPTIONS)
            epb_grpc.add_EdgeLinkServicer_to_server(_JoinOnly(self), GenericHandlersOnly(self._join))
            try:
                port = bind(self._join, f"{host}:{want}", creds)
                break
            except Unavailable:
                log.warning("edge hub %s: token-only join port %s:%d is taken; tokens that name it "
                            "must be made again", self.cluster, host, want)
        if not port or self._join is None:
            raise Unavailable(f"edge hub {self.cluster}: cannot open a token-only join port on {host}")
        await self._join.start()
        addr = f"{host}:{port}"
        await self.etcd.put(records.hub_key(self.cluster), json.dumps({"join": addr}).encode())
        log.info("edge hub %s: token-only joins on %s", self.cluster, addr)

    async def _published_join_port(self, host: str) -> int:
        """The port this hub published before (a restart keeps it: tokens name it), or 0."""
        try:
            raw = await self.etcd.get(records.hub_key(self.cluster))
            old_host, _, port = str(json.loads(raw or b"{}").get("join") or "").rpartition(":")
        except (ValueError, AttributeError):
            return 0
        return int(port) if old_host == host and port.isdigit() and 0 < int(port) < 65536 else 0

    def add_to_server(self, server: grpc.aio.Server) -> None:
        epb_grpc.add_EdgeLinkServicer_to_server(self, GenericHandlersOnly(server))
        # Object-store mirror targets of edge volumes: the site's requests, made here.
        ObjectRelayHandler(policy_allows(lambda: self.cache.view), self._from_own_relay).add_to_server(server)

    def _from_own_relay(self, context: grpc.aio.ServicerContext) -> bool:
        """A site's relayed call reaches this server from the hub itself (``_replay_up``), with
        the hub's own certificate; any other caller's on-behalf-of claim is not believed.
        Without TLS nothing can be proved, as everywhere else in that mode."""
        if self.tls_dir is None:
            return True
        peer = peer_identity(context)
        return peer is not None and peer.is_cluster and peer.name == self.cluster

    async def stop(self) -> None:
        self._stopping = True
        for link in list(self.links.values()):
            link.mux.close()
            link.closed.set()
        for link in list(self.links.values()):
            await self._unregister(link)
        if self._relay is not None:
            await self._relay.stop(grace=0.5)
        if self._join is not None:
            await self._join.stop(grace=0.5)
        for ch in self._site_channels.values():
            await ch.close()

    def _slice(self, site: str) -> bytes:
        grants = self.acl.grants if self.acl is not None else None
        return json.dumps(site_slice(self.cache.view, site, grants), sort_keys=True).encode()

    def _slice_generation(self) -> tuple[int, int]:
        """Changes when a site's slice may have: the namespace, or a grant (its revision)."""
        return self._generation, self.acl.revision if self.acl is not None else 0

    def _on_change(self, kind: str, name: str, value: bytes | None) -> None:
        if kind in ("volume", "mount", "policy", "cluster", "alive"):
            self._generation += 1
            self._views_changed()

    def _views_changed(self) -> None:
        for link in self.links.values():
            link.view_stale.set()

    def _new_view(self, link: SiteLink) -> bytes | None:
        """The site's slice if it changed since the last one sent (which it then is)."""
        generation = self._slice_generation()
        if link.view_generation == generation:  # only after a namespace or grant change
            return None
        link.view_generation = generation
        view = self._slice(link.site)
        if view == link.sent_view:
            return None
        link.sent_view = view
        return view

    async def _push_views(self, link: SiteLink) -> None:
        """Send the site its slice whenever it changes, without waiting for a heartbeat."""
        while not link.mux.closed:
            await link.view_stale.wait()
            link.view_stale.clear()
            view = self._new_view(link)
            if view is not None:
                await link.mux.put(epb.Frame(ack=epb.HeartbeatAck(seq=0, view_json=view)))
            await asyncio.sleep(VIEW_PUSH_GAP)

    # -- routing hooks used by the Federation service ---------------------------------------
    def relay_endpoint(self, owner: str) -> str | None:
        """Where to forward requests for volumes ``owner`` holds, if it is a site linked here."""
        return RELAY_PREFIX + owner if owner in self.links else None

    def wrap(self, peers: AioChannelPool) -> EdgeAwarePeers:
        return EdgeAwarePeers(peers, self)

    def site_channel(self, site: str) -> grpc.aio.Channel:
        ch = self._site_channels.get(site)
        if ch is None:
            ch = self._site_channels[site] = grpc.aio.insecure_channel(
                self._relay_addr, options=BASE_OPTIONS, interceptors=site_interceptors(site))
        return ch

    def _route_down(self, method: str, md: dict[str, str]) -> tuple[LinkMux, str, bool]:
        site = md.get(SITE_KEY, "")
        link = self.links.get(site)
        if link is None or link.mux.closed:
            raise Unavailable(f"edge site {site} is not connected to hub {self.cluster}")
        return link.mux, "", False

    # -- bootstrap --------------------------------------------------------------------------
    async def Join(self, request: epb.JoinRequest, context: grpc.aio.ServicerContext) -> epb.JoinReply:
        try:
            if request.api_version and request.api_version != API_VERSION:
                raise InvalidInput(f"edge API {request.api_version!r} not served (this hub serves {API_VERSION})")
            if request.csr_pem and self.issues_certs:
                from federation.certs import check_csr

                check_csr(request.csr_pem)  # a bad CSR must not use the token up
            # With TLS the site's certificate is its identity: no bearer credential is issued.
            credential, rec = await records.redeem_token(
                self.etcd, request.token, request.site, self.cluster, self.ca_sha256, identity_ttl(),
                issue_credential=self.tls_dir is None)
            signed = await self._sign(request.site, request.csr_pem)
        except GnsError as exc:
            await context.abort(kind_of(exc).code, str(exc), trailing_metadata=trailing_metadata(exc))
            raise  # unreachable: abort raises
        log.info("edge site %s joined through hub %s%s", request.site, self.cluster,
                    " (certificate issued)" if signed else "")
        reply = epb.JoinReply(site=request.site, credential=credential,
                              credential_expires_at=rec["credential_expires_at"],
                              ca_sha256=self.ca_sha256, hub=self.cluster)
        if signed:
            reply.cert_pem, reply.ca_pem, reply.cert_expires_at = signed
        return reply

    async def _sign(self, site: str, csr_pem: bytes) -> tuple[bytes, bytes, float] | None:
        """The site's certificate (identity ``cluster:<site>``), or None where this hub cannot sign."""
        if not csr_pem:
            return None
        if not self.issues_certs or self.tls_dir is None:
            log.warning("edge site %s asked for a certificate; hub %s holds no CA key: credential only",
                        site, self.cluster)
            return None
        from federation.certs import sign_cluster_csr

        return await asyncio.to_thread(sign_cluster_csr, self.tls_dir, site, csr_pem, ttl_seconds=cert_ttl())

    # -- the link ---------------------------------------------------------------------------
    async def Link(self, request_iterator: AsyncIterator[epb.Frame], context: grpc.aio.ServicerContext) -> AsyncIterator[epb.Frame]:
        it = request_iterator.__aiter__()
        try:
            first = await asyncio.wait_for(it.__anext__(), timeout=30)
            if first.WhichOneof("kind") != "hello":
                raise InvalidInput("an edge link must open with hello")
            hello = first.hello
            if not 0.05 <= hello.heartbeat_s <= 3600:
                raise InvalidInput(f"heartbeat {hello.heartbeat_s}s out of range")
            await self._authenticate(hello, context)
        except (GnsError, StopAsyncIteration, TimeoutError) as exc:
            err = exc if isinstance(exc, GnsError) else InvalidInput("edge link closed before hello")
            await context.abort(kind_of(err).code, str(err), trailing_metadata=trailing_metadata(err))
            return
        site = hello.site
        link = SiteLink(site, hello.heartbeat_s, LinkMux(odd=False, replayer=lambda inc: self._replay_up(site, inc), name=site))
        link.credential = hello.credential
        old = self.links.get(site)
        if old is not None:  # the site reconnected before we noticed the old stream die
            old.mux.close()
            old.closed.set()
        try:
            await self._register(link)
        except GnsError as exc:
            await context.abort(kind_of(exc).code, str(exc), trailing_metadata=trailing_metadata(exc))
            return
        self.links[site] = link
        log.info("edge site %s connected to hub %s (heartbeat %.2fs)", site, self.cluster, link.heartbeat)
        link.view_generation = self._slice_generation()
        view = self._slice(site)
        link.sent_view = view
        rec = await records.site_record(self.etcd, site) or {}
        # The link's own tasks: they end with its stream (the finally below), not later.
        tasks = (asyncio.create_task(self._read(link, it), name=f"edge-read-{site}"),
                 asyncio.create_task(self._watchdog(link), name=f"edge-watch-{site}"),
                 asyncio.create_task(self._push_views(link), name=f"edge-views-{site}"))
        try:
            yield epb.Frame(welcome=epb.Welcome(hub=self.cluster, view_json=view,
                                                credential_expires_at=float(rec.get("credential_expires_at", 0))))
            async for frame in link.mux.outgoing():
                yield frame
        finally:
            link.mux.close()
            link.closed.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await link.mux.wait_incoming()
            if self.links.get(site) is link:
                del self.links[site]
                self.backlog_metrics.forget(site)
            await self._unregister(link)
            log.warning("edge site %s disconnected from hub %s", site, self.cluster)

    async def _read(self, link: SiteLink, it: AsyncIterator[epb.Frame]) -> None:
        try:
            async for frame in it:
                link.last_rx = time.monotonic()
                kind = frame.WhichOneof("kind")
                if kind == "heartbeat":
                    await self._on_heartbeat(link, frame.heartbeat)
                elif kind == "renew":
                    await self._renew(link, frame)
                elif kind in ("start", "data", "end", "cancel"):
                    await link.mux.feed(frame)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("edge site %s: link reader failed", link.site)
        finally:
            link.mux.close()

    async def _watchdog(self, link: SiteLink) -> None:
        """Three beats of silence: the site is Down now (the lease goes with the link).
        Until then, the lease is refreshed every third of its TTL."""
        while not link.mux.closed:
            if link.lease_id is not None and time.monotonic() - link.last_refresh >= link.ttl / 3:
                await self._refresh(link)
            silent = time.monotonic() - link.last_rx
            if silent > 3 * link.heartbeat:
                log.warning("edge site %s: no heartbeat for %.2fs; marking it Down", link.site, silent)
                link.mux.close()
                # Now, not when the stream's handler unwinds: a stalled peer can hold that up.
                await self._unregister(link)
                return
            await asyncio.sleep(max(0.02, min(link.heartbeat / 2, link.ttl / 6, 3 * link.heartbeat - silent)))

    async def _authenticate(self, hello: epb.Hello, context: grpc.aio.ServicerContext) -> None:
        """Who may open the link of ``hello.site``.

        With TLS, the client certificate the handshake proved (signed by the federation CA:
        the main port verifies the chain) must name ``cluster:<site>``, and the site must be
        on record (joined, not forgotten); the bearer credential plays no part. Without TLS
        there is no certificate, and the credential the site got at join is all there is."""
        if self.tls_dir is None:
            await records.check_credential(self.etcd, hello.site, hello.credential)
            return
        peer = peer_identity(context)
        want = f"cluster:{hello.site}"
        if peer is None:
            raise PermissionDenied(f"edge link for site {hello.site!r} refused: no client certificate "
                                   f"(a site links with its own certificate {want})")
        if not peer.is_cluster or peer.name != hello.site:
            raise PermissionDenied(f"edge link for site {hello.site!r} refused: its certificate names "
                                   f"{peer.subject}, not {want}")
        if await records.site_record(self.etcd, hello.site) is None:
            raise PermissionDenied(f"edge link for site {hello.site!r} refused: the site has not joined "
                                   "(or was forgotten); join it with a new token")

    # -- registration and its lease ---------------------------------------------------------
    async def _register(self, link: SiteLink) -> None:
        etcd, tx = self.etcd, self.etcd.tx
        # What marks the site as one to controllers' access control (namespace.models.HUB_LABEL).
        spec = ClusterSpec(id=link.site, provider=EDGE_PROVIDER, region="", labels={HUB_LABEL: self.cluster},
                           endpoint=self.own_endpoint(), lease_ttl=link.ttl)
        alive_key = schema.alive(link.site)
        holder = json.dumps({"node": f"edge:{link.site}", "instance": f"{self.cluster}:{time.time_ns()}"}).encode()
        link_rec = json.dumps({"site": link.site, "hub": self.cluster, "connected_since": link.connected_since,
                               "backlog": link.backlog}).encode()
        for _ in range(3):
            try:  # a site joined under a core cluster's name (before joins refused that)
                name_free = await records.site_name_free(etcd, link.site)
            except Conflict as exc:  # must never overwrite that cluster's record
                raise PermissionDenied(f"edge link for site {link.site!r} refused: {exc}") from None
            lease = await etcd.call(etcd.client.lease, link.ttl)
            ok, _ = await etcd.txn(
                [tx.create(alive_key) == 0, name_free],
                [tx.put(schema.cluster(link.site), spec.dump()),
                 tx.put(alive_key, holder, lease=lease.id),
                 tx.put(records.link_key(link.site), link_rec, lease=lease.id)],
            )
            if ok:
                link.lease_id = lease.id
                link.last_refresh = time.monotonic()
                return
            await etcd.call(etcd.client.revoke_lease, lease.id)
            held = await etcd.call(etcd.client.get, alive_key)
            if held is None:
                continue
            try:
                node = json.loads(held.value).get("node")
            except ValueError:
                node = None
            if node != f"edge:{link.site}":
                raise PermissionDenied(f"cluster id {link.site!r} is held by a controller that is not this edge site")
            # The site's previous link (on this hub or a dead one): the site is here now.
            try:
                await etcd.call(etcd.client.revoke_lease, held.lease)
            except GnsError:
                pass
        raise Unavailable(f"could not register edge site {link.site}; retry")

    async def _unregister(self, link: SiteLink) -> None:
        if link.lease_id is None:
            return
        lease_id, link.lease_id = link.lease_id, None
        try:
            await asyncio.wait_for(self.etcd.client.revoke_lease(lease_id), timeout=2.0)
        except Exception:  # the lease runs out by itself
            log.debug("revoking the lease of site %s failed", link.site, exc_info=True)

    async def _refresh(self, link: SiteLink) -> None:
        """Keep the site's lease while the link lives (any frame counts, not only beats:
        a link busy draining a backlog is alive even if a beat queues behind data)."""
        now = time.monotonic()
        try:
            reply = await asyncio.wait_for(self.etcd.client.refresh_lease(link.lease_id),
                                           timeout=max(0.5, link.ttl / 3))
        except Exception as exc:
            log.warning("edge site %s: lease refresh failed: %s", link.site, exc)
            return
        if reply is None or reply.TTL <= 0:
            log.warning("edge site %s: its lease ran out (this hub stalled); dropping the link to re-register",
                        link.site)
            link.mux.close()
            return
        link.last_refresh = now

    async def _on_heartbeat(self, link: SiteLink, hb: epb.Heartbeat) -> None:
        await self._publish(link, hb)
        ack = epb.HeartbeatAck(seq=hb.seq)
        view = self._new_view(link)
        if view is not None:
            ack.view_json = view
        await link.mux.put(epb.Frame(ack=ack))

    async def _publish(self, link: SiteLink, hb: epb.Heartbeat) -> None:
        """Write what changed in the site's report (versions, mirror statuses, backlog)."""
        want: dict[bytes, bytes] = {}
        for v in hb.volumes:
            vol = self.cache.view.volumes.get(v.volume)
            if vol is None or vol.owner != link.site:
                continue  # a site speaks only for its own volumes
            prev = self.cache.view.volstates.get(v.volume)
            if prev is not None and prev.version == v.version and prev.epoch == v.epoch:
                continue
            want[schema.volstate(v.volume)] = VolumeState(version=v.version, epoch=v.epoch, updated=time.time()).dump()
        if hb.mirror_status_json:
            for status in json.loads(hb.mirror_status_json):
                vol = self.cache.view.volumes.get(status.get("volume", ""))
                if status.get("kind") == DIVERGED_KIND:
                    if vol is not None and vol.owner != link.site and link.site in vol.former_owners:
                        want[schema.diverged(vol.name, link.site)] = _diverged_record(link.site, status)
                    continue
                if vol is None or vol.owner != link.site:
                    continue
                key = schema.mirror_status(status["policy"], status["target"])
                want[key] = json.dumps(status, sort_keys=True).encode()
        backlog = {"versions": int(hb.backlog_versions), "bytes": int(hb.backlog_bytes)}
        self.backlog_metrics.set(link.site, backlog["versions"], backlog["bytes"])
        if link.lease_id is not None and (backlog != link.backlog or not link.backlog_recorded):
            link.backlog = backlog
            link.backlog_recorded = True
            want[records.link_key(link.site)] = json.dumps({
                "site": link.site, "hub": self.cluster, "connected_since": link.connected_since,
                "backlog": backlog}).encode()
            # Outlives the link: what the site last counted, for when it is Down.
            want[records.backlog_key(link.site)] = json.dumps({
                "backlog": backlog, "reported_at": time.time()}).encode()
        ops = []
        for key, value in want.items():
            if link.published.get(key) == value:
                continue
            lease = link.lease_id if key == records.link_key(link.site) else None
            ops.append(self.etcd.tx.put(key, value, lease=lease))
            link.published[key] = value
        if ops:
            try:
                await self.etcd.txn([], ops)
            except GnsError as exc:
                link.published.clear()
                link.backlog_recorded = False  # written again with the next beat
                log.warning("edge site %s: publishing its report failed: %s", link.site, exc)

    async def _renew(self, link: SiteLink, frame: epb.Frame) -> None:
        """A fresh certificate (with TLS) or credential (without) for the site, sent over
        its authenticated link."""
        renewed = epb.Renewed()
        if self.tls_dir is None:
            try:
                fresh, expires = await records.renew_credential(self.etcd, link.site, link.credential,
                                                                identity_ttl())
            except GnsError as exc:
                log.warning("edge site %s: credential renewal failed: %s", link.site, exc)
                return
            link.credential = fresh
            renewed.credential, renewed.credential_expires_at = fresh, expires
        try:
            signed = await self._sign(link.site, frame.renew.csr_pem)
        except GnsError as exc:
            log.warning("edge site %s: certificate renewal failed: %s", link.site, exc)
            signed = None
        if signed:
            renewed.cert_pem, renewed.ca_pem, renewed.cert_expires_at = signed
        await link.mux.put(epb.Frame(renewed=renewed))

    # -- calls from the site ----------------------------------------------------------------
    async def _replay_up(self, site: str, inc: InCall) -> None:
        """Run a site's call here (or at the core cluster it names) as the site, or as the
        user an app at the site proved to be over TLS: the site holds a cluster certificate,
        so like any forwarding controller it may act for a user (SPEC §10), never for
        another cluster or site."""
        md = [(k, v) for k, v in forwardable(tuple((kv.key, kv.value) for kv in inc.start.metadata))
              if k not in (ON_BEHALF_OF, SITE_KEY)]
        md.append((ON_BEHALF_OF, _acting_as(site, inc.start.metadata)))
        target = inc.start.cluster
        if not target or target == self.cluster:
            endpoint = self.own_endpoint()
        else:
            view = self.cache.view
            spec = view.clusters.get(target)
            if spec is None or target not in view.alive or spec.provider == "edge":
                err = Unavailable(f"cluster {target} is not Ready (asked by edge site {site})")
                await inc.finish(kind_of(err).code, str(err), trailing_metadata(err))
                return
            endpoint = spec.endpoint
        await replay(inc, self.peers.get(endpoint), md)
