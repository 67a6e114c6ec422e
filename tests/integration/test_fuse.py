"""``gns fuse`` on real mounts (SPEC §12, issue 10): real programs, two mounts through two
clusters, owner failure, read-only, and a FUSE process killed with SIGKILL.

Every mount is a real ``gns fuse`` process (the CLI, in the foreground) on a real kernel
FUSE mount over real controllers (one module-scoped federation). Skipped with the reason
when this machine cannot mount FUSE (no /dev/fuse, no fusermount3, not root).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import mmap
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.fuse.mountinfo import answers, is_stale
from tests.fixtures.federation import Federation
from tests.support import holds_for, wait_for
from tests.support.fuse_mount import Mount

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="/dev/fuse is missing"),
    pytest.mark.skipif(shutil.which("fusermount3") is None, reason="fusermount3 is missing (fuse3)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="FUSE mounts in these tests need root"),
]


@pytest.fixture(scope="module")
def fed(federation3: Federation, tmp_path_factory: pytest.TempPathFactory) -> Federation:
    f = federation3
    for vol, owner in (("fz", "onprem-a"), ("fzb", "onprem-b"), ("fzdown", "aws-1")):
        assert f.gns("volume", "create", vol, "--cluster", owner).returncode == 0
        assert f.gns("mount", "add", f"/fz/{vol}", vol).returncode == 0
    doc = tmp_path_factory.mktemp("pol") / "p.yaml"
    doc.write_text(
        "apiVersion: gns.io/v1alpha1\nkind: MirrorPolicy\nmetadata:\n  name: fzdown-dr\n"
        "spec:\n  volume: fzdown\n  mode: sync\n  targets:\n    - cluster: onprem-b\n"
        "  maxLag: 60s\n"
    )
    proc = f.gns("mirror", "apply", "-f", str(doc))
    assert proc.returncode == 0, proc.stderr
    return f


@pytest.fixture(scope="module")
def mnt(fed: Federation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("fuse")
    m = Mount(fed, base / "mnt", base / "cache")
    try:
        yield m.mnt
    finally:
        m.stop()
    assert not os.path.ismount(base / "mnt")
    assert list((base / "cache").glob("mount-*")) == []  # staging cleaned at unmount


def sha_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# real programs


def test_mount_prefixes_are_directories(mnt: Path) -> None:
    assert sorted(os.listdir(mnt)) == ["fz"]
    assert {"fz", "fzb", "fzdown"} <= set(os.listdir(mnt / "fz"))
    assert (mnt / "fz" / "fz").is_dir()


def test_the_kernel_reads_ahead_1_mib_on_the_mount(mnt: Path) -> None:
    """Linux gives a FUSE mount 128 KiB of read-ahead; the mount asks for 1 MiB (root may),
    so a sequential read comes in 1 MiB requests. Found through the mount table: a stat of
    the mount point while it mounts would wait for the mount itself."""
    from federation.fuse.mountinfo import device_of

    dev = device_of(mnt)
    assert dev is not None and f"{os.major(os.stat(mnt).st_dev)}:{os.minor(os.stat(mnt).st_dev)}" == dev
    assert Path(f"/sys/class/bdi/{dev}/read_ahead_kb").read_text().strip() == "1024"


def test_a_mount_point_stats_as_gns_stat_shows_its_volume_root(fed: Federation, mnt: Path) -> None:
    """A volume's root (a mount point) is a directory with the mtime of the volume's last
    change, the same through FUSE as ``gns stat``, in a listing (``ls -l``) as on its own,
    and it follows changes made elsewhere (the change stream) and through the mount."""
    import json
    import stat as st

    def gns_stat() -> tuple[int, float]:
        proc = fed.gns("stat", "/fz/fzb", "--json")
        assert proc.returncode == 0, proc.stderr
        info = json.loads(proc.stdout)
        assert info["type"] == "dir" and info["mtime"] > 0
        return info["mode"], info["mtime"]

    def fuse_stat() -> tuple[int, float]:
        s = os.stat(mnt / "fz" / "fzb")
        assert st.S_ISDIR(s.st_mode)
        return st.S_IMODE(s.st_mode), s.st_mtime

    def agree() -> bool:
        (mode, mtime), (fmode, fmtime) = gns_stat(), fuse_stat()
        return mode == fmode == 0o755 and abs(fmtime - mtime) < 1e-6

    assert agree()
    listed = {e.name: e.stat() for e in os.scandir(mnt / "fz")}  # what ls -l shows
    assert abs(listed["fzb"].st_mtime - gns_stat()[1]) < 1e-6
    before = fuse_stat()[1]
    time.sleep(0.05)
    assert fed.gns("put", "-", "/fz/fzb/root-mtime-1.txt", input=b"elsewhere").returncode == 0
    wait_for(lambda: fuse_stat()[1] > before and agree(), 10)
    before = fuse_stat()[1]
    time.sleep(0.05)
    (mnt / "fz" / "fzb" / "root-mtime-2.txt").write_bytes(b"through the mount")
    wait_for(lambda: fuse_stat()[1] > before and agree(), 10)
    # A mount point whose subpath the volume does not have yet is an empty directory.
    assert fed.gns("mount", "add", "/fz/fzlater", "fzb:not-yet").returncode == 0
    wait_for(lambda: (mnt / "fz" / "fzlater").is_dir(), 10)
    assert os.listdir(mnt / "fz" / "fzlater") == []


def test_cp_large_and_empty_files(mnt: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(24):
            f.write(os.urandom(1 << 20))
    empty = tmp_path / "empty"
    empty.touch()
    dst = mnt / "fz/fz/cp"
    dst.mkdir()
    subprocess.run(["cp", str(big), str(empty), str(dst)], check=True)
    assert sha_file(dst / "big.bin") == sha_file(big)
    assert (dst / "empty").stat().st_size == 0
    back = tmp_path / "back.bin"
    subprocess.run(["cp", str(dst / "big.bin"), str(back)], check=True)
    assert sha_file(back) == sha_file(big)
    with open(dst / "big.bin", "rb") as f:  # ranged reads
        f.seek(5 * (1 << 20) + 3)
        part = f.read(100)
    with open(big, "rb") as f:
        f.seek(5 * (1 << 20) + 3)
        assert part == f.read(100)


def test_tar_extract_then_diff(mnt: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(300):
        d = src / f"d{i % 13}" / f"e{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_bytes(os.urandom(i * 37))
    (src / "empty-dir").mkdir()
    os.chmod(src / "d1" / "e1" / "f1.txt", 0o755)
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as t:
        t.add(src, arcname=".")
    dst = mnt / "fz/fz/tar"
    dst.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(dst)], check=True)
    subprocess.run(["diff", "-r", str(src), str(dst)], check=True)
    assert (dst / "empty-dir").is_dir()
    assert os.stat(dst / "d1" / "e1" / "f1.txt").st_mode & 0o777 == 0o755


def test_git_in_the_mount(mnt: Path) -> None:
    repo = mnt / "fz/fz/repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout

    git("init", "-q", ".")
    (repo / "a.txt").write_text("hello\n")
    (repo / "sub").mkdir()
    (repo / "sub" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(repo / "sub" / "run.sh", 0o755)
    git("add", ".")
    git("commit", "-qm", "first")
    (repo / "a.txt").write_text("hello again\n")
    git("commit", "-qam", "second")
    assert len(git("log", "--oneline").splitlines()) == 2
    git("fsck", "--strict")
    assert git("status", "--porcelain") == ""


def test_rsync_then_checksum_dry_run_finds_nothing(mnt: Path, tmp_path: Path) -> None:
    src = tmp_path / "rs"
    for i in range(60):
        d = src / f"d{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(i * 101))
    os.chmod(src / "d0" / "f0", 0o700)
    dst = mnt / "fz/fz/rsync"
    subprocess.run(["rsync", "-a", f"{src}/", f"{dst}/"], check=True)
    out = subprocess.run(["rsync", "-ac", "--dry-run", "--itemize-changes", f"{src}/", f"{dst}/"],
                         check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "", out.stdout


def test_editor_write_temp_then_rename(mnt: Path) -> None:
    d = mnt / "fz/fz/edit"
    d.mkdir()
    target = d / "notes.txt"
    target.write_text("v1\n")
    tmp = d / ".notes.txt.swp"
    with open(tmp, "w") as f:
        f.write("v2\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, target)
    assert target.read_text() == "v2\n"
    assert sorted(os.listdir(d)) == ["notes.txt"]


def test_a_shell_redirect_replaces_a_file_in_one_commit(fed: Federation, mnt: Path) -> None:
    """``cmd > f`` opens f with O_TRUNC, dup2s it and closes the original descriptor before
    cmd writes a byte: that close committed an empty file, so a reader elsewhere saw '' (a
    part) and the volume gained a version. Now readers see the old content, then the new,
    and the replacement is one version."""
    f = mnt / "fz/fz/redirected.txt"
    f.write_text("old content\n")
    version = json.loads(fed.gns("stat", "/fz/fz/redirected.txt", "--json").stdout)["version"]
    writer = subprocess.Popen(["bash", "-c", f'(sleep 1.5; echo "new content") > "{f}"'])
    try:
        time.sleep(0.5)
        seen = fed.gns("cat", "/fz/fz/redirected.txt").stdout
        assert seen == "old content\n", repr(seen)
    finally:
        assert writer.wait(30) == 0
    assert fed.gns("cat", "/fz/fz/redirected.txt").stdout == "new content\n"
    after = json.loads(fed.gns("stat", "/fz/fz/redirected.txt", "--json").stdout)
    journal = json.loads(fed.gns("volume", "show", "fz", "--json").stdout)["version"]
    assert after["version"] == journal and after["version"] == version + 1, (version, after)
    # ``: > f`` alone (nothing written) still empties the file
    subprocess.run(["bash", "-c", f': > "{f}"'], check=True, timeout=30)
    wait_for(lambda: fed.gns("cat", "/fz/fz/redirected.txt").stdout == "", 5, every=0.05)


def test_python_open_in_every_mode(mnt: Path) -> None:
    p = mnt / "fz/fz/modes.txt"
    with open(p, "w") as f:
        f.write("abc")
    with open(p, "a") as f:
        f.write("def")
    assert p.read_text() == "abcdef"
    with open(p, "r+") as f:
        f.seek(1)
        f.write("X")
    assert p.read_text() == "aXcdef"
    with open(p, "rb+") as f:
        f.seek(0, os.SEEK_END)
        f.write(b"Z")
    with open(p, "w+") as f:
        f.write("new")
        f.seek(0)
        assert f.read() == "new"
    with open(p, "a+") as f:
        f.write("!")
        f.seek(0)
        assert f.read() == "new!"
    with pytest.raises(FileExistsError):
        open(p, "x")
    with open(mnt / "fz/fz/modes-x.txt", "xb") as f:
        f.write(b"x")
    os.truncate(p, 2)
    assert p.read_text() == "ne"
    with pytest.raises(IsADirectoryError):
        open(mnt / "fz/fz", "rb")


def test_streamed_write_that_turns_random_commits_what_was_written(mnt: Path) -> None:
    p = mnt / "fz/fz/turns-random.bin"
    first = os.urandom(3 << 20)  # streamed to the owner while written...
    with open(p, "wb") as f:
        f.write(first)
        f.seek(10)
        f.write(b"0123456789")  # ...until this: the streamed put is abandoned
        f.seek(0, os.SEEK_END)
        f.write(b"tail")
    want = first[:10] + b"0123456789" + first[20:] + b"tail"
    assert p.read_bytes() == want
    with open(p, "ab") as f:  # an append to a committed file (fetched, then staged)
        f.write(b"+more")
    assert p.read_bytes() == want + b"+more"


def test_a_staging_file_kept_from_a_larger_file_never_leaks_into_the_next(fed: Federation, mnt: Path) -> None:
    """The mount keeps a closed file's staging file for the next one (its cached pages are
    cheaper to write than new ones): the next files commit their own bytes only."""
    base = mnt / "fz/fz"
    (base / "big-stale.bin").write_bytes(b"Z" * (3 << 20))
    cache = mnt.parent / "cache"
    wait_for(lambda: any(f.stat().st_size >= 3 << 20 for f in cache.glob("mount-*/f*")),
             timeout=10, message="the big file's staging file kept for reuse")
    with open(base / "gap.bin", "wb") as f:  # a gap over the kept file's bytes: zeros
        f.write(b"hdr")
        f.seek(1 << 20)
        f.write(b"tail")
    with open(base / "small.bin", "wb") as f:  # not sequential: committed from the staged file
        f.write(b"a" * 100)
        f.seek(0)
        f.write(b"b")
    with open(base / "grown.bin", "wb") as f:
        f.write(b"xy")
        f.truncate(5000)
    with fed.client() as c:
        assert c.cat("/fz/fz/gap.bin") == b"hdr" + bytes((1 << 20) - 3) + b"tail"
        assert c.cat("/fz/fz/small.bin") == b"b" + b"a" * 99
        assert c.cat("/fz/fz/grown.bin") == b"xy" + bytes(4998)


def test_daemon_mode_returns_once_mounted(fed: Federation, tmp_path: Path) -> None:
    mnt = tmp_path / "d"
    mnt.mkdir()
    proc = fed.gns("fuse", str(mnt), "--daemon", "--cache-dir", str(tmp_path / "c"),
                   "--root", "/fz/fz")
    assert proc.returncode == 0, proc.stderr
    try:
        assert answers(mnt)
        (mnt / "from-daemon.txt").write_text("d")
        with fed.client() as c:
            assert c.cat("/fz/fz/from-daemon.txt") == b"d"
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
    # Unmounted from outside: the daemon exits and removes its staging directory.
    wait_for(lambda: list((tmp_path / "c").glob("mount-*")) == [], 15)


def test_pandas_through_the_mount(mnt: Path) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": range(1000), "b": [f"r{i}" for i in range(1000)]})
    p = mnt / "fz/fz/frame.csv"
    df.to_csv(p, index=False)
    assert pd.read_csv(p).equals(df)


def test_posix_errors(mnt: Path) -> None:
    d = mnt / "fz/fz/err"
    d.mkdir()
    (d / "f").write_text("x")
    with pytest.raises(OSError) as exc:
        os.rename(d / "f", mnt / "fz/fzb/f")
    assert exc.value.errno == errno.EXDEV
    with pytest.raises(OSError) as exc:
        os.rmdir(d)
    assert exc.value.errno == errno.ENOTEMPTY
    with pytest.raises(FileNotFoundError):
        os.stat(d / "missing")
    with pytest.raises(FileExistsError):
        os.mkdir(d)
    os.chmod(d / "f", 0o640)
    assert os.stat(d / "f").st_mode & 0o777 == 0o640
    os.utime(d / "f", (1_000_000, 1_234_567))
    assert os.stat(d / "f").st_mtime == 1_234_567
    os.chown(d / "f", 1000, 1000)  # accepted (gns keeps no owners)
    subprocess.run(["mv", str(d / "f"), str(mnt / "fz/fzb/moved")], check=True)  # EXDEV: copy
    assert (mnt / "fz/fzb/moved").read_text() == "x"
    st = os.statvfs(mnt)
    assert st.f_bsize > 0 and st.f_namemax == 255


def test_a_file_unlinked_while_open_lives_on_for_its_descriptors(fed: Federation, mnt: Path) -> None:
    """SPEC §12: unlink works as on a local disk. Python's TemporaryFile (create, unlink,
    use), ``sort -T``: a read, or a fstat, of a file unlinked while open said ENOENT. Its
    descriptors now use it until the last one closes, and nothing of it is committed; a new
    file of the same name meanwhile is another file."""
    d = mnt / "fz/fz/orphans"
    d.mkdir()
    with tempfile.TemporaryFile(dir=d) as t:
        t.write(b"scratch" * 1000)
        t.seek(0)
        assert t.read() == b"scratch" * 1000
        assert os.fstat(t.fileno()).st_size == 7000
        t.truncate(3)
        t.seek(0)
        assert t.read() == b"scr"
        assert os.listdir(d) == []
    with open(d / "reused", "w+b") as old:
        old.write(b"old")
        old.flush()
        os.unlink(d / "reused")
        (d / "reused").write_bytes(b"new!")
        old.seek(0)
        assert old.read() == b"old" and os.fstat(old.fileno()).st_size == 3
        assert os.stat(d / "reused").st_size == 4
    assert (d / "reused").read_bytes() == b"new!"
    assert fed.gns("cat", "/fz/fz/orphans/reused").stdout == "new!"
    assert os.listdir(d) == ["reused"]


def test_a_name_gns_keeps_fails_where_it_is_made(fed: Federation, mnt: Path) -> None:
    """``.gns`` at a volume's root is gns's own (SPEC §6, §7): the owner refuses it, but only
    at close, so ``echo x > .gns`` in a shell exited 0 and the data was gone (close said
    EISDIR, which the shell ignores). The create fails now (EINVAL, as for any name no
    global path can hold), and mkdir and rename to it; the name is free below the root."""
    root = mnt / "fz/fzb"
    shell = subprocess.run(["sh", "-c", f"echo x > '{root}/.gns'"], capture_output=True, text=True)
    assert shell.returncode != 0 and "Invalid argument" in shell.stderr, shell
    (root / "ok.txt").write_text("ok")
    (root / "d").mkdir()
    for make in (lambda p: p.touch(), lambda p: p.mkdir(), lambda p: os.rename(root / "ok.txt", p)):
        for name in (".gns", ".gns-locks", "d/.f.gns-meta"):
            with pytest.raises(OSError) as exc:
                make(root / name)
            assert exc.value.errno == errno.EINVAL, (name, exc.value)
    (root / "d/.gns").write_text("mine")  # not at a volume's root: a name like any other
    assert fed.gns("cat", "/fz/fzb/d/.gns").stdout == "mine"
    assert fed.gns("stat", "/fz/fzb/.gns").returncode == 3
    assert (root / "ok.txt").read_text() == "ok"


def test_a_name_no_global_path_can_hold_fails_that_call_and_the_mount_lives_on(fed: Federation, mnt: Path) -> None:
    """A tab in a name, a name over 255 bytes: the call fails as on a local disk. They used
    to end the mount (pyfuse3 stops on any other exception) and drop a file another
    program had open for writing."""
    d = mnt / "fz/fz/names"
    d.mkdir()
    with open(d / "open-meanwhile", "wb") as other:
        other.write(b"kept")
        for make in (lambda p: p.touch(), lambda p: p.mkdir(), lambda p: os.rename(d / "open-meanwhile", p)):
            with pytest.raises(OSError) as exc:
                make(d / "a\ttab")
            assert exc.value.errno == errno.EINVAL
            with pytest.raises(OSError) as exc:
                make(d / ("y" * 256))
            assert exc.value.errno == errno.ENAMETOOLONG
        with pytest.raises(OSError) as exc:
            os.stat(d / ("y" * 256))
        assert exc.value.errno == errno.ENAMETOOLONG
        assert not (d / "new\nline").exists()
    assert os.path.ismount(mnt)
    assert (d / "open-meanwhile").read_bytes() == b"kept"
    assert fed.gns("cat", "/fz/fz/names/open-meanwhile").stdout == "kept"
    assert sorted(os.listdir(d)) == ["open-meanwhile"]


# ---------------------------------------------------------------------------------------------
# two mounts through two clusters


def test_two_mounts_close_to_open_within_a_second(fed: Federation, tmp_path: Path) -> None:
    a = Mount(fed, tmp_path / "a", tmp_path / "ca", "--via", "onprem-a")
    b = Mount(fed, tmp_path / "b", tmp_path / "cb", "--via", "onprem-b", "--root", "/fz/fzb")
    try:
        (b.mnt / "shared").mkdir()
        seen = b.mnt / "shared" / "doc.txt"
        assert not seen.exists()  # B has cached "no such file"
        for i in range(3):
            body = f"version {i}\n"
            (a.mnt / "fz/fzb/shared/doc.txt").write_text(body)
            t0 = time.monotonic()
            wait_for(lambda: seen.exists() and seen.read_text() == body, 5, every=0.01)
            assert time.monotonic() - t0 < 1.0
        os.rename(a.mnt / "fz/fzb/shared/doc.txt", a.mnt / "fz/fzb/shared/renamed.txt")
        t0 = time.monotonic()
        wait_for(lambda: sorted(os.listdir(b.mnt / "shared")) == ["renamed.txt"], 5, every=0.01)
        assert time.monotonic() - t0 < 1.0
        assert (b.mnt / "shared" / "renamed.txt").read_text() == "version 2\n"
    finally:
        a.stop()
        b.stop()


def _listed_by_gns(fed: Federation, path: str) -> list[str]:
    proc = fed.gns("ls", path, "--json")
    assert proc.returncode == 0, proc.stderr
    return sorted(e["name"] for e in json.loads(proc.stdout))


def test_directories_a_change_elsewhere_makes_or_unmakes_show_within_a_second(
        fed: Federation, mnt: Path, tmp_path: Path) -> None:
    """A put into a new directory makes its parents, and the last delete in a directory no
    mkdir made takes it away; no change names them, and the mount knew them wrongly (its
    listing of the top, its "no such file" on the way) for their 30 s lifetime."""
    top = mnt / "fz/fzb"
    os.listdir(top)  # cached: the listing without "made"
    assert not (top / "made" / "deep" / "f").exists()  # cached: "no such file" on the way
    src = tmp_path / "f"
    src.write_text("x")
    assert fed.gns("put", str(src), "/fz/fzb/made/deep/f").returncode == 0
    t0 = time.monotonic()
    wait_for(lambda: "made" in os.listdir(top) and (top / "made" / "deep" / "f").exists(), 5, every=0.01)
    assert time.monotonic() - t0 < 1.0
    assert fed.gns("rm", "/fz/fzb/made/deep/f").returncode == 0
    expected = _listed_by_gns(fed, "/fz/fzb")
    t0 = time.monotonic()
    wait_for(lambda: sorted(os.listdir(top)) == expected, 5, every=0.01)
    assert time.monotonic() - t0 < 1.0


def test_a_mount_made_or_removed_inside_a_volume_shows_within_a_second(
        fed: Federation, mnt: Path, tmp_path: Path) -> None:
    """A mount inside a listed directory of a volume (and under ``--root``) appears and
    goes within a second; no volume's change stream says so (it took the listing's 30 s)."""
    rooted = Mount(fed, tmp_path / "rooted", tmp_path / "c", "--root", "/fz/fz")
    try:
        (mnt / "fz/fz/nesting").mkdir()
        wait_for(lambda: (rooted.mnt / "nesting").is_dir(), 5, every=0.01)  # the other mount's
        for listing in (mnt / "fz/fz", mnt / "fz/fz/nesting", rooted.mnt, rooted.mnt / "nesting"):
            assert "inner" not in os.listdir(listing)  # cached
        assert fed.gns("mount", "add", "/fz/fz/nesting/inner", "fzb").returncode == 0
        t0 = time.monotonic()
        wait_for(lambda: "inner" in os.listdir(mnt / "fz/fz/nesting")
                 and "inner" in os.listdir(rooted.mnt / "nesting"), 5, every=0.01)
        assert time.monotonic() - t0 < 1.0
        (rooted.mnt / "nesting/inner/through-the-new-mount").write_text("in fzb")
        assert fed.gns("cat", "/fz/fzb/through-the-new-mount").stdout == "in fzb"
        assert fed.gns("mount", "remove", "/fz/fz/nesting/inner").returncode == 0
        t0 = time.monotonic()
        wait_for(lambda: "inner" not in os.listdir(mnt / "fz/fz/nesting")
                 and "inner" not in os.listdir(rooted.mnt / "nesting"), 5, every=0.01)
        assert time.monotonic() - t0 < 1.0
    finally:
        rooted.stop()
        fed.gns("mount", "remove", "/fz/fz/nesting/inner")


def test_a_mount_through_a_controller_alone(fed: Federation, tmp_path: Path) -> None:
    """``gns fuse --controller`` (no etcd anywhere: what the CSI driver runs with
    ``--controller``, and apps at an edge site) refused to start ("the namespace view needs
    etcd"). It mounts now: the mount table comes from the controller, writes and reads go
    through it, and a mount added elsewhere shows within a couple of seconds."""
    env = fed.env()
    env.pop("GNS_ETCD")
    env["GNS_HOME"] = str(tmp_path / "empty-home")
    m = Mount(fed, tmp_path / "m", tmp_path / "c", "--controller",
              fed.controllers["onprem-b"].endpoint, env=env)
    try:
        assert {"fz"} <= set(os.listdir(m.mnt))
        assert {"fz", "fzb"} <= set(os.listdir(m.mnt / "fz"))
        (m.mnt / "fz/fz/via-controller.txt").write_text("through b\n")
        assert fed.gns("cat", "/fz/fz/via-controller.txt").stdout == "through b\n"
        assert fed.gns("put", "-", "/fz/fzb/from-cli.txt", input=b"cli\n").returncode == 0
        wait_for(lambda: (m.mnt / "fz/fzb/from-cli.txt").exists(), 5, every=0.05)
        assert (m.mnt / "fz/fzb/from-cli.txt").read_text() == "cli\n"
        assert "ctl" not in os.listdir(m.mnt / "fz")  # cached
        assert fed.gns("mount", "add", "/fz/ctl", "fzb").returncode == 0
        t0 = time.monotonic()
        wait_for(lambda: "ctl" in os.listdir(m.mnt / "fz"), 10, every=0.05)
        assert time.monotonic() - t0 < 3.0
        assert (m.mnt / "fz/ctl/from-cli.txt").read_text() == "cli\n"
    finally:
        m.stop()
        fed.gns("mount", "remove", "/fz/ctl")
        fed.gns("rm", "/fz/fz/via-controller.txt")


def test_read_only_mount_gives_erofs(fed: Federation, tmp_path: Path) -> None:
    m = Mount(fed, tmp_path / "ro", tmp_path / "c", "--read-only")
    try:
        for op in (lambda: (m.mnt / "fz/fz/ro.txt").write_text("x"),
                   lambda: os.mkdir(m.mnt / "fz/fz/rodir")):
            with pytest.raises(OSError) as exc:
                op()
            assert exc.value.errno == errno.EROFS
        assert os.listdir(m.mnt / "fz")
    finally:
        m.stop()


def test_a_mount_with_a_tiny_metadata_cache_still_walks_a_tree_right(fed: Federation, tmp_path: Path) -> None:
    """Past ``--cache-entries`` the mount forgets the oldest entries it fetched: a walk of a
    tree 20 times the bound, and `ls -l` of one directory larger than it, see everything,
    with the attributes the volume has, again and again."""
    files = {f"walk/d{d}/f{i:03d}": f"{d}-{i}".encode() * (i + 1) for d in range(8) for i in range(60)}
    files.update({f"walk/big/g{i:03d}": b"x" * i for i in range(300)})
    with fed.client() as c:
        for rel, data in files.items():
            c.put(data, f"/fz/fz/{rel}")
    m = Mount(fed, tmp_path / "small", tmp_path / "c", "--cache-entries", "40")
    try:
        root = m.mnt / "fz/fz"
        for _ in range(2):
            seen = {str(Path(d, f).relative_to(root)): os.stat(Path(d, f)).st_size
                    for d, _dirs, names in os.walk(root / "walk") for f in names}
            assert seen == {rel: len(data) for rel, data in files.items()}
            ls = subprocess.run(["ls", "-l", str(root / "walk/big")], check=True,
                                capture_output=True, text=True).stdout.splitlines()[1:]
            assert sorted(int(line.split()[4]) for line in ls) == list(range(300))
        assert (root / "walk/d3/f007").read_bytes() == files["walk/d3/f007"]
    finally:
        m.stop()


def test_kept_staging_files_give_their_space_to_a_write_on_a_full_disk(fed: Federation, tmp_path: Path) -> None:
    """The mount keeps closed files' staging files for reuse; on a staging disk they fill, a
    write gets their space back instead of failing with ENOSPC."""
    cache = tmp_path / "small"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(cache)], check=True)
    m: Mount | None = None
    try:
        m = Mount(fed, tmp_path / "mnt", cache)
        base = m.mnt / "fz/fz"
        with open(base / "keep-1.bin", "wb") as one, open(base / "keep-2.bin", "wb") as two:
            one.write(b"1" * (3 << 20))  # two staging files at once: both kept, 6 MiB of 8
            two.write(b"2" * (3 << 20))
        wait_for(lambda: sum(f.stat().st_size for f in cache.glob("mount-*/f*")) >= 6 << 20,
                 message="both staging files kept")
        big = os.urandom(6 << 20)  # one kept file grows to 6 MiB: the other must give way
        (base / "big-on-small.bin").write_bytes(big)
        with fed.client() as c:
            assert c.cat("/fz/fz/big-on-small.bin") == big
    finally:
        if m is not None:
            m.stop()
        subprocess.run(["umount", "-l", str(cache)], check=False)


def _pages_in_cache(path: Path) -> int:
    """How many of ``path``'s pages the kernel holds (``mincore`` over a mapping of it).
    Opening it is a FUSE open too: one that does not keep the cache drops them first."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    vec = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as mm:
        view = ctypes.c_char.from_buffer(mm)
        try:
            if libc.mincore(ctypes.c_void_p(ctypes.addressof(view)), ctypes.c_size_t(size), vec):
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            del view
    return sum(b & 1 for b in vec)


def test_a_file_read_again_is_served_from_the_kernels_pages_while_unchanged(fed: Federation, tmp_path: Path) -> None:
    """Close-to-open keeps the kernel's pages of a file whose content did not change however
    long ago it was read (before, only while its attributes were still in the mount's
    cache: a re-read a few seconds later, or after other files, fetched it all again)."""
    assert fed.gns("volume", "create", "fzrr", "--cluster", "onprem-a").returncode == 0
    assert fed.gns("mount", "add", "/fz/fzrr", "fzrr").returncode == 0
    with fed.client() as c:
        for i in range(30):
            c.put(b"o" * i, f"/fz/fzrr/o{i}/f")
    m = Mount(fed, tmp_path / "rr", tmp_path / "c", "--cache-entries", "4")
    try:
        root = m.mnt / "fz/fzrr"
        data = os.urandom(2 << 20)
        (root / "data.bin").write_bytes(data)  # through this mount: no change to hear of later
        assert (root / "data.bin").read_bytes() == data  # fetched, now in the kernel's pages
        for i in range(30):  # small directories, each file's attributes cached: data.bin's go
            assert (root / f"o{i}/f").read_bytes() == b"o" * i
        assert _pages_in_cache(root / "data.bin") == (2 << 20) // mmap.PAGESIZE
        with fed.client() as c:  # changed elsewhere: the next open drops the old pages
            c.put(b"new content", "/fz/fzrr/data.bin")
        assert (root / "data.bin").read_bytes() == b"new content"
    finally:
        m.stop()


def test_bad_invocations_exit_with_one_error_line(fed: Federation, tmp_path: Path) -> None:
    from tests.fixtures.federation import assert_error

    assert_error(fed.gns("fuse", str(tmp_path / "missing")), 3)
    assert_error(fed.gns("fuse", str(tmp_path), "--root", "relative/path"), 2)
    assert_error(fed.gns("fuse", str(tmp_path), "--via", "Bad_Name"), 2)
    assert_error(fed.gns("fuse", str(tmp_path), "--max-staleness", "soon"), 2)
    for entries in ("0", "-5", "many", "1e6"):
        assert_error(fed.gns("fuse", str(tmp_path), "--cache-entries", entries), 2)
    assert_error(fed.gns("fuse", str(tmp_path), "--root", "/nowhere/at/all"), 3)
    assert not os.path.ismount(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_error(fed.gns("fuse", str(empty), "--cache-dir", "/proc/nope"), 2, "--cache-dir /proc/nope")
    (tmp_path / "file").write_text("x")
    assert_error(fed.gns("fuse", str(empty), "--cache-dir", str(tmp_path / "file")), 2, "--cache-dir")
    assert not os.path.ismount(empty)


def test_a_non_empty_mount_point_is_refused_unless_allowed(fed: Federation, tmp_path: Path) -> None:
    """Mounting over files hides them (rclone and s3fs refuse it too unless told)."""
    from tests.fixtures.federation import assert_error

    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("x")
    assert_error(fed.gns("fuse", str(full), "--cache-dir", str(tmp_path / "c")), 2, "is not empty")
    assert not os.path.ismount(full)
    m = Mount(fed, full, tmp_path / "c", "--allow-non-empty")
    try:
        assert os.listdir(full) == ["fz"]
    finally:
        m.stop()
    assert os.listdir(full) == ["mine.txt"]


# ---------------------------------------------------------------------------------------------
# as a local disk: utimens, rmdir of a mount point, "." and ".."

_2016 = 1_451_606_400  # 2016-01-01T00:00:00Z


def test_touch_d_takes_effect_at_once(fed: Federation, mnt: Path) -> None:
    d = mnt / "fz/fz/touch"
    d.mkdir()
    env = {**os.environ, "TZ": "UTC"}
    # touch closes its descriptor and then calls utimensat: the release is still pending.
    subprocess.run(["touch", "-d", "2016-01-01", str(d / "new.txt")], check=True, env=env)
    assert os.stat(d / "new.txt").st_mtime == _2016
    (d / "old.txt").write_text("x")
    subprocess.run(["touch", "-d", "2016-01-01", str(d / "old.txt")], check=True, env=env)
    assert os.stat(d / "old.txt").st_mtime == _2016
    # futimens on a descriptor open for writing with nothing written, then on a new file.
    with open(d / "old.txt", "r+b") as f:
        assert os.stat(d / "old.txt").st_mtime == _2016  # opening changed nothing
        os.utime(f.fileno(), (_2016, _2016 + 7))
        assert os.stat(d / "old.txt").st_mtime == _2016 + 7
    with open(d / "created.txt", "wb") as f:
        os.utime(f.fileno(), (_2016, _2016 + 9))
        assert os.stat(d / "created.txt").st_mtime == _2016 + 9
    for name, want in (("new.txt", _2016), ("old.txt", _2016 + 7), ("created.txt", _2016 + 9)):
        assert os.stat(d / name).st_mtime == want
        with fed.client() as c:
            assert c.stat(f"/fz/fz/touch/{name}").mtime == want


def test_rmdir_of_a_volume_root_is_ebusy(fed: Federation, mnt: Path) -> None:
    assert fed.gns("volume", "create", "fzempty", "--cluster", "onprem-a").returncode == 0
    assert fed.gns("mount", "add", "/fz/fzempty", "fzempty").returncode == 0
    wait_for(lambda: (mnt / "fz/fzempty").is_dir(), 10)
    (mnt / "fz/fzb/keep.txt").write_text("k")
    for root in (mnt / "fz/fzb", mnt / "fz/fzempty", mnt / "fz"):
        with pytest.raises(OSError) as exc:
            os.rmdir(root)
        assert exc.value.errno == errno.EBUSY, root
    assert (mnt / "fz/fzempty").is_dir()


def test_listings_have_dot_and_dotdot(mnt: Path) -> None:
    d = mnt / "fz/fz/dots"
    (d / "sub").mkdir(parents=True)
    names = [f"entry-with-a-fairly-long-name-{i:04d}.txt" for i in range(400)]
    for n in names:
        (d / n).write_bytes(b"")

    def ls_ai(p: Path) -> list[tuple[int, str]]:
        out = subprocess.run(["ls", "-ai1", str(p)], check=True, capture_output=True, text=True,
                             env={**os.environ, "LC_ALL": "C"})
        return [(int(i), n) for i, n in (ln.split(None, 1) for ln in out.stdout.splitlines())]

    top = ls_ai(mnt)
    assert [n for _, n in top] == [".", "..", "fz"]
    listed = ls_ai(d)
    # Many readdir calls (the kernel's buffer holds far fewer): nothing lost or repeated.
    assert [n for _, n in listed] == [".", "..", *names, "sub"]
    inos = dict((n, i) for i, n in listed)
    assert inos["."] == os.stat(d).st_ino
    assert inos[".."] == os.stat(d.parent).st_ino
    long = subprocess.run(["ls", "-la", str(d / "sub")], check=True, capture_output=True,
                          text=True, env={**os.environ, "LC_ALL": "C"}).stdout.splitlines()
    assert [ln.split()[-1] for ln in long[1:]] == [".", ".."]
    assert all(ln.startswith("d") for ln in long[1:])
    assert sorted(os.listdir(d)) == sorted([*names, "sub"])  # Python still hides them


def _refused(fed: Federation, tmp_path: Path, args: tuple[str, ...], code: int,
             fragment: str) -> None:
    """``gns fuse`` with ``args`` fails the SPEC way, in the foreground and with --daemon,
    and leaves nothing mounted."""
    from tests.fixtures.federation import assert_error

    mnt = tmp_path / "m"
    mnt.mkdir(exist_ok=True)
    for mode in ((), ("--daemon",)):
        try:
            proc = fed.gns("fuse", str(mnt), "--cache-dir", str(tmp_path / "c"), *args, *mode,
                           timeout=30)
            assert_error(proc, code, fragment)
            assert not os.path.ismount(mnt), mode
        finally:
            if os.path.ismount(mnt) or is_stale(str(mnt)):
                subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)


def test_mount_through_an_unknown_cluster_is_refused(fed: Federation, tmp_path: Path) -> None:
    _refused(fed, tmp_path, ("--via", "nosuch"), 3, "cluster 'nosuch' not found")


def test_bad_root_is_refused_in_daemon_mode_too(fed: Federation, tmp_path: Path) -> None:
    with fed.client() as c:
        c.put(b"f", "/fz/fz/not-a-dir.txt")
    _refused(fed, tmp_path, ("--root", "/fz/fz/nonexistent"), 3, "/fz/fz/nonexistent")
    _refused(fed, tmp_path, ("--root", "/fz/fz/not-a-dir.txt"), 2, "not a directory")


# ---------------------------------------------------------------------------------------------
# crashes and failures (last: they kill processes)


def test_kill9_of_the_fuse_process(fed: Federation, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    m = Mount(fed, tmp_path / "k", cache)
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import sys,time\nf=open(sys.argv[1],'wb')\nf.write(b'x'*100000)\nf.flush()\n"
         "print('ok',flush=True)\ntime.sleep(60)\n", str(m.mnt / "fz/fz/unclosed.bin")],
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == b"ok"
        assert list(cache.glob("mount-*/*"))  # staged on disk
        m.proc.kill()
        m.proc.wait()
        with pytest.raises(OSError) as exc:
            os.listdir(m.mnt / "fz")
        assert exc.value.errno == errno.ENOTCONN  # "Transport endpoint is not connected"
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    with fed.client() as c:
        with pytest.raises(FileNotFoundError):
            c.stat("/fz/fz/unclosed.bin")  # never closed: never committed
    again = Mount(fed, tmp_path / "k", cache)  # clears the stale mount and the dead staging
    try:
        assert not (again.mnt / "fz/fz/unclosed.bin").exists()
        assert len(list(cache.glob("mount-*"))) == 1
    finally:
        again.stop()


def test_owner_down_eio_within_timeout_and_replica_read(fed: Federation, tmp_path: Path) -> None:
    with fed.client() as c:
        c.put(b"replicated", "/fz/fzdown/r.txt")
    plain = Mount(fed, tmp_path / "p", tmp_path / "cp", "--via", "onprem-a", "--timeout", "5s")
    anyc = Mount(fed, tmp_path / "q", tmp_path / "cq", "--via", "onprem-b",
                 "--consistency", "any", "--max-staleness", "1h")
    try:
        assert (plain.mnt / "fz/fzdown/r.txt").read_bytes() == b"replicated"
        fed.kill("aws-1", signal.SIGSTOP)  # frozen: calls hang, the mount must not
        t0 = time.monotonic()
        with pytest.raises(OSError) as exc:
            (plain.mnt / "fz/fzdown/r.txt").read_bytes()
        assert exc.value.errno == errno.EIO
        assert time.monotonic() - t0 < 10
        fed.kill("aws-1")
        t0 = time.monotonic()
        with pytest.raises(OSError) as exc:
            (plain.mnt / "fz/fzdown/r.txt").read_bytes()
        assert exc.value.errno == errno.EIO
        assert time.monotonic() - t0 < 10
        assert (anyc.mnt / "fz/fzdown/r.txt").read_bytes() == b"replicated"
    finally:
        plain.stop()
        anyc.stop()
        fed.start("aws-1")


def test_a_close_on_a_frozen_owner_fails_within_the_timeout(fed: Federation, tmp_path: Path) -> None:
    """SPEC §12: EIO, "never a hang past the client's timeout". A file opened before the
    owner froze was committed at close with no deadline: the close hung until gRPC's
    keepalive gave up, 70 s with --timeout 3s. Now it fails once the owner has taken and
    answered nothing for the timeout, a small file (one Put) and a streamed one alike.
    And what the close said failed stays failed: release committed the file again after a
    failed close, so once the owner answered (each freeze here is shorter than its lease) the
    file the app was told had failed appeared, every time in six runs (and in one CI run with
    longer freezes); it is dropped now."""
    m = Mount(fed, tmp_path / "m", tmp_path / "c", "--timeout", "1s")
    try:
        for name, size in (("small.txt", 5), ("big.bin", 5 << 20)):
            f = open(m.mnt / "fz/fzdown" / name, "wb")
            try:
                f.write(os.urandom(size))
                f.flush()
                fed.kill("aws-1", signal.SIGSTOP)
                try:
                    t0 = time.monotonic()
                    with pytest.raises(OSError) as exc:
                        f.close()
                    assert exc.value.errno == errno.EIO
                    assert time.monotonic() - t0 < 8, f"close took {time.monotonic() - t0:.0f}s"
                finally:
                    fed.kill("aws-1", signal.SIGCONT)
            finally:
                with contextlib.suppress(OSError):
                    f.close()
            wait_for(lambda: fed.gns("ls", "/fz/fzdown").returncode == 0, 30, "the owner back")
            holds_for(lambda: fed.gns("stat", f"/fz/fzdown/{name}").returncode == 3, 3,
                      f"{name} never committed after its close failed")
    finally:
        m.stop()


def _minor_faults(pid: int) -> int:
    """A process's minor page faults so far (field 10 of /proc/PID/stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


@pytest.mark.slow
def test_a_large_read_keeps_the_mounts_freed_chunk_buffers(fed: Federation, tmp_path: Path) -> None:
    """A mount keeps the chunk buffers it frees (``federation.malloc_tuning``: 64 MiB kept,
    glibc's arenas), so a read does not fault the pages of every chunk in afresh. What grows
    with the file counts: the mount process's minor faults reading 320 MiB less those reading
    64 MiB, per MiB, once a first read has warmed the process up. With 16 MiB kept, as the
    mount had before, most pages of the file came to fresh pages: 135 to 410 per MiB on a
    quiet machine and 404 to 470 beside two busy processes (three runs each); with 64 MiB
    kept, -13 to 5 and -35 to 3."""
    sizes = {"warm": 64, "small": 64, "big": 320}
    for name, mib in sizes.items():
        src = tmp_path / f"{name}.bin"
        src.write_bytes(os.urandom(1 << 20) * mib)  # content of its own: three blobs, three reads
        assert fed.gns("put", str(src), f"/fz/fz/faults-{name}.bin").returncode == 0
        src.unlink()
    m = Mount(fed, tmp_path / "mnt", tmp_path / "cache")  # a process of its own to count
    try:
        faults = {}
        for name, mib in sizes.items():
            before = _minor_faults(m.proc.pid)
            with open(m.mnt / "fz" / "fz" / f"faults-{name}.bin", "rb") as f:
                got = sum(len(b) for b in iter(lambda: f.read(1 << 20), b""))
            faults[name] = _minor_faults(m.proc.pid) - before
            assert got == mib << 20
    finally:
        m.stop()
    per_mib = (faults["big"] - faults["small"]) / (sizes["big"] - sizes["small"])
    assert per_mib < 50, (per_mib, faults)
