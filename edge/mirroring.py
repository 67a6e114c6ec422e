"""``gns mirror sync`` and ``gns mirror verify`` of a volume an edge site owns.

Why it exists: a site ships its own volumes to their mirror targets (``edge.shipping``); no
core controller holds them, so the ``Mirroring`` service that any controller forwards to a
volume's owner has to be served here too. The hub reaches it down the site's link
(``federation.controller.mirror_service``), like any call for a site's volume; apps at the
site may call it on ``--listen``.

- ``Sync`` kicks the shipper, and with ``wait`` streams progress until every target holds
  the version the volume was at when asked, or reports per target why it will not soon: a
  failed shipping call, a target cluster that is Down, a link that is down (changes then
  wait, journaled, for the link). It never waits longer than the caller's deadline.
- ``Verify`` compares each target with the volume by sha256 through the link, as a core
  owner does (the mirror engine's ``verify``), repairs if asked, and has the shipper ask
  a repaired target where it stands before shipping on.

Callers that are not a controller need ``admin`` on the volume (the grants the hub sent).
Nothing here talks to etcd or dials anything but the site's up relays.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import cast

import grpc

from cloud_adapters.errors import ObjectStoreError
from edge.shipping import Shipper, Worker
from edge.site import LocalNamespace
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.sitekit import IOPool, SiteAuthorizer, VolumeManager
from mirroring.engine import VerifyReport, verify
from mirroring.protocols import VolumeSource
from namespace.errors import GnsError, NotFound, Unavailable

RECHECK = 0.5
"""Seconds between looks at what the shipper cannot announce (the link, a target's
liveness) while a ``Sync`` waits; any acked version or failure wakes it at once."""


class SiteMirroring(pb_grpc.MirroringServicer):
    def __init__(self, site: str, cache: LocalNamespace, volumes: VolumeManager, shipper: Shipper,
                 io: IOPool, authz: SiteAuthorizer | None) -> None:
        self.site = site
        self.cache = cache
        self.volumes = volumes
        self.shipper = shipper
        self._io = io.run
        self.authz = authz

    # -- what is asked, and may it be ---------------------------------------------------------
    def _workers(self, policy: str, target: str, action: str) -> list[Worker]:
        doc = self.cache.view.policies.get(policy)
        spec = (doc or {}).get("spec") if isinstance(doc, dict) else None
        if not isinstance(spec, dict):
            raise NotFound(f"mirror policy {policy!r} not found")
        volume = str(spec.get("volume") or "")
        vol = self.cache.view.volumes.get(volume)
        if vol is None or vol.owner != self.site:
            raise Unavailable(f"edge site {self.site} does not own volume {volume!r}")
        self._admit(volume, action)
        workers = self.shipper.workers_for(policy, target)
        if target and not workers:
            raise NotFound(f"policy {policy!r} has no target {target!r}")
        return workers

    def _admit(self, volume: str, action: str) -> None:
        """``admin`` on every mount of ``volume``, unless the caller is a controller (the
        site itself, as the calls its hub relays down arrive); audited as the core does."""
        if self.authz is None:
            return
        paths = [m.path for m in self.cache.view.mount_list() if m.volume == volume] or ["/"]
        who = self.authz.require("admin", paths, action, every=True)
        if who is not None and not self.authz.trusted(who) and self.authz.audit is not None:
            self.authz.audit.write(who.subject, action, paths[0], "allowed")

    def _stuck(self, w: Worker) -> str | None:
        """Why ``w`` cannot ship now, if it cannot."""
        if not self.shipper.link_up.is_set():
            return f"edge site {self.site} is disconnected from its hub; its changes wait, journaled, for the link"
        if not w.uri and w.target not in self.cache.view.alive:
            return f"target cluster {w.target} is Down"
        return None

    # -- Sync ---------------------------------------------------------------------------------
    async def Sync(self, request: pb.MirrorSyncRequest, context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[pb.MirrorProgress]:
        workers = self._workers(request.policy, request.target, "Mirroring/Sync")
        self.shipper.kick()
        if not request.wait:
            for w in workers:
                yield pb.MirrorProgress(target=w.target, done=False)
            return
        started = time.time()
        want: dict[str, int] = {}
        for w in workers:
            if w.volume not in want:
                vs = await self._io(self.volumes.storage, w.volume, create=True)
                want[w.volume] = int(vs.version)
        base = {w.target: (w.bytes, w.files) for w in workers}
        shown = dict(base)
        pending = list(workers)
        while pending:
            for w in list(pending):
                done = self._outcome(w, want[w.volume], started)
                if done is not None:
                    pending.remove(w)
                    yield done
                elif (w.bytes, w.files) != shown[w.target]:
                    shown[w.target] = (w.bytes, w.files)
                    b0, f0 = base[w.target]
                    yield pb.MirrorProgress(target=w.target, bytes=w.bytes - b0, files=w.files - f0)
            if pending:
                await self.shipper.moved(RECHECK)

    def _outcome(self, w: Worker, want: int, started: float) -> pb.MirrorProgress | None:
        """The final message for ``w`` once it holds ``want`` or failed since ``started``."""
        held = max(0, w.held)
        if w.held >= want:
            return pb.MirrorProgress(target=w.target, done=True, version=held)
        error = w.last_error if w.error_at is not None and w.error_at >= started else self._stuck(w)
        if error:
            return pb.MirrorProgress(target=w.target, done=True, version=held,
                                     error=f"{error} (holds v{held} of v{want})")
        return None

    # -- Verify -------------------------------------------------------------------------------
    async def Verify(self, request: pb.MirrorVerifyRequest, context: grpc.aio.ServicerContext
                     ) -> pb.MirrorVerifyReply:
        reports = []
        for w in self._workers(request.policy, "", "Mirroring/Verify"):
            try:
                stuck = self._stuck(w)
                if stuck:
                    raise Unavailable(stuck)
                endpoint = await self.shipper.endpoint(w)
                r: VerifyReport = await self._io(self._verify, w, endpoint, request.repair, request.deep)
            except (GnsError, ObjectStoreError, NotImplementedError) as exc:
                # One target's failure is that target's report, not the whole call's (a store
                # lacking an operation the check needs raises NotImplementedError).
                reports.append(pb.MirrorVerifyReport(target=w.target, error=str(exc)))
                continue
            reports.append(pb.MirrorVerifyReport(
                target=w.target, version=r.version, missing=list(r.missing), extra=list(r.extra),
                mismatched=list(r.mismatched), repaired=r.repaired, deep=r.deep))
            if r.repaired:
                self.shipper.forget(w)
        return pb.MirrorVerifyReply(reports=reports)

    def _verify(self, w: Worker, endpoint: str, repair: bool, deep: bool) -> VerifyReport:
        """Blocking (a worker thread): the engine's verify of ``w``'s target, through the link."""
        vs = self.volumes.storage(w.volume, create=True)
        with self.shipper.target(w, vs, endpoint) as target:
            return verify(cast(VolumeSource, vs), target, repair=repair, deep=deep)
