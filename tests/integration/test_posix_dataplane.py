"""SPEC §5 additions through real controllers: atomic rename, empty directories, mode bits,
mtimes, the per-volume change stream, and their replay on a cluster replica (issue 10).

One module-scoped federation (onprem-a owns ``pxd``, mounted at ``/pxd``; ``pxo`` on
onprem-b at ``/pxo``); a ``mode: sync`` policy mirrors ``pxd`` to onprem-b, so every
committed edit is on the replica when the call returns. The replica is read through
onprem-b with ``--consistency any`` (answered from its own copy: ``stale`` is set).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from federation.client import Change
from namespace.errors import Conflict, FileNotFound, InvalidInput
from tests.fixtures.federation import Federation, assert_error
from tests.support import wait_for


@pytest.fixture(scope="module")
def fed(federation3: Federation, tmp_path_factory: pytest.TempPathFactory) -> Federation:
    f = federation3
    for vol, owner in (("pxd", "onprem-a"), ("pxo", "onprem-b")):
        assert f.gns("volume", "create", vol, "--cluster", owner).returncode == 0
        assert f.gns("mount", "add", f"/{vol}", vol).returncode == 0
    doc = tmp_path_factory.mktemp("pol") / "p.yaml"
    doc.write_text(
        "apiVersion: gns.io/v1alpha1\nkind: MirrorPolicy\nmetadata:\n  name: pxd-dr\n"
        "spec:\n  volume: pxd\n  mode: sync\n  targets:\n    - cluster: onprem-b\n"
        "  maxLag: 60s\n"
    )
    proc = f.gns("mirror", "apply", "-f", str(doc))
    assert proc.returncode == 0, proc.stderr
    return f


@pytest.fixture(scope="module")
def client(fed: Federation) -> Any:
    with fed.client() as c:
        yield c


@pytest.fixture(scope="module")
def replica(fed: Federation) -> Any:
    with fed.client(via="onprem-b", consistency="any") as c:
        yield c


def replica_has(replica: Any, path: str, **want: Any) -> bool:
    try:
        st = replica.stat(path)
    except FileNotFound:
        return False
    return st.stale and all(getattr(st, k) == v for k, v in want.items())


def test_rename_file_and_directory_is_one_version(client: Any) -> None:
    client.put(b"one", "/pxd/mv/a/x.txt")
    before = client.put(b"two", "/pxd/mv/a/sub/y.txt").version
    v = client.mv("/pxd/mv/a/x.txt", "/pxd/mv/b.txt")
    assert v == before + 1
    assert client.cat("/pxd/mv/b.txt") == b"one"
    with pytest.raises(FileNotFound):
        client.stat("/pxd/mv/a/x.txt")
    v2 = client.mv("/pxd/mv/a", "/pxd/mv/c")
    assert v2 == v + 1
    assert client.cat("/pxd/mv/c/sub/y.txt") == b"two"
    assert [e.name for e in client.ls("/pxd/mv")] == ["b.txt", "c"]
    with pytest.raises(InvalidInput):
        client.mv("/pxd/mv/c", "/pxd/mv/c/inside")
    with pytest.raises(FileNotFound):
        client.mv("/pxd/mv/nope", "/pxd/mv/x")


def test_rename_across_volumes_is_refused(fed: Federation, client: Any) -> None:
    client.put(b"z", "/pxd/xv/z")
    with pytest.raises(Conflict):
        client.mv("/pxd/xv/z", "/pxo/z")
    assert_error(fed.gns("mv", "/pxd/xv/z", "/pxo/z"), 4, "different volumes")
    assert client.cat("/pxd/xv/z") == b"z"
    with pytest.raises(FileNotFound):  # missing is what it is, wherever it was to go
        client.mv("/pxd/xv/missing", "/pxo/z")
    assert_error(fed.gns("mv", "/pxd/xv/missing", "/pxo/z"), 3)
    assert_error(fed.gns("mv", "/pxd/xv/z"), 2)
    assert_error(fed.gns("mv", "relative", "/pxd/xv/y"), 2)
    ok = fed.gns("mv", "/pxd/xv/z", "/pxd/xv/z2", "--json")
    assert ok.returncode == 0, ok.stderr
    assert client.cat("/pxd/xv/z2") == b"z"


def test_empty_directories_persist_and_rmdir(client: Any) -> None:
    client.mkdir("/pxd/dirs/empty", mode=0o750)
    st = client.stat("/pxd/dirs/empty")
    assert st.type == "dir" and st.mode == 0o750
    with pytest.raises(Conflict):
        client.mkdir("/pxd/dirs/empty")
    client.put(b"f", "/pxd/dirs/empty/f")
    with pytest.raises(Conflict):
        client.rmdir("/pxd/dirs/empty")
    client.rm("/pxd/dirs/empty/f", keep_parent=True)
    assert client.ls("/pxd/dirs/empty") == []
    client.rmdir("/pxd/dirs/empty")
    with pytest.raises(FileNotFound):
        client.stat("/pxd/dirs/empty")


def test_mode_and_mtime_are_kept(client: Any) -> None:
    client.put(b"#!/bin/sh\n", "/pxd/attr/run.sh", mode=0o755)
    assert client.stat("/pxd/attr/run.sh").mode == 0o755
    client.put(b"#!/bin/sh\necho\n", "/pxd/attr/run.sh")  # a replace keeps the mode
    assert client.stat("/pxd/attr/run.sh").mode == 0o755
    client.chmod("/pxd/attr/run.sh", 0o700)
    client.set_mtime("/pxd/attr/run.sh", 1_000_000.25)
    st = client.stat("/pxd/attr/run.sh")
    assert st.mode == 0o700 and st.mtime == 1_000_000.25
    assert client.cat("/pxd/attr/run.sh") == b"#!/bin/sh\necho\n"


def test_edits_replay_on_the_cluster_replica(client: Any, replica: Any) -> None:
    client.put(b"data", "/pxd/rep/a.txt")
    client.mv("/pxd/rep/a.txt", "/pxd/rep/b.txt")
    client.mkdir("/pxd/rep/emptydir", mode=0o700)
    client.chmod("/pxd/rep/b.txt", 0o751)
    wait_for(lambda: replica_has(replica, "/pxd/rep/b.txt", mode=0o751))
    assert replica.cat("/pxd/rep/b.txt") == b"data"
    wait_for(lambda: replica_has(replica, "/pxd/rep/emptydir", type="dir", mode=0o700))
    with pytest.raises(FileNotFound):
        replica.stat("/pxd/rep/a.txt")
    client.rmdir("/pxd/rep/emptydir")
    wait_for(lambda: not replica_has(replica, "/pxd/rep/emptydir"))


def test_watch_delivers_every_change_in_order(client: Any) -> None:
    start = client.put(b"w0", "/pxd/watch/start").version
    seen: list[Change] = []
    stream = client.watch("/pxd/watch", from_version=start)

    def follow() -> None:
        for change in stream:
            seen.append(change)

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    client.put(b"w1", "/pxd/watch/f")
    client.mv("/pxd/watch/f", "/pxd/watch/g")
    client.mkdir("/pxd/watch/d")
    client.chmod("/pxd/watch/g", 0o600)
    client.rmdir("/pxd/watch/d")
    client.rm("/pxd/watch/g")
    wait_for(lambda: len({c.version for c in seen}) >= 6)
    stream.close()
    t.join(5)
    versions = [c.version for c in seen]
    assert versions == sorted(versions) and versions[0] == start + 1
    ops = [(c.op, c.path) for c in seen]
    assert ops[0] == ("put", "/pxd/watch/f")
    renamed = [c for c in seen if c.op == "rename" and c.path == "/pxd/watch/g"]
    assert renamed and renamed[0].src == "/pxd/watch/f"
    assert ("mkdir", "/pxd/watch/d") in ops and ("rmdir", "/pxd/watch/d") in ops
    assert ("chmod", "/pxd/watch/g") in ops and ops[-1] == ("delete", "/pxd/watch/g")


def test_watch_by_volume_name_replays_from_a_version(client: Any) -> None:
    first = client.put(b"a", "/pxd/wv/a").version
    last = client.put(b"b", "/pxd/wv/b").version
    with client.watch(volume="pxd", from_version=first - 1) as stream:
        got = []
        for change in stream:
            got.append(change)
            if change.version >= last:
                break
    assert [(c.op, c.relative_path) for c in got if c.version in (first, last)] == [
        ("put", "wv/a"), ("put", "wv/b")]
    with pytest.raises(InvalidInput):
        client.watch()


def test_watch_from_a_truncated_version_is_refused(tmp_path: Path) -> None:
    from federation.storage import VolumeStorage

    vs = VolumeStorage.open(tmp_path / "v", "v", create=True)
    try:
        vs.put_bytes("a", b"1")
        vs.put_bytes("b", b"2")
        vs.truncate_journal(2)
        with pytest.raises(Conflict):
            list(vs.journal(0))
    finally:
        vs.close()
