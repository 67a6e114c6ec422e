"""``gns fuse`` with access control on (SPEC §10, §12): a write the mount's identity is not
granted fails at ``open`` with EACCES, as on a local disk, not at ``close``, which programs
ignore (bash's ``echo x > f`` exited 0 and the data was gone). The owner still decides every
commit: a grant revoked while a file is open is refused at its close.

Real ``gns fuse`` processes (the CLI, each with a user's certificate: ``--identity``) over a
real TLS controller. Skipped with the reason when this machine cannot mount FUSE.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.certs import init_certs, issue_user
from federation.local.etcd_server import EtcdCluster
from tests.fixtures.federation import Federation
from tests.support import wait_for
from tests.support.fuse_mount import Mount

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="/dev/fuse is missing"),
    pytest.mark.skipif(shutil.which("fusermount3") is None, reason="fusermount3 is missing (fuse3)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="FUSE mounts in these tests need root"),
]


def as_user(fed: Federation, who: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = fed.env()
    env["GNS_IDENTITY"] = who
    return subprocess.run([sys.executable, "-m", "federation.cli.main", *args], input=input,
                          capture_output=True, env=env, timeout=60)


def admin(fed: Federation, *args: str) -> None:
    proc = as_user(fed, "client", *args)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def fed(etcd_module: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """onprem-a owns ``acc`` at ``/data``. ``reader`` may read it all; ``writer`` (group
    scribes) may read it all and write under ``/data/team``, and itself under ``/data/temp``."""
    root = tmp_path_factory.mktemp("fuse-acl")
    f = Federation(etcd_module, root)
    f.tls_dir = root / "tls"
    init_certs(f.tls_dir, ["onprem-a"])
    issue_user(f.tls_dir, "reader")
    issue_user(f.tls_dir, "writer", groups=["scribes"])
    try:
        f.add("onprem-a")
        admin(f, "volume", "create", "acc", "--cluster", "onprem-a")
        admin(f, "mount", "add", "/data", "acc")
        for path in ("/data/x", "/data/team/seed", "/data/temp/seed"):
            proc = f.gns_bytes("put", "-", path, input=b"x-data")
            assert proc.returncode == 0, proc.stderr
        admin(f, "acl", "grant", "/data", "user:reader", "read")
        admin(f, "acl", "grant", "/data", "group:scribes", "read")
        admin(f, "acl", "grant", "/data/team", "group:scribes", "write")
        admin(f, "acl", "grant", "/data/temp", "user:writer", "write")
        yield f
    finally:
        f.stop_all()


def _mount(fed: Federation, tmp_path_factory: pytest.TempPathFactory, who: str) -> Iterator[Path]:
    base = tmp_path_factory.mktemp(f"fuse-{who}")
    m = Mount(fed, base / "mnt", base / "cache", "--identity", who)
    try:
        yield m.mnt
    finally:
        m.stop()
    assert not os.path.ismount(base / "mnt")


@pytest.fixture(scope="module")
def reader_mnt(fed: Federation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from _mount(fed, tmp_path_factory, "reader")


@pytest.fixture(scope="module")
def writer_mnt(fed: Federation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from _mount(fed, tmp_path_factory, "writer")


def absent(fed: Federation, gpath: str) -> bool:
    """``gns stat`` (as the administrator) finds nothing at ``gpath``."""
    return fed.gns("stat", gpath).returncode == 3


def shell(mnt: Path, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], env={**os.environ, "M": str(mnt)},
                          capture_output=True, text=True, timeout=60)


def test_a_reader_is_refused_at_open_not_at_close(fed: Federation, reader_mnt: Path) -> None:
    m = reader_mnt
    assert (m / "data" / "x").read_bytes() == b"x-data"  # reading is granted
    proc = shell(m, 'echo x > "$M/data/f"')
    assert proc.returncode != 0 and "Permission denied" in proc.stderr, proc
    assert absent(fed, "/data/f")
    assert not (m / "data" / "f").exists()
    with pytest.raises(PermissionError):
        open(m / "data" / "g", "w")  # the open itself must fail
    assert absent(fed, "/data/g")
    # An existing file: refused at open, left as it was.
    proc = shell(m, 'echo y > "$M/data/x"')
    assert proc.returncode != 0 and "Permission denied" in proc.stderr, proc
    assert fed.gns_bytes("cat", "/data/x").stdout == b"x-data"
    for argv in (["touch", str(m / "data" / "t")], ["cp", str(m / "data" / "x"), str(m / "data" / "c")]):
        proc2 = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc2.returncode != 0 and "Permission denied" in proc2.stderr, proc2
    proc = shell(m, 'echo z | tee "$M/data/team/tee.txt"')
    assert proc.returncode != 0 and "Permission denied" in proc.stderr, proc
    assert absent(fed, "/data/t") and absent(fed, "/data/c") and absent(fed, "/data/team/tee.txt")


def test_a_writer_writes_where_granted_and_only_there(fed: Federation, writer_mnt: Path) -> None:
    m = writer_mnt
    proc = shell(m, 'echo x > "$M/data/team/w1" && for i in $(seq 50); do echo $i > "$M/data/team/n$i"; done')
    assert proc.returncode == 0, proc.stderr
    assert fed.gns_bytes("cat", "/data/team/w1").stdout == b"x\n"
    assert fed.gns_bytes("cat", "/data/team/n50").stdout == b"50\n"
    with open(m / "data" / "team" / "py.txt", "w") as f:
        f.write("from python")
    assert fed.gns_bytes("cat", "/data/team/py.txt").stdout == b"from python"
    proc = shell(m, 'echo x > "$M/data/outside"')  # beside its grant: refused at once
    assert proc.returncode != 0 and "Permission denied" in proc.stderr, proc
    assert absent(fed, "/data/outside")


def test_a_grant_revoked_while_a_file_is_open_is_refused_at_close(fed: Federation, writer_mnt: Path) -> None:
    """The owner stays the authority: the open was allowed, the commit at close is not.
    While the file is open nothing here forks (the CLI would): a child's copy of the
    descriptor, closed, is a flush, which commits what is staged so far."""
    from namespace.errors import PermissionDenied

    target = writer_mnt / "data" / "temp" / "late.txt"
    with fed.client() as root, fed.client(identity="writer") as writer:

        def writer_refused() -> bool:
            try:
                writer.put(b"p", "/data/temp/probe")
            except PermissionDenied:
                return True
            return False

        f = open(target, "w")  # closed below, where the refusal comes
        try:
            f.write("too late")
            root.acl_revoke("/data/temp", "user:writer")
            wait_for(writer_refused, 10, "the owner to refuse the writer")
            with pytest.raises(PermissionError):
                f.close()
        finally:
            if not f.closed:
                try:
                    f.close()
                except OSError:
                    pass
    assert absent(fed, "/data/temp/late.txt")

    def refused_at_open() -> bool:
        """The same name again: refused at open once the mount's answer is past its ttl.
        Before that the open goes ahead and the owner refuses the commit; either way no
        file is left (nor a kernel entry for one: an open then met ENOENT)."""
        try:
            g = open(target, "w")
        except PermissionError:
            return True
        try:
            g.close()
        except PermissionError:
            pass
        return False

    wait_for(refused_at_open, 10, "the revoke to show at open too")
    assert absent(fed, "/data/temp/late.txt")


def test_a_volume_mounted_twice_is_refused_at_open_too(fed: Federation, reader_mnt: Path,
                                                       writer_mnt: Path) -> None:
    """With the volume also mounted at /alias (its team/ subpath), the gate left every
    write to the owner at close: ``echo x > f`` as a reader exited 0 and the data was lost.
    Now it is refused at open unless a write grant on some path showing the same bytes
    allows it, as the owner judges: writer's grant on /data/team covers /alias."""
    admin(fed, "mount", "add", "/alias", "acc:team")
    try:
        wait_for(lambda: (reader_mnt / "alias").is_dir() and (writer_mnt / "alias").is_dir(), 10)
        proc = shell(reader_mnt, 'echo x > "$M/data/aliased-r"; echo y > "$M/alias/aliased-r"')
        assert proc.returncode != 0 and proc.stderr.count("Permission denied") == 2, proc
        assert absent(fed, "/data/aliased-r") and absent(fed, "/alias/aliased-r")
        proc = shell(writer_mnt, 'echo w > "$M/alias/aliased-w"')
        assert proc.returncode == 0, proc.stderr
        assert fed.gns_bytes("cat", "/data/team/aliased-w").stdout == b"w\n"
        proc = shell(writer_mnt, 'echo w > "$M/data/aliased-w"')  # no grant reaches it
        assert proc.returncode != 0 and "Permission denied" in proc.stderr, proc
    finally:
        fed.gns("rm", "/data/team/aliased-w")
        admin(fed, "mount", "remove", "/alias")


def test_an_idle_mount_that_may_not_read_backs_off_its_change_stream(fed: Federation,
                                                                     tmp_path: Path) -> None:
    """A mount of an identity with no read on a volume asked its change stream again twice
    a second, for good: a refused call opens fine and fails at its first message, and the
    backoff started over at every open. Each refusal is an audit line (and a denial in the
    metrics): about 2 a second per controller, burying the real ones. Now the retries back
    off (0.5 s doubling to 30 s): a handful in 8 s."""
    assert fed.tls_dir is not None
    issue_user(fed.tls_dir, "idle")
    admin(fed, "acl", "grant", "/data/team", "user:idle", "read")  # not the volume's root
    audit = fed.controllers["onprem-a"].data_dir / "audit.log"

    def watch_denials() -> int:
        lines = audit.read_text().splitlines() if audit.exists() else []
        return sum(1 for ln in lines if '"user:idle"' in ln and "Federation/Watch" in ln)

    m = Mount(fed, tmp_path / "mnt", tmp_path / "cache", "--identity", "idle")
    try:
        with pytest.raises(PermissionError):  # no read on /data; the volume is watched from now
            os.listdir(m.mnt / "data")
        wait_for(lambda: watch_denials() >= 1, 20, "the first refused change stream")
        first = watch_denials()
        time.sleep(8)  # the rate is the point: what an idle mount costs over a while
        assert watch_denials() - first <= 6, watch_denials() - first
    finally:
        m.stop()


def test_a_mount_of_an_identity_without_a_usable_certificate_is_refused(fed: Federation,
                                                                       tmp_path: Path) -> None:
    """``gns fuse --identity nosuch`` said "mounted" (exit 0) and every call on the mount then
    failed with EINVAL, where every other command refuses such an identity at once (exit 2,
    naming the missing file). The mount is refused the same way now; nothing is mounted."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = as_user(fed, "nosuch", "fuse", str(mnt), "--daemon", "--cache-dir", str(tmp_path / "c"))
    assert proc.returncode == 2, proc
    assert b"nosuch.crt is missing" in proc.stderr, proc.stderr
    assert not os.path.ismount(mnt)
