"""fsspec filesystem for ``gns://`` URLs, so any fsspec-aware tool reads global paths.

``pandas.read_csv("gns:///health/sensors/day.csv")`` works once gns is installed: the
``fsspec.specs`` entry point registers this class. Every call goes through
:class:`federation.client.Client` (the same routing as the CLI); nothing here talks to etcd
or a controller directly. It passes fsspec's own abstract test suite (copy, get, put, open,
pipe), as s3fs, gcsfs and adlfs do: errors are builtins (``FileNotFoundError``,
``FileExistsError``, ``IsADirectoryError``), exclusive creation is atomic on the owner,
and empty directories exist (``mkdir``).
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from namespace.errors import Conflict, InvalidInput, NotFound, PermissionDenied, StaleEpoch

if TYPE_CHECKING:  # the client (grpc, etcd) is imported on first use, not with fsspec's registry
    from federation.client import Client, DirEntry

_SPOOL = 8 << 20  # bytes of a write kept in memory before it spools to a temp file


@contextlib.contextmanager
def _builtin_errors(path: str) -> Iterator[None]:
    """The gns error tree as the builtins fsspec callers expect."""
    try:
        yield
    except NotFound as exc:
        raise FileNotFoundError(path) from exc
    except PermissionDenied as exc:
        raise PermissionError(str(exc)) from exc
    except StaleEpoch:
        raise
    except Conflict as exc:
        raise FileExistsError(path) from exc


class GnsFileSystem(AbstractFileSystem):  # type: ignore[misc]  # fsspec has no types: base is Any
    protocol = "gns"
    root_marker = "/"

    def __init__(self, etcd: str | None = None, via: str | None = None, tls_dir: str | None = None,
                 consistency: str = "owner", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client_args: dict[str, Any] = {"via": via, "tls_dir": tls_dir, "consistency": consistency}
        self._etcd = etcd
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            from federation.client import Client

            self._client = Client(self._etcd, **self._client_args)
        return self._client

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("gns://"):
            path = path[len("gns://"):]
        path = "/" + path.strip("/")
        return path

    # fsspec's info/ls speak dicts ("directory", not "dir"): the models become them here.
    @staticmethod
    def _entry(base: str, e: DirEntry) -> dict[str, Any]:
        name = base.rstrip("/") + "/" + e.name if e.name else base
        return {"name": name, "size": e.size, "type": "directory" if e.is_dir else "file",
                "mtime": e.mtime or None}

    # -- reads ---------------------------------------------------------------------------
    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """What ``gns ls`` lists: a directory's entries with the mount points below it as
        directories; a path above mounts lists those (``/``)."""
        path = self._strip_protocol(path)
        info = self.info(path)
        if info["type"] == "file":
            out = [info]
        else:
            with _builtin_errors(path):
                out = [self._entry(path, e) for e in self.client.ls(path)]
        return out if detail else [o["name"] for o in out]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        with _builtin_errors(path):
            st = self.client.stat(path)
        return {"name": path, "size": st.size, "type": "directory" if st.is_dir else "file",
                "mtime": st.mtime, "sha256": st.sha256, "version": st.version, "mode": st.mode}

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        path = self._strip_protocol(path)
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = self.info(path)["size"]
            start = max(0, size + start) if start is not None and start < 0 else start
            end = max(0, size + end) if end is not None and end < 0 else end
        start = start or 0
        if end is not None and end <= start:
            return b""
        length = 0 if end is None else end - start
        with _builtin_errors(path):
            if self.client.stat(path).is_dir:
                raise IsADirectoryError(path)
            return b"".join(self.client.read_views(path, offset=start, length=length))

    # -- writes --------------------------------------------------------------------------
    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        self._put(value, self._strip_protocol(path), if_absent=mode == "create")

    def _put(self, src: Any, path: str, if_absent: bool = False) -> None:
        """Every write's one put, its errors as builtins; a put refused below a file is
        ``NotADirectoryError``, as ``open`` says it (the file is looked for only then)."""
        try:
            with _builtin_errors(path):
                self.client.put(src, path, if_absent=if_absent)
        except InvalidInput as exc:
            above = self._file_above(path)
            if above is None:
                raise
            raise NotADirectoryError(errno.ENOTDIR, str(exc), above) from exc

    def put_file(self, lpath: str, rpath: str, callback: Any = None, mode: str = "overwrite",
                 **kwargs: Any) -> None:
        rpath = self._strip_protocol(rpath)
        if os.path.isdir(lpath):
            self.makedirs(rpath, exist_ok=True)
            return
        self._put(lpath, rpath, if_absent=mode == "create")

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy within the namespace. Streams through this client (bounded memory); a copy
        that stays on one owner could be done there without moving bytes (not yet)."""
        path1, path2 = self._strip_protocol(path1), self._strip_protocol(path2)
        if self.info(path1)["type"] == "directory":
            self.makedirs(path2, exist_ok=True)
            return
        with _builtin_errors(path1), self.client.open(path1, "rb") as src:
            self._put(src, path2)

    def mv(self, path1: Any, path2: Any, recursive: bool = False, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        """One atomic rename when both are plain paths on one volume; else copy + delete
        (across volumes, as across file systems). What no move may do (a mount point, a
        directory into itself) is refused before anything is copied: the delete after the
        copy failed, and the copy stayed."""
        if isinstance(path1, str) and isinstance(path2, str) and not any(
            c in path1 for c in "*?["
        ):
            p1, p2 = self._strip_protocol(path1), self._strip_protocol(path2)
            with contextlib.suppress(Conflict, NotFound):
                if self.exists(p2) and self.isdir(p2):
                    p2 = p2.rstrip("/") + "/" + p1.rsplit("/", 1)[-1]
                self.client.mv(p1, p2)
                return
        super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)

    def rm_file(self, path: str) -> None:
        path = self._strip_protocol(path)
        with _builtin_errors(path):
            is_dir = self.client.stat(path).is_dir
        if is_dir:
            self.rmdir(path)
            return
        with _builtin_errors(path):
            self.client.rm(path)

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Files, or with ``recursive`` whole directories (one version each, on the owner).

        As fsspec's local filesystem (and ``gns rm``) do: a directory without ``recursive``
        is refused (``ValueError``) and a missing path is ``FileNotFoundError``, both before
        anything is deleted; with ``maxdepth``, directories are removed only once empty."""
        plan: list[tuple[str, bool]] = []
        for p in path if isinstance(path, list) else [path]:
            p = self._strip_protocol(p)
            plain = not any(c in p for c in "*?[")
            if plain and (not recursive or maxdepth is None):
                with _builtin_errors(p):  # a missing path is an error, not nothing to do
                    plan.append((p, self.client.stat(p).is_dir))
                continue
            for q in reversed(self.expand_path(p, recursive=recursive, maxdepth=maxdepth)):
                try:
                    plan.append((q, self.client.stat(q).is_dir))
                except NotFound:
                    continue  # went with a directory removed before it
        dirs = [q for q, is_dir in plan if is_dir]
        if dirs and not recursive:
            raise ValueError(f"Cannot delete directory {dirs[0]}, set recursive=True")
        for q, is_dir in plan:
            with _builtin_errors(q), contextlib.suppress(NotFound):
                if not is_dir:
                    self.client.rm(q)
                elif maxdepth is None:
                    self.client.rm(q, recursive=True)
                else:
                    with contextlib.suppress(Conflict):  # holds what lies below maxdepth
                        self.client.rmdir(q)

    def rmdir(self, path: str) -> None:
        path = self._strip_protocol(path)
        try:
            with _builtin_errors(path):
                self.client.rmdir(path)
        except FileExistsError as exc:  # as os.rmdir says it (fsspec's local filesystem)
            if isinstance(exc.__cause__, Conflict) and self.isdir(path):
                raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY), path) from exc
            raise

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Make an empty directory (it persists on the owner and cluster replicas)."""
        path = self._strip_protocol(path)
        if not create_parents and not self.exists(self._parent(path)):
            raise FileNotFoundError(self._parent(path))
        with _builtin_errors(path):
            self.client.mkdir(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        path = self._strip_protocol(path)
        if self.exists(path):
            if not exist_ok:
                raise FileExistsError(path)
            if not self.isdir(path):
                raise FileExistsError(f"{path} is a file")
            return
        with contextlib.suppress(FileExistsError):
            self.mkdir(path)

    def _file_above(self, path: str) -> str | None:
        """The file among ``path``'s parents, if one is (a refused put below a file is
        ``NotADirectoryError``, as ``open`` says it; asked only once a put was refused)."""
        parent = self._parent(path)
        while parent not in ("", "/"):
            try:
                if not self.client.stat(parent).is_dir:
                    return str(parent)
            except (NotFound, InvalidInput):
                pass
            parent = self._parent(parent)
        return None

    def created(self, path: str) -> Any:
        return self.modified(path)

    def modified(self, path: str) -> Any:
        import datetime

        return datetime.datetime.fromtimestamp(self.info(path)["mtime"] or 0, datetime.UTC)

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None,
              autocommit: bool = True, cache_options: Any = None, **kwargs: Any) -> Any:
        path = self._strip_protocol(path)
        if "r" in mode:
            # One stat, handed on (fsspec would look the size up again), that also refuses a
            # directory: reading one gave b"" before, as if it were an empty file.
            info = self.info(path)
            if info["type"] == "directory":
                raise IsADirectoryError(path)
            kwargs.setdefault("size", info["size"])
        elif mode == "xb" and self.exists(path):
            raise FileExistsError(path)
        elif self.isdir(path):  # the put at close would be refused: say so now, as open() does
            raise IsADirectoryError(path)
        return GnsFile(self, path, mode, block_size=block_size or 4 * 2**20,
                       autocommit=autocommit, cache_options=cache_options, **kwargs)


class GnsFile(AbstractBufferedFile):  # type: ignore[misc]  # fsspec has no types: base is Any
    """Reads fetch byte ranges; writes spool to a local temp file (memory stays bounded)
    and are committed as one put on close (``xb``: an exclusive create on the owner)."""

    fs: GnsFileSystem

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.cat_file(self.path, start, end)

    def _initiate_upload(self) -> None:
        self._spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL)
        if self.mode == "ab" and self.fs.exists(self.path):
            with self.fs.client.open(self.path, "rb") as old:
                shutil.copyfileobj(old, self._spool)

    def _upload_chunk(self, final: bool = False) -> bool:
        self._spool.write(self.buffer.getvalue())
        if final:
            self._spool.seek(0)
            try:
                self.fs._put(self._spool, self.path, if_absent=self.mode == "xb")
            finally:
                self._spool.close()
        return True
