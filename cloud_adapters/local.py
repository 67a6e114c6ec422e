"""``file:///abs/dir``: a directory on an on-prem node or an NFS mount as an object store.

Objects are plain files at ``<dir>/<key>`` so any other tool (rsync, a restore script) sees
ordinary files. The sha256 is kept beside the data in a hidden sidecar ``.<name>.gns-meta``
(JSON: sha256, size, mtime_ns); a sidecar whose size/mtime no longer match the data file is
ignored (sha256 None), so a file edited by another tool never reports a stale hash.

Writes are atomic: a temp file ``.<name>.gns-tmp-<random>`` in the same directory, fsync,
rename, directory fsync; a crash leaves at most a hidden temp file, never a partial object.
Conditional puts take an ``flock`` on one of 64 striped lock files under ``<dir>/.gns-locks``
around check-and-rename, so they are race-safe between threads and processes (NFS: needs
working NLM locking). Listing never returns sidecars, temp files or the lock directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import os
import secrets
import stat as stat_mod
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from cloud_adapters.base import Capability, ObjectInfo, ObjectStore
from cloud_adapters.errors import (
    InvalidURI,
    ObjectNotFound,
    ObjectStoreError,
    PermissionDenied,
    PreconditionFailed,
    TransientError,
)
from cloud_adapters.uri import StoreURI

__all__ = ["LocalStore"]

_META_SUFFIX = ".gns-meta"
_TMP_MARK = ".gns-tmp-"
_LOCK_DIR = ".gns-locks"
_LOCK_STRIPES = 64
_TRANSIENT_ERRNOS = {errno.ESTALE, errno.EAGAIN, errno.ETIMEDOUT, errno.EIO, errno.EINTR}


def _is_internal(name: str) -> bool:
    return name.startswith(".") and (name.endswith(_META_SUFFIX) or _TMP_MARK in name)


@contextlib.contextmanager
def _os_errors(uri: str) -> Iterator[None]:
    """The one place OS errors become ``cloud_adapters`` errors."""
    try:
        yield
    except ObjectStoreError:
        raise
    except FileNotFoundError as exc:
        raise ObjectNotFound("no such object or directory", uri=uri) from exc
    except IsADirectoryError as exc:
        raise ObjectNotFound("is a directory, not an object", uri=uri) from exc
    except PermissionError as exc:
        raise PermissionDenied(f"permission denied ({exc.strerror})", uri=uri) from exc
    except NotADirectoryError as exc:
        raise ObjectStoreError("a parent of this key is an object, not a directory",
                               uri=uri) from exc
    except OSError as exc:
        if exc.errno in _TRANSIENT_ERRNOS:
            raise TransientError(f"I/O error ({exc.strerror})", uri=uri) from exc
        raise ObjectStoreError(f"I/O error ({exc.strerror})", uri=uri) from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(ObjectStore):
    """A directory; ``uri.prefix`` is its absolute path."""

    scheme: ClassVar[str] = "file"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CONDITIONAL_PUT, Capability.RANGED_READ}
    )
    delete_batch_size: ClassVar[int] = 1000

    def __init__(self, uri: StoreURI) -> None:
        super().__init__(uri)
        self._root = Path(uri.prefix)

    @property
    def _key_prefix(self) -> str:
        return ""

    def _full(self, key: str) -> str:
        full = super()._full(key)
        parts = full.split("/")
        if parts[0] == _LOCK_DIR or _is_internal(parts[-1]):
            raise InvalidURI(f"invalid key {key!r}: reserved name", uri=self.uri)
        return full

    def _path(self, full_key: str) -> Path:
        return self._root / full_key

    def _meta_path(self, path: Path) -> Path:
        return path.with_name(f".{path.name}{_META_SUFFIX}")

    def _info(self, full_key: str, path: Path, st: os.stat_result) -> ObjectInfo:
        sha: str | None = None
        try:
            meta = json.loads(self._meta_path(path).read_bytes())
            if meta.get("size") == st.st_size and meta.get("mtime_ns") == st.st_mtime_ns:
                sha = meta.get("sha256")
        except (OSError, ValueError):
            pass
        return ObjectInfo(
            key=full_key,
            size=st.st_size,
            sha256=sha,
            etag=f"{st.st_mtime_ns}-{st.st_size}-{sha or 'none'}",
            mtime=st.st_mtime_ns / 1e9,
        )

    @contextlib.contextmanager
    def _lock(self, full_key: str) -> Iterator[None]:
        lock_dir = self._root / _LOCK_DIR
        lock_dir.mkdir(exist_ok=True)
        stripe = zlib.crc32(full_key.encode()) % _LOCK_STRIPES
        fd = os.open(lock_dir / f"{stripe:02d}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _check_root(self, uri: str) -> None:
        if not self._root.is_dir():
            raise ObjectNotFound(f"store directory {self._root} does not exist", uri=uri)

    # -- writes --------------------------------------------------------------------------------

    def _write(
        self,
        full_key: str,
        parts: Iterator[bytes],
        sha256: str,
        if_absent: bool,
        if_match: str | None,
    ) -> ObjectInfo:
        uri = self._obj_uri(full_key)
        path = self._path(full_key)
        with _os_errors(uri):
            self._check_root(uri)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}{_TMP_MARK}{secrets.token_hex(6)}")
            try:
                with open(tmp, "wb") as f:
                    for part in parts:
                        f.write(part)
                    f.flush()
                    os.fsync(f.fileno())
                with self._lock(full_key):
                    if if_absent or if_match is not None:
                        try:
                            current = self._info(full_key, path, path.stat())
                        except FileNotFoundError:
                            current = None
                        if if_absent and current is not None:
                            raise PreconditionFailed("object already exists", uri=uri)
                        if if_match is not None and (current is None or current.etag != if_match):
                            raise PreconditionFailed("object changed (etag mismatch)", uri=uri)
                    os.replace(tmp, path)
                    st = path.stat()
                    meta_tmp = path.with_name(f".{path.name}{_TMP_MARK}{secrets.token_hex(6)}m")
                    meta = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
                    with open(meta_tmp, "w") as f:
                        json.dump(meta, f)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(meta_tmp, self._meta_path(path))
                    _fsync_dir(path.parent)
                    return self._info(full_key, path, st)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()

    def _put_small(
        self, full_key: str, data: bytes, sha256: str, if_absent: bool, if_match: str | None
    ) -> ObjectInfo:
        return self._write(full_key, iter((data,)), sha256, if_absent, if_match)

    def _put_parts(
        self,
        full_key: str,
        parts: Iterator[bytes],
        size: int,
        sha256: str,
        if_absent: bool,
        if_match: str | None,
        part_size: int,
    ) -> ObjectInfo:
        return self._write(full_key, parts, sha256, if_absent, if_match)

    # -- reads ---------------------------------------------------------------------------------

    def _open_range(
        self, full_key: str, start: int, end: int | None, chunk_size: int
    ) -> tuple[ObjectInfo, Iterator[bytes]]:
        uri = self._obj_uri(full_key)
        path = self._path(full_key)
        with _os_errors(uri):
            f = open(path, "rb")
            try:
                st = os.fstat(f.fileno())
                if stat_mod.S_ISDIR(st.st_mode):
                    raise IsADirectoryError(str(path))
                info = self._info(full_key, path, st)
                f.seek(start)
            except BaseException:
                f.close()
                raise

        def chunks() -> Iterator[bytes]:
            with f, _os_errors(uri):
                remaining = (min(end, st.st_size) if end is not None else st.st_size) - start
                while remaining > 0:
                    block = f.read(min(chunk_size, remaining))
                    if not block:
                        break
                    remaining -= len(block)
                    yield block

        return info, chunks()

    def _stat(self, full_key: str) -> ObjectInfo:
        uri = self._obj_uri(full_key)
        path = self._path(full_key)
        with _os_errors(uri):
            st = path.stat()
            if stat_mod.S_ISDIR(st.st_mode):
                raise IsADirectoryError(str(path))
            return self._info(full_key, path, st)

    def _list_page(
        self, full_prefix: str, token: str | None
    ) -> tuple[list[ObjectInfo], str | None]:
        """One page, for a caller that pages (a hub's object relay serving an edge site):
        ``token`` is the last key of the page before. ``list()`` walks in one go instead."""
        with _os_errors(self.uri):
            self._check_root(self.uri)
        items = list(itertools.islice(self._walk("", full_prefix, after=token), self.page_size))
        return items, (items[-1].key if len(items) == self.page_size else None)

    def _list_gen(self, full_prefix: str) -> Iterator[ObjectInfo]:
        with _os_errors(self.uri):
            self._check_root(self.uri)
        yield from self._walk("", full_prefix)

    def _walk(self, rel_dir: str, full_prefix: str, after: str | None = None) -> Iterator[ObjectInfo]:
        """Files under ``full_prefix`` in key order; with ``after``, only keys past it (whole
        directories before it are not entered)."""
        directory = self._root / rel_dir if rel_dir else self._root
        try:
            with os.scandir(directory) as it:
                entries = [(e.name + ("/" if e.is_dir(follow_symlinks=False) else ""), e)
                           for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return
        entries.sort(key=lambda pair: pair[0])
        for sort_name, entry in entries:
            name = entry.name
            if _is_internal(name) or (not rel_dir and name == _LOCK_DIR):
                continue
            rel = f"{rel_dir}{name}"
            if sort_name.endswith("/"):
                sub = rel + "/"
                if after is not None and sub < after and not after.startswith(sub):
                    continue  # every key in it sorts before ``after``
                if sub.startswith(full_prefix) or full_prefix.startswith(sub):
                    yield from self._walk(sub, full_prefix, after)
            elif after is not None and rel <= after:
                continue
            elif rel.startswith(full_prefix) and entry.is_file():
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # deleted while listing
                yield self._info(rel, Path(entry.path), st)

    # -- deletes, containers -------------------------------------------------------------------

    def _delete(self, full_key: str) -> None:
        uri = self._obj_uri(full_key)
        path = self._path(full_key)
        with _os_errors(uri):
            with self._lock(full_key) if self._root.is_dir() else contextlib.nullcontext():
                for p in (path, self._meta_path(path)):
                    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                        p.unlink()
            parent = path.parent
            while parent != self._root and self._root in parent.parents:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def _make_container(self) -> None:
        with _os_errors(self.uri):
            self._root.mkdir(parents=True, exist_ok=True)

    def _copy(self, full_src: str, full_dst: str) -> ObjectInfo:  # pragma: no cover
        raise NotImplementedError


