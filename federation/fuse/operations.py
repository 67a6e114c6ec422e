"""The FUSE operations of ``gns fuse``: a thin adapter from POSIX calls to ``Client`` calls.

Every blocking ``Client`` call runs in a worker thread (``trio.to_thread``) and every gns
error leaves through :func:`federation.fuse.errnos.errno_for`. What is not a ``Client``
call lives elsewhere: inode numbers (``inodes``), open files and staging (``handles``,
``staging``), attribute/listing caches (``cache``), the change-stream followers
(``watch``). This module never talks to etcd, storage or gRPC itself.

Paths: the kernel names inodes; ``InodeTable`` maps them to paths relative to the mount's
root ('' = root), and :meth:`GnsOperations.gpath` joins that to the global ``--root``.
Global paths above every mount are "virtual" directories (the mount prefixes).
"""
from __future__ import annotations

import collections
import errno
import functools
import inspect
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import pyfuse3
import trio

from federation.fuse.access import WriteGate
from federation.fuse.cache import Attrs, MetaCache, find_listed
from federation.fuse.errnos import errno_for
from federation.fuse.handles import RemoteReader, StagedFile
from federation.fuse.inodes import InodeTable
from federation.fuse.staging import Staging
from namespace.errors import FileNotFound, GnsError, InvalidInput, StaleEpoch
from namespace.paths import MAX_COMPONENT_BYTES, MAX_PATH_BYTES, check_writable_name, normalize

if TYPE_CHECKING:
    from federation.client import Client
    from federation.fuse.watch import Watcher

log = logging.getLogger(__name__)
T = TypeVar("T")

_STALE_RETRIES = 3
_ACCESS_CHECK_S = 5.0
"""Longest an open waits on its write check; then the owner decides at close, as before."""


def listed_attrs(entries: list[tuple[str, Attrs]], name: str) -> tuple[bool, Attrs | None]:
    """What a directory's sorted listing says of ``name``: (True, its attributes), (True,
    None) if it is not there, or (False, None) if only a stat can tell (a mount point's
    stand-in)."""
    attrs = find_listed(entries, name)
    if attrs is None:
        return True, None
    if attrs.stand_in:
        return False, None
    return True, attrs


def _join(a: str, b: str) -> str:
    return f"{a}/{b}" if a else b


# A mount point in a listing before its volume root was stat'ed (see Attrs.stand_in).
_MOUNT_POINT = Attrs("dir", 0, 0.0, 0o755, stand_in=True)

_Ops = TypeVar("_Ops", bound=type[pyfuse3.Operations])


def _answers_with_errno(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(handler)
    async def answered(*args: Any, **kw: Any) -> T:
        try:
            return await handler(*args, **kw)
        except pyfuse3.FUSEError:
            raise
        except (GnsError, OSError) as exc:  # the one table (an OSError keeps its errno)
            raise pyfuse3.FUSEError(errno_for(exc)) from None
        except Exception:
            log.exception("FUSE %s failed; answered EIO", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None
    return answered


def errors_answered(cls: _Ops) -> _Ops:
    """Every handler pyfuse3 calls answers with an errno whatever it raised: pyfuse3 ends
    its main loop on any exception but ``FUSEError``, which unmounted the file system and
    dropped every other program's unsaved writes (a file name with a tab in it did). A gns
    error maps through :func:`errno_for` as in :meth:`GnsOperations.call`; anything else is
    logged with its traceback and answered ``EIO``."""
    for name, base in vars(pyfuse3.Operations).items():
        mine = vars(cls).get(name)
        if inspect.iscoroutinefunction(base) and inspect.iscoroutinefunction(mine):
            setattr(cls, name, _answers_with_errno(mine))
    return cls


@errors_answered
class GnsOperations(pyfuse3.Operations):
    """The file system: one instance per mount."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, client: Client, root: str, staging: Staging, *, read_only: bool = False,
                 timeout: float = 30.0, attr_timeout: float = 1.0,
                 cache: MetaCache | None = None) -> None:
        super().__init__()
        self.client = client
        self.root = "/" + root.strip("/") if root.strip("/") else "/"
        self.staging = staging
        self.read_only = read_only
        self.timeout = timeout
        self.attr_timeout = attr_timeout
        self.cache = cache if cache is not None else MetaCache()  # an empty one is falsy
        self.write_gate = WriteGate(
            client, aliases=lambda g: self.client.view().aliases_of(g))
        self.inodes = InodeTable()
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="gns-fuse-ra")
        self.started = time.time()
        self.uid, self.gid = os.getuid(), os.getgid()
        self._handles: dict[int, RemoteReader | StagedFile] = {}
        self._dirs: dict[int, list[tuple[str, Attrs]]] = {}
        self._dir_paths: dict[int, tuple[int, str]] = {}  # fh -> (inode, path) of the directory
        self._next_fh = 1
        self.pending: dict[str, StagedFile] = {}
        # Files unlinked while open, by inode: as on a local disk, their descriptors go on
        # reading and writing them (a fstat included) until the last one closes, and nothing
        # of them is committed (Python's TemporaryFile: create, unlink, use).
        self._orphans: dict[int, StagedFile] = {}
        # Versions this mount committed: their echo on the change stream changes nothing.
        self._own: set[tuple[str, int]] = set()
        self._own_order: collections.deque[tuple[str, int]] = collections.deque()
        self.watcher: Watcher | None = None  # set by the mount: follows the change stream per volume

    # ------------------------------------------------------------------ plumbing

    def gpath(self, rel: str) -> str:
        if not rel:
            return self.root
        return self.root.rstrip("/") + "/" + rel

    def rel_of(self, gpath: str) -> str | None:
        """The mount-relative path of a global one (None when outside ``--root``)."""
        if self.root == "/":
            return gpath.strip("/")
        if gpath == self.root:
            return ""
        if gpath.startswith(self.root + "/"):
            return gpath[len(self.root) + 1:]
        return None

    async def call(self, fn: Callable[..., T], *args: Any, conflict: int = errno.EEXIST,
                   invalid: int = errno.EINVAL, bounded: bool = True, **kw: Any) -> T:
        """Run a blocking ``Client`` call in a thread; gns errors become errno (one table).

        ``bounded`` calls fail with EIO after ``timeout`` seconds whatever the owner does
        (a frozen owner never hangs the caller; the abandoned thread ends with the client's
        own deadline). Commits and fills are bounded per window instead, as their length
        follows the file's size. A stale epoch (the owner moved) is retried: the client
        re-routes on its next call."""
        for attempt in range(_STALE_RETRIES):
            try:
                job = functools.partial(fn, *args, **kw)
                # Named T so the result keeps ``fn``'s type whether trio is typed or not.
                result: T
                if not bounded:
                    result = await trio.to_thread.run_sync(job)
                    return result
                with trio.move_on_after(self.timeout):
                    result = await trio.to_thread.run_sync(job, cancellable=True)
                    return result
                raise pyfuse3.FUSEError(errno.EIO)
            except StaleEpoch:
                if attempt + 1 < _STALE_RETRIES:
                    await trio.sleep(0.3)
                    continue
                raise pyfuse3.FUSEError(errno.EAGAIN) from None
            except GnsError as exc:
                raise pyfuse3.FUSEError(errno_for(exc, conflict=conflict, invalid=invalid)) from None
            except OSError as exc:
                raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        raise AssertionError("unreachable")

    def _path(self, ino: int) -> str:
        try:
            return self.inodes.path_of(ino)
        except KeyError:
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def _child(self, parent_inode: int, name: bytes, *, new: bool = False) -> str:
        """The mount-relative path of ``name`` in a directory, if a global path can hold
        it; else what a local disk answers: ENAMETOOLONG past 255 bytes (or a path past
        4096), and for a name with a control character or not UTF-8, EINVAL where it would
        be made (``new``) and ENOENT where it is looked for (nothing can be there)."""
        if len(name) > MAX_COMPONENT_BYTES:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        rel = _join(self._path(parent_inode), os.fsdecode(name))
        g = self.gpath(rel)
        try:
            normalize(g)
        except InvalidInput:
            if len(g.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
                raise pyfuse3.FUSEError(errno.ENAMETOOLONG) from None
            raise pyfuse3.FUSEError(errno.EINVAL if new else errno.ENOENT) from None
        if new:
            # A name gns keeps for itself (``.gns`` at a volume's root) fails where it is
            # made: the owner refuses it only at close, which a shell's ``>`` ignores.
            res = self.client.view().resolve(g)
            if res is not None:
                try:
                    check_writable_name(res.relative_path)
                except InvalidInput:
                    raise pyfuse3.FUSEError(errno.EINVAL) from None
        return rel

    def _writable(self) -> None:
        if self.read_only:
            raise pyfuse3.FUSEError(errno.EROFS)

    async def _may_write(self, rel: str) -> None:
        """EACCES now if this mount's identity clearly lacks ``write`` on ``rel`` (a program
        ignores the close where the owner would refuse the commit); the owner still decides
        at close. A check that fails or hangs lets the open go ahead (``write_gate``)."""
        g = self.gpath(rel)
        verdict = self.write_gate.cached(g)  # the usual case: no hop to a worker thread
        if verdict is None:
            with trio.move_on_after(min(self.timeout, _ACCESS_CHECK_S)):
                verdict = await trio.to_thread.run_sync(self.write_gate.check, g, cancellable=True)
            if verdict is None:
                log.warning("gns fuse: write check of %s timed out: the owner decides at close", g)
                self.write_gate.defer(g)
        if verdict is False:
            raise pyfuse3.FUSEError(errno.EACCES)

    def _new_fh(self, h: RemoteReader | StagedFile) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = h
        return fh

    def entry(self, ino: int, a: Attrs) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = ino
        e.generation = 0
        e.entry_timeout = self.attr_timeout
        e.attr_timeout = self.attr_timeout
        if a.stand_in:
            e.attr_timeout = 0  # a stat asks us, and gets the mounted volume root's
        if a.kind == "dir":
            e.st_mode = stat.S_IFDIR | (a.mode or 0o755)
            e.st_nlink = 2
        else:
            e.st_mode = stat.S_IFREG | (a.mode or 0o644)
            e.st_nlink = 1
        e.st_uid, e.st_gid = self.uid, self.gid
        e.st_rdev = 0
        e.st_size = a.size
        e.st_blksize = 1 << 20
        e.st_blocks = (a.size + 511) // 512
        ns = int((a.mtime or self.started) * 1e9)
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = ns
        return e

    # ------------------------------------------------------------------ namespace view

    def _mounted_at_or_below(self, g: str) -> bool:
        """Blocking: a volume is mounted at ``g`` or below it (rmdir there is EBUSY)."""
        return self.client.view().mounts.at(g).is_dir

    def _mount_children(self, g: str) -> list[str]:
        """Names of mount prefixes directly below global path ``g``."""
        return self.client.view().mounts.children(g)

    def _volume(self, g: str) -> str | None:
        res = self.client.view().resolve(g)
        return None if res is None else str(res.volume)

    def _staged_attrs(self, sf: StagedFile) -> Attrs:
        return Attrs("file", sf.size, sf.mtime or sf.touched, sf.mode)

    def remote_attrs(self, rel: str) -> Attrs | None:
        """Blocking: stat through the client, past the caches (None: no such file or
        directory). The mount also calls it to check ``--root`` before mounting."""
        g = self.gpath(rel)
        vol = self._volume(g)
        if vol is None:
            return Attrs("dir", 0, self.started, 0o755) if self._mount_children(g) else None
        if self.watcher is not None:
            self.watcher.ensure(vol)
        try:
            # A mount point is its volume root (a directory of the mount table if the
            # volume has nothing there): what ``gns stat`` shows of it, this shows.
            st = self.client.stat(g)
        except FileNotFound:
            self.cache.put_attrs(rel, None, vol)
            return None
        a = Attrs("dir" if st.is_dir else "file", st.size, st.mtime, st.mode, st.sha256)
        self.cache.put_attrs(rel, a, vol)
        return a

    def _lookup_attrs(self, rel: str) -> Attrs | None:
        """Blocking: answer a lookup from the parent's listing (one List call serves every
        name of the directory, which is how ls -l, find, tar and rsync walk), else stat."""
        parent, _, name = rel.rpartition("/")
        if name:
            entries = self.cache.get_list(parent)
            if entries is None:
                try:
                    entries = self._listing(parent)
                except GnsError:
                    entries = None
            if entries is not None:
                known, a = listed_attrs(entries, name)
                if known:
                    return a
        return self.remote_attrs(rel)

    async def attrs(self, rel: str, *, fresh: bool = False) -> Attrs | None:
        sf = self.pending.get(rel)
        if sf is not None:
            return self._staged_attrs(sf)
        if fresh:
            return await self.call(self.remote_attrs, rel)
        hit, a = self.cache.get_attrs(rel)
        if hit:
            return a
        # The parent's cached listing answers without a thread (a create's lookups: the
        # kernel's, then ours, each a hop to a worker thread and back, ~0.1 ms apiece).
        parent, _, name = rel.rpartition("/")
        entries = self.cache.get_list(parent) if name else None
        if entries is not None:
            known, a = listed_attrs(entries, name)
            if known:
                return a
        return await self.call(self._lookup_attrs, rel)

    def _listing(self, rel: str) -> list[tuple[str, Attrs]]:
        """Blocking: a directory's entries (volume listing plus mount prefixes)."""
        g = self.gpath(rel)
        vol = self._volume(g)
        mounts = self.client.view().mounts
        at = mounts.at(g)
        names: dict[str, Attrs] = {}
        if vol is not None:
            if self.watcher is not None:
                self.watcher.ensure(vol)
            try:
                for e in self.client.listdir(g):
                    names[e.name] = Attrs("dir" if e.is_dir else "file", e.size, e.mtime, e.mode)
            except FileNotFound:
                if not at.is_dir:  # a mount point lists (empty)
                    raise
        for name in at.below:
            if g.rstrip("/") + "/" + name in mounts:
                # A mount point shows its volume root, not what the parent volume may hold
                # under that name: known if stat'ed lately, else fetched when looked up.
                hit, a = self.cache.get_attrs(_join(rel, name))
                names[name] = a if hit and a is not None and a.kind == "dir" else _MOUNT_POINT
            else:
                names.setdefault(name, Attrs("dir", 0, self.started, 0o755))
        entries = sorted(names.items())
        self.cache.put_list(rel, entries, vol or "")
        return entries

    def own(self, rel: str, version: int | None) -> None:
        """Remember that this mount committed ``version`` of the volume holding ``rel``
        (the change stream's echo of it then changes nothing, so the volume root's mtime,
        its tree's last change, is forgotten here)."""
        res = self.client.view().resolve(self.gpath(rel))
        if res is None or not version:
            return
        root = self.rel_of(res.mount)
        if root is not None:
            self.cache.forget_attrs(root)
        key = (str(res.volume), int(version))
        self._own.add(key)
        self._own_order.append(key)
        if len(self._own_order) > 100_000:
            self._own.discard(self._own_order.popleft())

    def is_own(self, volume: str, version: int) -> bool:
        return (volume, version) in self._own

    def invalidate(self, rel: str, *, gone: bool = False) -> None:
        """A change made elsewhere (the change stream): forget what we know of ``rel`` and
        drop the kernel's attributes and pages of it; ``gone`` (deleted or renamed away)
        also drops its directory entry. Lookups that fail are not cached by the kernel, so
        a new name needs nothing more; and a live entry is never dropped (a process whose
        working directory it is would lose it)."""
        self.cache.invalidate(rel)
        ino = self.inodes.find(rel)
        if ino is not None:
            self.inodes.drop_content(ino)
            try:
                pyfuse3.invalidate_inode(ino, attr_only=False)
            except OSError:
                pass  # the kernel does not hold it
        if gone:
            self._drop_entry(rel)

    def _drop_entry(self, rel: str) -> None:
        """Make the kernel forget its directory entry of ``rel`` (it looks the name up again)."""
        parent, _, name = rel.rpartition("/")
        pino = self.inodes.find(parent)
        if pino is not None and name:
            try:
                pyfuse3.invalidate_entry_async(pino, name.encode(), ignore_enoent=True)
            except OSError:
                pass

    # ------------------------------------------------------------------ lookups

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        rel = self._child(parent_inode, name)
        a = await self.attrs(rel)
        if a is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        ino = self.inodes.ino_for(rel)
        self.inodes.looked_up(ino)
        return self.entry(ino, a)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        orphan = self._orphans.get(inode)
        if orphan is not None:
            e = self.entry(inode, self._staged_attrs(orphan))
            e.st_nlink = 0
            return e
        rel = self._path(inode)
        a = await self.attrs(rel)
        if a is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.entry(inode, a)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            self.inodes.forget(ino, n)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        rel = self._path(inode)
        entries = self.cache.get_list(rel)
        if entries is None:
            entries = await self.call(self._listing, rel, invalid=errno.ENOTDIR)
        pending = {r.rpartition("/")[2]: sf for r, sf in self.pending.items()
                   if r.rpartition("/")[0] == rel}
        if pending:
            merged = dict(entries)
            merged.update({n: self._staged_attrs(sf) for n, sf in pending.items()})
            entries = sorted(merged.items())
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = entries
        self._dir_paths[fh] = (inode, rel)
        return fh

    def _dot_entries(self, ino: int, rel: str) -> list[tuple[bytes, pyfuse3.EntryAttributes]]:
        """``.`` and ``..`` of directory ``rel``, listed as on a local disk (``ls -a``). The
        mount root is its own parent here: the kernel answers ``..`` above the mount."""
        parent = rel.rpartition("/")[0]
        pino = ino if not rel else (self.inodes.find(parent) or self.inodes.ino_for(parent))
        out = []
        for name, i, r in ((b".", ino, rel), (b"..", pino, parent)):
            hit, a = self.cache.get_attrs(r)
            if not hit or a is None or a.kind != "dir":
                a = Attrs("dir", 0, self.started, 0o755)  # the kernel keeps no attrs of these
            out.append((name, self.entry(i, a)))
        return out

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        # Offsets: 1 and 2 follow "." and "..", i + 3 follows entries[i] of the listing
        # snapshot taken at opendir, so a listing resumed at any offset skips and repeats
        # nothing.
        entries = self._dirs.get(fh, [])
        dino, parent = self._dir_paths.get(fh, (0, ""))
        if dino and start_id < 2:
            dots = self._dot_entries(dino, parent)
            for i in range(start_id, 2):
                dot, attrs = dots[i]
                # No lookup count for "." and "..": the kernel takes none for them.
                if not pyfuse3.readdir_reply(token, dot, attrs, i + 1):
                    return
        for i in range(max(start_id - 2, 0), len(entries)):
            name, a = entries[i]
            rel = _join(parent, name)
            ino = self.inodes.ino_for(rel)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self.entry(ino, a), i + 3):
                return
            self.inodes.looked_up(ino)

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)
        self._dir_paths.pop(fh, None)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 40
        s.f_files = s.f_ffree = s.f_favail = 1 << 32
        s.f_namemax = 255
        return s

    # ------------------------------------------------------------------ files

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        rel = self._path(inode)
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY or bool(flags & os.O_TRUNC)
        if writing:
            self._writable()
            await self._may_write(rel)
            self.inodes.drop_content(inode)  # the kernel caches what is written through it
        sf = self.pending.get(rel)
        if sf is not None:
            if flags & os.O_TRUNC:
                sf.truncate(0)
            sf.refs += 1
            return pyfuse3.FileInfo(fh=self._new_fh(sf), keep_cache=False)
        a = await self.attrs(rel, fresh=True)  # close-to-open: always revalidate
        if a is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if a.kind == "dir":
            raise pyfuse3.FUSEError(errno.EISDIR)
        if not writing:
            reader = RemoteReader(self.client, self.gpath(rel), a.size, self.pool, self.timeout)
            # The kernel's pages of this file are kept only if they are of this very content
            # (close-to-open), however long ago they were read: not only while its attributes
            # happen to be cached (a re-read a few seconds later fetched the file again).
            keep = bool(a.sha256) and self.inodes.content(inode) == a.sha256
            self.inodes.set_content(inode, a.sha256)
            return pyfuse3.FileInfo(fh=self._new_fh(reader), keep_cache=keep)
        sf = StagedFile(self.staging, rel, a.mode or 0o644, exists=True)
        try:
            if flags & os.O_TRUNC:
                sf.stream_ok = True
                if a.size:
                    sf.dirty = sf.only_truncated = True
            else:
                await self.call(sf.fill, self.client, self.gpath(rel), a.size, self.timeout,
                                bounded=False)
        except BaseException:
            sf.close()
            raise
        if not sf.dirty:  # nothing changed yet: stat shows the committed mtime, as before open
            sf.touched = a.mtime or sf.touched
        sf.refs += 1
        self.pending[rel] = sf
        return pyfuse3.FileInfo(fh=self._new_fh(sf), keep_cache=False)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._writable()
        rel = self._child(parent_inode, name, new=True)
        g = self.gpath(rel)
        if self._volume(g) is None:
            raise pyfuse3.FUSEError(errno.EACCES)  # above every mount: nowhere to store it
        existing = await self.attrs(rel)  # the kernel just looked it up: the cache knows
        if existing is not None:
            if flags & os.O_EXCL:
                raise pyfuse3.FUSEError(errno.EEXIST)
            if existing.kind == "dir":
                raise pyfuse3.FUSEError(errno.EISDIR)
        await self._may_write(rel)  # after EEXIST and EISDIR, which a local disk says first
        sf = self.pending.get(rel)
        if sf is None:
            sf = StagedFile(self.staging, rel, (mode & 0o7777) or 0o644,
                            exists=existing is not None)
            # O_EXCL holds across clusters too: the owner refuses the put if one appeared.
            sf.exclusive = existing is None and bool(flags & os.O_EXCL)
            if existing is not None and not flags & os.O_TRUNC:
                await self.call(sf.fill, self.client, g, existing.size, self.timeout,
                                bounded=False)
            else:
                sf.stream_ok = True
                # an existing file truncated: see StagedFile.only_truncated
                sf.only_truncated = existing is not None and existing.size > 0
            sf.dirty = True  # a new (or truncated) file is committed at close even if empty
            self.pending[rel] = sf
        sf.refs += 1
        ino = self.inodes.ino_for(rel)
        self.inodes.looked_up(ino)
        self.inodes.drop_content(ino)
        return (pyfuse3.FileInfo(fh=self._new_fh(sf), keep_cache=False),
                self.entry(ino, self._staged_attrs(sf)))

    # pyfuse3 declares bytes but takes any contiguous buffer (PyObject_GetBuffer): a view
    # into the read window spares a copy of every byte read.
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        h = self._handles[fh]
        if isinstance(h, StagedFile):
            return h.read(off, size)
        data = h.cached(off, size)
        if data is not None:
            return data
        return await self.call(h.read, off, size)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self._handles[fh]
        if not isinstance(h, StagedFile):
            raise pyfuse3.FUSEError(errno.EBADF)
        try:
            n = h.write(off, buf)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        chunk = h.stream_chunk(self.client, self.gpath(h.rel))
        if chunk is not None and h.upload is not None:
            if h.upload.full():  # the owner is behind: wait off the event loop
                await trio.to_thread.run_sync(h.upload.push, chunk)
            else:
                h.upload.push(chunk)
        return n

    async def _commit(self, sf: StagedFile) -> None:
        if not sf.dirty or sf.unlinked:
            return
        info = await self.call(sf.commit, self.client, self.gpath(sf.rel), invalid=errno.EISDIR,
                               conflict=errno.EEXIST, bounded=False)
        if info is None:
            return
        self.own(sf.rel, info.version)
        if sf.mtime is None:  # until released, stat answers from sf: show the commit's mtime
            sf.touched = info.mtime or sf.touched
        vol = self._volume(self.gpath(sf.rel)) or ""
        self.cache.upsert(sf.rel, Attrs("file", info.size, info.mtime, info.mode or sf.mode, info.sha256),
                          vol)

    async def flush(self, fh: int) -> None:
        h = self._handles.get(fh)
        if isinstance(h, StagedFile) and not h.only_truncated:
            await self._commit(h)

    async def fsync(self, fh: int, datasync: bool) -> None:
        h = self._handles.get(fh)
        if isinstance(h, StagedFile):
            await self._commit(h)

    async def release(self, fh: int) -> None:
        h = self._handles.pop(fh, None)
        if isinstance(h, RemoteReader):
            h.close()
            return
        if h is None:
            return
        h.refs -= 1
        if h.refs > 0:
            return
        if h.unlinked:
            for ino in [i for i, o in self._orphans.items() if o is h]:
                del self._orphans[ino]
        try:
            if h.failed:
                # The app was told (its close or fsync answered the error). A commit now,
                # that nobody hears of, could land after the app has given up or written the
                # file anew: what it was told failed must stay failed.
                log.error("%s not committed: its last commit failed and nothing changed since; "
                          "staged data dropped", self.gpath(h.rel))
            else:
                await self._commit(h)
        except pyfuse3.FUSEError as exc:
            log.error("commit of %s at release failed (errno %d); staged data dropped",
                      self.gpath(h.rel), exc.errno)
        finally:
            if self.pending.get(h.rel) is h:
                del self.pending[h.rel]
            if h.dirty or h.unlinked:  # not committed: what we knew came from the staging
                self.cache.invalidate(h.rel)
            if h.dirty and not h.exists_remote and not h.unlinked:
                # A new file the owner refused is not there: without this, the kernel's entry
                # from create made the next open(O_CREAT) of the name an open, and ENOENT.
                self._drop_entry(h.rel)
            h.close()

    # ------------------------------------------------------------------ attributes

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        orphan = self._orphans.get(inode)
        if orphan is not None:  # unlinked while open: only its staged copy is left to change
            if fields.update_size:
                orphan.truncate(attr.st_size)
            if fields.update_mode:
                orphan.mode = attr.st_mode & 0o7777
            if fields.update_mtime:
                orphan.mtime = attr.st_mtime_ns / 1e9
            return await self.getattr(inode)
        rel = self._path(inode)
        changes = (fields.update_size or fields.update_mode or fields.update_mtime)
        if changes:
            self._writable()
        h = self._handles.get(fh) if fh is not None else None
        sf = h if isinstance(h, StagedFile) else self.pending.get(rel)
        g = self.gpath(rel)
        if fields.update_size:
            if sf is not None:
                sf.truncate(attr.st_size)
            else:
                await self._truncate_remote(rel, attr.st_size)
        if fields.update_mode:
            mode = attr.st_mode & 0o7777
            if sf is not None:
                sf.mode = mode
            if sf is None or not sf.dirty:
                self.own(rel, await self.call(self.client.chmod, g, mode))
        if fields.update_mtime:
            mtime = attr.st_mtime_ns / 1e9
            if sf is None or not sf.dirty:
                self.own(rel, await self.call(self.client.set_mtime, g, mtime))
            if sf is not None:
                # A staged file answers stat until released (touch's close comes before its
                # utimensat): it must show the new mtime at once, committed or not.
                sf.mtime = mtime
        # uid/gid (chown) are accepted and not kept: gns has no file owners.
        if changes:
            self.cache.invalidate(rel)
        a = await self.attrs(rel, fresh=changes)
        if a is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.entry(inode, a)

    async def _truncate_remote(self, rel: str, size: int) -> None:
        a = await self.attrs(rel, fresh=True)
        if a is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if a.kind == "dir":
            raise pyfuse3.FUSEError(errno.EISDIR)
        await self._may_write(rel)  # before fetching what a commit would be refused anyway
        if a.size == size:
            return
        sf = StagedFile(self.staging, rel, a.mode or 0o644, exists=True)
        try:
            await self.call(sf.fill, self.client, self.gpath(rel), min(a.size, size), self.timeout,
                            bounded=False)
            sf.truncate(size)
            await self._commit(sf)
        finally:
            sf.close()

    # ------------------------------------------------------------------ namespace edits

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._writable()
        rel = self._child(parent_inode, name, new=True)
        g = self.gpath(rel)
        if self._volume(g) is None:
            raise pyfuse3.FUSEError(errno.EACCES)
        version = await self.call(self.client.mkdir, g, mode=(mode & 0o7777) or 0o755,
                                  invalid=errno.ENOTDIR)
        self.own(rel, version)
        self.cache.upsert(rel, Attrs("dir", 0, time.time(), (mode & 0o7777) or 0o755),
                          self._volume(g) or "")
        return await self.lookup(parent_inode, name, ctx)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        rel = self._child(parent_inode, name)
        g = self.gpath(rel)
        if await self.call(self._mounted_at_or_below, g):
            raise pyfuse3.FUSEError(errno.EBUSY)
        version = await self.call(self.client.rmdir, g, conflict=errno.ENOTEMPTY,
                                  invalid=errno.ENOTDIR)
        self.own(rel, version)
        self.cache.remove(rel, self._volume(g) or "")

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        rel = self._child(parent_inode, name)
        sf = self.pending.pop(rel, None)
        if sf is not None:
            sf.unlinked = True  # still-open descriptors keep it; it is never committed
            ino = self.inodes.detach(rel)
            if ino is not None:
                self._orphans[ino] = sf
            if not sf.exists_remote:
                self.cache.invalidate(rel)
                return
        version = await self.call(self.client.rm, self.gpath(rel), keep_parent=True,
                                  invalid=errno.EISDIR)
        self.own(rel, version)
        self.cache.remove(rel, self._volume(self.gpath(rel)) or "")

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        self._writable()
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new, new=True)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        g_old, g_new = self.gpath(old), self.gpath(new)
        v_old, v_new = self._volume(g_old), self._volume(g_new)
        if v_old is None or v_new is None or v_old != v_new:
            raise pyfuse3.FUSEError(errno.EXDEV)
        if new.startswith(old + "/"):
            raise pyfuse3.FUSEError(errno.EINVAL)
        # Anything staged below the source is committed first: it moves with the rename.
        for rel, sf in list(self.pending.items()):
            if rel == old or rel.startswith(old + "/"):
                await self._commit(sf)
        src = await self.attrs(old, fresh=True)
        if src is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        dst = await self.attrs(new, fresh=True)
        if dst is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            if src.kind == "file" and dst.kind == "dir":
                raise pyfuse3.FUSEError(errno.EISDIR)
            if src.kind == "dir" and dst.kind == "file":
                raise pyfuse3.FUSEError(errno.ENOTDIR)
        self.own(old, await self.call(self.client.mv, g_old, g_new, conflict=errno.ENOTEMPTY))
        self.inodes.rename(old, new)
        for rel, sf in list(self.pending.items()):
            if rel == old or rel.startswith(old + "/"):
                del self.pending[rel]
                sf.rel = new + rel[len(old):]
                self.pending[sf.rel] = sf
        self.cache.invalidate_tree(old)
        self.cache.invalidate_tree(new)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)  # no hard links: one path per file

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Unmounting: staged files never closed are dropped, not committed."""
        for sf in set(self.pending.values()):
            sf.close()
        self.pending.clear()
        for h in self._handles.values():
            if isinstance(h, RemoteReader):
                h.close()
        self._handles.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
