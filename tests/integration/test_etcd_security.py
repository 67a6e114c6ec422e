"""etcd with TLS (``--client-cert-auth``) and auth enabled (SPEC §10), real etcd and controllers.

etcd listens on https only and requires a client certificate from our CA; auth is on with a
``gns`` user whose role may only touch ``/gns/v1/`` (the least-privilege role the README
documents). Controllers become Ready and the CLI works with the credentials; without them,
one clear error line and exit 5 or 2.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.certs import init_certs
from federation.local.etcd_server import etcd_binary
from federation.local.harness import Federation
from federation.local.ports import free_port
from tests.fixtures.federation import assert_error


def _etcdctl(endpoint: str, tls: Path, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [str(Path(etcd_binary()).with_name("etcdctl")), "--endpoints", endpoint,
           "--cacert", str(tls / "ca.crt"), "--cert", str(tls / "client.crt"), "--key", str(tls / "client.key")]
    if user:
        cmd += ["--user", user]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def secure_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """(https endpoint, TLS dir with ca/client certs, password file of user gns)."""
    try:
        binary = etcd_binary()
    except FileNotFoundError as exc:
        pytest.skip(f"etcd not installed: {exc}")
    root = tmp_path_factory.mktemp("secure-etcd")
    tls = root / "tls"
    init_certs(tls, ["etcd-server"])
    cport, pport = free_port(), free_port()
    endpoint = f"https://127.0.0.1:{cport}"
    with open(root / "etcd.log", "wb") as etcd_log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [binary, "--name", "s", "--data-dir", str(root / "data"),
             "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
             "--listen-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-cluster", f"s=http://127.0.0.1:{pport}",
             "--client-cert-auth", "--trusted-ca-file", str(tls / "ca.crt"),
             "--cert-file", str(tls / "etcd-server.crt"), "--key-file", str(tls / "etcd-server.key"),
             "--auth-token", "simple"],
            stdout=subprocess.DEVNULL, stderr=etcd_log, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while _etcdctl(endpoint, tls, "endpoint", "health").returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, (root / "etcd.log").read_text()[-2000:]
            time.sleep(0.2)
        pw = root / "gns.password"
        pw.write_text("gns-secret\n")
        pw.chmod(0o600)
        for args in (["user", "add", "root:root-secret"], ["role", "add", "root"],
                     ["user", "grant-role", "root", "root"],
                     ["user", "add", "gns:gns-secret"], ["role", "add", "gns"],
                     ["role", "grant-permission", "gns", "--prefix=true", "readwrite", "/gns/v1/"],
                     ["user", "grant-role", "gns", "gns"], ["auth", "enable"]):
            done = _etcdctl(endpoint, tls, *args)
            assert done.returncode == 0, (args, done.stderr)
        yield endpoint, tls, pw
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _env(endpoint: str, tls: Path, pw: Path | None, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GNS_ETCD")}
    env.update(GNS_ETCD=endpoint, GNS_HOME=str(home), GNS_ETCD_CA=str(tls / "ca.crt"),
               GNS_ETCD_CERT=str(tls / "client.crt"), GNS_ETCD_KEY=str(tls / "client.key"))
    if pw is not None:
        env.update(GNS_ETCD_USER="gns", GNS_ETCD_PASSWORD_FILE=str(pw))
    for var in ("GNS_TLS_DIR", "GNS_CONTROLLER", "GNS_IDENTITY"):
        env.pop(var, None)
    return env


def _gns(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "federation.cli.main", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_controllers_ready_and_cli_works_with_credentials(secure_etcd: tuple[str, Path, Path], tmp_path: Path) -> None:
    endpoint, tls, pw = secure_etcd
    env = _env(endpoint, tls, pw, tmp_path / "home")
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("GNS_ETCD")})
    try:
        with Federation(endpoint, tmp_path) as fed:
            fed.add("onprem-a")  # waits until Ready and serving
            assert _gns(env, "volume", "create", "sv", "--cluster", "onprem-a").returncode == 0
            assert _gns(env, "mount", "add", "/sv", "sv").returncode == 0
            put = subprocess.run([sys.executable, "-m", "federation.cli.main", "put", "-", "/sv/a"],
                                 input=b"over tls", capture_output=True, env=env, timeout=60)
            assert put.returncode == 0, put.stderr
            cat = subprocess.run([sys.executable, "-m", "federation.cli.main", "cat", "/sv/a"],
                                 capture_output=True, env=env, timeout=60)
            assert cat.stdout == b"over tls", cat.stderr
            # the same with flags instead of the environment
            flags = ["--etcd", endpoint, "--etcd-ca", str(tls / "ca.crt"), "--etcd-cert", str(tls / "client.crt"),
                     "--etcd-key", str(tls / "client.key"), "--etcd-user", "gns", "--etcd-password-file", str(pw)]
            bare = {k: v for k, v in env.items() if not k.startswith("GNS_ETCD")}
            listed = _gns(bare, "cluster", "list", *flags)
            assert listed.returncode == 0 and "onprem-a" in listed.stdout, listed.stderr

            # without credentials: one clear line, exit 5 (or 2 for a bad flag), no traceback
            assert_error(_gns(_env(endpoint, tls, None, tmp_path / "h2"), "cluster", "list"), 5, "etcd")
            wrong = tmp_path / "wrong.password"
            wrong.write_text("nope")
            bad_pw = _env(endpoint, tls, wrong, tmp_path / "h3")
            assert_error(_gns(bad_pw, "cluster", "list"), 5, "authentication failed")
            no_tls = {k: v for k, v in env.items() if k not in ("GNS_ETCD_CA", "GNS_ETCD_CERT", "GNS_ETCD_KEY")}
            no_tls["GNS_ETCD"] = endpoint.replace("https://", "http://")
            assert_error(_gns(no_tls, "cluster", "list"), 5, "etcd")
            missing = dict(env, GNS_ETCD_PASSWORD_FILE=str(tmp_path / "absent"))
            assert_error(_gns(missing, "cluster", "list"), 2, "password file")
            half = {k: v for k, v in env.items() if k != "GNS_ETCD_KEY"}
            assert_error(_gns(half, "cluster", "list"), 2, "--etcd-key")
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_the_gns_role_cannot_touch_other_keys(secure_etcd: tuple[str, Path, Path]) -> None:
    endpoint, tls, _ = secure_etcd
    outside = _etcdctl(endpoint, tls, "put", "/other/key", "x", user="gns:gns-secret")
    assert outside.returncode != 0 and "permission denied" in outside.stderr
    inside = _etcdctl(endpoint, tls, "get", "--prefix", "/gns/v1/clusters/", user="gns:gns-secret")
    assert inside.returncode == 0


def test_auth_tokens_are_renewed_before_and_after_expiry(secure_etcd: tuple[str, Path, Path]) -> None:
    import asyncio

    from namespace.etcd import Etcd, EtcdConfig

    endpoint, tls, pw = secure_etcd

    async def run() -> None:
        config = EtcdConfig.parse(endpoint, ca=str(tls / "ca.crt"), cert=str(tls / "client.crt"),
                                  key=str(tls / "client.key"), username="gns", password_file=str(pw),
                                  token_refresh=0.2)
        etcd = await Etcd.connect(config)
        try:
            await etcd.get(b"/gns/v1/leader")
            first = etcd.client.metadata
            renew_after = time.monotonic() + 0.25
            while time.monotonic() < renew_after:
                await asyncio.sleep(0.05)
            await etcd.get(b"/gns/v1/leader")  # renewed before this call
            assert etcd.client.metadata != first
            etcd.client.metadata = (("token", "forged-or-expired"),)
            await etcd.get(b"/gns/v1/leader")  # refused once, renewed, retried
            assert etcd.client.metadata[0][1] != "forged-or-expired"
        finally:
            await etcd.close()

    asyncio.run(run())
