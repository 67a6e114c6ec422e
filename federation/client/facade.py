"""The :class:`Client` facade: every operation of the typed Python API in one object.

Control commands go to etcd (or, with ``controller=``, to one controller:
:mod:`federation.remote`); data commands are routed by :class:`~federation.client.routing.Routing`
and stream through :mod:`federation.client.streams`.
"""
from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeVar, cast

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.errors import from_rpc_error
from federation.channels import CHUNK_SIZE
from federation.client.discovery import find_etcd, find_tls_dir
from federation.client.routing import Routing
from federation.client.streams import (
    ChangeStream,
    Progress,
    RangedReader,
    StreamingWriter,
    info_dict,
    seekable_source,
    size_of,
)
from federation.loop_thread import LoopThread
from federation.resolution import describe
from namespace.cache import NamespaceCache, NamespaceView
from namespace.control import ControlPlane, resolve_in
from namespace.errors import (
    Conflict,
    GnsError,
    InvalidInput,
    NotFound,
    Unavailable,
)
from namespace.etcd import Etcd, EtcdConfig
from namespace.models import ClusterView, Mount, VolumeView
from namespace.paths import check_name, normalize

T = TypeVar("T")


class Client(Routing):
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
        etcd: str | None = None,
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
        self.consistency = consistency
        self.max_staleness = max_staleness
        self.chunk_size = chunk_size
        self._watch = watch
        self._loop: LoopThread | None = None
        self._etcd: Etcd | None = None
        self._cache: NamespaceCache | None = None
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._ensure_loop().run(coro)

    def _ensure_loop(self) -> LoopThread:
        with self._lock:
            if self._loop is None:
                self._loop = LoopThread()
            return self._loop

    def _control(self) -> ControlPlane:
        if self._etcd is None:
            loop = self._ensure_loop()
            with self._lock:
                if self._etcd is None:
                    if self.etcd_config is None:  # a RemoteClient has its own _control
                        raise Unavailable("this client talks to a controller, not to etcd")
                    self._etcd = loop.run(Etcd.connect(self.etcd_config))
        return ControlPlane(self._etcd)

    def view(self) -> NamespaceView:
        """The cached namespace (watch-fed when ``watch``), loaded on first use."""
        control = self._control()
        if not self._watch:
            return self._run(control.view())
        if self._cache is None:
            with self._lock:
                if self._cache is None:
                    cache = NamespaceCache(control.etcd)
                    self._loop.run(cache.start())  # type: ignore[union-attr]
                    self._cache = cache
        return self._cache.view

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()
        if self._loop is not None:
            async def shutdown() -> None:
                if self._cache is not None:
                    await self._cache.stop()
                if self._etcd is not None:
                    await self._etcd.close()

            try:
                self._loop.run(shutdown(), timeout=10)
            except Exception:  # noqa: BLE001 - closing is best effort: the process may be busy or exiting
                pass
            finally:
                self._loop.close()
                self._loop = None
                self._etcd = self._cache = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- control plane --------------------------------------------------------------------
    def clusters(self) -> list[ClusterView]:
        return self._run(self._control().clusters())

    def cluster(self, cluster_id: str) -> ClusterView:
        return self._run(self._control().cluster(cluster_id))

    def remove_cluster(self, cluster_id: str) -> None:
        self._run(self._control().remove_cluster(cluster_id))

    def create_volume(self, name: str, cluster: str) -> VolumeView:
        return self._run(self._control().create_volume(name, cluster))

    def volumes(self) -> list[VolumeView]:
        found = self._run(self._control().volumes())
        view = self.view()
        return [self._live_version(v, view) for v in found]

    def volume(self, name: str) -> VolumeView:
        return self._live_version(self._run(self._control().volume(name)), self.view())

    def _live_version(self, v: VolumeView, view: NamespaceView) -> VolumeView:
        """The owner's committed version if it answers (etcd's copy is batched)."""
        if v.state != "Ready":
            return v
        try:
            spec = view.clusters.get(v.owner)
            if spec is None:
                return v
            reply = self._stub(spec.endpoint).VolumeState(
                pb.VolumeStateRequest(volume=v.name), timeout=2.0
            )
            return v.model_copy(update={"version": max(v.version, reply.version)})
        except (grpc.RpcError, GnsError):
            return v

    def remove_volume(self, name: str) -> None:
        """Forget volume ``name``; refused (Conflict) while a mount or policy names it."""
        self._run(self._control().remove_volume(name))

    def promote(self, name: str, to: str, *, force: bool = False) -> VolumeView:
        """Make ``to`` (a cluster, or an object-store target of the volume's policy) own
        volume ``name``. Refused while the owner is Ready unless ``force`` (planned hand-over:
        drain, final sync, switch)."""
        check_name("volume", name)
        if not to or ("://" not in to):
            check_name("cluster", to)
        view = self.view()
        vol = view.volumes.get(name)
        if vol is None:
            raise NotFound(f"volume {name!r} not found")
        if vol.owner in view.alive and not force:
            raise Conflict(f"owner {vol.owner} of volume {name!r} is Ready; use --force for a planned hand-over")
        # Any Ready controller can orchestrate; prefer the one taking over, then the leader.
        entry = next((c for c in (to, view.leader) if c and c in view.alive and c in view.clusters),
                     next(iter(sorted(view.alive)), None))
        if entry is None:
            raise Unavailable("no controller is Ready to carry out the promotion")
        stub = pb_grpc.FailoverStub(self._channel(view.clusters[entry].endpoint))
        try:
            stub.Promote(pb.PromoteRequest(volume=name, to=to, force=force, reason="manual"), timeout=3600)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"cluster {entry}") from None
        return self.volume(name)

    def add_mount(self, path: str, target: str) -> Mount:
        return self._run(self._control().add_mount(path, target))

    def mounts(self) -> list[Mount]:
        return self._run(self._control().mounts())

    def remove_mount(self, path: str) -> None:
        self._run(self._control().remove_mount(path))

    # -- access control (SPEC §10) ---------------------------------------------------------
    def acl_grant(self, path: str, subject: str, perms: str) -> dict[str, Any]:
        from namespace import acl

        return self._run(acl.grant(self._control().etcd, path, subject, perms)).as_dict()

    def acl_revoke(self, path: str, subject: str) -> None:
        from namespace import acl

        self._run(acl.revoke(self._control().etcd, path, subject))

    def acl_list(self, path: str | None = None) -> list[dict[str, Any]]:
        from namespace import acl

        return self._run(acl.list_grants(self._control().etcd, path))

    def acl_check(self, path: str, subject: str, groups: list[str] | None = None) -> dict[str, Any]:
        from namespace import acl

        grants, _ = self._run(acl.load_grants(self._control().etcd))
        return acl.check_report(grants, path, subject, groups or [])

    def resolve(self, path: str) -> dict[str, Any]:
        return describe(self.view(), path)

    def status(self) -> dict[str, Any]:
        """Clusters, volumes, mounts and mirrors with health and lag (``gns status``)."""
        view = self.view()
        clusters = [view.cluster_view(cid).model_dump() for cid in sorted(view.clusters)]  # type: ignore[union-attr]
        volumes = []
        for name in sorted(view.volumes):
            d = self._live_version(view.volume_view(name), view).model_dump()  # type: ignore[arg-type]
            d["diverged"] = [
                {"cluster": r["cluster"], "epoch": r["epoch"], "paths": r["paths"]}
                for r in view.diverged.values() if r.get("volume") == name
            ]
            volumes.append(d)
        return {
            "leader": view.leader,
            "clusters": clusters,
            "volumes": volumes,
            "mounts": [m.model_dump() for m in view.mount_list()],
            "mirrors": self._mirror_statuses(view),
        }

    def _mirror_statuses(self, view: NamespaceView) -> list[dict[str, Any]]:
        from mirroring.status import statuses

        return statuses(view)

    # -- edge sites (SPEC §8) -------------------------------------------------------------
    def edge_token_create(self, site: str, *, ttl: float = 3600.0, hub: str | None = None) -> dict[str, Any]:
        """A single-use join token for ``site``, pinning this federation's CA."""
        from namespace import edge

        check_name("site", site)
        view = self.view()
        if hub is None:
            ready = sorted(c for c in view.alive if c in view.clusters and view.clusters[c].provider != "edge")
            hub = view.leader if view.leader in ready else (ready[0] if ready else None)
            if hub is None:
                raise Unavailable("no Ready hub cluster to join through; start one or pass --hub")
        check_name("hub cluster", hub)
        spec = view.clusters.get(hub)
        if spec is None:
            raise NotFound(f"hub cluster {hub!r} not found")
        if spec.provider == "edge":
            raise InvalidInput(f"cluster {hub!r} is an edge site; a hub must be a core cluster")
        ca = (self.tls_dir / "ca.crt").read_bytes() if self.tls_dir is not None else None
        return self._run(edge.create_token(self._control().etcd, site, hub, ttl, edge.ca_fingerprint(ca)))

    def edge_sites(self) -> list[dict[str, Any]]:
        """Every joined edge site: hub, state, connected-since, backlog (``gns edge list``)."""
        from namespace import edge

        return self._run(edge.list_sites(self._control().etcd))

    # -- mirror policies ------------------------------------------------------------------
    def mirror_apply(self, text: str, *, dry_run: bool = False) -> dict[str, Any]:
        """Validate and store a mirror policy document (YAML or JSON)."""
        from mirroring.policy_store import apply_policy

        return self._run(apply_policy(self._control().etcd, text, dry_run=dry_run))

    def mirror_list(self) -> list[dict[str, Any]]:
        from mirroring.policy_store import list_policies

        return self._run(list_policies(self._control().etcd))

    def mirror_status(self, name: str | None = None) -> list[dict[str, Any]]:
        """SPEC §4 ``mirror status``; NotFound for an unknown policy NAME."""
        from mirroring.status import statuses

        if name is not None:
            check_name("policy", name)
        view = self.view()
        if name is not None and name not in view.policies:
            raise NotFound(f"mirror policy {name!r} not found")
        return statuses(view, name)

    def mirror_remove(self, name: str) -> None:
        from mirroring.policy_store import remove_policy

        self._run(remove_policy(self._control().etcd, name))

    def _mirroring_stub(self, policy: str) -> tuple[pb_grpc.MirroringStub, str]:
        """Any Ready controller serves the Mirroring RPCs (forwarding to the owner)."""
        check_name("policy", policy)
        view = self.view()
        from mirroring.policy import stored_policy

        found = stored_policy(view, policy)
        if found is None:
            raise NotFound(f"mirror policy {policy!r} not found")
        owner = view.volumes.get(found.spec.volume)
        entry = self.via or (owner.owner if owner else None)
        if entry is None or entry not in view.alive:
            raise Unavailable(f"owner {entry} of policy {policy!r}'s volume is Down")
        return pb_grpc.MirroringStub(self._channel(view.clusters[entry].endpoint)), entry

    def mirror_sync(self, name: str, *, wait: bool = False, progress: Progress | None = None,
                    timeout: float | None = None) -> list[dict[str, Any]]:
        """Run passes to every target of policy ``name`` now; with ``wait``, until they end.

        Raises the last target error (as :class:`GnsError`) if a pass failed."""
        stub, where = self._mirroring_stub(name)
        seen: dict[str, int] = {}
        errors: list[str] = []
        try:
            for msg in stub.Sync(pb.MirrorSyncRequest(policy=name, wait=wait), timeout=timeout):
                if progress and msg.bytes >= seen.get(msg.target, 0):
                    progress(int(msg.bytes) - seen.get(msg.target, 0))
                    seen[msg.target] = int(msg.bytes)
                if msg.done and msg.error:
                    errors.append(f"{msg.target}: {msg.error}")
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"cluster {where}") from None
        if errors:
            raise Unavailable("mirror sync failed for " + "; ".join(errors))
        if wait:
            self._wait_status_seen(name)
        return self.mirror_status(name)

    def _wait_status_seen(self, name: str, timeout: float = 5.0) -> None:
        """The owner published the statuses; give our watch a moment to deliver them."""
        if not self._watch:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.mirror_status(name)
            if all(t["state"] != "Syncing" for p in st for t in p["targets"]):
                return
            time.sleep(0.05)

    def mirror_verify(self, name: str, *, repair: bool = True, deep: bool = False) -> list[dict[str, Any]]:
        """Compare every target of policy ``name`` with the volume by sha256 (and repair)."""
        stub, where = self._mirroring_stub(name)
        try:
            reply = stub.Verify(pb.MirrorVerifyRequest(policy=name, repair=repair, deep=deep), timeout=3600)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"cluster {where}") from None
        return [
            {"target": r.target, "version": int(r.version), "missing": list(r.missing),
             "extra": list(r.extra), "mismatched": list(r.mismatched), "repaired": r.repaired,
             "ok": not (r.missing or r.extra or r.mismatched or r.error), "error": r.error or None}
            for r in reply.reports
        ]

    # -- data -----------------------------------------------------------------------------
    def stat(self, path: str) -> dict[str, Any]:
        info = self._call(lambda s, t: s.Stat(pb.StatRequest(target=t), timeout=30), path, read=True)
        out = info_dict(info)
        if info.stale:
            from federation.resolution import away_site_replica

            away = away_site_replica(self.view(), resolve_in(self.view(), normalize(path)).volume)
            if away is not None:
                out["mirrored_version"] = away["version"]
        return out

    def ls(self, path: str) -> list[dict[str, Any]]:
        reply = self._call(lambda s, t: s.List(pb.ListRequest(target=t), timeout=30), path, read=True)
        return [{"name": e.name, "type": e.type, "size": e.size} for e in reply.entries]

    def listdir(self, path: str) -> list[dict[str, Any]]:
        """Like ``ls`` with each entry's mtime and mode bits (0 for implicit directories)."""
        reply = self._call(lambda s, t: s.List(pb.ListRequest(target=t), timeout=30), path)
        return [{"name": e.name, "type": e.type, "size": int(e.size), "mtime": e.mtime,
                 "mode": int(e.mode)} for e in reply.entries]

    def rm(self, path: str, recursive: bool = False, *, epoch: int | None = None,
           keep_parent: bool = False) -> int:
        """Delete a file (or with ``recursive`` a directory); ``keep_parent`` (POSIX unlink)
        keeps a parent directory that this leaves empty."""
        reply = self._call(
            lambda s, t: s.Delete(pb.DeleteRequest(target=t, recursive=recursive,
                                                   keep_parent=keep_parent), timeout=60),
            path, epoch,
        )
        return int(reply.version)

    # -- namespace edits (SPEC §5): rename, directories, attributes, the change stream -------
    def volume_of(self, path: str) -> str:
        """The volume holding global ``path`` (raises NotFound when unmounted)."""
        return resolve_in(self.view(), normalize(path)).volume

    def mv(self, src: str, dst: str) -> int:
        """Rename a file or directory within one volume atomically (one version); returns it.

        Across volumes: Conflict (exit 4); callers copy and delete instead (FUSE: EXDEV)."""
        src, dst = normalize(src), normalize(dst)
        if self.volume_of(src) != self.volume_of(dst):
            raise Conflict(f"cannot move {src} to {dst}: they are on different volumes")
        reply = self._call(
            lambda s, t: s.Rename(pb.RenameRequest(target=t, destination=dst), timeout=60), src
        )
        return int(reply.version)

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
        ``path``) after ``from_version``: an iterator of dicts (version, op, path, src, ...)
        in version order that blocks for new ones; ``close()`` it to stop."""
        if (path is None) == (volume is None):
            raise InvalidInput("watch takes a global path or a volume, not both")
        if volume is not None:
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
        else:
            stub, target, where = self._route(path)  # type: ignore[arg-type]
        call = stub.Watch(pb.WatchRequest(target=target, from_version=from_version), timeout=None)
        return ChangeStream(call, where)

    def put(
        self,
        src: str | Path | bytes | BinaryIO,
        path: str,
        *,
        epoch: int | None = None,
        mtime: float | None = None,
        progress: Progress | None = None,
        mode: int | None = None,
        if_absent: bool = False,
    ) -> dict[str, Any]:
        """Write ``src`` (a local path, bytes or a binary file object) to global ``path``.

        ``mode`` sets the permission bits (None keeps a replaced file's, new files 0644);
        ``if_absent`` makes it an exclusive create (Conflict if the file exists)."""

        normalize(path)
        if isinstance(src, (str, Path)):
            local = Path(src)
            if local.is_dir():
                raise InvalidInput(f"{local} is a directory; gns put copies one file")
            try:
                fh: BinaryIO = open(local, "rb")
            except FileNotFoundError:
                raise NotFound(f"local file {local} not found") from None
            except OSError as exc:
                raise InvalidInput(f"cannot read {local}: {exc.strerror}") from None
            with fh:
                return self._put_stream(fh, path, epoch, mtime, progress, mode, if_absent)
        if isinstance(src, (bytes, bytearray, memoryview)):
            return self._put_stream(io.BytesIO(bytes(src)), path, epoch, mtime, progress, mode, if_absent)
        return self._put_stream(src, path, epoch, mtime, progress, mode, if_absent)

    def _put_stream(
        self, fh: BinaryIO, path: str, epoch: int | None, mtime: float | None, progress: Progress | None,
        mode: int | None = None, if_absent: bool = False,
    ) -> dict[str, Any]:
        size_hint = size_of(fh)
        # A non-seekable source (stdin) can be sent once only: no re-route retry for it.
        seekable = seekable_source(fh)
        start = fh.tell() if seekable else 0

        def call(stub: pb_grpc.FederationStub, target: pb.Target) -> Any:
            if seekable:
                fh.seek(start)
            header = pb.WriteHeader(target=target, mtime=mtime or 0.0, size_hint=size_hint, mode=mode or 0,
                                    if_absent=if_absent)
            return stub.Write(self._chunks(fh, header, progress), timeout=None)

        if not seekable:
            stub, target, where = self._route(path, epoch)
            try:
                reply = call(stub, target)
            except grpc.RpcError as exc:
                raise from_rpc_error(exc, f"cluster {where}") from None
        else:
            reply = self._call(call, path, epoch)
        return info_dict(reply.info)

    def _chunks(self, fh: BinaryIO, header: pb.WriteHeader, progress: Progress | None) -> Iterator[pb.WriteChunk]:
        yield pb.WriteChunk(header=header)
        while True:
            data = fh.read(self.chunk_size)
            if not data:
                return
            yield pb.WriteChunk(data=data)
            if progress:
                progress(len(data))

    def read_chunks(self, path: str, offset: int = 0, length: int = 0,
                    timeout: float | None = None) -> Iterator[bytes]:
        """Stream a file's bytes (``length`` 0 = to the end; ``timeout`` bounds the whole
        stream, so give one only for bounded ranges)."""
        stub, target, where = self._route(path, read=True)
        call = stub.Read(pb.ReadRequest(target=target, offset=offset, length=length), timeout=timeout)
        try:
            for chunk in call:
                if chunk.data:
                    yield chunk.data
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"cluster {where}") from None
        finally:
            call.cancel()

    def get(self, path: str, dst: str | Path | BinaryIO, *, progress: Progress | None = None) -> int:
        """Copy global ``path`` to a local path (atomically) or a binary file object."""
        if isinstance(dst, (str, Path)):
            dst = Path(dst)
            if dst.is_dir():
                dst = dst / normalize(path).rsplit("/", 1)[-1]
            tmp = dst.with_name(f".{dst.name}.gns-partial")
            try:
                with open(tmp, "wb") as out:
                    n = self._copy_out(path, out, progress)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, dst)
            except BaseException:
                tmp.unlink(missing_ok=True)
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
        return b"".join(self.read_chunks(path))

    def open(self, path: str, mode: str = "rb") -> IO[bytes]:
        """A file object: ``rb`` streams (seekable by ranged reads), ``wb`` commits on close."""
        if mode in ("rb", "r"):
            info = self.stat(path)
            if info.get("type") == "dir":
                raise InvalidInput(f"{path} is a directory")
            return io.BufferedReader(RangedReader(self, path, int(info["size"])), self.chunk_size)
        if mode in ("wb", "w"):
            return cast(IO[bytes], StreamingWriter(self, path))
        raise InvalidInput(f"unsupported mode {mode!r}: use 'rb' or 'wb'")
