"""Store-and-forward: ship a site's changes to its mirror targets, in version order, over the link.

Why it exists: Azure IoT Edge drops stored messages after a TTL and loses them when the
process restarts offline (iotedge #392, #530, #706); a long outage there sends the whole
backlog before any live message (#2486). Here:

- the journal is the volume's own durable change journal (SQLite, fsync'd at commit), so a
  kill -9 loses nothing acknowledged and no TTL ever drops a change;
- the resume point is what the target itself says it holds (``state()``), never a local
  cursor that a crash could leave wrong;
- each pass ships exactly ONE version (a capped source), so the target goes v, v+1, v+2 ...
  strictly in order, and a target never reports a version it does not fully hold (the
  mirror engine's commit is the last step);
- shipping calls ride the link's ``bulk`` lane, so apps' calls through the link go first.

Cluster targets only: object-store targets of an edge volume are mirrored by the core
mirror (a cluster target's own policy), not from the site, whose uplink may be thin.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

from edge.link import Report
from edge.site import LocalNamespace
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.errors import from_rpc_error
from federation.channels import CHUNK_SIZE, sync_channel
from federation.sitekit import ClusterTarget, IOPool, VolumeManager
from mirroring.engine import run_pass
from mirroring.protocols import TargetState
from namespace.errors import Conflict, GnsError

WINDOW = 16
"""Versions whose blobs may be uploading ahead of the commit in progress."""
UPLOADS = 4

log = logging.getLogger(__name__)


class _Capped:
    """The volume as a mirror source pinned at version ``cap`` (a full pass, after a journal
    gap or an epoch change, commits exactly the state of one version)."""

    def __init__(self, vs: Any, cap: int) -> None:
        self.vs, self.cap = vs, cap

    def __getattr__(self, name: str) -> Any:
        return getattr(self.vs, name)

    @property
    def version(self) -> int:
        return min(int(self.vs.version), self.cap)

    def pin(self) -> tuple[int, object]:
        version, token = self.vs.pin()
        return min(version, self.cap), token


class _Known:
    """A cluster target whose committed state this shipper already knows.

    Only the owner writes a replica (the replica refuses anyone else), so after our own
    commit of V the target holds V: asking again would cost a round trip through the link
    per version. A blob is sent without asking ``has`` first: a version's files are new
    content, and resending one after a crash is cheaper than a query for every file. If
    the target was changed behind our back the commit is refused and the worker asks again.
    """

    def __init__(self, target: ClusterTarget, known: TargetState | None) -> None:
        self.target, self.known = target, known
        self.name = target.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)

    def state(self) -> TargetState:
        return self.known if self.known is not None else self.target.state()

    def has(self, path: str, sha256: str) -> bool:
        return False


@dataclass
class Worker:
    policy: str
    volume: str
    target: str
    acked: int = -1
    """Version the target holds (-1: not asked yet)."""
    epoch: int = 0
    bytes: int = 0
    files: int = 0
    synced_at: float = 0.0
    last_error: str | None = None
    error_at: float | None = None
    pending_since: float | None = None
    syncing: bool = False
    shipped: list[int] = field(default_factory=list)
    """Versions committed at the target by this process, in order (kept short)."""
    task: asyncio.Task[None] | None = None


class Shipper:
    def __init__(self, site: str, cache: LocalNamespace, volumes: VolumeManager, pool: ThreadPoolExecutor,
                 uplink: Callable[[str], Awaitable[str]], link_up: asyncio.Event) -> None:
        self.site = site
        self.cache = cache
        self.volumes = volumes
        self._io = IOPool(pool).run
        self.uplink = uplink
        self.link_up = link_up
        self.workers: dict[tuple[str, str], Worker] = {}
        self._kick = asyncio.Event()
        self._backlog = (0, 0)
        self._backlog_at = 0.0
        self.first_ack_after_up: float | None = None

    # -- triggers -------------------------------------------------------------------------
    def kick(self, *_: Any) -> None:
        self._kick.set()

    def committed(self, volume: str, version: int) -> None:
        now = time.time()
        for w in self.workers.values():
            if w.volume == volume and w.pending_since is None:
                w.pending_since = now
        self._kick.set()

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while True:
                self._reconcile()
                try:
                    await asyncio.wait_for(self._kick.wait(), timeout=1.0)
                except TimeoutError:
                    pass
                self._kick.clear()
                for w in self.workers.values():
                    if w.task is None or w.task.done():
                        w.task = asyncio.create_task(self._drain(w), name=f"ship-{w.volume}-{w.target}")
        finally:
            tasks = [w.task for w in self.workers.values() if w.task is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _reconcile(self) -> None:
        view = self.cache.view
        wanted: set[tuple[str, str]] = set()
        for name, doc in view.policies.items():
            spec = (doc or {}).get("spec") or {}
            vol = view.volumes.get(spec.get("volume", ""))
            if vol is None or vol.owner != self.site:
                continue
            for t in spec.get("targets") or []:
                if isinstance(t, dict) and t.get("cluster") and t["cluster"] != self.site:
                    wanted.add((name, t["cluster"]))
                    if (name, t["cluster"]) not in self.workers:
                        self.workers[(name, t["cluster"])] = Worker(name, vol.name, t["cluster"])
        for key in list(self.workers):
            if key not in wanted:
                w = self.workers.pop(key)
                if w.task is not None:
                    w.task.cancel()

    async def _drain(self, w: Worker) -> None:
        """Ship every version the target lacks, one commit per version, while the link lives."""
        failures = 0
        while True:
            await self.link_up.wait()
            if w.target not in self.cache.view.alive:
                return  # the hub tells us when it is back (a new slice kicks us)
            vs = await self._io(self.volumes.storage, w.volume, create=True)
            head = int(vs.version)
            if 0 <= w.acked >= head:
                w.pending_since = None
                return
            endpoint = await self.uplink(w.target)
            w.syncing = True
            try:
                if w.acked < 0:  # the target itself is the resume point
                    w.acked, w.epoch = await self._io(self._target_state, w, endpoint)
                    if w.acked >= head:
                        w.syncing = False
                        continue
                same_history = w.epoch == int(vs.epoch) or w.acked == 0
                if same_history and w.acked >= int(vs.journal_floor):
                    loop = asyncio.get_running_loop()
                    await self._io(self._ship_versions, w, vs, endpoint, head,
                                   lambda v, n, f: loop.call_soon_threadsafe(self._acked, w, v, int(vs.epoch), n, f))
                    w.syncing = False
                    failures = 0
                    continue
                # A journal gap or another epoch's history: one full pass by the mirror engine.
                result = await self._io(self._pass, w, vs, endpoint, head)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                w.syncing = False
                w.last_error = (str(exc) if isinstance(exc, GnsError) else f"{type(exc).__name__}: {exc}")[:500]
                w.error_at = time.time()
                w.acked = -1  # ask the target again: it is the resume point
                log.warning("site %s: shipping %s to %s failed: %s", self.site, w.volume, w.target, w.last_error)
                await asyncio.sleep(min(5.0, 0.2 * 2 ** min(failures, 5)))
                continue
            failures = 0
            w.syncing = False
            if result.committed or result.reason == "up-to-date":
                if result.committed:
                    if self.first_ack_after_up is None:
                        self.first_ack_after_up = time.monotonic()
                    w.shipped = (w.shipped + [result.version])[-1000:]
                    w.bytes += result.bytes_copied
                    w.files += result.files_copied + result.files_deleted
                w.acked = result.version
                w.epoch = int(vs.epoch)
                w.synced_at = time.time()
                if w.acked >= int(vs.version):
                    w.pending_since = None

    def _acked(self, w: Worker, version: int, epoch: int, nbytes: int, nfiles: int) -> None:
        if self.first_ack_after_up is None:
            self.first_ack_after_up = time.monotonic()
        w.shipped = (w.shipped + [version])[-1000:]
        w.acked, w.epoch = version, epoch
        w.bytes += nbytes
        w.files += nfiles
        w.synced_at = time.time()

    def _target_state(self, w: Worker, endpoint: str) -> tuple[int, int]:
        target = ClusterTarget(w.target, w.volume, self.site, endpoint, None, self.site, 0)
        try:
            st = target.state()
            return int(st.version), int(st.epoch)
        finally:
            target.close()

    def _ship_versions(self, w: Worker, vs: Any, endpoint: str, head: int,
                       acked: Callable[[int, int, int], None]) -> None:
        """Versions acked+1 .. head, one commit each, in order; the blobs of the next few
        versions upload meanwhile (a blob is invisible at the target until a commit names it).

        Blocking (a worker thread); ``acked(v, bytes, files)`` after the target committed v.
        """
        channel = sync_channel(endpoint, None)
        stub = pb_grpc.ReplicationStub(channel)
        epoch = int(vs.epoch)
        uploads = ThreadPoolExecutor(max_workers=UPLOADS, thread_name_prefix=f"ship-{w.volume}")

        def upload(f: Any) -> None:
            header = pb.ReplicaBlobHeader(volume=w.volume, source=self.site, epoch=epoch, sha256=f.sha256, size=f.size)

            def chunks() -> Any:
                yield pb.ReplicaBlobChunk(header=header)
                with vs.open_blob(f.sha256) as src:
                    while block := src.read(CHUNK_SIZE):
                        yield pb.ReplicaBlobChunk(data=block)

            stub.PutBlob(chunks(), timeout=3600)

        def commit(version: int, copies: list[Any], deleted: list[str]) -> None:
            def chunks() -> Any:
                yield pb.ReplicaCommitChunk(header=pb.ReplicaCommitHeader(
                    volume=w.volume, source=self.site, epoch=epoch, version=version, full=False))
                for f in copies:
                    yield pb.ReplicaCommitChunk(put=pb.ReplicaFile(
                        path=f.path, size=f.size, sha256=f.sha256, mtime=f.mtime, mode=getattr(f, "mode", 0)))
                for path in deleted:
                    yield pb.ReplicaCommitChunk(delete=path)

            reply = stub.Commit(chunks(), timeout=600)
            if int(reply.version) != version:
                raise Conflict(f"target {w.target} committed v{reply.version}, not v{version}")

        window: collections.deque[tuple[int, list[Any], list[str], list[Future[None]]]] = collections.deque()
        nxt = w.acked + 1
        try:
            while window or nxt <= head:
                while nxt <= head and len(window) < WINDOW:
                    copies, deleted = vs.changes_since(nxt - 1, nxt)
                    unique = {f.sha256: f for f in copies}
                    window.append((nxt, copies, deleted, [uploads.submit(upload, f) for f in unique.values()]))
                    nxt += 1
                version, copies, deleted, futures = window.popleft()
                for fut in futures:
                    fut.result()
                commit(version, copies, deleted)
                acked(version, sum(f.size for f in copies), len(copies) + len(deleted))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"target {w.target}") from None
        finally:
            uploads.shutdown(wait=True, cancel_futures=True)
            channel.close()

    def _pass(self, w: Worker, vs: Any, endpoint: str, cap: int) -> Any:
        target = ClusterTarget(w.target, w.volume, self.site, endpoint, None, self.site, int(vs.epoch))
        known = TargetState(w.acked, w.epoch) if w.acked >= 0 and w.epoch == int(vs.epoch) else None
        try:
            return run_pass(_Capped(vs, cap), _Known(target, known), workers=2)
        finally:
            target.close()

    # -- what the heartbeat reports ---------------------------------------------------------
    def statuses(self) -> list[dict[str, Any]]:
        return [{
            "policy": w.policy, "volume": w.volume, "target": w.target, "version": max(0, w.acked),
            "epoch": w.epoch, "synced_at": w.synced_at, "bytes": w.bytes, "files": w.files,
            "last_error": w.last_error, "error_at": w.error_at, "syncing": w.syncing,
            "pending_since": w.pending_since, "updated": time.time(),
        } for w in self.workers.values() if w.acked >= 0]

    def backlog(self) -> tuple[int, int]:
        """(versions, bytes) not yet at every target: recounted at most once a second."""
        now = time.monotonic()
        if now - self._backlog_at < 1.0:
            return self._backlog
        self._backlog_at = now
        versions = nbytes = 0
        for w in self.workers.values():
            if not self.volumes.has_local(w.volume):
                continue
            vs = self.volumes.storage(w.volume)
            behind = max(0, int(vs.version) - max(0, w.acked))
            versions += behind
            if behind:
                nbytes += sum(e.size for e in vs.journal(max(0, w.acked)))
        self._backlog = (versions, nbytes)
        return self._backlog

    def report(self) -> Report:
        vols = []
        for name in self.cache.owned():
            if self.volumes.has_local(name):
                vs = self.volumes.storage(name)
                vols.append((name, int(vs.version), int(vs.epoch)))
        versions, nbytes = self.backlog()
        return Report(volumes=vols, mirror_status_json=json.dumps(self.statuses()).encode(),
                      backlog_versions=versions, backlog_bytes=nbytes)
