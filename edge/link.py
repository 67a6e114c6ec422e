"""The link: one long-lived outbound stream to a hub, kept alive and never trusted blindly.

Why it exists: K3s tunnels have reported "connected" while dead and never redialed (k3s
#13149). Here the site sends a heartbeat every ``heartbeat`` seconds and treats the link as
dead the moment nothing at all has come back from the hub for three heartbeats (a
link-level deadline, independent of TCP and of gRPC keepalive); then it redials with
full-jitter backoff, moving to the next ``--hub`` address, forever. Registration is the
hub's half of the same exchange: the ``Hello`` with the site's credential makes the hub
register cluster ``<site>`` and hold its lease while beats arrive.

The heartbeat carries the site's report (volume versions, mirror statuses, backlog), which
the hub publishes; the acknowledgement carries namespace changes the site must know.
The credential, and the site's certificate where it has one, are renewed over the link in
the last third of their lifetime: a fresh key and CSR each time, the new files replace the
old ones atomically, and the next dial uses them (:class:`edge.bootstrap.Dialer` reads the
files at every dial).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from edge.bootstrap import API_VERSION, Dialer, Identity, backoff, save_identity
from edge.sitecert import Request
from federation.api._gen.gns.edge.v1 import edge_pb2 as epb
from federation.api._gen.gns.edge.v1 import edge_pb2_grpc as epb_grpc
from federation.api.errors import from_rpc_error
from federation.edge_mux import LinkMux, Replayer
from namespace.errors import PermissionDenied

log = logging.getLogger(__name__)


_SOONEST = 0.05
"""Least time between two reports (a busy site asks for one at every commit)."""
DIVERGED_KIND = "diverged"
"""An entry of ``Heartbeat.mirror_status_json`` that reports diverged writes (SPEC §7), not a
mirror status: ``{"kind": "diverged", "volume", "cluster", "epoch", "paths", "at"}``."""


@dataclass
class Report:
    """What a heartbeat tells the hub."""

    volumes: list[tuple[str, int, int]] = field(default_factory=list)
    mirror_status_json: bytes = b""
    backlog_versions: int = 0
    backlog_bytes: int = 0


class HubLink:
    def __init__(self, hubs: list[str], identity: Identity, heartbeat: float, data_dir: Path, *,
                 replayer: Replayer, on_view: Callable[[bytes], None], report: Callable[[], Report],
                 listen: str = "", max_backoff: float = 5.0, dialer: Dialer | None = None) -> None:
        self.dialer = dialer or Dialer()
        self.hubs = hubs
        self.identity = identity
        self.heartbeat = heartbeat
        self.data_dir = data_dir
        self.replayer = replayer
        self.on_view = on_view
        self.report = report
        self.listen = listen
        self.max_backoff = max_backoff
        self.mux: LinkMux | None = None
        self.state = "Connecting"
        self.hub = ""
        self.hub_address = ""
        self.connected_since: float | None = None
        self.up = asyncio.Event()
        self.on_up: list[Callable[[], None]] = []
        self.sessions = 0
        self.refused: Exception | None = None
        self._pending: Request | None = None
        self._welcomed_at: float | None = None
        """When the current attempt's hub welcomed the site (monotonic); None until it does.
        Per attempt on purpose: ``sessions`` counts every success since start."""
        self._soon = asyncio.Event()

    async def run(self) -> None:
        """Forever: connect, serve the link until it dies, back off, try the next hub."""
        attempt = 0
        index = 0
        while True:
            address = self.hubs[index % len(self.hubs)]
            try:
                await self._session(address)
            except asyncio.CancelledError:
                raise
            except PermissionDenied as exc:
                # The hub no longer accepts our identity: retrying the same will not help
                # (a new token is needed), but a different hub might know better; keep going.
                self.refused = exc
                log.error("site %s: hub %s refused the site's identity: %s", self.identity.site, address, exc)
            except Exception as exc:
                log.warning("site %s: link to %s failed: %s", self.identity.site, address, exc)
            # Whatever ended it, the next dial goes to the next --hub address (SPEC §8; the
            # list wraps round, so a lone hub is simply redialed). Retrying the same hub first
            # would stall on one that hangs rather than refuses (SIGSTOP, a dead VM, a
            # blackholing firewall): each try there costs the whole first-frame deadline.
            index += 1
            up = self._welcomed_at
            if up is not None and time.monotonic() - up > 3 * self.heartbeat:
                attempt = 0  # this attempt's link had worked for a while: come back quickly
            attempt += 1
            await asyncio.sleep(backoff(attempt, self.max_backoff))

    async def _session(self, address: str) -> None:
        self._welcomed_at = None
        channel = self.dialer.channel(address)
        mux = LinkMux(odd=True, replayer=self.replayer, name=f"{self.identity.site}->{address}")
        hello = epb.Frame(hello=epb.Hello(site=self.identity.site, credential=self.identity.credential,
                                          heartbeat_s=self.heartbeat, api_version=API_VERSION,
                                          listen=self.listen))

        async def frames() -> AsyncIterator[epb.Frame]:
            yield hello
            async for f in mux.outgoing():
                yield f

        call = epb_grpc.EdgeLinkStub(channel).Link(frames())
        beat: asyncio.Task[None] | None = None
        try:
            first = await self._read(call, max(5.0, 3 * self.heartbeat))
            if first is None or first.WhichOneof("kind") != "welcome":
                raise ConnectionError("hub closed the link before welcoming the site")
            self.mux, self.hub, self.hub_address = mux, first.welcome.hub, address
            self.state, self.connected_since = "Ready", time.time()
            self.sessions += 1
            self._welcomed_at = time.monotonic()
            self.refused = None
            log.warning("site %s: link up to hub %s (%s)", self.identity.site, self.hub, address)
            if first.welcome.view_json:
                self.on_view(first.welcome.view_json)
            self.up.set()
            for cb in list(self.on_up):
                cb()
            beat = asyncio.create_task(self._beat(mux), name="edge-heartbeat")
            while True:
                frame = await self._read(call, 3 * self.heartbeat)
                if frame is None:
                    raise ConnectionError("hub closed the link")
                kind = frame.WhichOneof("kind")
                if kind == "ack":
                    if frame.ack.view_json:
                        self.on_view(frame.ack.view_json)
                elif kind == "renewed":
                    self._renewed(frame.renewed)
                elif kind in ("start", "data", "end", "cancel"):
                    await mux.feed(frame)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"hub {address}") from None
        finally:
            self.up.clear()
            if self.state == "Ready":
                log.warning("site %s: link to hub %s down", self.identity.site, self.hub)
            self.state, self.mux, self.connected_since = "Down", None, None
            mux.close()
            if beat is not None:
                beat.cancel()
                await asyncio.gather(beat, return_exceptions=True)
            await mux.wait_incoming()
            call.cancel()
            await channel.close()

    async def _read(self, call: Any, deadline: float) -> epb.Frame | None:
        """The next frame, or an error once ``deadline`` passes in silence: a dead link."""
        try:
            frame = await asyncio.wait_for(call.read(), timeout=deadline)
        except TimeoutError:
            raise ConnectionError(f"no word from the hub for {deadline:.2f}s (three heartbeats)") from None
        if frame is grpc.aio.EOF:
            return None
        assert isinstance(frame, epb.Frame)
        return frame

    async def _beat(self, mux: LinkMux) -> None:
        seq = 0
        renew_asked = 0.0
        while not mux.closed:
            seq += 1
            r = self.report()
            hb = epb.Heartbeat(seq=seq, backlog_versions=r.backlog_versions, backlog_bytes=r.backlog_bytes,
                               mirror_status_json=r.mirror_status_json,
                               volumes=[epb.VolumeReport(volume=n, version=v, epoch=e) for n, v, e in r.volumes])
            await mux.put(epb.Frame(heartbeat=hb))
            now = time.time()
            if self.identity.renew_due(now) and now - renew_asked > max(10 * self.heartbeat, 1.0):
                renew_asked = now
                renew = epb.Renew()
                if self.identity.cert_expires_at:
                    self._pending = Request(self.identity.site)
                    renew.csr_pem = self._pending.csr_pem
                await mux.put(epb.Frame(renew=renew))
            # The next beat after a heartbeat, or sooner when asked (report_soon), but never
            # more than 20 a second.
            try:
                await asyncio.wait_for(self._soon.wait(), timeout=self.heartbeat)
            except TimeoutError:
                continue
            self._soon.clear()
            await asyncio.sleep(min(self.heartbeat, _SOONEST))

    def report_soon(self) -> None:
        """Send the report now rather than at the next heartbeat: a commit at the site moved
        a volume's version, or shipping moved a target's version or the backlog, which the
        federation shows (``volume show``, ``mirror status``, ``edge list``) from the report."""
        self._soon.set()

    def _renewed(self, renewed: epb.Renewed) -> None:
        old = self.identity
        fresh = bool(renewed.credential)  # with TLS the hub renews the certificate alone
        ident = Identity(site=old.site, credential=renewed.credential if fresh else old.credential,
                         credential_expires_at=renewed.credential_expires_at if fresh else old.credential_expires_at,
                         issued_at=time.time() if fresh else old.issued_at,
                         ca_sha256=old.ca_sha256, hub=self.hub or old.hub,
                         cert_expires_at=old.cert_expires_at, cert_issued_at=old.cert_issued_at)
        pending, self._pending = self._pending, None
        if renewed.cert_pem and pending is not None:
            try:  # the same pinned CA as at join, or nothing is replaced
                ident.cert_expires_at = pending.accept(self.data_dir, renewed.cert_pem, renewed.ca_pem,
                                                       old.ca_sha256)
                ident.cert_issued_at = time.time()
            except PermissionDenied as exc:
                log.error("site %s: renewed certificate refused: %s", old.site, exc)
            else:
                log.warning("site %s: certificate renewed (expires %s); used from the next dial", old.site,
                            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ident.cert_expires_at)))
        save_identity(self.data_dir, ident)
        self.identity = ident
        if fresh:
            log.warning("site %s: credential renewed (expires %s)", ident.site,
                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ident.credential_expires_at)))
