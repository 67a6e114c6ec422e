"""Access control on a TLS federation (SPEC §10) with real controller processes.

One module-scoped federation (onprem-a owns volume ``sec`` at ``/data``; onprem-b forwards)
with users alice (group ops), bob and mallory; every check runs the real CLI or a real
gRPC client with the user's certificate.
"""
from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.certs import init_certs, issue_user
from federation.local.etcd_server import EtcdCluster
from federation.tls import channel_credentials, channel_options
from tests.fixtures.federation import Federation, assert_error


@pytest.fixture(scope="module")
def fed(etcd_module: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("acl")
    f = Federation(etcd_module, root)
    f.tls_dir = root / "tls"
    init_certs(f.tls_dir, ["onprem-a", "onprem-b"])
    issue_user(f.tls_dir, "alice", groups=["ops"])
    issue_user(f.tls_dir, "bob")
    issue_user(f.tls_dir, "mallory")
    try:
        f.add("onprem-a", wait=False)
        f.add("onprem-b", wait=False)
        for cid in f.controllers:
            f.wait_healthy(cid, timeout=30)
        assert f.gns("volume", "create", "sec", "--cluster", "onprem-a").returncode == 0
        assert f.gns("mount", "add", "/data", "sec").returncode == 0
        assert f.gns_bytes("put", "-", "/data/x", input=b"x-data").returncode == 0
        assert f.gns_bytes("put", "-", "/data/team/y", input=b"y-data").returncode == 0
        yield f
    finally:
        f.stop_all()


InProcess = Callable[[dict[str, str], list[str], bytes | None], subprocess.CompletedProcess[bytes]]
_IN_PROCESS: list[InProcess] = []


@pytest.fixture(autouse=True)
def _cli_in_process(monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]) -> Iterator[None]:
    """Most checks run the real CLI inside this process: a Python start-up per command would
    dominate these tests on a busy machine. ``real=True`` runs a separate process."""
    import io

    from federation.cli.main import run

    def in_process(env: dict[str, str], args: list[str], data: bytes | None) -> subprocess.CompletedProcess[bytes]:
        for key in [k for k in os.environ if k.startswith("GNS_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            if key.startswith("GNS_"):
                monkeypatch.setenv(key, value)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data or b"")))
        capsysbinary.readouterr()
        code = run(args)
        out, err = capsysbinary.readouterr()
        for key in [k for k in os.environ if k.startswith("GNS_")]:  # fed.env() copies os.environ
            monkeypatch.delenv(key)
        return subprocess.CompletedProcess(args, code, out, err)

    _IN_PROCESS.append(in_process)
    yield
    _IN_PROCESS.clear()


def as_user(f: Federation, who: str, *args: str, input: bytes | None = None,
            real: bool = False) -> subprocess.CompletedProcess[bytes]:
    env = f.env()
    env["GNS_IDENTITY"] = who
    if _IN_PROCESS and not real:
        return _IN_PROCESS[-1](env, list(args), input)
    return subprocess.run([sys.executable, "-m", "federation.cli.main", *args], input=input,
                          capture_output=True, env=env, timeout=60)


def admin(f: Federation, *args: str) -> None:
    proc = as_user(f, "client", *args)
    assert proc.returncode == 0, proc.stderr


def refused(proc: subprocess.CompletedProcess[bytes], code: int, fragment: str) -> None:
    proc_text = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, proc.stderr.decode())
    assert_error(proc_text, code, fragment)


def denied(proc: subprocess.CompletedProcess[bytes]) -> None:
    refused(proc, 4, "permission denied")


def test_reads_and_writes_per_grant_with_inheritance(fed: Federation) -> None:
    denied(as_user(fed, "alice", "cat", "/data/x"))
    admin(fed, "acl", "grant", "/data", "user:alice", "read")
    try:
        assert as_user(fed, "alice", "cat", "/data/team/y").stdout == b"y-data"  # inherited
        denied(as_user(fed, "alice", "put", "-", "/data/z", input=b"no"))
        # a narrower grant, to alice's group: write under /data/team only
        admin(fed, "acl", "grant", "/data/team", "group:ops", "write")
        assert as_user(fed, "alice", "put", "-", "/data/team/z", input=b"ok").returncode == 0
        denied(as_user(fed, "alice", "put", "-", "/data/z", input=b"no"))
        denied(as_user(fed, "alice", "rm", "/data/x"))
        denied(as_user(fed, "bob", "ls", "/data"))  # not in ops, no grant
        # ... and the refused write changed nothing
        assert fed.gns("stat", "/data/z").returncode == 3
    finally:
        fed.gns("acl", "revoke", "/data", "user:alice")
        fed.gns("acl", "revoke", "/data/team", "group:ops")


def test_write_only_drop_box(fed: Federation, tmp_path: Path) -> None:
    """A write-only identity (a sensor dropping files, no read) puts files it cannot see.
    It cannot stat the directory, so ``gns put FILE DIR/`` says with the slash that DIR is a
    directory: the file lands under its own name. Before, the slash was dropped and the put
    aimed at DIR itself. Without the slash PATH is the file, and a directory is refused."""
    src = tmp_path / "reading.csv"
    src.write_bytes(b"t,v\n1,2\n")
    admin(fed, "acl", "grant", "/data/team", "user:bob", "write")
    try:
        denied(as_user(fed, "bob", "stat", "/data/team"))
        assert as_user(fed, "bob", "put", str(src), "/data/team/").returncode == 0
        assert fed.gns_bytes("cat", "/data/team/reading.csv").stdout == b"t,v\n1,2\n"
        assert as_user(fed, "bob", "put", str(src), "/data/team/r2.csv").returncode == 0
        assert fed.gns_bytes("cat", "/data/team/r2.csv").stdout == b"t,v\n1,2\n"
        # no slash: PATH is the file to write, and a directory is no file; nothing changes
        refused(as_user(fed, "bob", "put", str(src), "/data/team"), 2, "it is a directory")
        assert fed.gns("stat", "/data/team/y").returncode == 0
        # stdin has no name: into a directory it is refused too
        refused(as_user(fed, "bob", "put", "-", "/data/team/", input=b"x"), 2, "it is a directory")
        denied(as_user(fed, "bob", "put", str(src), "/data/"))
        assert fed.gns("stat", "/data/reading.csv").returncode == 3
    finally:
        admin(fed, "acl", "revoke", "/data/team", "user:bob")
        for name in ("reading.csv", "r2.csv"):
            fed.gns("rm", f"/data/team/{name}")


def test_via_does_not_launder_identity(fed: Federation) -> None:
    denied(as_user(fed, "bob", "cat", "/data/x", "--via", "onprem-b", real=True))
    admin(fed, "acl", "grant", "/data", "user:bob", "read")
    try:
        # the forwarder passes bob on; the owner believes it from a cluster certificate
        assert as_user(fed, "bob", "cat", "/data/x", "--via", "onprem-b", real=True).stdout == b"x-data"
        denied(as_user(fed, "bob", "put", "-", "/data/w", "--via", "onprem-b", input=b"no"))
    finally:
        admin(fed, "acl", "revoke", "/data", "user:bob")


def _user_channel(fed: Federation, who: str, cid: str) -> grpc.Channel:
    assert fed.tls_dir is not None
    return grpc.secure_channel(fed.controllers[cid].endpoint, channel_credentials(fed.tls_dir, who),
                               options=channel_options(fed.tls_dir))


def test_user_claiming_a_forwarded_identity_is_refused(fed: Federation) -> None:
    target = pb.Target(global_path="/data/x")
    with _user_channel(fed, "mallory", "onprem-a") as ch:
        stub = pb_grpc.FederationStub(ch)
        for claim in ("user:client", "user:alice,group:ops"):
            with pytest.raises(grpc.RpcError) as err:
                stub.Stat(pb.StatRequest(target=target), metadata=(("gns-on-behalf-of", claim),), timeout=10)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # a target named by volume and relative path is checked on its global path
        with pytest.raises(grpc.RpcError) as err:
            stub.Stat(pb.StatRequest(target=pb.Target(volume="sec", relative_path="x", global_path="/public")),
                      timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_rename_by_volume_is_checked_where_it_moves_to(fed: Federation) -> None:
    """A Rename naming its target by volume moves to ``destination_relative``, which the
    check ignored: a user with write only under /data/team could overwrite any file of
    the volume (the destination checked was an empty global path). Both destinations are
    checked now; a rename within the grant still works."""
    admin(fed, "acl", "grant", "/data/team", "user:bob", "read,write")
    admin(fed, "acl", "grant", "/data", "user:bob", "read")
    try:
        assert as_user(fed, "bob", "put", "-", "/data/team/evil", input=b"evil").returncode == 0

        def rename(dst_rel: str, dst: str = "") -> grpc.StatusCode | None:
            req = pb.RenameRequest(target=pb.Target(volume="sec", relative_path="team/evil"),
                                   destination=dst, destination_relative=dst_rel)
            with _user_channel(fed, "bob", "onprem-a") as ch:
                try:
                    pb_grpc.FederationStub(ch).Rename(req, timeout=10)
                except grpc.RpcError as exc:
                    return exc.code()
            return None

        assert rename("x") == grpc.StatusCode.PERMISSION_DENIED
        # a destination path bob may write does not vouch for the one the owner moves to
        assert rename("x", dst="/data/team/ok") == grpc.StatusCode.PERMISSION_DENIED
        assert fed.gns("cat", "/data/x").stdout == "x-data"
        assert rename("team/moved") is None  # within the grant
        assert fed.gns("cat", "/data/team/moved").stdout == "evil"
    finally:
        fed.gns("rm", "/data/team/moved")
        admin(fed, "acl", "revoke", "/data/team", "user:bob")
        admin(fed, "acl", "revoke", "/data", "user:bob")


def test_the_administrator_syncs_and_verifies_a_volume_mounted_nowhere(fed: Federation,
                                                                       tmp_path: Path) -> None:
    """Mirror sync and verify (and promotion) of a volume with no mount were refused even
    to the administrator without --controller ("user:client has no admin on /"), which
    --controller allowed; a user with no admin on / is still refused."""
    admin(fed, "volume", "create", "unmounted", "--cluster", "onprem-a")
    doc = tmp_path / "um.json"
    doc.write_text(json.dumps({"metadata": {"name": "um-dr"}, "spec": {
        "volume": "unmounted", "mode": "manual", "targets": [{"cluster": "onprem-b"}]}}))
    admin(fed, "mirror", "apply", "-f", str(doc))
    try:
        for args in (["mirror", "sync", "um-dr", "--wait"], ["mirror", "verify", "um-dr"]):
            admin(fed, *args)
            admin(fed, *args, "--controller", fed.controllers["onprem-b"].endpoint)
            denied(as_user(fed, "mallory", *args, "--controller", fed.controllers["onprem-b"].endpoint))
    finally:
        admin(fed, "mirror", "remove", "um-dr")


def test_a_user_identity_without_controller_is_checked_by_one(fed: Federation) -> None:
    """`gns --identity alice acl grant / user:alice admin` made alice an administrator when
    the CLI went to etcd directly (it holds etcd's credentials: every right), and the same
    command through --controller was refused. A control command of a user identity goes
    through a controller either way now: the same answers, the user's grants decide."""
    admin(fed, "acl", "grant", "/data", "user:alice", "read")
    try:
        grants = fed.gns("acl", "list", "--json").stdout
        volumes = fed.gns("volume", "list", "--json").stdout
        for args in (["acl", "grant", "/", "user:alice", "admin"], ["volume", "create", "alicev", "--cluster", "onprem-a"],
                     ["mount", "add", "/alice", "sec"], ["resolve", "/elsewhere/x"]):
            denied(as_user(fed, "alice", *args))
            denied(as_user(fed, "alice", *args, "--controller", fed.controllers["onprem-b"].endpoint))
        assert (fed.gns("acl", "list", "--json").stdout, fed.gns("volume", "list", "--json").stdout) == (grants, volumes)
        assert json.loads(as_user(fed, "alice", "resolve", "/data/x", "--json").stdout)["volume"] == "sec"
        seen = [v["name"] for v in json.loads(as_user(fed, "alice", "volume", "list", "--json").stdout)]
        assert seen == ["sec"]  # the volumes she may read only
    finally:
        admin(fed, "acl", "revoke", "/data", "user:alice")


def test_a_server_holding_a_user_certificate_is_no_controller_to_clients(fed: Federation) -> None:
    """A user's certificate was good for a server too (serverAuth): anyone holding one,
    listening where a controller should be, got the administrator's puts and grants. A
    user's certificate is a client's only now: the handshake fails and nothing is sent."""
    from concurrent.futures import ThreadPoolExecutor

    assert fed.tls_dir is not None
    tls = fed.tls_dir
    calls: list[str] = []

    class Record(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc's stubs: Any
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            calls.append(details.method)
            return grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"")

    rogue = grpc.server(ThreadPoolExecutor(2))
    rogue.add_generic_rpc_handlers((Record(),))
    creds = grpc.ssl_server_credentials(
        [((tls / "mallory.key").read_bytes(), (tls / "mallory.crt").read_bytes())],
        root_certificates=(tls / "ca.crt").read_bytes(), require_client_auth=True)
    port = rogue.add_secure_port("127.0.0.1:0", creds)
    rogue.start()
    try:
        proc = as_user(fed, "client", "--controller", f"127.0.0.1:{port}", "put", "-",
                       "/data/top-secret", input=b"secret", real=True)
        refused(proc, 5, "")
        proc = as_user(fed, "client", "--controller", f"127.0.0.1:{port}", "acl", "grant",
                       "/data", "user:mallory", "admin", real=True)
        refused(proc, 5, "")
        assert calls == []
    finally:
        rogue.stop(0)


def test_a_change_stream_shows_only_what_the_caller_may_read(fed: Federation) -> None:
    """Watch needs read on the path it names, but streamed every change of the volume:
    names, sizes and times of files the caller may not read. It shows only those now."""
    import threading

    from federation.client import Client

    admin(fed, "acl", "grant", "/data/team", "user:bob", "read")
    try:
        with Client(fed.etcd_urls, tls_dir=fed.tls_dir, identity="bob") as c:
            since = c.volume("sec").version
            stream = c.watch("/data/team", from_version=since)
            seen: list[str] = []

            def follow() -> None:
                for change in stream:
                    seen.append(change.path)
                    if change.path.endswith("/visible"):
                        return

            reader = threading.Thread(target=follow, daemon=True)
            reader.start()
            admin(fed, "put", "-", "/data/hidden-from-bob", )
            admin(fed, "put", "-", "/data/team/visible")
            reader.join(15)
            stream.close()
        assert seen and seen[-1] == "/data/team/visible", seen
        assert not [p for p in seen if "hidden" in p], seen
    finally:
        fed.gns("rm", "/data/hidden-from-bob")
        fed.gns("rm", "/data/team/visible")
        admin(fed, "acl", "revoke", "/data/team", "user:bob")


def test_a_grant_on_another_mount_of_the_same_bytes_answers_alike_both_ways(fed: Federation) -> None:
    """SPEC §4: both ways give the same answers. A read grant on /teamalias (the volume's
    team/ subpath, mounted again) let bob read /data/team/y from the owner directly (it
    judges a volume's bytes by every path showing them) but not through --controller,
    which judged the path named alone. Both allow it now; what no grant reaches stays
    refused both ways."""
    admin(fed, "mount", "add", "/teamalias", "sec:team")
    admin(fed, "acl", "grant", "/teamalias", "user:bob", "read")
    ctl = ["--controller", fed.controllers["onprem-b"].endpoint]
    try:
        for way in ([], ctl):
            assert as_user(fed, "bob", *way, "cat", "/data/team/y").stdout == b"y-data", way
            assert as_user(fed, "bob", *way, "cat", "/teamalias/y").stdout == b"y-data", way
            denied(as_user(fed, "bob", *way, "cat", "/data/x"))
            # refused, naming the path bob named (not the other mount of the same bytes)
            refused(as_user(fed, "bob", *way, "put", "-", "/data/team/w", input=b"no"), 4,
                    "user:bob has no write on /data/team/w")
            # and acl check says what they do (it said "may nothing" of /data/team/y)
            check = as_user(fed, "client", *way, "acl", "check", "/data/team/y", "--as", "user:bob")
            assert check.stdout.decode().startswith("user:bob may read on /data/team/y"), (way, check)
    finally:
        admin(fed, "acl", "revoke", "/teamalias", "user:bob")
        admin(fed, "mount", "remove", "/teamalias")


def test_acl_check_of_oneself_counts_the_groups_tls_proved(fed: Federation) -> None:
    """alice reads /data/team/y through her group ops; asked of herself through
    --controller, ``acl check`` said she may nothing (her groups were left out)."""
    admin(fed, "acl", "grant", "/data/team", "group:ops", "read")
    ctl = ["--controller", fed.controllers["onprem-b"].endpoint]
    try:
        assert as_user(fed, "alice", *ctl, "cat", "/data/team/y").stdout == b"y-data"
        proc = as_user(fed, "alice", *ctl, "acl", "check", "/data/team/y", "--as", "user:alice",
                       "--json")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["perms"] == ["read"] and report["groups"] == ["ops"], report
    finally:
        admin(fed, "acl", "revoke", "/data/team", "group:ops")


def test_put_batch_is_checked_put_by_put(fed: Federation) -> None:
    """Each put of a PutBatch is checked as a lone Put would be: a denied one is its own
    PERMISSION_DENIED outcome, denied and audited once, and the allowed ones are written; a
    client's batched puts each get their own answer."""
    import threading

    from federation.client import Client
    from namespace.errors import PermissionDenied

    def put(path: str) -> pb.PutRequest:
        return pb.PutRequest(header=pb.WriteHeader(target=pb.Target(global_path=path)), data=b"b")

    admin(fed, "acl", "grant", "/data/team", "group:ops", "write")
    try:
        with _user_channel(fed, "alice", "onprem-b") as ch:
            stub = pb_grpc.FederationStub(ch)
            audit = fed.controllers["onprem-b"].data_dir / "audit.log"
            before = audit.read_text() if audit.exists() else ""
            mixed = stub.PutBatch(pb.PutBatchRequest(puts=[put("/data/pb0"), put("/data/team/pb1"),
                                                           put("/data/pb2")]), timeout=10)
            assert [o.error_kind for o in mixed.outcomes] == ["permission-denied", "", "permission-denied"]
            assert mixed.outcomes[1].reply.info.size == 1 and not mixed.outcomes[0].retryable
            assert "has no write on /data/pb2" in mixed.outcomes[2].error
            assert fed.gns("cat", "/data/team/pb1").stdout == "b"
            assert fed.gns("stat", "/data/pb0").returncode == 3 and fed.gns("stat", "/data/pb2").returncode == 3
            lines = [json.loads(ln) for ln in audit.read_text()[len(before):].splitlines()]
            assert sorted((ln["path"], ln["result"]) for ln in lines) == [
                ("/data/pb0", "denied: no write"), ("/data/pb2", "denied: no write")]  # once each
            only_denied = stub.PutBatch(pb.PutBatchRequest(puts=[put("/data/pb5")]), timeout=10)
            assert [o.error_kind for o in only_denied.outcomes] == ["permission-denied"]
            reply = stub.PutBatch(pb.PutBatchRequest(puts=[put("/data/team/pb3"), put("/data/team/pb4")]),
                                  timeout=10)
            assert [o.reply.info.size for o in reply.outcomes] == [1, 1]
        outcome: dict[str, object] = {}
        with Client(fed.etcd_urls, tls_dir=fed.tls_dir, identity="alice") as c:
            def run(t: int) -> None:
                for i in range(10):
                    path = f"/data/team/t{t}-{i}" if t % 2 else f"/data/t{t}-{i}"
                    try:
                        outcome[path] = c.put(b"x", path).size
                    except PermissionDenied as exc:
                        outcome[path] = exc

            threads = [threading.Thread(target=run, args=(t,)) for t in range(6)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(60)
            assert c._put_batcher.batches > 0  # the threads' puts did share calls
        assert len(outcome) == 60
        for path, got in outcome.items():
            if path.startswith("/data/team/"):
                assert got == 1, path
            else:
                assert isinstance(got, PermissionDenied), path
        assert fed.gns("stat", "/data/t0-0").returncode == 3
    finally:
        fed.gns("acl", "revoke", "/data/team", "group:ops")


def test_control_commands_through_controller_need_admin(fed: Federation) -> None:
    ctl = ["--controller", fed.controllers["onprem-b"].endpoint]
    for args in (
        ["volume", "create", "mine", "--cluster", "onprem-a"],
        ["mount", "add", "/data/m", "sec"],
        ["mount", "remove", "/data"],
        ["acl", "grant", "/data", "user:mallory", "read,write"],
        ["cluster", "remove", "onprem-b"],
        ["volume", "promote", "sec", "--to", "onprem-b", "--force"],
    ):
        denied(as_user(fed, "mallory", *ctl, *args))
    assert json.loads(as_user(fed, "mallory", *ctl, "mount", "list", "--json").stdout) == []
    # the administrator may, through the same controller (and no etcd at all)
    env = fed.env()
    env.pop("GNS_ETCD")
    proc = subprocess.run([sys.executable, "-m", "federation.cli.main", *ctl, "acl", "grant", "/data/team",
                           "user:mallory", "admin", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    try:
        # admin under /data/team: mounts there, nothing above
        # the volume's /data is what is missing, and the refusal names it
        refused(as_user(fed, "mallory", *ctl, "mount", "add", "/data/team/m", "sec:team"), 4,
                "user:mallory has no admin on /data")
        assert "/data/team/m" not in as_user(fed, "mallory", *ctl, "mount", "add", "/data/team/m",
                                              "sec:team").stderr.decode()
        denied(as_user(fed, "mallory", *ctl, "acl", "grant", "/data", "user:mallory", "read"))
        ok = as_user(fed, "mallory", *ctl, "acl", "grant", "/data/team/sub", "user:bob", "read")
        assert ok.returncode == 0, ok.stderr
        assert as_user(fed, "mallory", *ctl, "put", "-", "/data/team/m1", input=b"m").returncode == 0
    finally:
        admin(fed, "acl", "revoke", "/data/team", "user:mallory")
        fed.gns("acl", "revoke", "/data/team/sub", "user:bob")


_BROKEN_POLICY = b"""\
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata: {name: sec-dr}
spec:
  volume: VOLUME
  targets: [{uri: "s3://Bad_Bucket!/x"}, {cluster: onprem-a}, {cluster: nowhere}, {cluster: nowhere}]
"""


def test_mirror_apply_with_problems_still_needs_admin(fed: Federation) -> None:
    """Listing every problem (as the etcd way does) must not bypass the access check: the
    volume's mounts when the document names one, "/" when it is too broken to."""
    ctl = ["--controller", fed.controllers["onprem-b"].endpoint]
    for volume in (b"sec", b"Not_A_Volume", b"[1]"):
        doc = _BROKEN_POLICY.replace(b"VOLUME", volume)
        for dry in ([], ["--dry-run"]):
            denied(as_user(fed, "mallory", *ctl, "mirror", "apply", "-f", "-", *dry, input=doc))
            by_etcd = as_user(fed, "client", "mirror", "apply", "-f", "-", *dry, input=doc)
            by_ctl = as_user(fed, "client", *ctl, "mirror", "apply", "-f", "-", *dry, input=doc)
            assert by_etcd.returncode == by_ctl.returncode == 2, (by_etcd.stderr, by_ctl.stderr)
            assert by_ctl.stderr == by_etcd.stderr
            assert b"unknown cluster 'nowhere'" in by_ctl.stderr and b"spec.targets[0].uri" in by_ctl.stderr


def test_reapplying_a_policy_needs_admin_on_the_volume_it_covers_now(fed: Federation) -> None:
    """Admin on one volume must not let a caller overwrite the policy of another: replacing
    a stored policy needs admin on the volume it covers as well as on the new one."""
    ctl = ["--controller", fed.controllers["onprem-b"].endpoint]
    admin(fed, "volume", "create", "mals", "--cluster", "onprem-a")
    admin(fed, "mount", "add", "/mal", "mals")
    policy = b"""apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata: {name: guarded-dr}
spec: {volume: VOLUME, mode: manual, targets: [{cluster: onprem-b}]}
"""
    assert as_user(fed, "client", "mirror", "apply", "-f", "-",
                   input=policy.replace(b"VOLUME", b"sec")).returncode == 0
    admin(fed, "acl", "grant", "/mal", "user:mallory", "admin")
    try:
        hijack = policy.replace(b"VOLUME", b"mals")
        denied(as_user(fed, "mallory", *ctl, "mirror", "apply", "-f", "-", input=hijack))
        shown = json.loads(as_user(fed, "client", "mirror", "list", "--json").stdout)
        assert {p["name"]: p["volume"] for p in shown}["guarded-dr"] == "sec"
        # Her own volume's new policy is hers to make.
        own = policy.replace(b"guarded-dr", b"mal-dr").replace(b"VOLUME", b"mals")
        assert as_user(fed, "mallory", *ctl, "mirror", "apply", "-f", "-", input=own).returncode == 0
    finally:
        admin(fed, "acl", "revoke", "/mal", "user:mallory")
        for name in ("guarded-dr", "mal-dr"):
            as_user(fed, "client", "mirror", "remove", name)


def test_revoke_in_force_within_a_second(fed: Federation) -> None:
    from federation.client import Client

    admin(fed, "acl", "grant", "/data", "user:bob", "read")
    with Client(fed.etcd_urls, tls_dir=fed.tls_dir, identity="bob", watch=False) as bob:
        assert bob.stat("/data/x").size == 6
        with Client(fed.etcd_urls, tls_dir=fed.tls_dir, watch=False) as adm:
            start = time.monotonic()
            adm.acl_revoke("/data", "user:bob")
        from namespace.errors import PermissionDenied

        while True:
            try:
                bob.stat("/data/x")
            except PermissionDenied:
                break
            assert time.monotonic() - start < 1.0, "revoke not in force after 1 s"
            time.sleep(0.01)


def test_audit_log_has_denials_and_admin_operations(fed: Federation) -> None:
    denied(as_user(fed, "mallory", "cat", "/data/x"))
    ctl = ["--controller", fed.controllers["onprem-a"].endpoint]
    assert fed.gns(*ctl, "acl", "grant", "/data/team", "user:bob", "read").returncode == 0
    fed.gns("acl", "revoke", "/data/team", "user:bob")
    log = fed.controllers["onprem-a"].data_dir / "audit.log"
    lines = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert all(set(ln) == {"time", "identity", "action", "path", "result"} for ln in lines)
    assert any(ln["identity"] == "user:mallory" and ln["result"].startswith("denied") for ln in lines)
    assert any(ln["identity"] == "user:client" and ln["action"] == "acl.grant" and ln["result"] == "ok"
               for ln in lines)
    metrics = _metrics(fed, "onprem-a")
    assert "gns_authz_denials_total" in metrics and "gns_audit_admin_ops_total" in metrics


def _metrics(fed: Federation, cid: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{fed.controllers[cid].metrics_port}/metrics", timeout=5) as r:
        text: str = r.read().decode()
        return text


def test_expired_and_foreign_certificates_are_refused(fed: Federation, tmp_path: Path) -> None:
    assert fed.tls_dir is not None
    issue_user(fed.tls_dir, "short", ttl_seconds=1.0)
    cert = x509.load_pem_x509_certificate((fed.tls_dir / "short.crt").read_bytes())
    while time.time() <= cert.not_valid_after_utc.timestamp() + 0.1:
        time.sleep(0.05)
    proc = as_user(fed, "short", "cat", "/data/x", real=True)
    assert_error(subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, proc.stderr.decode()),
                 2, "expired")
    # the server refuses it too (a client that skips its own check)
    creds = grpc.ssl_channel_credentials((fed.tls_dir / "ca.crt").read_bytes(),
                                         (fed.tls_dir / "short.key").read_bytes(), (fed.tls_dir / "short.crt").read_bytes())
    with grpc.secure_channel(fed.controllers["onprem-a"].endpoint, creds, options=channel_options(fed.tls_dir)) as ch:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.FederationStub(ch).Health(pb.HealthRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # a user certificate from another federation's CA
    foreign = tmp_path / "foreign"
    init_certs(foreign, [])
    issue_user(foreign, "alice")
    env = fed.env()
    env["GNS_TLS_DIR"], env["GNS_IDENTITY"] = str(foreign), "alice"
    proc2 = subprocess.run([sys.executable, "-m", "federation.cli.main", "cat", "/data/x"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert_error(proc2, 5, "refused the connection")


def _served_serial(fed: Federation, cid: str) -> int:
    assert fed.tls_dir is not None
    ctx = ssl.create_default_context(cafile=str(fed.tls_dir / "ca.crt"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(fed.tls_dir / "client.crt"), str(fed.tls_dir / "client.key"))
    ctx.set_alpn_protocols(["h2"])
    host, port = fed.controllers[cid].endpoint.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.mark.slow
def test_rotation_serves_the_new_certificate_without_restart(fed: Federation) -> None:
    assert fed.tls_dir is not None
    pid = fed.controllers["onprem-b"].pid
    before = _served_serial(fed, "onprem-b")
    proc = fed.gns("certs", "rotate", "onprem-b", "--dir", str(fed.tls_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    new = x509.load_pem_x509_certificate((fed.tls_dir / "onprem-b.crt").read_bytes()).serial_number
    assert new != before
    deadline = time.monotonic() + 30
    while _served_serial(fed, "onprem-b") != new:
        assert time.monotonic() < deadline, "rotated certificate not served within 30 s"
        time.sleep(0.2)
    b = fed.controllers["onprem-b"]
    assert b.pid == pid and b.proc is not None and b.proc.poll() is None
    # and it still works both ways: forwarding through b, and b's own peer calls
    assert fed.gns_bytes("cat", "/data/x", "--via", "onprem-b").stdout == b"x-data"


def test_bad_input_on_every_new_command(fed: Federation) -> None:
    assert fed.tls_dir is not None

    def gns(*a: str) -> subprocess.CompletedProcess[bytes]:
        return as_user(fed, "client", *a)

    before = gns("acl", "list", "--json").stdout
    for args in (
        ["acl", "grant", "data", "user:bob", "read"],
        ["acl", "grant", "/data/../x", "user:bob", "read"],
        ["acl", "grant", "/data", "bob", "read"],
        ["acl", "grant", "/data", "role:bob", "read"],
        ["acl", "grant", "/data", "user:bob", "execute"],
        ["acl", "grant", "/data", "user:bob", ""],
        ["acl", "grant", "/data", "user:bob"],
        ["acl", "revoke", "/data", "user:"],
        ["acl", "revoke", "rel", "user:bob"],
        ["acl", "list", "not/absolute"],
        ["acl", "check", "/data"],
        ["acl", "check", "/data", "--as", "nobody"],
        ["acl", "check", "/data", "--as", "user:bob", "--group", "bad/group"],
        ["--controller", "nocolon", "acl", "list"],
        ["--controller", fed.controllers["onprem-a"].endpoint, "acl", "grant", "/data", "user:bob", "rw"],
    ):
        assert_error(gns(*args), 2)
    assert gns("acl", "list", "--json").stdout == before
    assert_error(gns("acl", "revoke", "/data", "user:nobody"), 3)
    d = str(fed.tls_dir)
    files = sorted(os.listdir(d))
    for args in (
        ["certs", "issue", "bad/name", "--dir", d],
        ["certs", "issue", "-x", "--dir", d],
        ["certs", "issue", "carol", "--dir", d, "--group", "no spaces"],
        ["certs", "issue", "carol", "--dir", d, "--ttl", "soon"],
        ["certs", "issue", "carol", "--dir", d, "--ttl", "0s"],
        ["certs", "issue", "client", "--dir", d],
        ["certs", "rotate", "Bad_Cluster", "--dir", d],
        ["certs", "rotate", "onprem-a"],
    ):
        assert_error(gns(*args), 2)
    # An identity that exists is a conflict; a missing cluster or CA directory is not found.
    assert_error(gns("certs", "issue", "alice", "--dir", d), 4, "already exists")
    assert_error(gns("certs", "issue", "carol", "--dir", str(Path(d) / "nowhere")), 3, "nowhere")
    assert_error(gns("certs", "rotate", "nope", "--dir", d), 3, "nope")
    assert sorted(os.listdir(d)) == files
