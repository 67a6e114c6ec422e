"""Store-and-forward: ship a site's changes to its mirror targets, in version order, over the link.

Why it exists: Azure IoT Edge drops stored messages after a TTL and loses them when the
process restarts offline (iotedge #392, #530, #706); a long outage there sends the whole
backlog before any live message (#2486). Here:

- the journal is the volume's own durable change journal (SQLite, fsync'd at commit), so a
  kill -9 loses nothing acknowledged and no TTL ever drops a change;
- the resume point is what the target itself says it holds (``state()``), never a local
  cursor that a crash could leave wrong;
- a cluster target gets every version as its own commit, strictly in order (v, v+1, ...):
  consecutive versions travel in groups, one blob upload call and one commit call per group,
  and the replica applies a group's versions one transaction each, so it never reports a
  version it does not fully hold and a crash part-way leaves a prefix;
- shipping calls ride the link's ``bulk`` lane, so apps' calls through the link go first.

Object-store targets (S3/GCS/Azure) of an edge volume are shipped too, through the hub: the
site dials nothing but its hub and holds no cloud credentials (SPEC §8), so the mirror engine
runs here over a store whose requests the hub makes (``federation.object_relay``). A store
keeps one version (its manifest), so each pass commits the newest version, never an older
one after a newer.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
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
from federation.object_relay import relayed_store
from federation.sitekit import ClusterTarget, IOPool, VolumeManager
from mirroring.engine import run_pass
from mirroring.policy.model import uri_target_name
from mirroring.protocols import TargetState
from mirroring.targets import ObjectStoreTarget
from namespace.errors import Conflict, GnsError

GROUP_BYTES = 4 << 20
"""New blob bytes per group of versions (one upload call and one commit call per group)."""
GROUP_VERSIONS = 256
AHEAD = 4
"""Groups whose blobs may be uploading while the group before them commits."""

Version = tuple[int, list[Any], list[str]]
"""(version, files put, paths deleted) of one version."""


class ContentGone(Exception):
    """A version to ship names content that is no longer stored.

    A file written and then replaced or deleted before its version shipped (a site that
    writes while disconnected) leaves its content to garbage collection once nothing
    references it: that version cannot be sent as it was. The shipper then sends the
    current state as one version instead (the target skips the versions in between)."""


def _group(vs: Any, nxt: int, head: int, most: int) -> tuple[list[Version], int]:
    """Consecutive versions from ``nxt``: up to ``most`` of them and about GROUP_BYTES.
    Raises ContentGone if one of them names content no longer stored (the caller holds a
    pin, so what is stored now stays stored until it ships)."""
    group: list[Version] = []
    seen: set[str] = set()
    nbytes = 0
    while nxt <= head and len(group) < most and (not group or nbytes < GROUP_BYTES):
        copies, deleted = vs.changes_since(nxt - 1, nxt)
        group.append((nxt, list(copies), list(deleted)))
        for f in copies:
            if f.sha256 not in seen:
                if not vs.has_blob(f.sha256):
                    raise ContentGone(f"v{nxt} of {f.path} is no longer stored")
                seen.add(f.sha256)
                nbytes += int(f.size)
        nxt += 1
    return group, nxt

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
    uri: str = ""
    """An object-store target's URI (empty: ``target`` is a cluster)."""
    acked: int = -1
    """Version the target holds (-1: not asked yet, or to be asked again after a failure)."""
    held: int = -1
    """The last version the target was known to hold, kept across failures for the status
    (which must show the failure's ``last_error`` beside it)."""
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
        self._stale = False
        """A commit or an ack since the backlog was last counted: the loop counts again as
        soon as the once-a-second throttle allows."""
        self.on_report: list[Callable[[], None]] = []
        """Called when what :meth:`report` says changed in a way the federation should see
        now, not at the next heartbeat (a target caught up, the backlog count moved)."""
        self.first_ack_after_up: float | None = None
        self._moved = asyncio.Event()
        """Set (and replaced) whenever a target's known state changes: :meth:`moved`."""

    # -- for ``gns mirror sync`` / ``verify`` at the site (edge.mirroring) ------------------
    def workers_for(self, policy: str, target: str = "") -> list[Worker]:
        """The workers of ``policy`` (only ``target``'s, if named) as the slice has them now."""
        self._reconcile()
        return [w for w in self.workers.values() if w.policy == policy and (not target or w.target == target)]

    async def endpoint(self, w: Worker) -> str:
        """The up relay whose calls reach ``w``'s target (the hub, for an object store)."""
        return await self.uplink(self._hub() if w.uri else w.target)

    async def moved(self, timeout: float) -> None:
        """Return once a target's known state changes (a version acked, a failure, its
        state asked), or after ``timeout`` seconds, whichever is first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._moved.wait(), timeout)

    def forget(self, w: Worker) -> None:
        """Something else changed ``w``'s target (a verify repaired it): ask it again."""
        w.acked = -1
        self._note_moved()
        self.kick()

    def _note_moved(self) -> None:
        self._moved.set()
        self._moved = asyncio.Event()

    # -- triggers -------------------------------------------------------------------------
    def kick(self, *_: Any) -> None:
        self._kick.set()

    def committed(self, volume: str, version: int) -> None:
        now = time.time()
        for w in self.workers.values():
            if w.volume == volume and w.pending_since is None:
                w.pending_since = now
        self._stale = True
        self._kick.set()

    def _progressed(self, caught_up: bool) -> None:
        """A target committed a version: the backlog shrank (the loop recounts it within a
        second and reports a change). Once a target has caught up, the federation hears it
        now: ``mirror status`` would show it one behind until the next heartbeat."""
        self._stale = True
        self._note_moved()
        if caught_up:
            self._report_soon()

    def _report_soon(self) -> None:
        for cb in list(self.on_report):
            cb()

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while True:
                self._reconcile()
                if await self._recount():
                    self._report_soon()
                wait = 1.0
                if self._stale:  # recount once the throttle allows
                    wait = max(0.01, 1.0 - (time.monotonic() - self._backlog_at))
                try:
                    await asyncio.wait_for(self._kick.wait(), timeout=wait)
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
                if not isinstance(t, dict):
                    continue
                if t.get("cluster") and t["cluster"] != self.site:
                    key, uri = (name, str(t["cluster"])), ""
                elif t.get("uri"):
                    key, uri = (name, uri_target_name(str(t["uri"]))), str(t["uri"])
                else:
                    continue
                wanted.add(key)
                if key not in self.workers:
                    self.workers[key] = Worker(name, vol.name, key[1], uri=uri)
        for key in list(self.workers):
            if key not in wanted:
                w = self.workers.pop(key)
                if w.task is not None:
                    w.task.cancel()

    def _hub(self) -> str:
        """The hub's cluster name (calls addressed to it ride the bulk lane; "" would not)."""
        view = self.cache.view
        mine = view.clusters.get(self.site)
        for name, spec in view.clusters.items():
            if mine is not None and name != self.site and spec.endpoint == mine.endpoint and name in view.alive:
                return name
        return ""

    async def _drain(self, w: Worker) -> None:
        """Ship every version the target lacks while the link lives (a cluster target gets
        each version as its own commit; an object store the newest at each pass)."""
        failures = 0
        while True:
            await self.link_up.wait()
            if not w.uri and w.target not in self.cache.view.alive:
                return  # the hub tells us when it is back (a new slice kicks us)
            vs = await self._io(self.volumes.storage, w.volume, create=True)
            head = int(vs.version)
            if 0 <= w.acked >= head:
                w.pending_since = None
                return
            endpoint = await self.endpoint(w)
            w.syncing = True
            try:
                if w.uri:
                    # An object store keeps one version (its manifest): each pass commits
                    # the newest, through the hub, which makes the requests (SPEC §8: the
                    # site dials only its hub and holds no cloud credentials).
                    result = await self._io(self._object_pass, w, vs, endpoint, head)
                else:
                    if w.acked < 0:  # the target itself is the resume point
                        w.acked, w.epoch = await self._io(self._target_state, w, endpoint)
                        w.held = w.acked
                        self._note_moved()
                        if w.acked >= head:
                            w.syncing = False
                            continue
                    same_history = w.epoch == int(vs.epoch) or w.acked == 0
                    replayed = False
                    if same_history and w.acked >= int(vs.journal_floor):
                        loop = asyncio.get_running_loop()
                        try:
                            await self._io(self._ship_versions, w, vs, endpoint, head,
                                           lambda v, n, f: loop.call_soon_threadsafe(
                                               self._acked, w, v, int(vs.epoch), n, f, v >= head))
                            replayed = True
                        except ContentGone as gone:
                            log.info("site %s: %s; shipping %s to %s as one full pass", self.site,
                                     gone, w.volume, w.target)
                    if replayed:
                        w.syncing = False
                        failures = 0
                        continue
                    # A journal gap, another epoch's history, or a version whose content is
                    # gone: one full pass by the mirror engine.
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
                self._note_moved()
                if not self.link_up.is_set():
                    # The link died under the call: wait for it (loop top), not for a backoff
                    # that could still be running when it comes back.
                    failures = 0
                    continue
                await asyncio.sleep(min(2.0, 0.2 * 2 ** min(failures, 4)))
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
                w.acked = w.held = result.version
                w.epoch = int(vs.epoch)
                w.synced_at = time.time()
                if w.acked >= int(vs.version):
                    w.pending_since = None
                self._progressed(caught_up=w.acked >= int(vs.version))

    def _acked(self, w: Worker, version: int, epoch: int, nbytes: int, nfiles: int, caught_up: bool) -> None:
        if self.first_ack_after_up is None:
            self.first_ack_after_up = time.monotonic()
        w.shipped = (w.shipped + [version])[-1000:]
        w.acked, w.epoch = version, epoch
        w.held = version
        w.bytes += nbytes
        w.files += nfiles
        w.synced_at = time.time()
        self._progressed(caught_up)

    def _target_state(self, w: Worker, endpoint: str) -> tuple[int, int]:
        target = ClusterTarget(w.target, w.volume, self.site, endpoint, None, self.site, 0)
        try:
            st = target.state()
            return int(st.version), int(st.epoch)
        finally:
            target.close()

    def _ship_versions(self, w: Worker, vs: Any, endpoint: str, head: int,
                       acked: Callable[[int, int, int], None]) -> None:
        """Versions acked+1 .. head, in order, each committed as its own version.

        Versions go in groups of consecutive versions (about ``GROUP_BYTES`` of new blobs,
        at most ``GROUP_VERSIONS``): one ``PutBlob`` call carries a group's blobs, one
        ``Commit`` call its versions (the replica applies them one transaction each, in
        order). While a group commits, the blobs of the next ``AHEAD`` groups upload; a blob
        is invisible at the target until a commit names it. Two calls per group instead of
        two per version: over the link each call costs a round trip through three
        processes, which bounded the drain before.

        Blocking (a worker thread); ``acked(v, bytes, files)`` after the target committed v.
        """
        _, pin = vs.pin()  # what is stored now stays stored while it ships (ContentGone)
        channel = sync_channel(endpoint, None)
        stub = pb_grpc.ReplicationStub(channel)
        epoch = int(vs.epoch)
        uploads = ThreadPoolExecutor(max_workers=AHEAD, thread_name_prefix=f"ship-{w.volume}")

        def upload(files: list[Any]) -> None:
            if not files:
                return

            def chunks() -> Iterator[pb.ReplicaBlobChunk]:
                for f in files:
                    yield pb.ReplicaBlobChunk(header=pb.ReplicaBlobHeader(
                        volume=w.volume, source=self.site, epoch=epoch, sha256=f.sha256, size=f.size))
                    with vs.open_blob(f.sha256) as src:
                        while block := src.read(CHUNK_SIZE):
                            yield pb.ReplicaBlobChunk(data=block)

            stub.PutBlob(chunks(), timeout=3600)

        def commit(group: list[Version]) -> None:
            def chunks() -> Iterator[pb.ReplicaCommitChunk]:
                last = group[-1][0]
                for version, copies, deleted in group:
                    yield pb.ReplicaCommitChunk(header=pb.ReplicaCommitHeader(
                        volume=w.volume, source=self.site, epoch=epoch, version=version, full=False,
                        with_dirs=version == last, ends=True))
                    if version == last:  # explicit (empty) dirs are no journal file change: the set, whole
                        for dpath, dmode, dmtime in vs.dirs():
                            yield pb.ReplicaCommitChunk(dir=pb.ReplicaDir(path=dpath, mode=dmode, mtime=dmtime))
                    for f in copies:
                        yield pb.ReplicaCommitChunk(put=pb.ReplicaFile(
                            path=f.path, size=f.size, sha256=f.sha256, mtime=f.mtime, mode=getattr(f, "mode", 0)))
                    for path in deleted:
                        yield pb.ReplicaCommitChunk(delete=path)
                    yield pb.ReplicaCommitChunk(end=pb.ReplicaCommitEnd())

            reply = stub.Commit(chunks(), timeout=600)
            last = group[-1][0]
            if int(reply.version) != last:
                raise Conflict(f"target {w.target} committed v{reply.version}, not v{last}")

        pending: collections.deque[tuple[list[Version], Future[None]]] = collections.deque()
        nxt = w.acked + 1
        first = True
        try:
            while pending or nxt <= head:
                while nxt <= head and len(pending) < AHEAD:
                    # The first group is one version: the first change lands as soon as it can.
                    group, nxt = _group(vs, nxt, head, 1 if first else GROUP_VERSIONS)
                    first = False
                    unique = {f.sha256: f for _, copies, _ in group for f in copies}
                    pending.append((group, uploads.submit(upload, list(unique.values()))))
                group, fut = pending.popleft()
                fut.result()
                commit(group)
                for version, copies, deleted in group:
                    acked(version, sum(f.size for f in copies), len(copies) + len(deleted))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"target {w.target}") from None
        finally:
            uploads.shutdown(wait=True, cancel_futures=True)
            channel.close()
            vs.unpin(pin)

    @contextlib.contextmanager
    def target(self, w: Worker, vs: Any, endpoint: str) -> Iterator[ObjectStoreTarget | ClusterTarget]:
        """``w``'s target as the mirror engine takes it, reached through ``endpoint`` (an up
        relay): an object store through the hub's relay, else the target cluster's replica
        of volume ``vs``; closed on leaving. Blocking (a worker thread)."""
        if w.uri:
            store = relayed_store(w.uri, endpoint)
            try:
                if store.scheme == "file":
                    store.make_container()  # made by the hub, as a core owner has its own made
                yield ObjectStoreTarget(store, w.target, volume=w.volume)
            finally:
                store.close()
            return
        replica = ClusterTarget(w.target, w.volume, self.site, endpoint, None, self.site, int(vs.epoch),
                                dirs=vs.dirs)
        try:
            yield replica
        finally:
            replica.close()

    def _object_pass(self, w: Worker, vs: Any, endpoint: str, cap: int) -> Any:
        with self.target(w, vs, endpoint) as store:
            return run_pass(_Capped(vs, cap), store, workers=4)

    def _pass(self, w: Worker, vs: Any, endpoint: str, cap: int) -> Any:
        known = TargetState(w.acked, w.epoch) if w.acked >= 0 and w.epoch == int(vs.epoch) else None
        with self.target(w, vs, endpoint) as replica:
            assert isinstance(replica, ClusterTarget)  # w.uri is empty: the caller's branch
            return run_pass(_Capped(vs, cap), _Known(replica, known), workers=2)

    # -- what the heartbeat reports ---------------------------------------------------------
    def statuses(self) -> list[dict[str, Any]]:
        return [{
            "policy": w.policy, "volume": w.volume, "target": w.target, "version": max(0, w.held),
            "epoch": w.epoch, "synced_at": w.synced_at, "bytes": w.bytes, "files": w.files,
            "last_error": w.last_error, "error_at": w.error_at, "syncing": w.syncing,
            "pending_since": w.pending_since, "updated": time.time(),
        } for w in self.workers.values() if w.held >= 0 or w.last_error]

    def backlog(self) -> tuple[int, int]:
        """(versions, bytes) not yet at every target, as last counted (``run`` recounts it
        off the event loop at most once a second: summing a long journal takes a while)."""
        return self._backlog

    def _count_backlog(self) -> tuple[int, int]:
        """Versions (and their bytes) past what each target last held. ``held``, not
        ``acked``: a failed call (a link cut mid-ship, a target down) forgets ``acked`` so
        the target is asked again, but what it held is still there; counting from 0 then
        showed the whole volume as backlog."""
        versions = nbytes = 0
        for w in list(self.workers.values()):
            if not self.volumes.has_local(w.volume):
                continue
            vs = self.volumes.storage(w.volume)
            held = max(0, w.held)
            behind = max(0, int(vs.version) - held)
            versions += behind
            if not behind:
                continue
            floor = int(vs.journal_floor)
            if held < floor:
                # The journal no longer reaches back to what the target holds (the volume
                # came here as a replica, at the version it was copied at): a full pass
                # sends the whole volume, so that is the backlog. (Reading the journal from
                # there raised, and the error ended the site's process for good.)
                nbytes += vs.usage()[1]
            else:
                nbytes += sum(e.size for e in vs.journal(held))
        return versions, nbytes

    async def _recount(self) -> bool:
        """Count the backlog again (at most once a second); whether the count changed."""
        now = time.monotonic()
        if now - self._backlog_at < 1.0:
            return False
        self._backlog_at = now
        self._stale = False
        try:
            counted = await self._io(self._count_backlog)
        except (GnsError, OSError) as exc:  # a count, not shipping: never the site's end
            log.warning("site %s: counting the backlog failed: %s", self.site, exc)
            return False
        changed, self._backlog = counted != self._backlog, counted
        return changed

    def report(self) -> Report:
        vols = []
        for name in self.cache.owned():
            if self.volumes.has_local(name):
                vs = self.volumes.storage(name)
                vols.append((name, int(vs.version), int(vs.epoch)))
        versions, nbytes = self.backlog()
        return Report(volumes=vols, mirror_status_json=json.dumps(self.statuses()).encode(),
                      backlog_versions=versions, backlog_bytes=nbytes)
