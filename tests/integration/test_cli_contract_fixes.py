"""CLI contract fixes (SPEC §4) on a real federation (etcd + two controllers, no TLS).

* ``mirror apply`` of a document with several problems lists every one of them, with the
  same exit code and the same one error line, through etcd and through ``--controller``
  (also ``--dry-run``, and documents too broken to name a volume);
* ``rm``, ``mv`` and ``mount remove`` report paths in normal form, not as typed.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.local.etcd_server import EtcdCluster
from tests.fixtures.federation import Federation, assert_error


@pytest.fixture(scope="module")
def fed(etcd_module: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    f = Federation(etcd_module, tmp_path_factory.mktemp("contract"))
    try:
        f.add("onprem-a", wait=False)
        f.add("onprem-b", wait=False)
        for cid in f.controllers:
            f.wait_healthy(cid, timeout=30)
        assert f.gns("volume", "create", "cf", "--cluster", "onprem-a").returncode == 0
        assert f.gns("mount", "add", "/cf", "cf").returncode == 0
        yield f
    finally:
        f.stop_all()


def _run(f: Federation, args: list[str], stdin: bytes | None, *, controller: bool,
         tmp: Path) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it; the controller way has no etcd address anywhere."""
    env = f.env()
    if controller:
        env.pop("GNS_ETCD")
        env["GNS_HOME"] = str(tmp / "empty-home")  # no federation.json to find etcd in
        env["GNS_CONTROLLER"] = f.controllers["onprem-b"].endpoint
    proc = subprocess.run([sys.executable, "-m", "federation.cli.main", *args], input=stdin,
                          capture_output=True, env=env, timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def _both(f: Federation, args: list[str], stdin: bytes | None,
          tmp: Path) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    return (_run(f, args, stdin, controller=False, tmp=tmp),
            _run(f, args, stdin, controller=True, tmp=tmp))


# Four problems of different stages: one structural (the bucket name, which pydantic finds)
# and three of meaning (owner as target, duplicate, unknown cluster), which a model parse
# never reaches when the structure is broken.
MANY_PROBLEMS = b"""\
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata:
  name: cf-dr
spec:
  volume: cf
  mode: continuous
  targets:
    - uri: s3://Bad_Bucket!/x
    - cluster: onprem-a
    - cluster: onprem-b
    - cluster: onprem-b
    - cluster: nowhere
"""

NEEDLES = ["spec.targets[0].uri", "owner of volume 'cf'", "duplicate target onprem-b",
           "unknown cluster 'nowhere'"]


@pytest.mark.parametrize("dry_run", [False, True])
def test_mirror_apply_lists_every_problem_both_ways(fed: Federation, tmp_path: Path, dry_run: bool) -> None:
    args = ["mirror", "apply", "-f", "-", *(["--dry-run"] if dry_run else [])]
    by_etcd, by_controller = _both(fed, args, MANY_PROBLEMS, tmp_path)
    for proc in (by_etcd, by_controller):
        assert_error(proc, 2, "invalid mirror policy 'cf-dr'")
        for needle in NEEDLES:
            assert needle in proc.stderr, (needle, proc.stderr)
    assert by_etcd.stderr == by_controller.stderr
    assert fed.gns("mirror", "list", "--json").stdout.strip() == "[]"  # nothing stored


@pytest.mark.parametrize("doc", [
    # no volume to check access on: every problem still listed, the same both ways
    b"apiVersion: gns.io/v1alpha1\nkind: MirrorPolicy\nmetadata: {name: x}\n"
    b"spec: {mode: never, targets: [{cluster: nowhere}, {cluster: nowhere}]}\n",
    b"apiVersion: gns.io/v1alpha1\nkind: MirrorPolicy\nmetadata: {name: x}\n"
    b"spec: {volume: Not_A_Volume, targets: [{uri: 's3://Bad_Bucket!/x'}, {cluster: nowhere}]}\n",
    b"apiVersion: gns.io/v1alpha1\nkind: MirrorPolicy\nmetadata: {name: x}\n"
    b"spec: {volume: 7, targets: []}\n",
    b"apiVersion: gns.io/v1alpha1\nkind: MirrorPolicy\nmetadata: {name: x}\nspec: [1, 2]\n",
    b"spec: {volume: unknown-vol, targets: [{cluster: onprem-b}]}\n",
    b"- not\n- a mapping\n",
    b"spec: {volume: cf\n",  # not YAML
    b"",
])
def test_mirror_apply_broken_documents_both_ways(fed: Federation, tmp_path: Path, doc: bytes) -> None:
    by_etcd, by_controller = _both(fed, ["mirror", "apply", "-f", "-"], doc, tmp_path)
    assert_error(by_etcd, 2)
    assert (by_controller.returncode, by_controller.stderr) == (by_etcd.returncode, by_etcd.stderr)


def test_mirror_apply_valid_document_both_ways(fed: Federation, tmp_path: Path) -> None:
    good = b"apiVersion: gns.io/v1alpha1\nkind: MirrorPolicy\nmetadata: {name: cf-ok}\n" \
           b"spec: {volume: cf, targets: [{cluster: onprem-b}]}\n"
    by_etcd, by_controller = _both(fed, ["mirror", "apply", "-f", "-", "--dry-run", "--json"], good, tmp_path)
    assert by_etcd.returncode == by_controller.returncode == 0, (by_etcd.stderr, by_controller.stderr)
    assert json.loads(by_etcd.stdout)["policy"] == json.loads(by_controller.stdout)["policy"] == "cf-ok"


@pytest.mark.parametrize("controller", [False, True])
def test_paths_are_reported_in_normal_form(fed: Federation, tmp_path: Path, controller: bool) -> None:
    way = "c" if controller else "e"

    def gns(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        proc = _run(fed, list(args), stdin, controller=controller, tmp=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc

    gns("put", "-", f"/cf/{way}1", stdin=b"x")
    moved = json.loads(gns("mv", f"//cf//{way}1/", f"//cf/{way}2//", "--json").stdout)
    assert (moved["src"], moved["dst"]) == (f"/cf/{way}1", f"/cf/{way}2")
    gone = json.loads(gns("rm", f"//cf//{way}2/", "--json").stdout)
    assert gone["path"] == f"/cf/{way}2"

    gns("mount", "add", f"/m{way}", "cf")
    assert json.loads(gns("mount", "remove", f"//m{way}//", "--json").stdout) == {"removed": f"/m{way}"}
    gns("mount", "add", f"/m{way}", "cf")
    assert gns("mount", "remove", f"//m{way}/").stdout.strip() == f"unmounted /m{way}"


def test_an_epoch_the_volume_has_not_reached_is_refused_not_retried(fed: Federation, tmp_path: Path) -> None:
    """``--epoch`` past the volume's epoch was "has not yet seen epoch 3 ...; retry" (exit 5):
    a script pinning it retried for ever. The owner asks etcd: a lag is still exit 5, an
    epoch that does not exist is refused (exit 4) and nothing is written."""
    epoch = json.loads(fed.gns("volume", "show", "cf", "--json").stdout)["epoch"]
    for controller in (False, True):  # straight to the owner, and through onprem-b
        for args in (["put", "-", "/cf/ahead", "--epoch", str(epoch + 1)],
                     ["put", "-", "/cf/ahead", "--epoch", str(2**63 - 1)],
                     ["rm", "/cf/ahead", "--epoch", str(epoch + 5)]):
            assert_error(_run(fed, args, b"data", controller=controller, tmp=tmp_path), 4, "not reached")
    assert_error(fed.gns("stat", "/cf/ahead"), 3)
    ok = _run(fed, ["put", "-", "/cf/ahead", "--epoch", str(epoch)], b"data", controller=False, tmp=tmp_path)
    assert ok.returncode == 0, ok.stderr
