"""The :class:`Client` facade: every operation of the typed Python API in one object.

The data commands live here; control commands come from
:class:`~federation.client.control.ControlCommands` (etcd path) or, with ``controller=``,
from :mod:`federation.remote`. Data requests are routed by
:class:`~federation.client.routing.Routing` and stream through :mod:`federation.client.streams`.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO, Any, cast

import grpc
from google.protobuf.message import DecodeError

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.errors import from_rpc_error
from federation.api.wire import read_data
from federation.channels import CHUNK_SIZE
from federation.client.connection import FederationStub
from federation.client.control import ControlCommands
from federation.client.discovery import find_etcd, find_tls_dir
from federation.client.models import DirEntry, FileInfo
from federation.client.put_batching import PutBatcher
from federation.client.routing import Routing
from federation.client.streams import (
    ChangeStream,
    Progress,
    RangedReader,
    StreamingWriter,
    TextWriter,
    dir_entry,
    file_info,
    read_at_least,
    seekable_source,
    size_of,
    write_local_file,
)
from federation.loop_thread import LoopThread
from namespace.cache import NamespaceCache, load_mount_points
from namespace.control import resolve_in
from namespace.errors import (
    Conflict,
    FileNotFound,
    GnsError,
    InternalError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from namespace.etcd import Etcd, EtcdConfig
from namespace.mounts import MOUNT_DIR_MODE, MountsAt, with_mount_points
from namespace.paths import check_name, join, normalize

# Closes the data of a write whose header says ``ends``: without it the owner takes the
# stream as cut (its sender killed) and commits nothing (WriteHeader.ends in the proto).
_WRITE_END = pb.WriteChunk(data=b"")



def _payloads(call: Any) -> Iterator[memoryview]:
    """The data of a Read reply stream's messages (empty ones skipped)."""
    for message in call:
        data = read_data(message)
        if data:
            yield data

class Client(ControlCommands, Routing):
    """A connection to one federation. Thread-safe for data calls; close it when done."""

    def __new__(cls, *args: Any, controller: str | None = None, **kw: Any) -> Client:
        """``Client(controller="host:port")`` is a :class:`federation.remote.RemoteClient`:
        every command goes to that controller over gRPC, none to etcd (SPEC §4)."""
        if controller and cls is Client:
            from federation.remote import RemoteClient

            return object.__new__(RemoteClient)
        return object.__new__(cls)

    def __init__(
        self,
        etcd: str | EtcdConfig | None = None,
        *,
        home: str | Path | None = None,
        via: str | None = None,
        tls_dir: str | Path | None = None,
        consistency: str = "owner",
        max_staleness: float = 60.0,
        chunk_size: int = CHUNK_SIZE,
        watch: bool = True,
        controller: str | None = None,
        identity: str | None = None,
        tunnel: bool = True,
        put_timeout: float | None = None,
    ) -> None:
        if via is not None:
            check_name("cluster", via)
        if consistency not in ("owner", "any"):
            raise InvalidInput(f"invalid consistency {consistency!r}: 'owner' or 'any'")
        if max_staleness < 0:
            raise InvalidInput("max staleness must not be negative")
        # With a controller (federation.remote.RemoteClient) this client never touches etcd.
        self.etcd_config: EtcdConfig | None = (
            None if controller else etcd if isinstance(etcd, EtcdConfig)
            else EtcdConfig.parse(find_etcd(etcd, home))
        )
        self.tls_dir = find_tls_dir(tls_dir, home)
        self.identity = identity or os.environ.get("GNS_IDENTITY") or "client"
        self.via = via
        self.tunnel = tunnel
        self.consistency = consistency
        self.max_staleness = max_staleness
        self.chunk_size = chunk_size
        self._watch = watch
        self._loop: LoopThread | None = None
        self._etcd: Etcd | None = None
        self._cache: NamespaceCache | None = None
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, FederationStub] = {}
        # Endpoints that answered Put with UNIMPLEMENTED (older servers): Write there.
        self._no_put: set[pb_grpc.FederationStub] = set()
        # A put fails (Unavailable) once its owner has taken nothing and answered nothing
        # for this long (None: it waits as long as the connection lives). FUSE sets its
        # --timeout: a close must not hang on a frozen owner (SPEC §12).
        self.put_timeout = put_timeout
        self._put_batcher = PutBatcher(put_timeout)
        self._lock = threading.Lock()
        self._tunnels_down: dict[str, float] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- data -----------------------------------------------------------------------------
    def stat(self, path: str) -> FileInfo:
        """A file or directory. A mount point, or a path under no mount that is a prefix of
        mounts (``/``), is a directory whatever a volume holds there, as ``ls`` shows it;
        NotFound if it is not even that."""
        path = normalize(path)
        try:
            info: pb.FileInfo = self._call(lambda s, t: s.Stat(pb.StatRequest(target=t), timeout=30),
                                           path, read=True, hedge=True)
        except NotFound:
            # Asked only now: a one-shot stat costs no mount-table reads when it succeeds.
            if not self._mount_points(path).is_dir:
                raise
            return _mount_dir_info(path)
        mirrored = None
        if info.stale:
            from federation.resolution import away_site_replica

            away = away_site_replica(self.view(), resolve_in(self.view(), normalize(path)).volume)
            if away is not None:
                mirrored = int(away["version"])
        return file_info(info, mirrored_version=mirrored)

    def ls(self, path: str) -> list[DirEntry]:
        """The entries of directory ``path`` (an away edge site's mirror may answer), with
        the mount points below it as directories. A path under no mount that is a prefix
        of mounts (``/``) lists just those; NotFound if it is not even that."""
        path = normalize(path)
        at = self._mount_points(path)
        if at.below and not at.mounted:
            return with_mount_points([], at.below, _mount_dir)
        try:
            reply: pb.ListReply = self._call(lambda s, t: s.List(pb.ListRequest(target=t), timeout=30),
                                             path, read=True, hedge=True)
        except FileNotFound:
            # No such directory in the volume: still one if a mount is at it (its subpath
            # has nothing yet) or below it.
            if not at.is_dir:
                raise
            return with_mount_points([], at.below, _mount_dir)
        return with_mount_points([dir_entry(e) for e in reply.entries], at.below, _mount_dir)

    def _mount_points(self, path: str) -> MountsAt:
        """What the mount table says of normal ``path`` (mount points below it, one at it,
        whether it is under one). A RemoteClient leaves it to its controller, whose List and
        Stat add mount points. A one-shot client (no watch) reads only the mount keys below
        and above ``path``, not the whole namespace (issue 14: CLI latency)."""
        if not self._watch:
            return self._run(load_mount_points(self._control().etcd, path))
        return self.view().mounts.at(path)

    def listdir(self, path: str) -> list[DirEntry]:
        """The volume's own entries of ``path``, from the owner only, without mount points
        (FUSE lists through it and adds the mount points itself)."""
        reply: pb.ListReply = self._call(lambda s, t: s.List(pb.ListRequest(target=t), timeout=30), path)
        return [dir_entry(e) for e in reply.entries]

    def rm(self, path: str, recursive: bool = False, *, epoch: int | None = None,
           keep_parent: bool = False) -> int:
        """Delete a file (or with ``recursive`` a directory); ``keep_parent`` (POSIX unlink)
        keeps a parent directory that this leaves empty."""
        try:
            reply = self._call(
                lambda s, t: s.Delete(pb.DeleteRequest(target=t, recursive=recursive,
                                                       keep_parent=keep_parent), timeout=60),
                path, epoch,
            )
        except NotFound:
            self._mount_points(normalize(path)).refuse(normalize(path), "remove")
            raise
        return int(reply.version)

    # -- namespace edits (SPEC §5): rename, directories, attributes, the change stream -------
    def volume_of(self, path: str) -> str:
        """The volume holding global ``path`` (raises NotFound when unmounted)."""
        return resolve_in(self.view(), normalize(path)).volume

    def mv(self, src: str, dst: str) -> int:
        """Rename a file or directory within one volume atomically (one version); returns it.

        ``dst`` is the new name exactly, as in ``rename(2)``: an existing directory there is
        replaced if empty (Conflict otherwise), not moved into; ``gns mv`` moves into it
        (``mv(1)``) by asking :meth:`into_dir` first. Across volumes: Conflict (exit 4);
        callers copy and delete instead (FUSE: EXDEV)."""
        src, dst = normalize(src), normalize(dst)
        if dst.startswith(src + "/"):
            self._refuse_below(src, dst)
        # Before "different volumes": a caller that copies and deletes instead (fsspec)
        # must not copy what it could never delete.
        self._refuse_unmovable(src)
        if self.volume_of(src) != self.volume_of(dst):
            self.stat(src)  # a missing source is "not found" (exit 3), as within a volume
            raise Conflict(f"cannot move {src} to {dst}: they are on different volumes")
        reply = self._call(
            lambda s, t: s.Rename(pb.RenameRequest(target=t, destination=dst), timeout=60), src
        )
        return int(reply.version)

    def _refuse_unmovable(self, src: str) -> None:
        """InvalidInput if normal ``src`` is a mount point or a directory only the mount
        table makes, as the owner's Rename says (from the keys on its way only, for a
        one-shot client)."""
        self.route_view(src).mounts.refuse_mount_point(src, "move")
        self._mount_points(src).refuse(src, "move")

    def _refuse_below(self, src: str, dst: str) -> None:
        """``dst`` is below ``src``, so the move fails; say why as mv(1) would. Below a file
        nothing can be (ENOTDIR), and a missing source is "not found" (rename(2) looks at
        the source first); what is left, a directory, the owner refuses to move into
        itself (as it does for a caller that may not read ``src``)."""
        try:
            info = self.stat(src)
        except PermissionDenied:
            return
        if not info.is_dir:
            raise InvalidInput(f"{src!r} is a file: cannot move it to {dst!r}")

    def into_dir(self, path: str, name: str | None) -> str:
        """Where ``cp``, ``mv`` and ``hdfs dfs -put`` would write a source called ``name``
        when told ``path``: ``path/name`` if ``path`` is an existing directory (a volume
        root, a directory inside a volume, a prefix of mounts), else ``path`` itself (a
        file to create or replace). ``gns put`` and ``gns mv`` ask this first; :meth:`put`
        and :meth:`mv` themselves always take their path as the exact one.

        One ``stat`` (two for a directory only the mount table makes). A ``path`` that
        cannot be stat'ed (not there, malformed below a file, not readable) is returned as
        it is, for the write to report on; Unavailable is raised, as the write would be.
        Only a caller that may not read ``path`` (a write-only drop box) and ends it with
        ``/`` gets ``path/name`` unseen: the slash says what the stat could not. A directory
        is InvalidInput for a source without a name (``name`` None or empty: stdin), and
        NotFound when no mount holds ``path/name`` (a prefix of mounts holds mount points,
        not files)."""
        as_dir = path.endswith("/")
        path = normalize(path)
        try:
            info = self.stat(path)
        except PermissionDenied:
            return normalize(join(path, name)) if as_dir and name else path
        except (InvalidInput, NotFound, Conflict):
            return path
        if not info.is_dir:
            return path
        if not name:
            raise InvalidInput(f"{path} is a directory and the data has no file name (stdin): "
                               f"give the file's path, {join(path, 'NAME')}")
        target = normalize(join(path, name))
        if info.served_by is None:  # no volume answered: the mount table made this one
            try:
                self.volume_of(target)
            except NotFound:
                raise NotFound(f"cannot write {target}: {path} is not under any mount "
                               "(it holds mount points, not files)") from None
        return target

    def mkdir(self, path: str, *, mode: int = 0o755, mtime: float | None = None) -> int:
        """Make an empty directory that persists (Conflict if something is there)."""
        reply = self._call(
            lambda s, t: s.Mkdir(pb.MkdirRequest(target=t, mode=mode, mtime=mtime or 0.0), timeout=30),
            path,
        )
        return int(reply.version)

    def rmdir(self, path: str) -> int:
        """Remove an empty directory (Conflict if it is not empty)."""
        reply = self._call(lambda s, t: s.Rmdir(pb.RmdirRequest(target=t), timeout=30), path)
        return int(reply.version)

    def set_attrs(self, path: str, *, mode: int | None = None, mtime: float | None = None) -> int:
        """``chmod`` and/or set the mtime of a file or directory, as one version."""
        def request(t: pb.Target) -> pb.SetAttrRequest:
            return pb.SetAttrRequest(
                target=t, set_mode=mode is not None, mode=mode or 0,
                set_mtime=mtime is not None, mtime=mtime or 0.0,
            )

        reply = self._call(lambda s, t: s.SetAttr(request(t), timeout=30), path)
        return int(reply.version)

    def chmod(self, path: str, mode: int) -> int:
        return self.set_attrs(path, mode=mode)

    def set_mtime(self, path: str, mtime: float) -> int:
        return self.set_attrs(path, mtime=mtime)

    def watch(self, path: str | None = None, from_version: int = 0, *,
              volume: str | None = None) -> ChangeStream:
        """Follow the committed changes of ``volume`` (or of the volume holding global
        ``path``) after ``from_version``: an iterator of :class:`Change` in version order
        that blocks for new ones; ``close()`` it to stop."""
        if volume is None:
            if path is None:
                raise InvalidInput("watch takes a global path or a volume, not both")
            stub, target, where = self._route(path)
        else:
            if path is not None:
                raise InvalidInput("watch takes a global path or a volume, not both")
            check_name("volume", volume)
            view = self.view()
            vol = view.volumes.get(volume)
            if vol is None:
                raise NotFound(f"volume {volume!r} not found")
            where = self.via or vol.owner
            spec = view.clusters.get(where)
            if spec is None or where not in view.alive:
                raise Unavailable(f"cluster {where} (owner of {volume!r}) is Down")
            stub, target = self._stub(spec.endpoint), pb.Target(volume=volume)
        call = stub.Watch(pb.WatchRequest(target=target, from_version=from_version), timeout=None)
        return ChangeStream(call, where)

    def put(
        self,
        src: str | Path | bytes | IO[bytes],
        path: str,
        *,
        epoch: int | None = None,
        mtime: float | None = None,
        progress: Progress | None = None,
        mode: int | None = None,
        if_absent: bool = False,
    ) -> FileInfo:
        """Write ``src`` (a local path, bytes or a binary file object) to global ``path``.

        ``path`` is the file written, exactly: a directory there is an error (InvalidInput),
        not a place to write into; ``gns put`` writes into one by asking :meth:`into_dir`.
        ``mode`` sets the permission bits (None keeps a replaced file's, new files 0644);
        ``if_absent`` makes it an exclusive create (Conflict if the file exists)."""

        normalize(path)
        if isinstance(src, (str, Path)):
            local = Path(src)
            if local.is_dir():
                raise InvalidInput(f"{local} is a directory; gns put copies one file")
            try:
                fh: IO[bytes] = open(local, "rb")
            except FileNotFoundError:
                raise NotFound(f"local file {local} not found") from None
            except OSError as exc:
                raise InvalidInput(f"cannot read {local}: {exc.strerror}") from None
            with fh:
                return self._put_file(fh, path, epoch, mtime, progress, mode, if_absent)
        if isinstance(src, (bytes, bytearray, memoryview)):
            data = bytes(src)
            if len(data) <= self.chunk_size:
                return self._put_whole(data, path, epoch, mtime, progress, mode, if_absent)
            return self._put_stream(io.BytesIO(data), path, epoch, mtime, progress, mode, if_absent)
        return self._put_file(src, path, epoch, mtime, progress, mode, if_absent)

    def _put_file(
        self, fh: IO[bytes], path: str, epoch: int | None, mtime: float | None, progress: Progress | None,
        mode: int | None, if_absent: bool,
    ) -> FileInfo:
        """A file object (a local file, stdin, fsspec's and FUSE's write queues). Unless its
        size says it is longer, read one byte past a chunk first: content that ends within
        it goes whole, in one unary Put, which may also be re-routed (its bytes are in
        memory, even from a pipe); longer content streams, from the start again where the
        source can seek, else with the bytes already read first. A local file that grew
        since fstat streams too."""
        seekable = seekable_source(fh)
        start = fh.tell() if seekable else 0
        if not seekable or size_of(fh) <= self.chunk_size:
            head = read_at_least(fh, self.chunk_size + 1)
            if len(head) <= self.chunk_size:
                return self._put_whole(head, path, epoch, mtime, progress, mode, if_absent)
            if not seekable:
                return self._put_stream(fh, path, epoch, mtime, progress, mode, if_absent, head)
            fh.seek(start)
        return self._put_stream(fh, path, epoch, mtime, progress, mode, if_absent)

    def _put_whole(
        self, data: bytes, path: str, epoch: int | None, mtime: float | None, progress: Progress | None,
        mode: int | None, if_absent: bool,
    ) -> FileInfo:
        """A file of at most one chunk, in one unary ``Put`` (issue 14: a client-streaming
        call costs the sync client a thread per call, and the server three stream awaits),
        or in one ``PutBatch`` with other threads' puts (:mod:`~federation.client.put_batching`);
        a server without ``Put`` gets the same header and data as a ``Write`` stream."""

        def call(stub: pb_grpc.FederationStub, target: pb.Target) -> pb.WriteReply:
            header = pb.WriteHeader(target=target, mtime=mtime or 0.0, size_hint=len(data), mode=mode or 0,
                                    if_absent=if_absent)
            reply: pb.WriteReply
            if stub not in self._no_put:
                try:
                    return self._put_batcher.put(stub, pb.PutRequest(header=header, data=data))
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                        raise
                    self._no_put.add(stub)
            header.ends = True  # only the stream has an end to promise; a Put's data comes whole
            reply = stub.Write(iter((pb.WriteChunk(header=header), pb.WriteChunk(data=data), _WRITE_END)),
                               timeout=None)
            return reply

        reply = self._call(call, path, epoch)
        if progress:
            progress(len(data))
        return file_info(reply.info)

    def _put_stream(
        self, fh: IO[bytes], path: str, epoch: int | None, mtime: float | None, progress: Progress | None,
        mode: int | None = None, if_absent: bool = False, head: bytes = b"",
    ) -> FileInfo:
        """Stream ``head`` (bytes already read from a source that cannot seek back), then
        the rest of ``fh``."""
        # A non-seekable source (stdin) can be sent once only: no re-route retry for it.
        seekable = seekable_source(fh)
        if not seekable:
            held, fh = _unbuffered(fh)
            head += held
        size_hint = size_of(fh) + len(head)
        start = fh.tell() if seekable else 0

        def call(stub: pb_grpc.FederationStub, target: pb.Target) -> pb.WriteReply:
            if seekable:
                fh.seek(start)
            header = pb.WriteHeader(target=target, mtime=mtime or 0.0, size_hint=size_hint, mode=mode or 0,
                                    if_absent=if_absent, ends=True)
            moved = [time.monotonic()]
            future = stub.Write.future(self._chunks(fh, header, progress, head, moved), timeout=None)
            try:
                reply: pb.WriteReply = self._reply_while_moving(future, moved, where=target)
            except BaseException:
                # Ctrl-C (KeyboardInterrupt) lands here: end the stream now, so the owner
                # drops the partial file and gRPC's request thread stops asking for chunks.
                future.cancel()
                raise
            return reply

        if not seekable:
            stub, target, where = self._route(path, epoch, bulk=True)
            try:
                reply = call(stub, target)
            except grpc.RpcError as exc:
                raise from_rpc_error(exc, f"cluster {where}") from None
        else:
            reply = self._call(call, path, epoch, bulk=True)
        return file_info(reply.info)

    def _reply_while_moving(self, future: Any, moved: list[float], where: pb.Target) -> pb.WriteReply:
        """The stream's reply; with ``put_timeout``, Unavailable (the call cancelled, so
        nothing is committed) once gRPC has taken no chunk and the owner has not answered
        for that long. Only a stall counts: a big file on a slow link takes as long as it
        takes, as long as it moves."""
        limit = self.put_timeout
        if limit is None:
            reply: pb.WriteReply = future.result()
            return reply
        while True:
            try:
                reply = future.result(timeout=min(1.0, limit))
                return reply
            except grpc.FutureTimeoutError:
                if time.monotonic() - moved[0] > limit:
                    future.cancel()
                    raise Unavailable(f"put of {where.global_path or where.relative_path}: the owner "
                                      f"took nothing and answered nothing for {limit:g}s") from None

    def _chunks(self, fh: IO[bytes], header: pb.WriteHeader, progress: Progress | None,
                head: bytes = b"", moved: list[float] | None = None) -> Iterator[pb.WriteChunk]:
        """The stream's messages; ``moved[0]`` is when gRPC last took one (it asks for the
        next only once it has room for it: when the owner does not read, it stops asking)."""
        moved = moved if moved is not None else [0.0]
        yield pb.WriteChunk(header=header)
        moved[0] = time.monotonic()
        for at in range(0, len(head), self.chunk_size):
            piece = head[at : at + self.chunk_size]
            yield pb.WriteChunk(data=piece)
            moved[0] = time.monotonic()
            if progress:
                progress(len(piece))
        while True:
            # Whole chunks even from a raw pipe, whose reads return at most what the pipe
            # holds (64 KiB): fewer, fuller messages.
            moved[0] = math.inf  # waiting on our source (a FUSE app's writes): no owner's stall
            data = read_at_least(fh, self.chunk_size)
            moved[0] = time.monotonic()
            if not data:
                break
            yield pb.WriteChunk(data=data)
            moved[0] = time.monotonic()
            if progress:
                progress(len(data))
        yield _WRITE_END  # the header promised it (``ends``): the owner commits only after it
        moved[0] = time.monotonic()

    def read_chunks(self, path: str, offset: int = 0, length: int = 0,
                    timeout: float | None = None) -> Generator[bytes, None, None]:
        """Stream a file's bytes (``length`` 0 = to the end; ``timeout`` bounds the whole
        stream, so give one only for bounded ranges)."""
        with contextlib.closing(self.read_views(path, offset, length, timeout)) as views:
            for view in views:
                yield bytes(view)

    def read_views(self, path: str, offset: int = 0, length: int = 0,
                   timeout: float | None = None) -> Generator[memoryview, None, None]:
        """:meth:`read_chunks` without its copy: each piece a read-only view into the
        message it came in, for a caller that copies it anyway (into one buffer, a file, the
        kernel). A view keeps its message alive."""
        try:
            stub, target, where = self._route(path, read=True, bulk=True)
        except NotFound:
            # ``/`` and other prefixes of mounts are directories (ls, stat): reading one is
            # the same error as reading a directory inside a volume, not "not found".
            if self._mount_points(normalize(path)).is_dir:
                raise InvalidInput(f"{normalize(path)} is a directory") from None
            raise
        call = stub.read_raw(pb.ReadRequest(target=target, offset=offset, length=length), timeout=timeout)
        started = False
        try:
            try:
                for data in _payloads(call):
                    started = True
                    yield data
            except grpc.RpcError as exc:
                err = from_rpc_error(exc, f"cluster {where}")
                replica = None if started else self._replica_instead(path, None, where, err)
                if replica is None:
                    raise err from None
                call.cancel()
                stub, target, where = replica
                call = stub.read_raw(pb.ReadRequest(target=target, offset=offset, length=length), timeout=timeout)
                yield from _payloads(call)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"cluster {where}") from None
        except DecodeError as exc:  # gRPC's own deserializer reported this as INTERNAL
            raise InternalError(f"cluster {where}: a Read reply does not parse: {exc}") from None
        finally:
            call.cancel()

    def get(self, path: str, dst: str | Path | IO[bytes], *, progress: Progress | None = None) -> int:
        """Copy global ``path`` to a local path (atomically) or a binary file object."""
        if isinstance(dst, (str, Path)):
            dst = Path(dst)
            if dst.is_dir():
                dst = dst / normalize(path).rsplit("/", 1)[-1]
                if dst.is_dir():  # cp: "cannot overwrite directory with non-directory"
                    raise InvalidInput(f"cannot overwrite local directory {str(dst)!r} "
                                       f"with file {normalize(path)}")
            if dst.is_symlink():  # write where it points, as cp does; never replace the link
                dst = Path(os.path.realpath(dst))
            if dst.exists() and not dst.is_file():
                # A device, FIFO or socket (/dev/null, a named pipe) is written to, never
                # replaced: the temp-and-rename that makes a regular file atomic would put a
                # plain file in its place.
                with open(dst, "wb") as out:
                    return self._copy_out(path, out, progress)
            if not dst.parent.is_dir():
                raise FileNotFound(f"local directory {str(dst.parent)!r} does not exist")
            tmp = dst.with_name(f".{dst.name}.gns-partial")
            try:
                n = write_local_file(tmp, self.read_views(path), progress)
                os.replace(tmp, dst)
            except BaseException as exc:
                tmp.unlink(missing_ok=True)
                if isinstance(exc, OSError) and not isinstance(exc, GnsError) and exc.strerror:
                    # the local side's: said of DST, not of the temp file
                    raise OSError(exc.errno, exc.strerror, str(dst)) from exc
                raise
            return n
        return self._copy_out(path, dst, progress)

    def _copy_out(self, path: str, out: IO[bytes], progress: Progress | None) -> int:
        n = 0
        for data in self.read_chunks(path):
            out.write(data)
            n += len(data)
            if progress:
                progress(len(data))
        return n

    def cat(self, path: str) -> bytes:
        return b"".join(self.read_views(path))

    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        """A file object: ``rb`` streams (seekable by ranged reads), ``wb`` commits on close
        as one atomic put (nothing, if a ``with`` block is left by an exception); ``r``/``rt``
        and ``w``/``wt`` are the same as UTF-8 text, as the built-in ``open`` gives."""
        if mode in ("rb", "r", "rt"):
            info = self.stat(path)
            if info.is_dir:
                raise InvalidInput(f"{path} is a directory")
            reader = io.BufferedReader(RangedReader(self, path, info.size), self.chunk_size)
            return reader if mode == "rb" else io.TextIOWrapper(reader, encoding="utf-8")
        if mode in ("wb", "w", "wt"):
            writer = StreamingWriter(self, path)
            return cast(IO[bytes], writer) if mode == "wb" else TextWriter(writer)
        raise InvalidInput(f"unsupported mode {mode!r}: use 'rb', 'wb', 'r' or 'w'")


def _mount_dir(name: str) -> DirEntry:
    """A mount point's entry: a directory with no size, mtime or mode of its own."""
    return DirEntry(name=name, type="dir", size=0, mtime=0.0, mode=0)


def _mount_dir_info(path: str) -> FileInfo:
    """``stat`` of a directory only the mount table makes: no size, time, hash or version
    of its own (as an implicit directory inside a volume has no time), and no server."""
    return FileInfo(path=path, type="dir", size=0, mtime=0.0, sha256="", version=0,
                    mode=MOUNT_DIR_MODE)


def _unbuffered(fh: IO[bytes]) -> tuple[bytes, IO[bytes]]:
    """For a buffered pipe (``sys.stdin.buffer``): the bytes its buffer already holds, and
    the raw file under it, to read the rest from.

    gRPC pulls a streaming request from a daemon thread. Blocked in a ``BufferedReader``'s
    read, that thread holds the buffer's lock, and when Ctrl-C ends the process the
    interpreter aborts (``Fatal Python error: _enter_buffered_busy``) because closing stdin
    needs that lock. A raw read holds no lock. Other sources are returned as they are."""
    raw = getattr(fh, "raw", None)
    if not isinstance(fh, io.BufferedReader) or not isinstance(raw, io.FileIO):
        return b"", fh
    # peek returns whatever is buffered (one raw read, here on the caller's thread, if
    # nothing is); reading exactly that much then empties the buffer without a raw read.
    held = fh.read(len(fh.peek()))
    return held, cast(IO[bytes], raw)
