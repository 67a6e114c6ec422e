"""fsspec's own abstract test suite (copy, get, put, open, pipe) against ``gns://`` on a
real federation, as s3fs, gcsfs and adlfs run it against their emulators (issue 10).

One module-scoped federation (three controllers, volume ``fss`` mounted at ``/fss``); each
test works under a fresh directory of its own.
"""
from __future__ import annotations

import posixpath
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fsspec.tests.abstract import (
    AbstractCopyTests,
    AbstractFixtures,
    AbstractGetTests,
    AbstractOpenTests,
    AbstractPipeTests,
    AbstractPutTests,
)

from federation.fs import GnsFileSystem
from tests.fixtures.federation import Federation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gns_fs(federation3: Federation) -> Any:
    f = federation3
    assert f.gns("volume", "create", "fss", "--cluster", "onprem-a").returncode == 0
    assert f.gns("mount", "add", "/fss", "fss").returncode == 0
    fs = GnsFileSystem(etcd=f.etcd_urls, skip_instance_cache=True)
    yield fs
    fs.client.close()


class GnsFixtures(AbstractFixtures):  # type: ignore[misc]
    @pytest.fixture
    def fs(self, gns_fs: Any) -> Any:
        return gns_fs

    @pytest.fixture
    def fs_join(self) -> Any:
        return posixpath.join

    @pytest.fixture
    def fs_path(self) -> str:
        return f"/fss/t-{uuid.uuid4().hex[:10]}"

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return True


class TestGnsCopy(AbstractCopyTests, GnsFixtures):  # type: ignore[misc]
    pass


class TestGnsGet(AbstractGetTests, GnsFixtures):  # type: ignore[misc]
    pass


class TestGnsPut(AbstractPutTests, GnsFixtures):  # type: ignore[misc]
    pass


class TestGnsOpen(AbstractOpenTests, GnsFixtures):  # type: ignore[misc]
    pass


class TestGnsPipe(AbstractPipeTests, GnsFixtures):  # type: ignore[misc]
    pass


def test_errors_are_builtins(gns_fs: Any) -> None:
    with pytest.raises(FileNotFoundError):
        gns_fs.info("/fss/definitely/missing")
    with pytest.raises(FileNotFoundError):
        gns_fs.rm("/fss/definitely/missing", recursive=True)
    gns_fs.pipe_file("/fss/err/x", b"1")
    with pytest.raises(FileExistsError):
        gns_fs.pipe_file("/fss/err/x", b"2", mode="create")
    gns_fs.mkdir("/fss/err/empty")
    assert gns_fs.isdir("/fss/err/empty") and gns_fs.ls("/fss/err/empty") == []
    gns_fs.mv("/fss/err/x", "/fss/err/y")
    assert gns_fs.cat_file("/fss/err/y") == b"1"
    gns_fs.rm("/fss/err", recursive=True)
    assert not gns_fs.exists("/fss/err")


def test_mv_of_a_mount_point_is_refused_before_anything_is_copied(federation3: Federation, gns_fs: Any) -> None:
    """``fs.mv`` of a mount point to another volume copied every file, then failed to
    delete the mount point: the copy stayed, the source too. Refused first now, as the
    atomic rename refuses it; a file across volumes still moves (copy, then delete)."""
    f = federation3
    assert f.gns("volume", "create", "fsmv", "--cluster", "onprem-b").returncode == 0
    assert f.gns("mount", "add", "/fsmv", "fsmv").returncode == 0
    gns_fs.pipe_file("/fsmv/a.txt", b"a")
    with pytest.raises(ValueError, match="mount point"):
        gns_fs.mv("/fsmv", "/fss/copied", recursive=True)
    assert not gns_fs.exists("/fss/copied")
    assert gns_fs.cat_file("/fsmv/a.txt") == b"a"
    gns_fs.mv("/fsmv/a.txt", "/fss/moved.txt")
    assert gns_fs.cat_file("/fss/moved.txt") == b"a" and not gns_fs.exists("/fsmv/a.txt")


def test_rm_of_a_directory_needs_recursive_and_changes_nothing_without(gns_fs: Any) -> None:
    """``fs.rm(dir)`` deleted the whole tree (data lost); fsspec's local filesystem, ``gns rm``
    and ``Client.rm`` all refuse a directory without ``recursive``."""
    gns_fs.pipe({"/fss/keep/a.txt": b"1", "/fss/keep/deep/b.txt": b"2", "/fss/keep2/c.txt": b"3"})
    for how in ("/fss/keep", ["/fss/keep2/c.txt", "/fss/keep"], "/fss/kee*"):
        with pytest.raises(ValueError, match="recursive"):
            gns_fs.rm(how)
    assert sorted(gns_fs.find("/fss/keep")) == ["/fss/keep/a.txt", "/fss/keep/deep/b.txt"]
    assert gns_fs.cat_file("/fss/keep2/c.txt") == b"3"  # nothing of a refused call is done
    with pytest.raises(FileNotFoundError):
        gns_fs.rm("/fss/keep/missing.txt")
    gns_fs.rm("/fss/keep/a.txt")
    assert not gns_fs.exists("/fss/keep/a.txt")
    gns_fs.rm("/fss/keep", recursive=True, maxdepth=1)  # what lies deeper stays
    assert gns_fs.find("/fss/keep") == ["/fss/keep/deep/b.txt"]
    gns_fs.rm(["/fss/keep", "/fss/keep2"], recursive=True)
    assert not gns_fs.exists("/fss/keep") and not gns_fs.exists("/fss/keep2")


def test_os_errors_as_the_local_filesystem_raises_them(gns_fs: Any, tmp_path: Any) -> None:
    """A non-empty directory is ``OSError(ENOTEMPTY)`` for ``rmdir`` and ``rm_file`` (as
    ``os.rmdir``), and a write below a file is ``NotADirectoryError`` whichever way it is
    written; neither changes anything."""
    import errno

    gns_fs.pipe_file("/fss/oserr/d/f", b"1")
    for remove in (gns_fs.rmdir, gns_fs.rm_file):
        with pytest.raises(OSError) as info:
            remove("/fss/oserr/d")
        assert info.value.errno == errno.ENOTEMPTY
        assert not isinstance(info.value, FileExistsError)
    local = tmp_path / "l.txt"
    local.write_bytes(b"2")
    below = "/fss/oserr/d/f/below"
    writes: list[Callable[[], Any]] = [
        lambda: gns_fs.pipe_file(below, b"2"), lambda: gns_fs.put_file(str(local), below),
        lambda: gns_fs.cp_file("/fss/oserr/d/f", below), lambda: gns_fs.open(below, "wb").close()]
    for write in writes:
        with pytest.raises(NotADirectoryError) as nd:
            write()
        assert nd.value.filename == "/fss/oserr/d/f"
    assert gns_fs.find("/fss/oserr") == ["/fss/oserr/d/f"] and gns_fs.cat_file("/fss/oserr/d/f") == b"1"
    gns_fs.mkdir("/fss/oserr/d/empty")
    gns_fs.rmdir("/fss/oserr/d/empty")  # an empty one goes
    gns_fs.rm_file("/fss/oserr/d/f")
    assert not gns_fs.exists("/fss/oserr/d")
    # other refusals stay what they were
    with pytest.raises(FileNotFoundError):
        gns_fs.rmdir("/fss/oserr/none")


def test_a_directory_is_no_file_to_open(gns_fs: Any) -> None:
    gns_fs.pipe_file("/fss/opened/f", b"x")
    for mode in ("rb", "wb", "ab"):
        with pytest.raises(IsADirectoryError):
            gns_fs.open("/fss/opened", mode)
    with pytest.raises(FileNotFoundError):
        gns_fs.open("/fss/opened/missing", "rb")
    with gns_fs.open("/fss/opened/f", "rb") as f:
        assert f.size == 1 and f.read() == b"x"
    assert gns_fs.cat_file("/fss/opened/f") == b"x"  # a refused open changed nothing
    gns_fs.rm("/fss/opened", recursive=True)


def test_mount_points_list_as_gns_ls_lists_them(federation3: Federation, gns_fs: Any) -> None:
    """``ls``/``info``/``find`` agree with ``gns ls``: nested mounts are directories of
    their parent's listing, and paths above mounts are directories that list them."""
    import json

    f = federation3
    for vol, owner, mount in (("fsm-top", "onprem-a", "/fsm/top"), ("fsm-in", "onprem-b", "/fsm/top/in"),
                              ("fsm-deep", "aws-1", "/fsm/deep/x/y")):
        assert f.gns("volume", "create", vol, "--cluster", owner).returncode == 0
        assert f.gns("mount", "add", mount, vol).returncode == 0
    gns_fs.pipe_file("/fsm/top/a.txt", b"a")
    gns_fs.pipe_file("/fsm/top/in/b.txt", b"bb")

    def gns_ls(path: str) -> list[tuple[str, str]]:
        proc = f.gns("ls", path, "--json")
        assert proc.returncode == 0, proc.stderr
        return [(posixpath.join(path, e["name"]), "directory" if e["type"] == "dir" else "file")
                for e in json.loads(proc.stdout)]

    for path in ("/", "/fsm", "/fsm/top", "/fsm/deep", "/fsm/deep/x", "/fsm/top/in"):
        assert [(e["name"], e["type"]) for e in gns_fs.ls(path)] == gns_ls(path), path
        assert gns_fs.info(path)["type"] == "directory" and gns_fs.isdir(f"gns://{path}")
    assert gns_fs.ls("/fsm", detail=False) == ["/fsm/deep", "/fsm/top"]
    assert "/fsm/top/in" in gns_fs.ls("/fsm/top", detail=False)
    assert gns_fs.find("/fsm") == ["/fsm/top/a.txt", "/fsm/top/in/b.txt"]
    assert gns_fs.info("/fsm/top")["mode"] == 0o755
    with pytest.raises(FileNotFoundError):
        gns_fs.ls("/fsm/nowhere")
    with pytest.raises(FileNotFoundError):
        gns_fs.info("/fsm/dee")
