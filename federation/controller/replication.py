"""Cluster mirror targets: the replica side (gRPC ``Replication`` service) and the owner
side (:class:`ClusterTarget`, a ``mirroring.protocols.MirrorTarget`` over gRPC).

The replica accepts blobs and commits only from the volume's current owner at an epoch not
older than its own, so a fenced former owner can never overwrite a replica. A commit is one
SQLite transaction on the replica: it never reports a version it does not fully hold.
"""
from __future__ import annotations

import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.errors import from_rpc_error
from federation.channels import CHUNK_SIZE, sync_channel
from federation.controller.handler_io import IOPool, read_header
from federation.controller.volumes import VolumeManager
from federation.storage import FileMeta
from federation.stream_feed import feed_blocking
from mirroring.protocols import FileLike, TargetFile, TargetState
from namespace.errors import Conflict, InvalidInput, StaleEpoch, Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_LACKS_BATCH = 10_000
"""Blobs per ``Lacks`` call (the request stays well under gRPC's 4 MiB message limit)."""
SMALL_BLOB = 1 << 20
"""Blobs up to this size are gathered in memory, then written by one pool call."""


class ReplicationService(pb_grpc.ReplicationServicer):
    """The replica side: holds copies of volumes other clusters own."""

    def __init__(self, cluster: str, volumes: VolumeManager, pool: ThreadPoolExecutor) -> None:
        self.cluster = cluster
        self.volumes = volumes
        self.pool = pool
        self._io = IOPool(pool).run
        self._io_to_end = IOPool(pool).run_to_end
        self._commit_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _commit_lock(self, volume: str) -> threading.Lock:
        """One commit at a time per replica: the owner's mirror worker and a hand-over's
        final sync may both deliver the same version, and the second must see the first."""
        with self._locks_lock:
            return self._commit_locks.setdefault(volume, threading.Lock())

    def _check_sender(self, volume: str, source: str, epoch: int) -> None:
        vol = self.volumes.volume(volume)
        if vol.owner == self.cluster:
            raise Conflict(f"cluster {self.cluster} owns volume {volume!r}; it is not a replica")
        if source != vol.owner:
            raise StaleEpoch(f"{source} is not the owner of volume {volume!r} (owner {vol.owner})")
        if epoch < vol.epoch:
            raise StaleEpoch(f"replica write for {volume!r} at epoch {epoch} < current {vol.epoch}")

    def _replica(self, volume: str) -> Any:
        vs = self.volumes.storage(volume, create=True)
        if vs.role == "primary":
            # A former owner that has not yet kept its diverged writes aside: not yet.
            raise Unavailable(f"cluster {self.cluster} is failing back volume {volume!r}; retry shortly")
        return vs

    async def State(self, request: pb.ReplicaStateRequest, context: grpc.aio.ServicerContext) -> pb.ReplicaStateReply:
        self.volumes.volume(request.volume)
        if not self.volumes.has_local(request.volume):
            return pb.ReplicaStateReply(exists=False)
        vs = await self._io(self._replica, request.volume)
        return pb.ReplicaStateReply(version=vs.version, epoch=vs.epoch, exists=True)

    async def Files(self, request: pb.ReplicaFilesRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ReplicaFile]:
        self.volumes.volume(request.volume)
        if not self.volumes.has_local(request.volume):
            return
        vs = await self._io(self._replica, request.volume)
        it = await self._io(vs.files)
        sentinel = object()
        try:
            while True:
                f = await self._io(next, it, sentinel)
                if f is sentinel:
                    break
                yield pb.ReplicaFile(path=f.path, size=f.size, sha256=f.sha256, mtime=f.mtime)
        finally:
            close = getattr(it, "close", None)
            if close:
                await self._io_to_end(close)

    async def Has(self, request: pb.ReplicaHasRequest, context: grpc.aio.ServicerContext) -> pb.ReplicaHasReply:
        self.volumes.volume(request.volume)
        if not self.volumes.has_local(request.volume):
            return pb.ReplicaHasReply(has=False)
        vs = await self._io(self._replica, request.volume)
        return pb.ReplicaHasReply(has=bool(vs.has_blob(request.sha256)))

    async def Lacks(self, request: pb.ReplicaLacksRequest, context: grpc.aio.ServicerContext) -> pb.ReplicaLacksReply:
        """Which of a batch of blobs this replica does not hold (indexes into the request);
        with ``rehash``, does not hold intact (re-read and hashed here, next to the disk,
        rather than sent to the owner to hash)."""
        if len(request.sha256) > MAX_LACKS_BATCH:
            raise InvalidInput(f"at most {MAX_LACKS_BATCH} blobs per Lacks call, got {len(request.sha256)}")
        self.volumes.volume(request.volume)
        if not self.volumes.has_local(request.volume):
            return pb.ReplicaLacksReply(lacking=range(len(request.sha256)))
        vs = await self._io(self._replica, request.volume)
        shas = list(request.sha256)

        held = vs.holds_intact if request.rehash else vs.has_blob

        def lacking() -> list[int]:
            return [i for i, sha in enumerate(shas) if not held(sha)]

        return pb.ReplicaLacksReply(lacking=await self._io(lacking))

    async def PutBlob(self, request_iterator: AsyncIterator[pb.ReplicaBlobChunk], context: grpc.aio.ServicerContext) -> pb.ReplicaBlobReply:
        """One or more blobs, each a header then its data (several small blobs in one call
        save a round trip each over a slow path such as an edge link)."""
        h, it = await read_header(request_iterator, "blob")
        digest = ""
        while h is not None:
            self._check_sender(h.volume, h.source, h.epoch)
            vs = await self._io(self._replica, h.volume)
            if 0 < h.size <= SMALL_BLOB:
                # Gathered here, then written in one go: a pool thread is held only for the
                # write and fsync, not while the bytes cross the network (an owner keeps
                # many small blobs in flight; the pool also serves reads).
                blob_h, h, parts = h, None, []
                got = 0
                async for msg in it:
                    if msg.WhichOneof("part") == "header":
                        h = msg.header
                        break
                    got += len(msg.data)
                    if got > blob_h.size:
                        raise InvalidInput(f"blob {blob_h.sha256}: more than the {blob_h.size} bytes its header says")
                    parts.append(msg.data)
                digest = str(await self._io(vs.ingest_blob, parts, expect_sha256=blob_h.sha256))
                continue
            # ingest_blob pulls chunks from a blocking iterator: fed from the stream, up to
            # the next blob's header.
            blob_h, h = h, None

            async def data() -> AsyncIterator[bytes]:
                nonlocal h
                async for msg in it:
                    if msg.WhichOneof("part") == "header":
                        h = msg.header
                        return
                    yield msg.data

            digest = str(await feed_blocking(
                functools.partial(vs.ingest_blob, expect_sha256=blob_h.sha256), data(), self.pool))
        return pb.ReplicaBlobReply(sha256=digest)

    async def Commit(self, request_iterator: AsyncIterator[pb.ReplicaCommitChunk], context: grpc.aio.ServicerContext) -> pb.ReplicaCommitReply:
        """One version, or several consecutive ones (each header starts the next version).

        Each version is applied in its own transaction, in order: a replica never shows a
        partial version, and a failure part-way leaves the versions before it committed
        (the sender asks ``State`` and resumes from there). A stream that ends inside a
        version whose header promised an ``end`` (its sender died) is refused whole."""
        h, it = await read_header(request_iterator, "commit")
        versions: list[tuple[Any, list[FileMeta], list[str], list[tuple[str, int, float]] | None]] = []
        cut: int | None = None  # a version whose header promised an end that never came
        while h is not None:
            self._check_sender(h.volume, h.source, h.epoch)
            if versions:
                prev = versions[-1][0]
                if h.volume != prev.volume or h.full or h.version != prev.version + 1:
                    raise InvalidInput(f"commit stream: v{h.version} of {h.volume!r} does not follow "
                                       f"v{prev.version} of {prev.volume!r}")
            puts: list[FileMeta] = []
            deletes: list[str] = []
            dirs: list[tuple[str, int, float]] | None = [] if h.with_dirs else None
            versions.append((h, puts, deletes, dirs))
            ended = not h.ends
            h = None
            async for msg in it:
                kind = msg.WhichOneof("part")
                if kind == "header":
                    h = msg.header
                    break
                if kind == "end":
                    ended = True
                elif kind == "put":
                    p = msg.put
                    puts.append(FileMeta(p.path, p.size, p.sha256, p.mtime, versions[-1][0].version, p.mode or 0o644))
                elif kind == "delete":
                    deletes.append(msg.delete)
                elif kind == "dir" and dirs is not None:
                    dirs.append((msg.dir.path, msg.dir.mode or 0o755, msg.dir.mtime))
            if not ended and cut is None:
                cut = int(versions[-1][0].version)
        if cut is not None:
            # The sender went away inside a version: nothing of this stream is applied (it
            # resumes from State, and the versions before the cut come again).
            raise Unavailable(f"commit stream ended inside v{cut} (the sender went away); nothing applied")
        volume = versions[0][0].volume
        vs = await self._io(self._replica, volume)

        def apply() -> int:
            with self._commit_lock(volume):
                for hv, puts, deletes, dirs in versions:
                    commit(hv, puts, deletes, dirs)
                return int(vs.version)

        def commit(h: Any, puts: list[FileMeta], deletes: list[str], dirs: list[tuple[str, int, float]] | None) -> None:
            if vs.epoch > h.epoch:
                raise StaleEpoch(f"replica of {h.volume!r} holds epoch {vs.epoch} > {h.epoch}")
            if vs.epoch < h.epoch:
                vs.set_epoch(h.epoch)
            if h.full:
                vs.reset_to(puts, h.version, dirs)
            elif h.version != vs.version:
                vs.apply_changes(puts, deletes, h.version, dirs)

        version = await self._io(apply)
        log.debug("replica %s of %s committed v%d", self.cluster, volume, version)
        return pb.ReplicaCommitReply(version=version)


class ClusterTarget:
    """A replica on another cluster's controller, as a ``MirrorTarget`` (blocking calls:
    the engine runs in a worker thread)."""

    def __init__(self, name: str, volume: str, source_cluster: str, endpoint: str,
                 tls_dir: Path | None, identity: str, epoch: int,
                 dirs: Callable[[], list[tuple[str, int, float]]] | None = None) -> None:
        self.name = name
        self._dirs = dirs  # the owner's explicit directories, sent whole with each commit
        self.volume = volume
        self.source = source_cluster
        self._channel = sync_channel(endpoint, tls_dir, identity)
        self._stub = pb_grpc.ReplicationStub(self._channel)
        self._full = False
        self._touched: set[str] = set()
        self._deleted: list[str] = []
        self._epoch = epoch  # the owner's epoch: replicas refuse older ones
        self._no_lacks = False  # the replica answered Lacks with UNIMPLEMENTED (older release)

    def close(self) -> None:
        self._channel.close()

    def _call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        try:
            return fn(*args, timeout=kw.pop("timeout", 60), **kw)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"replica {self.name}") from None

    def state(self) -> TargetState:
        r = self._call(self._stub.State, pb.ReplicaStateRequest(volume=self.volume))
        return TargetState(version=int(r.version), epoch=int(r.epoch))

    def files(self) -> Iterator[TargetFile]:
        self._full = True
        call = self._stub.Files(pb.ReplicaFilesRequest(volume=self.volume), timeout=3600)
        try:
            for f in call:
                yield TargetFile(f.path, int(f.size), f.sha256, f.mtime)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"replica {self.name}") from None
        finally:
            call.cancel()  # a reader that stops early must not leave the stream open

    def has(self, path: str, sha256: str) -> bool:
        found = bool(self._call(self._stub.Has, pb.ReplicaHasRequest(volume=self.volume, sha256=sha256)).has)
        if found:
            self._touched.add(path)  # placed by the commit without sending bytes
        return found

    def has_many(self, files: Sequence[tuple[str, str]]) -> list[bool]:
        """``has`` for a batch of (path, sha256), in one ``Lacks`` call per
        ``MAX_LACKS_BATCH``: a full-compare pass asks before sending, so blobs an
        interrupted pass already delivered are not sent again."""
        found: list[bool] = []
        for i in range(0, len(files), MAX_LACKS_BATCH):
            batch = files[i:i + MAX_LACKS_BATCH]
            if self._no_lacks:
                found += [self.has(path, sha) for path, sha in batch]
                continue
            try:
                r = self._stub.Lacks(pb.ReplicaLacksRequest(
                    volume=self.volume, sha256=[sha for _, sha in batch]), timeout=60)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise from_rpc_error(exc, f"replica {self.name}") from None
                # A replica of a release before Lacks: ask per blob, as that release did.
                self._no_lacks = True
                found += [self.has(path, sha) for path, sha in batch]
                continue
            lacking = set(r.lacking)
            for j, (path, _) in enumerate(batch):
                held = j not in lacking
                if held:
                    self._touched.add(path)  # placed by the commit without sending bytes
                found.append(held)
        return found

    def rehash_blobs(self, sha256s: Sequence[str]) -> set[str]:
        """Which of these blobs the replica does not hold intact: it re-reads and hashes
        each one it has, next to its disk, and sets aside any that no longer match."""
        bad: set[str] = set()
        for i in range(0, len(sha256s), MAX_LACKS_BATCH):
            batch = list(sha256s[i:i + MAX_LACKS_BATCH])
            r = self._call(self._stub.Lacks, pb.ReplicaLacksRequest(volume=self.volume, sha256=batch, rehash=True),
                           timeout=3600)
            bad.update(batch[j] for j in r.lacking)
        return bad

    def put(self, path: str, size: int, sha256: str, mtime: float, data: BinaryIO) -> None:
        header = pb.ReplicaBlobHeader(volume=self.volume, source=self.source, epoch=self._epoch,
                                      sha256=sha256, size=size)

        def chunks() -> Iterator[pb.ReplicaBlobChunk]:
            yield pb.ReplicaBlobChunk(header=header)
            while block := data.read(CHUNK_SIZE):
                yield pb.ReplicaBlobChunk(data=block)

        self._call(self._stub.PutBlob, chunks(), timeout=3600)
        self._touched.add(path)

    def delete(self, paths: Iterable[str]) -> None:
        self._deleted.extend(paths)

    def commit(self, version: int, epoch: int, files: Iterable[FileLike]) -> None:
        header = pb.ReplicaCommitHeader(volume=self.volume, source=self.source, epoch=epoch,
                                        version=version, full=self._full,
                                        with_dirs=self._dirs is not None, ends=True)
        dirs = self._dirs() if self._dirs is not None else []
        full, touched, deleted = self._full, self._touched, self._deleted

        def chunks() -> Iterator[pb.ReplicaCommitChunk]:
            yield pb.ReplicaCommitChunk(header=header)
            for f in files:
                if full or f.path in touched:
                    yield pb.ReplicaCommitChunk(put=pb.ReplicaFile(
                        path=f.path, size=f.size, sha256=f.sha256, mtime=f.mtime,
                        mode=getattr(f, "mode", 0)))
            if not full:
                for path in deleted:
                    yield pb.ReplicaCommitChunk(delete=path)
            for path, mode, mtime in dirs:
                yield pb.ReplicaCommitChunk(dir=pb.ReplicaDir(path=path, mode=mode, mtime=mtime))
            yield pb.ReplicaCommitChunk(end=pb.ReplicaCommitEnd())

        self._call(self._stub.Commit, chunks(), timeout=3600)
        self._full, self._touched, self._deleted = False, set(), []
