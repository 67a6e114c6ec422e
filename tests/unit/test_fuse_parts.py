"""The pieces of ``gns fuse`` that need no mount: the errno table, the inode table, the
attribute cache and the staging area (issue 10)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

pytest.importorskip("pyfuse3", reason="pyfuse3 is not installed (pip install 'gns[fuse]')")

from federation.client import FileInfo
from federation.fuse.cache import Attrs, MetaCache
from federation.fuse.errnos import errno_for
from federation.fuse.handles import StagedFile
from federation.fuse.inodes import ROOT_INODE, InodeTable
from federation.fuse.operations import GnsOperations, listed_attrs
from federation.fuse.staging import Staging
from namespace.errors import (
    Conflict,
    FileNotFound,
    GnsError,
    InvalidInput,
    NotFound,
    OutOfSpace,
    PermissionDenied,
    StaleEpoch,
    Unavailable,
)


@pytest.mark.parametrize(("exc", "code"), [
    (FileNotFound("x"), errno.ENOENT),
    (NotFound("x"), errno.ENOENT),
    (Unavailable("owner down"), errno.EIO),
    (PermissionDenied("no grant"), errno.EACCES),
    (StaleEpoch("old"), errno.EAGAIN),
    (Conflict("exists"), errno.EEXIST),
    (InvalidInput("bad"), errno.EINVAL),
    (GnsError("?"), errno.EIO),
    (OSError(errno.ENOSPC, "full"), errno.ENOSPC),
    (OutOfSpace("cluster c1 has no space left on its disk"), errno.ENOSPC),
    (RuntimeError("bug"), errno.EIO),
])
def test_errno_table(exc: BaseException, code: int) -> None:
    assert errno_for(exc) == code


def test_errno_table_conflict_meaning_is_the_callers() -> None:
    assert errno_for(Conflict("not empty"), conflict=errno.ENOTEMPTY) == errno.ENOTEMPTY
    assert errno_for(InvalidInput("dir"), invalid=errno.EISDIR) == errno.EISDIR
    assert errno_for(PermissionDenied("x"), conflict=errno.ENOTEMPTY) == errno.EACCES


def test_a_cached_listing_answers_lookups_of_names_in_it_and_not_in_it() -> None:
    f, d = Attrs("file", 3, 1.0, 0o644), Attrs("dir", 0, 1.0, 0o755)
    mount_point = Attrs("dir", 0, 1.0, 0o755, stand_in=True)
    entries = sorted([("a.csv", f), ("b", d), ("mnt", mount_point)])
    assert listed_attrs(entries, "a.csv") == (True, f)
    assert listed_attrs(entries, "b") == (True, d)
    assert listed_attrs(entries, "a") == (True, None)  # a prefix of a name is not the name
    assert listed_attrs(entries, "zzz") == (True, None)
    assert listed_attrs(entries, "mnt") == (False, None)  # only a stat knows a mount point's root


def test_inodes_follow_renames_and_forget() -> None:
    t = InodeTable()
    a = t.ino_for("a")
    ab = t.ino_for("a/b")
    other = t.ino_for("z")
    assert t.ino_for("a") == a and t.path_of(ROOT_INODE) == ""
    t.rename("a", "c")
    assert t.path_of(a) == "c" and t.path_of(ab) == "c/b" and t.find("a") is None
    t.rename("c/b", "z")  # replaces z
    assert t.path_of(ab) == "z"
    with pytest.raises(KeyError):
        t.path_of(other)
    t.looked_up(ab, 2)
    t.forget(ab, 1)
    assert t.path_of(ab) == "z"
    t.forget(ab, 1)
    with pytest.raises(KeyError):
        t.path_of(ab)
    t.forget(ROOT_INODE, 5)
    assert t.path_of(ROOT_INODE) == ""


def test_inodes_remember_the_content_the_kernel_may_cache() -> None:
    t = InodeTable()
    f, g = t.ino_for("f"), t.ino_for("g")
    t.looked_up(f)
    t.set_content(f, "sha-1")
    t.set_content(g, "sha-2")
    assert t.content(f) == "sha-1"
    t.rename("f", "h")  # the inode keeps its pages, and what they are of
    assert t.content(f) == "sha-1"
    t.rename("g", "h")  # what was at h goes, with its mark
    assert t.content(f) is None and t.content(g) == "sha-2"
    t.drop_content(g)  # opened for writing: its pages may be anything
    assert t.content(g) is None
    t.set_content(g, "sha-3")
    t.looked_up(g)
    t.forget(g, 1)  # the kernel forgot it, and its pages
    assert t.content(g) is None
    t.set_content(g, "sha-4")  # an inode already gone is not marked again
    assert t.content(g) is None


def test_cache_lifetime_follows_stream_health() -> None:
    c = MetaCache(ttl=30.0, fallback_ttl=0.05)
    f = Attrs("file", 3, 1.0, 0o644)
    c.put_attrs("v/a", f, "v")
    assert c.get_attrs("v/a") == (True, f)
    time.sleep(0.06)
    assert c.get_attrs("v/a") == (False, None)  # no stream: one short lifetime
    c.set_healthy("v", True)
    c.put_list("v", [("a", f)], "v")
    time.sleep(0.06)
    assert c.get_attrs("v/a") == (True, f) and c.get_list("v") == [("a", f)]
    c.invalidate("v/a")
    assert c.get_attrs("v/a") == (False, None) and c.get_list("v") is None
    c.put_attrs("v/gone", None, "v")
    assert c.get_attrs("v/gone") == (True, None)  # negative entries are kept too
    c.set_healthy("v", False)  # events may have been missed: all of v goes
    assert c.get_attrs("v/gone") == (False, None)


def test_staging_bounds_and_crash_cleanup(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f"mount-{dead.pid}-abcd"
    leftover.mkdir()
    (leftover / "f1").write_bytes(b"never closed")
    s = Staging(tmp_path, max_bytes=10)
    s.open()
    assert not leftover.exists()  # a crashed mount's staging is swept at the next start
    fresh = s.new_file()
    os.close(fresh.fd)
    path = fresh.path
    s.reserve(0, 8)
    with pytest.raises(OSError) as exc:
        s.reserve(8, 11)
    assert exc.value.errno == errno.ENOSPC
    s.release(8)
    s.reserve(0, 10)
    s.close()
    assert not path.exists() and not s.dir.exists()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _PutClient:
    """``put`` as a commit calls it: records what the staged file sent."""

    def __init__(self) -> None:
        self.sent = b""

    def put(self, src: Any, gpath: str, **_: Any) -> FileInfo:
        self.sent = src.read()
        return FileInfo(path=gpath, type="file", size=len(self.sent), mtime=0.0, sha256="", version=1, mode=0o644)


def _staged(staging: Staging, data: bytes) -> StagedFile:
    sf = StagedFile(staging, "v/f", 0o644, exists=False)
    sf.write(0, data)
    return sf


def test_a_staging_file_is_kept_for_the_next_and_shows_none_of_its_old_bytes(tmp_path: Path) -> None:
    s = Staging(tmp_path)
    s.open()
    first = _staged(s, b"Z" * 1000)
    path = first.file
    first.close()
    first.close()  # twice is once: a kept file has one user at a time
    assert s.kept == 1 and path.stat().st_size == 1000
    assert first.fd == -1  # a late use fails instead of writing into the next user's file
    second = _staged(s, b"new")
    assert second.file == path and s.kept == 0  # the kept file, not a new one
    assert second.read(0, 1000) == b"new"  # reads stop at its size
    second.write(10, b"gap")  # a gap reads as zeros, never as the earlier file's bytes
    assert second.read(0, 1000) == b"new" + bytes(7) + b"gap"
    second.truncate(20)  # and so does growing it
    assert second.read(0, 1000) == b"new" + bytes(7) + b"gap" + bytes(7)
    second.close()
    third = _staged(s, b"abc")
    third.write(1, b"X")  # out of order: the commit sends the staged file, to its size only
    client = _PutClient()
    third.commit(cast(Any, client), "/v/f")
    assert client.sent == b"aXc"
    third.close()
    _staged(s, b"Z" * 1000).close()
    fourth = _staged(s, b"ab")
    fourth.truncate(10)  # growing reads as zeros
    assert fourth.read(0, 1000) == b"ab" + bytes(8)
    fourth.close()
    s.close()
    assert not s.dir.exists()


def test_a_full_disk_takes_back_the_kept_files_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Staging(tmp_path)
    s.open()
    a, b = _staged(s, b"a" * 100), _staged(s, b"b" * 100)
    a.close()
    b.close()
    writing = _staged(s, b"")  # takes the file kept last (b's); a's stays kept
    assert writing.file == b.file and s.kept == 1
    real = os.pwrite
    disk_full = True

    def pwrite(fd: int, data: Any, off: int) -> int:
        if disk_full and (s.kept or writing.length > writing.size):
            raise OSError(errno.ENOSPC, "No space left on device")  # until space is given back
        return real(fd, data, off)

    monkeypatch.setattr(os, "pwrite", pwrite)
    assert writing.write(0, b"new") == 3  # a's kept file and b's old bytes went; retried
    assert s.kept == 0 and not a.file.exists() and writing.length == 3
    assert writing.read(0, 100) == b"new"

    def no_space(fd: int, data: Any, off: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    with pytest.raises(OSError) as exc:  # nothing left to give back: the error stands
        writing.write(3, b"more")
    assert exc.value.errno == errno.ENOSPC
    monkeypatch.undo()
    writing.close()
    s.close()


def test_a_fill_that_meets_a_full_disk_keeps_what_it_filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Staging(tmp_path)
    s.open()
    for sf in [_staged(s, b"Z" * 1000), _staged(s, b"Z" * 1000)]:
        sf.close()
    filling = StagedFile(s, "v/f", 0o644, exists=True)  # over a kept file of 1,000 Zs
    real, calls = os.pwrite, []

    def pwrite(fd: int, data: Any, off: int) -> int:
        calls.append(off)
        if len(calls) == 2:  # the second message meets a full disk, once
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, off)

    monkeypatch.setattr(os, "pwrite", pwrite)
    filling.fill(cast(Any, _MessageClient(b"x" * 10 + b"y" * 10)), "/v/f", 20, 5.0)
    monkeypatch.undo()
    assert filling.read(0, 1000) == b"x" * 10 + b"y" * 10  # the first message survived the cut
    filling.close()
    s.close()


def test_kept_staging_files_are_bounded_and_expire(tmp_path: Path) -> None:
    clock = _Clock()
    s = Staging(tmp_path, keep_bytes=1500, keep_files=2, keep_idle=20.0, clock=clock)
    s.open()
    files = [_staged(s, b"x" * 1000) for _ in range(3)]
    paths = [f.file for f in files]
    for f in files:
        f.close()
    # The first is kept whole; the second is cut to the 500 bytes left; the third finds the
    # count full and is deleted.
    assert s.kept == 2
    assert [p.stat().st_size for p in paths[:2]] == [1000, 500] and not paths[2].exists()
    clock.now += 19.0
    s.sweep()
    assert s.kept == 2
    clock.now += 1.0
    s.sweep()  # unused for keep_idle: deleted, their pages given back
    assert s.kept == 0 and not any(p.exists() for p in paths)
    s.close()
    bounded = Staging(tmp_path, max_bytes=10_000)  # its bound counts staged bytes only
    bounded.open()
    _staged(bounded, b"x" * 1000).close()
    assert bounded.kept == 0
    bounded.close()


def test_the_mount_uses_the_metadata_cache_it_is_given(tmp_path: Path) -> None:
    """`gns fuse --cache-entries N` hands the mount an empty, bounded cache; an empty cache
    is falsy (its ``len``), and `cache or MetaCache()` swapped it for the default bound."""
    given = MetaCache(max_entries=5)
    ops = GnsOperations(cast(Any, None), "/", Staging(tmp_path), cache=given)
    try:
        assert ops.cache is given
    finally:
        ops.close()


class _MessageClient:
    """``read_views`` as the client gives it: each 10-byte message of a range, as a view."""

    def __init__(self, data: bytes) -> None:
        self.data, self.messages = data, list[bytes]()

    def read_views(self, gpath: str, offset: int, length: int, timeout: float) -> Iterator[memoryview]:
        for at in range(offset, min(offset + length, len(self.data)), 10):
            message = self.data[at:min(at + 10, offset + length)]
            self.messages.append(message)
            yield memoryview(message)


def test_remote_reads_are_views_into_the_messages_and_whole_across_their_edges() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from federation.fuse.handles import RemoteReader

    data = bytes(range(256)) * 2
    client = _MessageClient(data)
    with ThreadPoolExecutor(2) as pool:
        reader = RemoteReader(client, "/f", len(data), pool, timeout=5, window=35)  # type: ignore[arg-type]
        # Sequential reads of every size meet message edges (10) and window edges (35).
        for size in (1, 3, 8, 10, 13, 35, 36, 100):
            got, pos = bytearray(), 0
            while chunk := reader.read(pos, size):
                got += chunk
                pos += len(chunk)
            assert bytes(got) == data, size
        # A miss fetches the window from where it is: 40 to 75, messages 40-50, 50-60, ...
        inside = reader.read(40, 5)  # within one message: no copy
        assert isinstance(inside, memoryview) and inside.obj in client.messages and inside == data[40:45]
        across = reader.read(48, 5)
        assert type(across) is bytes and across == data[48:53]  # across two messages: joined
        assert reader.read(73, 5) == data[73:78]  # across two windows
        cached = reader.cached(80, 1)
        assert cached is not None and cached == data[80:81]
        assert reader.read(len(data) - 3, 10) == data[-3:]
        assert reader.read(len(data), 10) == b""
        reader.close()


class _ViewlessClient:
    """A client whose namespace view fails as given: what a handler meets mid-call."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def view(self) -> Any:
        raise self.error


def _errno_of(ops: GnsOperations, handler: str, *args: Any) -> int:
    import pyfuse3
    import trio

    async def call() -> None:
        await getattr(ops, handler)(*args)

    with pytest.raises(pyfuse3.FUSEError) as caught:
        trio.run(call)
    return caught.value.errno


def test_a_name_no_global_path_can_hold_gets_the_errno_a_local_disk_gives(tmp_path: Path) -> None:
    """A name over 255 bytes, with a control character or not UTF-8 never reaches the
    client (whose error ended the mount): ENAMETOOLONG, else EINVAL where it would be made
    and ENOENT where it is looked for."""
    import errno

    import pyfuse3

    root = pyfuse3.ROOT_INODE
    ops = GnsOperations(cast(Any, _ViewlessClient(AssertionError("the client was asked"))), "/data",
                        Staging(tmp_path))
    try:
        for bad in (b"a\tb", b"new\nline", b"x\x01y", b"\xff\xfe"):
            assert _errno_of(ops, "create", root, bad, 0o644, os.O_WRONLY, None) == errno.EINVAL
            assert _errno_of(ops, "mkdir", root, bad, 0o755, None) == errno.EINVAL
            assert _errno_of(ops, "rename", root, b"ok", root, bad, 0, None) == errno.EINVAL
            assert _errno_of(ops, "lookup", root, bad, None) == errno.ENOENT
            assert _errno_of(ops, "unlink", root, bad, None) == errno.ENOENT
        long = b"y" * 256
        for handler, args in (("create", (root, long, 0o644, os.O_WRONLY, None)),
                              ("mkdir", (root, long, 0o755, None)), ("lookup", (root, long, None)),
                              ("rename", (root, b"ok", root, long, 0, None))):
            assert _errno_of(ops, handler, *args) == errno.ENAMETOOLONG, handler
    finally:
        ops.close()


def test_every_handler_answers_with_an_errno_whatever_it_meets(tmp_path: Path) -> None:
    """pyfuse3 ends its main loop (the mount) on any exception but FUSEError: a gns error
    raised outside ``call`` maps through the one table, anything else is EIO."""
    import errno

    import pyfuse3

    from namespace.errors import PermissionDenied, Unavailable

    root = pyfuse3.ROOT_INODE
    for error, code in ((RuntimeError("a bug"), errno.EIO), (Unavailable("owner down"), errno.EIO),
                        (PermissionDenied("no"), errno.EACCES), (OSError(errno.ENOSPC, "full"), errno.ENOSPC)):
        ops = GnsOperations(cast(Any, _ViewlessClient(error)), "/", Staging(tmp_path / type(error).__name__))
        try:
            assert _errno_of(ops, "create", root, b"f", 0o644, os.O_WRONLY, None) == code
            assert _errno_of(ops, "mkdir", root, b"d", 0o755, None) == code
        finally:
            ops.close()


def test_a_change_stream_refused_for_good_is_asked_again_ever_more_slowly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A mount whose identity may not read a volume's root is refused its change stream on
    every try: it retried twice a second forever, logging each time."""
    import logging
    from types import SimpleNamespace

    from federation.fuse import watch as watch_module
    from namespace.errors import PermissionDenied

    class RefusingClient:
        calls = 0

        def view(self) -> Any:
            return SimpleNamespace(mount_list=lambda: [SimpleNamespace(volume="v2", path="/other")])

        def volume(self, name: str) -> Any:
            return SimpleNamespace(version=3)

        def watch(self, path: str, from_version: int) -> Any:
            self.calls += 1
            raise PermissionDenied("permission denied: user:alice has no read on /other")

    waits: list[float] = []

    class CountedStop:
        def is_set(self) -> bool:
            return len(waits) >= 9

        def wait(self, seconds: float) -> bool:
            waits.append(seconds)
            return False

    client = RefusingClient()
    ops = GnsOperations(cast(Any, client), "/", Staging(tmp_path))
    try:
        w = watch_module.Watcher(ops, cast(Any, client))
        w._stop = cast(Any, CountedStop())
        with caplog.at_level(logging.INFO, logger=watch_module.__name__):
            w._follow("v2")
    finally:
        ops.close()
    assert client.calls == 9
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert len([r for r in caplog.records if "interrupted" in r.getMessage()]) == 1
