"""The write check of ``gns fuse`` (``federation.fuse.access``): a mount whose identity may
not write somewhere refuses ``create`` and ``open`` for writing there with EACCES at once,
instead of taking the data and losing it at close (where bash's ``echo x > f`` never looks).
One check per directory per ``ttl``; nothing checked without access control; and a check
that fails or hangs lets the open go ahead (the owner decides at close, as before)."""
from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any, cast

import pytest

pytest.importorskip("pyfuse3", reason="pyfuse3 is not installed (pip install 'gns[fuse]')")

from federation.client import AccessReport, CallerIdentity
from federation.fuse.access import WriteGate, parent_of
from federation.fuse.cache import MetaCache
from federation.fuse.operations import GnsOperations
from federation.fuse.staging import Staging
from namespace.errors import Unavailable
from namespace.mounts import Resolution


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Grants:
    """``whoami`` and ``acl_check`` as the client answers them, from a table of write
    grants (a prefix covers everything below it), counting every question."""

    def __init__(self, writable: tuple[str, ...] = (), *, identity: str | None = "user:alice",
                 access_control: bool = True) -> None:
        self.writable = writable
        self.me = CallerIdentity(identity=identity, groups=["ops"], access_control=access_control)
        self.asked: list[str] = []
        self.whoamis = 0
        self.fail: Exception | None = None
        self.gate: threading.Event | None = None  # set: acl_check waits on it
        self.entered = threading.Event()

    def whoami(self) -> CallerIdentity:
        self.whoamis += 1
        return self.me

    def acl_check(self, path: str, subject: str, groups: list[str] | None = None) -> AccessReport:
        assert subject == self.me.identity and groups == ["ops"]  # its own identity: no admin needed
        self.asked.append(path)
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        ok = any(path == w or path.startswith(w.rstrip("/") + "/") for w in self.writable)
        return AccessReport(path=path, subject=subject, groups=list(groups or []),
                            perms=["read", "write"] if ok else ["read"], admin_by_default=False,
                            grants=[])


def test_parent_of() -> None:
    assert parent_of("/data/a/f") == "/data/a"
    assert parent_of("/f") == "/"


def test_one_check_serves_a_directory_for_its_ttl() -> None:
    clock = _Clock()
    grants = _Grants(("/data",))
    gate = WriteGate(grants, clock=clock, ttl=2.0)
    assert gate.cached("/data/d/f0") is None  # nothing known yet: ask
    assert gate.check("/data/d/f0") is True
    for i in range(500):  # a directory filled: answered without a question, or a thread
        assert gate.cached(f"/data/d/f{i}") is True
    assert grants.asked == ["/data/d"] and grants.whoamis == 1
    assert gate.cached("/data/other/f") is None  # another directory is asked of its own
    clock.now += 2.0
    assert gate.cached("/data/d/f1") is None  # past the ttl: asked again (a revoke shows)
    assert gate.check("/data/d/f1") is True
    assert grants.asked == ["/data/d", "/data/d"] and grants.whoamis == 1


def test_a_reader_is_refused_and_a_grant_on_the_file_itself_still_counts() -> None:
    clock = _Clock()
    grants = _Grants(("/data/d/mine", "/data/drop"))
    gate = WriteGate(grants, clock=clock)
    assert gate.check("/data/d/f") is False
    assert gate.cached("/data/d/f") is False
    assert gate.check("/data/d/mine") is True  # its directory says no, its own grant yes
    assert gate.cached("/data/d/mine") is True
    assert gate.check("/data/drop/new") is True
    assert grants.asked == ["/data/d", "/data/d/f", "/data/d/mine", "/data/drop"]
    # A grant given meanwhile shows within the ttl.
    grants.writable = ("/data",)
    clock.now += gate.ttl
    assert gate.cached("/data/d/f") is None
    assert gate.check("/data/d/f") is True


@pytest.mark.parametrize(("identity", "access_control"), [
    (None, False),  # no TLS: access control is off
    ("user:client", True),  # the administrator may do everything
    ("cluster:onprem-a", True),  # a controller's identity: the owner trusts it
])
def test_nothing_is_checked_where_no_grant_can_refuse(identity: str | None, access_control: bool) -> None:
    grants = _Grants((), identity=identity, access_control=access_control)
    gate = WriteGate(grants)
    assert gate.check("/data/f") is True
    assert gate.cached("/data/g") is True
    assert grants.asked == [] and grants.whoamis == 1


def test_a_check_that_fails_lets_the_open_go_ahead_and_is_not_repeated_at_once() -> None:
    clock = _Clock()
    grants = _Grants(())
    grants.fail = Unavailable("etcd is unreachable")
    gate = WriteGate(grants, clock=clock)
    assert gate.check("/data/d/f") is True
    assert gate.cached("/data/d/g") is True
    assert grants.asked == ["/data/d"]
    grants.fail = None
    clock.now += gate.ttl
    assert gate.check("/data/d/f") is False  # answering again: its answer counts


def test_an_identity_not_known_yet_is_asked_again_later() -> None:
    clock = _Clock()
    grants = _Grants(())

    def down() -> CallerIdentity:
        raise Unavailable("controller unreachable")

    whoami = grants.whoami
    grants.whoami = down  # type: ignore[method-assign]
    gate = WriteGate(grants, clock=clock)
    assert gate.check("/data/f") is True  # unknown: the owner decides
    assert gate.cached("/data/f") is None
    grants.whoami = whoami  # type: ignore[method-assign]
    assert gate.check("/data/f") is True  # not before the ttl
    clock.now += gate.ttl
    assert gate.check("/data/f") is False


def test_a_volume_mounted_at_another_path_too_is_judged_as_the_owner_judges_it() -> None:
    """The owner takes a write grant on any global path reaching the same bytes: the gate
    allows what a grant on another mount of the volume allows, and refuses (at open, not
    at close, which shells ignore) only what none of them does."""
    grants = _Grants(("/alias/team",))
    others = {"/data/team/f": ["/alias/team/f"], "/data/secret/f": ["/alias/secret/f"]}
    gate = WriteGate(grants, aliases=lambda g: others.get(g, []))
    assert gate.check("/data/team/f") is True  # granted through the other mount
    assert gate.check("/data/secret/f") is False  # granted nowhere
    assert gate.check("/single/f") is False
    broken = WriteGate(grants, aliases=lambda g: 1 / 0)  # type: ignore[arg-type,return-value]
    assert broken.check("/data/secret/f") is True  # cannot tell: the owner decides


def test_the_other_paths_of_a_file_come_from_the_mount_table() -> None:
    from namespace.cache import NamespaceView

    view = NamespaceView()
    view.mounts.set("/data", "acc")
    view.mounts.set("/other", "b")
    assert view.aliases_of("/data/x/f") == []
    assert view.aliases_of("/nowhere/f") == []
    view.mounts.set("/alias", "acc", "x")  # part of the same volume, at another path
    assert view.aliases_of("/data/x/f") == ["/alias/f"]
    assert view.aliases_of("/alias/f") == ["/data/x/f"]
    assert view.aliases_of("/data/y/f") == []  # outside the subpath: shown once only
    assert view.aliases_of("/other/f") == []


def test_a_new_directory_filled_from_many_threads_is_checked_once() -> None:
    grants = _Grants(("/data",))
    grants.gate = threading.Event()
    gate = WriteGate(grants)
    answers: list[bool] = []
    workers = [threading.Thread(target=lambda i=i: answers.append(gate.check(f"/data/d/f{i}")))
               for i in range(8)]
    for w in workers:
        w.start()
    assert grants.entered.wait(10)  # one is asking; the others wait on it or find its answer
    grants.gate.set()
    for w in workers:
        w.join(10)
    assert answers == [True] * 8 and grants.asked == ["/data/d"]


def test_the_kept_answers_are_bounded() -> None:
    clock = _Clock()
    gate = WriteGate(_Grants(("/",)), clock=clock, max_entries=10)
    for i in range(25):
        gate.check(f"/d{i}/f")
    assert len(gate._verdicts) <= 10
    assert gate.cached("/d24/f") is True


def test_the_etcd_client_knows_its_identity_from_its_certificate(tmp_path: Path) -> None:
    from federation.certs import init_certs, issue_user
    from federation.client import Client

    tls = tmp_path / "tls"
    init_certs(tls, ["onprem-a"])
    issue_user(tls, "alice", groups=["ops"])
    with Client("http://127.0.0.1:1", tls_dir=tls, identity="alice") as c:
        assert c.whoami() == CallerIdentity(identity="user:alice", groups=["ops"], access_control=True)
    with Client("http://127.0.0.1:1", tls_dir=tls) as c:
        assert c.whoami().identity == "user:client"
    with Client("http://127.0.0.1:1") as c:
        assert c.whoami() == CallerIdentity(identity=None, groups=[], access_control=False)


# -- the handlers ------------------------------------------------------------------------------


class _View:
    def resolve(self, gpath: str) -> Resolution:
        return Resolution(gpath, "/", "v", gpath.lstrip("/"))


class _OneVolume:
    """Enough of a client for create and open to reach their write check: every path is in
    volume ``v`` (nothing else is asked before the check, and nothing after it but staging)."""

    def view(self) -> _View:
        return _View()


def _ops(tmp_path: Path, gate: WriteGate, timeout: float = 30.0) -> GnsOperations:
    staging = Staging(tmp_path / "staging")
    staging.open()
    ops = GnsOperations(cast(Any, _OneVolume()), "/data", staging, timeout=timeout,
                        cache=MetaCache(clock=lambda: 0.0))
    ops.write_gate = gate
    ops.cache.put_attrs("f", None, "v")  # known not to exist: as the kernel's lookup left it
    return ops


def _run(ops: GnsOperations, handler: str, *args: Any) -> Any:
    import trio

    async def call() -> Any:
        return await getattr(ops, handler)(*args)

    return trio.run(call)


def _errno_of(ops: GnsOperations, handler: str, *args: Any) -> int:
    import pyfuse3

    with pytest.raises(pyfuse3.FUSEError) as caught:
        _run(ops, handler, *args)
    return caught.value.errno


def test_create_and_open_for_writing_are_refused_at_once(tmp_path: Path) -> None:
    import pyfuse3

    ops = _ops(tmp_path, WriteGate(_Grants(("/data/mine",))))
    try:
        root = pyfuse3.ROOT_INODE
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        assert _errno_of(ops, "create", root, b"f", 0o644, flags, None) == errno.EACCES
        assert ops.pending == {}  # nothing staged, nothing to commit at close
        ino = ops.inodes.ino_for("f")
        assert _errno_of(ops, "open", ino, os.O_WRONLY | os.O_TRUNC, None) == errno.EACCES
        assert _errno_of(ops, "open", ino, os.O_RDWR, None) == errno.EACCES
        ops.cache.put_attrs("mine", None, "v")
        info, _entry = _run(ops, "create", root, b"mine", 0o644, flags, None)
        assert "mine" in ops.pending and info.fh
    finally:
        ops.close()
        ops.staging.close()


def test_a_check_that_hangs_lets_the_create_go_ahead(tmp_path: Path) -> None:
    import pyfuse3

    grants = _Grants(())
    grants.gate = threading.Event()  # the controller never answers
    ops = _ops(tmp_path, WriteGate(grants), timeout=0.2)
    try:
        flags = os.O_WRONLY | os.O_CREAT
        _run(ops, "create", pyfuse3.ROOT_INODE, b"f", 0o644, flags, None)
        assert "f" in ops.pending  # the owner decides at close
        assert ops.write_gate.cached("/data/g") is True  # and the next open does not wait
    finally:
        grants.gate.set()
        ops.close()
