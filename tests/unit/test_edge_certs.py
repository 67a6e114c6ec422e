"""A site's certificate (SPEC §8): the hub signs only the CSR's key as cluster:<site>, and the
site keeps nothing the token's pinned CA did not issue for its own key and name."""
from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge.sitecert import Request, has_certificate
from federation.certs import can_issue, init_certs, sign_cluster_csr
from federation.tls import check_tls_dir, identity_of
from namespace.errors import InvalidInput, NotFound, PermissionDenied


def test_csr_signed_as_the_site_and_kept_checked(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    init_certs(hub, ["onprem-a"])
    assert can_issue(hub) and not can_issue(None)
    ca_pem = (hub / "ca.crt").read_bytes()
    pin = hashlib.sha256(ca_pem).hexdigest()
    req = Request("edge-1")
    cert_pem, got_ca, expires = sign_cluster_csr(hub, "edge-1", req.csr_pem, ttl_seconds=3600)
    assert got_ca == ca_pem
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert identity_of(cert).subject == "cluster:edge-1" and expires == cert.not_valid_after_utc.timestamp()
    # Marked as a site's, so no controller takes it for one of theirs (authz.Authorizer.trusted);
    # a cluster certificate `gns certs init` makes is not.
    assert identity_of(cert).edge_site
    assert not identity_of(x509.load_pem_x509_certificate((hub / "onprem-a.crt").read_bytes())).edge_site

    site = tmp_path / "site"
    with pytest.raises(PermissionDenied, match="pins"):
        req.accept(site, cert_pem, ca_pem, "0" * 64)
    with pytest.raises(PermissionDenied, match="another key"):
        Request("edge-1").accept(site, cert_pem, ca_pem, pin)
    other = Request("edge-2")
    wrong_name, _, _ = sign_cluster_csr(hub, "edge-2", other.csr_pem, ttl_seconds=3600)
    with pytest.raises(PermissionDenied, match="cluster:edge-2"):
        _retarget(other, "edge-1").accept(site, wrong_name, ca_pem, pin)  # its key, another name
    foreign = tmp_path / "foreign"
    init_certs(foreign, [])
    with pytest.raises(PermissionDenied, match="did not issue"):
        req.accept(site, cert_pem, (foreign / "ca.crt").read_bytes(),
                   hashlib.sha256((foreign / "ca.crt").read_bytes()).hexdigest())
    assert not has_certificate(site, "edge-1")

    req.accept(site, cert_pem, ca_pem, pin)
    assert has_certificate(site, "edge-1")
    check_tls_dir(site / "tls", "edge-1")
    assert os.stat(site / "tls" / "edge-1.key").st_mode & 0o777 == 0o600


def test_hub_ignores_the_requested_subject_and_refuses_bad_csrs(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    init_certs(hub, ["onprem-a"])
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")]))
           .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives import serialization

    pem = csr.public_bytes(serialization.Encoding.PEM)
    cert_pem, _, _ = sign_cluster_csr(hub, "edge-1", pem, ttl_seconds=60)
    assert identity_of(x509.load_pem_x509_certificate(cert_pem)).subject == "cluster:edge-1"
    der = csr.public_bytes(serialization.Encoding.DER)
    tampered = der[:-1] + bytes([der[-1] ^ 1])  # the signature no longer matches
    tampered_pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(tampered) + \
        b"-----END CERTIFICATE REQUEST-----\n"
    for bad in (b"", b"not a csr", tampered_pem):
        with pytest.raises(InvalidInput):
            sign_cluster_csr(hub, "edge-1", bad, ttl_seconds=60)
    with pytest.raises(InvalidInput):
        sign_cluster_csr(hub, "edge-1", pem, ttl_seconds=0)
    (hub / "ca.key").unlink()
    assert not can_issue(hub)
    with pytest.raises(NotFound, match="ca.key"):  # the hub's CA key is missing, not the CSR bad
        sign_cluster_csr(hub, "edge-1", pem, ttl_seconds=60)


def _retarget(req: Request, site: str) -> Request:
    req.site = site
    return req


def test_token_names_the_token_only_join_port() -> None:
    from namespace.edge import parse_token

    assert parse_token("K10ab::00ff.s3cr-t_").join == ""
    parsed = parse_token("K10ab::00ff.s3cr-t_@127.0.0.1:7000")  # a token made before hubs were listed
    assert (parsed.secret, parsed.join, parsed.join_ports) == ("s3cr-t_", "127.0.0.1:7000", ())
    parsed = parse_token("K10ab::00ff.s3~10.0.0.1:7000=10.0.0.1:7100,10.0.0.2:7000=10.0.0.2:7200@10.0.0.1:7100")
    assert (parsed.secret, parsed.join) == ("s3", "10.0.0.1:7100")  # the issuing hub's
    assert parsed.join_ports == (("10.0.0.1:7000", "10.0.0.1:7100"), ("10.0.0.2:7000", "10.0.0.2:7200"))
    for bad in ("K10ab::00ff.s@", "K10ab::00ff.s@host", "K10ab::00ff.s@host:0", "K10ab::00ff.s@:80",
                "K10ab::00ff.@127.0.0.1:1", "K10ab::00ff.s~h:1=h:2", "K10ab::00ff.s~h:1@h:2",
                "K10ab::00ff.s~h:1=h:2,@h:2", "K10ab::00ff.s~h=h:2@h:2", "K10ab::00ff.s~=h:3@h:3",
                "K10ab::00ff.~h:1=h:2@h:2"):
        with pytest.raises(InvalidInput, match="malformed"):
            parse_token(bad)


def test_older_sites_read_the_issuing_hubs_join_port_from_a_new_token() -> None:
    """A token as hubs make it now, read back, and read by a site of the previous release
    (its parser, inlined): that site gets the issuing hub's join port, so a site that lags
    the hub still joins with a new token."""
    from namespace.edge import parse_token, token_text

    ports = [("10.0.0.1:7000", "10.0.0.1:7100"), ("10.0.0.2:7000", "10.0.0.2:7200")]
    token = token_text("ab", "00ff", "s3cr-t_", ports)
    parsed = parse_token(token)
    assert (parsed.secret, parsed.join, list(parsed.join_ports)) == ("s3cr-t_", "10.0.0.1:7100", ports)
    assert parse_token(token_text("ab", "00ff", "s3cr-t_", [])).join == ""
    head, _, rest = token.partition("::")
    tid, _, tail = rest.partition(".")
    secret, at, join = tail.partition("@")
    assert (head, tid, at, join) == ("K10ab", "00ff", "@", "10.0.0.1:7100") and secret


def test_join_goes_to_the_join_port_of_each_hub_the_site_is_told() -> None:
    """The site redeems its token at its own --hub addresses, in their order: each one's
    token-only join port as the token pairs them; the token's own list only if it knows none."""
    from edge.bootstrap import join_addresses

    ports = (("10.0.0.1:7000", "10.0.0.1:7100"), ("10.0.0.2:7000", "10.0.0.2:7200"),
             ("127.0.0.1:7000", "127.0.0.1:7300"))
    issuer = "10.0.0.1:7100"
    assert join_addresses("e", ["10.0.0.2:7000"], issuer, ports) == ["10.0.0.2:7200"]
    assert join_addresses("e", ["10.0.0.2:7000", "10.0.0.1:7000"], issuer, ports) == ["10.0.0.2:7200", "10.0.0.1:7100"]
    assert join_addresses("e", ["10.0.0.9:7000", "10.0.0.1:7000"], issuer, ports) == ["10.0.0.1:7100"]  # unknown: skipped
    assert join_addresses("e", ["localhost:7000"], issuer, ports) == ["127.0.0.1:7300"]  # the same server, by name
    assert join_addresses("e", ["10.0.0.9:7000"], issuer, ports) == ["10.0.0.1:7100", "10.0.0.2:7200", "127.0.0.1:7300"]
    assert join_addresses("e", ["10.0.0.9:7000"], issuer, ()) == [issuer]  # an older token
