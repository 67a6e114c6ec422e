"""federation.tls: issuing certificates, loading them, and mutual TLS on a real gRPC server.

The gRPC tests start one tiny server on 127.0.0.1 with a generic echo handler and dial it
with a good identity, a foreign CA's identity, no client certificate, and plaintext.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from federation import tls
from federation.local.ports import free_port
from namespace.errors import InvalidInput

ECHO = "/gns.test.Echo/Echo"


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


# --------------------------------------------------------------------------- init_certs


def test_init_creates_ca_and_identities(tmp_path: Path) -> None:
    d = tmp_path / "tls"
    written = tls.init_certs(d, ["east"])
    names = {"ca.crt", "ca.key", "east.crt", "east.key", "client.crt", "client.key"}
    assert {p.name for p in written} == names
    assert all(p.parent == d for p in written)
    assert set(_files(d)) == names  # no temporary files left behind
    for key in ("ca.key", "east.key", "client.key"):
        assert stat.S_IMODE((d / key).stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    tls.check_tls_dir(d, "east")
    tls.check_tls_dir(d, "client")


def test_init_is_idempotent_and_never_rotates(tmp_path: Path) -> None:
    tls.init_certs(tmp_path, ["east"])
    before = _files(tmp_path)
    assert tls.init_certs(tmp_path, ["east"]) == []
    assert _files(tmp_path) == before

    written = tls.init_certs(tmp_path, ["east", "west"])
    assert sorted(p.name for p in written) == ["west.crt", "west.key"]
    after = _files(tmp_path)
    assert {k: after[k] for k in before} == before
    _cert(tmp_path / "west.crt").verify_directly_issued_by(_cert(tmp_path / "ca.crt"))


def test_certificate_contents(tmp_path: Path) -> None:
    tls.init_certs(tmp_path, ["east"], days=30, hosts=("10.1.2.3", "East.Example.org", "::1"))
    ca = _cert(tmp_path / "ca.crt")
    leaf = _cert(tmp_path / "east.crt")

    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    leaf.verify_directly_issued_by(ca)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {
        "east",
        "localhost",
        "east.example.org",
    }
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("::1"),
    }
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert 29 < lifetime.days <= 30
    assert leaf.not_valid_after_utc <= ca.not_valid_after_utc

    client_san = _cert(tmp_path / "client.crt").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "client" in client_san.value.get_values_for_type(x509.DNSName)


@pytest.mark.parametrize("names", [["East"], ["a_b"], [""], ["../x"], ["ok", "-bad"], "east"])
def test_invalid_names_refused_before_writing(tmp_path: Path, names: object) -> None:
    d = tmp_path / "tls"
    with pytest.raises(InvalidInput):
        tls.init_certs(d, names)  # type: ignore[arg-type]  # bad input on purpose (a str too)
    assert not d.exists()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"hosts": ("bad host",)}, "bad host"),
        ({"hosts": ("",)}, "host"),
        ({"hosts": ("under_score.example",)}, "under_score"),
        ({"days": 0}, "days"),
        ({"days": -5}, "days"),
    ],
)
def test_invalid_hosts_and_days_refused(tmp_path: Path, kwargs: dict[str, Any], needle: str) -> None:
    d = tmp_path / "tls"
    with pytest.raises(InvalidInput, match=needle):
        tls.init_certs(d, ["east"], **kwargs)
    assert not d.exists()


def test_interrupted_run_key_without_cert_is_completed(tmp_path: Path) -> None:
    tls.init_certs(tmp_path, ["east"])
    key = (tmp_path / "east.key").read_bytes()
    (tmp_path / "east.crt").unlink()
    assert tls.init_certs(tmp_path, ["east"]) == [tmp_path / "east.crt"]
    assert (tmp_path / "east.key").read_bytes() == key
    tls.check_tls_dir(tmp_path, "east")


def test_cert_without_key_is_refused(tmp_path: Path) -> None:
    tls.init_certs(tmp_path, ["east"])
    (tmp_path / "east.key").unlink()
    with pytest.raises(InvalidInput, match="east.key"):
        tls.init_certs(tmp_path, ["east"])
    assert not (tmp_path / "east.key").exists()


def test_identity_from_another_ca_is_refused(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    tls.init_certs(ours, ["west"])
    tls.init_certs(theirs, ["east"])
    for name in ("east.crt", "east.key"):
        shutil.copy(theirs / name, ours / name)
    before = _files(ours)
    with pytest.raises(InvalidInput, match="not issued by"):
        tls.init_certs(ours, ["east", "north"])
    assert _files(ours) == before  # refused before north was written
    with pytest.raises(InvalidInput, match="not issued by"):
        tls.check_tls_dir(ours, "east")


def test_leaf_without_ca_is_refused(tmp_path: Path) -> None:
    tls.init_certs(tmp_path, ["east"])
    (tmp_path / "ca.crt").unlink()
    (tmp_path / "ca.key").unlink()
    with pytest.raises(InvalidInput, match="ca.crt"):
        tls.init_certs(tmp_path, ["east"])
    assert not (tmp_path / "ca.crt").exists()


def test_missing_ca_key_only_matters_when_issuing(tmp_path: Path) -> None:
    tls.init_certs(tmp_path, ["east"])
    (tmp_path / "ca.key").unlink()  # an operator may keep the CA key offline
    assert tls.init_certs(tmp_path, ["east"]) == []
    with pytest.raises(InvalidInput, match="ca.key"):
        tls.init_certs(tmp_path, ["west"])
    assert not (tmp_path / "west.key").exists()


def test_init_logs_no_key_material(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        tls.init_certs(tmp_path, ["east"])
    assert caplog.records  # it does say what it did
    assert "PRIVATE KEY" not in caplog.text
    for key in ("ca.key", "east.key", "client.key"):
        body = (tmp_path / key).read_text().splitlines()[1]
        assert body not in caplog.text


# --------------------------------------------------------------------------- loading


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two federations' TLS dirs: ours, and a foreign one with the same names."""
    ours = tmp_path_factory.mktemp("ours")
    foreign = tmp_path_factory.mktemp("foreign")
    tls.init_certs(ours, ["east"])
    tls.init_certs(foreign, ["east"])
    return ours, foreign


@pytest.fixture
def copy_of_ours(pki: tuple[Path, Path], tmp_path: Path) -> Path:
    d = tmp_path / "copy"
    shutil.copytree(pki[0], d)
    return d


@pytest.mark.parametrize("missing", ["ca.crt", "east.crt", "east.key"])
def test_check_tls_dir_names_missing_file(copy_of_ours: Path, missing: str) -> None:
    (copy_of_ours / missing).unlink()
    with pytest.raises(InvalidInput, match="missing") as exc:
        tls.check_tls_dir(copy_of_ours, "east")
    assert str(copy_of_ours / missing) in str(exc.value)
    with pytest.raises(InvalidInput):
        tls.server_credentials(copy_of_ours, "east")
    with pytest.raises(InvalidInput):
        tls.channel_credentials(copy_of_ours, "east")


def test_check_tls_dir_needs_no_ca_key(copy_of_ours: Path) -> None:
    (copy_of_ours / "ca.key").unlink()
    tls.check_tls_dir(copy_of_ours, "east")


def test_check_tls_dir_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=str(tmp_path / "nope")):
        tls.check_tls_dir(tmp_path / "nope", "east")


def test_check_tls_dir_rejects_bad_name(copy_of_ours: Path) -> None:
    with pytest.raises(InvalidInput):
        tls.check_tls_dir(copy_of_ours, "../copy/east")


@pytest.mark.parametrize("name", ["ca.crt", "east.crt"])
def test_malformed_certificate(copy_of_ours: Path, name: str) -> None:
    (copy_of_ours / name).write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n")
    with pytest.raises(InvalidInput, match="not a PEM certificate") as exc:
        tls.check_tls_dir(copy_of_ours, "east")
    assert str(copy_of_ours / name) in str(exc.value)


def test_malformed_key_error_does_not_quote_it(copy_of_ours: Path) -> None:
    secret = "TOPSECRETKEYBYTES0123456789"
    (copy_of_ours / "east.key").write_text(
        f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(InvalidInput, match="not an unencrypted PEM private key") as exc:
        tls.server_credentials(copy_of_ours, "east")
    assert str(copy_of_ours / "east.key") in str(exc.value)
    assert secret not in str(exc.value)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_key_not_matching_certificate(copy_of_ours: Path) -> None:
    shutil.copy(copy_of_ours / "client.key", copy_of_ours / "east.key")
    with pytest.raises(InvalidInput, match="does not match"):
        tls.check_tls_dir(copy_of_ours, "east")


def test_directory_in_place_of_file(copy_of_ours: Path) -> None:
    (copy_of_ours / "east.crt").unlink()
    (copy_of_ours / "east.crt").mkdir()
    with pytest.raises(InvalidInput, match="directory"):
        tls.check_tls_dir(copy_of_ours, "east")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_key(copy_of_ours: Path) -> None:
    (copy_of_ours / "east.key").chmod(0)
    with pytest.raises(InvalidInput, match="unreadable"):
        tls.check_tls_dir(copy_of_ours, "east")


# --------------------------------------------------------------------------- small helpers


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.1", False),
        ("192.168.1.1", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("128.0.0.1", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert tls.is_loopback(host) is expected


def test_channel_options(tmp_path: Path) -> None:
    override = [("grpc.ssl_target_name_override", "localhost")]
    assert tls.channel_options(None) == []
    assert tls.channel_options(None, "127.0.0.1:1") == []
    assert tls.channel_options(tmp_path) == override
    assert tls.channel_options(tmp_path, "127.0.0.1:7000") == override
    assert tls.channel_options(tmp_path, "[::1]:7000") == override
    assert tls.channel_options(tmp_path, "ipv4:127.0.0.1:1,127.0.0.1:2") == override
    # A DNS name is checked as itself against the certificate's SAN.
    assert tls.channel_options(tmp_path, "east.example.org:7000") == []
    assert tls.channel_options(tmp_path, "dns:///east.example.org:7000") == []


# --------------------------------------------------------------------------- mutual TLS


@pytest.fixture(scope="module")
def tls_server(pki: tuple[Path, Path]) -> Iterator[str]:
    """A gRPC server on 127.0.0.1 speaking only mutual TLS as ``east``; yields its address."""
    handler = grpc.method_handlers_generic_handler(
        "gns.test.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                lambda request, context: request,
                request_deserializer=None,
                response_serializer=None,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = free_port()
    bound = server.add_secure_port(f"127.0.0.1:{port}", tls.server_credentials(pki[0], "east"))
    assert bound == port
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait()


def _echo(channel: grpc.Channel, payload: bytes = b"ping") -> bytes:
    try:
        call = channel.unary_unary(ECHO)
        result: bytes = call(payload, timeout=10)
        return result
    finally:
        channel.close()


def _secure(address: str, creds: grpc.ChannelCredentials, options: list[tuple[str, str]]) -> grpc.Channel:
    return grpc.secure_channel(address, creds, options=options)


@pytest.mark.parametrize("name", ["client", "east"])
def test_good_certificate_works(pki: tuple[Path, Path], tls_server: str, name: str) -> None:
    ours = pki[0]
    creds = tls.channel_credentials(ours, name)
    channel = _secure(tls_server, creds, tls.channel_options(ours, tls_server))
    assert _echo(channel, b"\x00hello\xff") == b"\x00hello\xff"


def test_good_certificate_works_without_name_override(
    pki: tuple[Path, Path], tls_server: str
) -> None:
    # The IP SAN 127.0.0.1 alone satisfies gRPC's host check.
    channel = _secure(tls_server, tls.channel_credentials(pki[0]), [])
    assert _echo(channel) == b"ping"


def _assert_refused(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        _echo(channel)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE


def test_foreign_ca_is_refused(pki: tuple[Path, Path], tls_server: str) -> None:
    foreign = pki[1]
    channel = _secure(tls_server, tls.channel_credentials(foreign), tls.channel_options(foreign))
    _assert_refused(channel)


def test_foreign_client_certificate_is_refused(pki: tuple[Path, Path], tls_server: str) -> None:
    # The client trusts our CA (so it accepts the server) but presents a foreign certificate.
    ours, foreign = pki
    creds = grpc.ssl_channel_credentials(
        root_certificates=(ours / "ca.crt").read_bytes(),
        private_key=(foreign / "client.key").read_bytes(),
        certificate_chain=(foreign / "client.crt").read_bytes(),
    )
    _assert_refused(_secure(tls_server, creds, tls.channel_options(ours)))


def test_client_without_certificate_is_refused(pki: tuple[Path, Path], tls_server: str) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=(pki[0] / "ca.crt").read_bytes())
    _assert_refused(_secure(tls_server, creds, tls.channel_options(pki[0])))


def test_plaintext_is_refused(tls_server: str) -> None:
    _assert_refused(grpc.insecure_channel(tls_server))


def test_server_name_is_checked(pki: tuple[Path, Path], tls_server: str) -> None:
    # A name the server's certificate does not carry fails the host check.
    options = [("grpc.ssl_target_name_override", "west.example.org")]
    _assert_refused(_secure(tls_server, tls.channel_credentials(pki[0]), options))
