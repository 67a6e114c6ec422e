"""``gns certs issue/rotate`` exit codes (SPEC §4): a name already taken is a conflict (4), a
missing cluster, CA or directory is not found (3), malformed input stays a usage error (2);
one error line and nothing written whenever it fails. No servers: certs work on files only."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from federation import certs
from namespace.errors import Conflict, InvalidInput, NotFound
from tests.fixtures.federation import assert_error


def gns(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "federation.cli.main", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GNS_ETCD": "http://127.0.0.1:1"})


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.exists() else {}


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with cluster c1 and user carol; tests only read it (failures write nothing)."""
    d = tmp_path_factory.mktemp("pki")
    certs.init_certs(d, ["c1"])
    certs.issue_user(d, "carol")
    return d


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("name", ["carol", "c1"])
def test_issue_existing_identity_is_a_conflict(ca_dir: Path, name: str) -> None:
    before = _files(ca_dir)
    assert_error(gns("certs", "issue", name, "--dir", str(ca_dir)), 4, "already exists")
    assert _files(ca_dir) == before


def test_rotate_unknown_cluster_is_not_found(ca_dir: Path) -> None:
    before = _files(ca_dir)
    assert_error(gns("certs", "rotate", "c9", "--dir", str(ca_dir)), 3, "c9")
    assert _files(ca_dir) == before


def test_rotate_a_user_is_not_found(ca_dir: Path) -> None:
    # carol.crt exists but is a user's: rotating it must not reissue it as cluster:carol.
    before = _files(ca_dir)
    assert_error(gns("certs", "rotate", "carol", "--dir", str(ca_dir)), 3, "not a cluster")
    assert _files(ca_dir) == before


@pytest.mark.parametrize("verb", [("issue", "dave"), ("rotate", "c1")])
def test_missing_directory_is_not_found(tmp_path: Path, verb: tuple[str, str]) -> None:
    missing = tmp_path / "nonexistent"
    assert_error(gns("certs", *verb, "--dir", str(missing)), 3, str(missing))
    assert not missing.exists()


def test_issue_without_ca_names_the_ca(tmp_path: Path) -> None:
    assert_error(gns("certs", "issue", "dave", "--dir", str(tmp_path)), 3, "ca.crt")
    assert _files(tmp_path) == {}


def test_issue_without_ca_key_names_the_key(ca_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "no-key"
    d.mkdir()
    (d / "ca.crt").write_bytes((ca_dir / "ca.crt").read_bytes())
    assert_error(gns("certs", "issue", "dave", "--dir", str(d)), 3, "ca.key")
    assert sorted(_files(d)) == ["ca.crt"]


@pytest.mark.parametrize(("args", "fragment"), [
    (["issue", "../evil"], "invalid"),
    (["issue", "client"], "administrator"),
    (["issue", "dave", "--group", "Bad Group"], "invalid"),
    (["issue", "dave", "--ttl", "soon"], "ttl"),
    (["issue", "dave", "--ttl", "0s"], "--ttl 0s: must be more than 0"),
    (["issue", "dave", "--ttl", "-1h"], "must not be negative"),
    (["rotate", "Bad_Name"], "invalid"),
    (["rotate"], "missing argument"),
])
def test_usage_errors_stay_exit_2(ca_dir: Path, args: list[str], fragment: str) -> None:
    before = _files(ca_dir)
    assert_error(gns("certs", *args, "--dir", str(ca_dir)), 2, fragment)
    assert _files(ca_dir) == before


def test_dir_that_is_a_file_is_invalid(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert_error(gns("certs", "issue", "dave", "--dir", str(f)), 2)


# --------------------------------------------------------------------------- the API


def test_api_raises_the_matching_errors(ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(Conflict, match="already exists"):
        certs.issue_user(ca_dir, "carol")
    with pytest.raises(NotFound, match="no cluster 'c9'"):
        certs.rotate_cluster(ca_dir, "c9")
    with pytest.raises(NotFound, match="does not exist"):
        certs.issue_user(tmp_path / "nope", "dave")
    with pytest.raises(InvalidInput):
        certs.issue_user(ca_dir, "-bad")


def test_rotate_still_works(ca_dir: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(ca_dir, d)
    old = (d / "c1.crt").read_bytes()
    out = gns("certs", "rotate", "c1", "--dir", str(d))
    assert out.returncode == 0, out.stderr
    assert (d / "c1.crt").read_bytes() != old


def test_an_interrupted_issue_is_finished_with_its_key(tmp_path: Path) -> None:
    """The key is written before the certificate: an issue killed in between left the key
    alone, and every later ``certs issue`` of that name said "already exists" for good."""
    from federation.tls import identity_file

    d = tmp_path / "pki"
    certs.init_certs(d, ["c1"])
    certs.issue_user(d, "dora")
    key = (d / "dora.key").read_bytes()
    (d / "dora.crt").unlink()  # as a SIGKILL between the two writes leaves it
    out = gns("certs", "issue", "dora", "--dir", str(d), "--group", "ops")
    assert out.returncode == 0, out.stderr
    assert (d / "dora.key").read_bytes() == key  # the key kept, the certificate made for it
    who = identity_file(d, "dora")
    assert who.subject == "user:dora" and "ops" in who.groups
    # a key that is not one is refused, and nothing is written
    (d / "eve.key").write_text("not a key")
    before = _files(d)
    assert gns("certs", "issue", "eve", "--dir", str(d)).returncode == 2
    assert _files(d) == before
