"""Issuing the federation's certificates (SPEC §10): the CA, clusters, users, rotation.

``gns certs init`` (:func:`init_certs`) makes a private CA, one certificate per cluster
(identity ``cluster:ID``) and the ``client`` identity, the federation's administrator.
``gns certs issue`` (:func:`issue_user`) adds a user certificate (identity ``user:NAME``,
groups in the subject) and ``gns certs rotate`` (:func:`rotate_cluster`) replaces a
cluster's key and certificate in place; controllers notice the new files and serve them
without a restart (:func:`federation.tls.reloading_server_credentials`). Loading at run time
lives in :mod:`federation.tls`; this module is only needed where the CA key is.

Never log, print or put in an error message any private key material; never write a private
key with a mode wider than 0600; only :func:`rotate_cluster` replaces existing files, and it
does so atomically (a reader sees the old pair or the new one).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation.tls import (
    CA_CERT,
    CA_KEY,
    CLIENT_NAME,
    EDGE_SITE_ROLE,
    GROUP_PREFIX,
    KIND_PREFIX,
    TARGET_NAME_OVERRIDE,
    _check_issued,
    _check_pair,
    _load_cert,
    _load_key,
    identity_of,
)
from federation.tls_files import HOSTNAME
from namespace.errors import Conflict, InvalidInput, NotFound
from namespace.paths import check_name

log = logging.getLogger(__name__)

_CA_DAYS_MIN = 3650
_BACKDATE = _dt.timedelta(minutes=5)  # tolerate small clock skew between machines



def init_certs(
    tls_dir: Path,
    names: Iterable[str],
    *,
    days: int = 365,
    hosts: Iterable[str] = ("127.0.0.1", "localhost"),
) -> list[Path]:
    """Make (where missing) the CA and one identity per name plus ``client``; return new files.

    Existing identities are kept as they are, never rotated. A name whose key exists without
    its certificate (an interrupted run) gets a certificate for that key. Refuses, before
    writing anything, invalid names or hosts, a certificate without its key, and kept
    certificates that the CA in ``tls_dir`` did not issue.
    """
    tls_dir = Path(tls_dir)
    if isinstance(names, str):
        raise InvalidInput("names must be a list of cluster names, not one string")
    wanted = [check_name("cluster", n) for n in names]
    if CLIENT_NAME not in wanted:
        wanted.append(CLIENT_NAME)
    wanted = list(dict.fromkeys(wanted))
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InvalidInput(f"days must be a positive integer, not {days!r}")
    sans = _san_entries(hosts)
    if tls_dir.exists() and not tls_dir.is_dir():
        raise InvalidInput(f"TLS directory {tls_dir} is not a directory")

    ca_crt, ca_key = tls_dir / CA_CERT, tls_dir / CA_KEY
    ca_cert = _load_cert(ca_crt) if ca_crt.exists() else None
    if ca_cert is not None and ca_key.exists():
        _check_pair(ca_cert, _load_key(ca_key), ca_crt, ca_key)

    to_issue: list[str] = []
    for name in wanted:
        crt, key = tls_dir / f"{name}.crt", tls_dir / f"{name}.key"
        if crt.exists() and not key.exists():
            raise InvalidInput(f"{crt} exists but {key} is missing: remove {crt} to reissue it")
        if crt.exists():
            cert = _load_cert(crt)
            if ca_cert is None:
                raise InvalidInput(
                    f"{crt} exists but {ca_crt} does not: remove {crt} and {key} to reissue"
                )
            _check_issued(cert, ca_cert, crt, ca_crt)
        else:
            to_issue.append(name)
    if to_issue and ca_cert is not None and not ca_key.exists():
        raise InvalidInput(f"{ca_key} is missing: cannot issue certificates for {to_issue}")
    if to_issue:
        for name in to_issue:  # validate interrupted-run keys before writing anything
            key_path = tls_dir / f"{name}.key"
            if key_path.exists():
                _load_key(key_path)

    written: list[Path] = []
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if ca_cert is None:
        if ca_key.exists():
            signer = _load_key(ca_key)
        else:
            signer = ec.generate_private_key(ec.SECP256R1())
            _write_atomic(ca_key, _key_pem(signer), 0o600)
            written.append(ca_key)
        ca_cert = _make_ca_cert(signer, days=max(days, _CA_DAYS_MIN))
        _write_atomic(ca_crt, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        written.append(ca_crt)
        log.info("tls: created CA %s", ca_crt)
    elif to_issue:
        signer = _load_key(ca_key)
    for name in to_issue:
        crt, key_path = tls_dir / f"{name}.crt", tls_dir / f"{name}.key"
        if key_path.exists():
            leaf_key = _load_key(key_path)
        else:
            leaf_key = ec.generate_private_key(ec.SECP256R1())
            _write_atomic(key_path, _key_pem(leaf_key), 0o600)
            written.append(key_path)
        kind = "user" if name == CLIENT_NAME else "cluster"
        cert = _make_leaf_cert(name, leaf_key.public_key(), ca_cert, signer, sans=sans, days=days, kind=kind)
        _write_atomic(crt, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        written.append(crt)
        log.info("tls: issued certificate %s for %s", crt, name)
    return written


def _san_entries(hosts: Iterable[str]) -> list[x509.GeneralName]:
    if isinstance(hosts, str):
        hosts = [hosts]
    entries: list[x509.GeneralName] = []
    for host in ("127.0.0.1", *hosts):
        if not isinstance(host, str) or not host:
            raise InvalidInput(f"invalid host {host!r} for a certificate")
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            dns = host.lower().rstrip(".")
            if not HOSTNAME.fullmatch(dns):
                raise InvalidInput(
                    f"invalid host {host!r}: not an IP address or DNS name"
                ) from None
            entry: x509.GeneralName = x509.DNSName(dns)
        else:
            entry = x509.IPAddress(ip)
        if entry not in entries:
            entries.append(entry)
    return entries


def _make_ca_cert(key: CertificateIssuerPrivateKeyTypes, *, days: int) -> x509.Certificate:
    now = _dt.datetime.now(_dt.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gns"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"gns federation CA {secrets.token_hex(4)}"),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _make_leaf_cert(
    name: str,
    public: CertificatePublicKeyTypes,
    ca_cert: x509.Certificate,
    ca_key: CertificateIssuerPrivateKeyTypes,
    *,
    sans: list[x509.GeneralName],
    days: float,
    kind: str = "cluster",
    groups: Iterable[str] = (),
    edge_site: bool = False,
) -> x509.Certificate:
    now = _dt.datetime.now(_dt.UTC)
    # A leaf never outlives its CA: peers would refuse it from that day on anyway.
    not_after = min(now + _dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    # The identity's kind and groups live in the subject (OU entries), where every TLS
    # stack shows them and the CA's signature covers them (see federation.tls.identity_of).
    units = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{KIND_PREFIX}{kind}")]
    units += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{GROUP_PREFIX}{g}") for g in groups]
    if edge_site:
        units.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, EDGE_SITE_ROLE))
    alt_names: list[x509.GeneralName] = [x509.DNSName(name), x509.DNSName(TARGET_NAME_OVERRIDE)]
    alt_names += [s for s in sans if s not in alt_names]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gns"),
                    *units,
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            # A user's certificate is a client's only: a server presenting one (a rogue
            # listening where a controller should be) fails every client's handshake.
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH] if kind == "user"
                else [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (which must not exist) whole or not at all, with ``mode`` from birth."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask must not widen or narrow it
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        # link() fails if path appeared meanwhile: never overwrite an identity.
        os.link(tmp, path)
    except FileExistsError:
        # Someone else made it meanwhile: the identity exists, which is a conflict (exit 4).
        raise Conflict(f"{path} appeared while it was being created; not overwritten") from None
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _signer(tls_dir: Path) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    # A missing directory or CA file is something absent, not malformed input: NotFound (exit 3).
    if tls_dir.exists() and not tls_dir.is_dir():
        raise InvalidInput(f"TLS directory {tls_dir} is not a directory")
    if not tls_dir.is_dir():
        raise NotFound(f"TLS directory {tls_dir} does not exist: run `gns certs init --dir {tls_dir}` first")
    ca_crt, ca_key = tls_dir / CA_CERT, tls_dir / CA_KEY
    if not ca_crt.exists():
        raise NotFound(f"{ca_crt} does not exist: run `gns certs init --dir {tls_dir}` first")
    if not ca_key.exists():
        raise NotFound(f"{ca_key} is missing: only the CA's holder can issue certificates")
    ca = _load_cert(ca_crt)
    key = _load_key(ca_key)
    _check_pair(ca, key, ca_crt, ca_key)
    return ca, key


def issue_user(
    tls_dir: Path,
    name: str,
    *,
    groups: Iterable[str] = (),
    ttl_seconds: float = 365 * 86400.0,
    hosts: Iterable[str] = ("127.0.0.1", "localhost"),
) -> list[Path]:
    """Write ``NAME.crt``/``NAME.key``: identity ``user:NAME``, member of ``group:G``...

    Refuses (before writing anything) a bad name or group, a name already in the
    directory (a cluster's or another user's), and a directory without the CA key."""
    from namespace.acl import check_principal

    tls_dir = Path(tls_dir)
    check_principal("user", name)
    if name == CLIENT_NAME:
        raise InvalidInput(f"{name!r} is the administrator `gns certs init` makes; pick another name")
    group_list = list(dict.fromkeys(check_principal("group", g) for g in groups))
    if isinstance(ttl_seconds, bool) or not ttl_seconds > 0:
        raise InvalidInput(f"invalid --ttl {ttl_seconds:g}s: must be more than 0")
    crt, key_path = tls_dir / f"{name}.crt", tls_dir / f"{name}.key"
    if crt.exists():
        # The name is taken (by a user or a cluster): a conflict with what exists (exit 4).
        raise Conflict(f"{crt} already exists: identities are never overwritten")
    # A key without its certificate is what an interrupted issue leaves (the key is written
    # first): it is finished, as `certs init` finishes an interrupted run, not refused for
    # good. A key that does not load is refused before anything is written.
    resumed = _load_key(key_path) if key_path.exists() else None
    sans = _san_entries(hosts)
    ca, signer = _signer(tls_dir)
    leaf_key = resumed or ec.generate_private_key(ec.SECP256R1())
    cert = _make_leaf_cert(name, leaf_key.public_key(), ca, signer, sans=sans, days=ttl_seconds / 86400.0,
                           kind="user", groups=group_list)
    if resumed is None:
        _write_atomic(key_path, _key_pem(leaf_key), 0o600)
    _write_atomic(crt, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("tls: issued user certificate %s", crt)
    return [key_path, crt]


def rotate_cluster(
    tls_dir: Path,
    cluster: str,
    *,
    days: float = 365,
    hosts: Iterable[str] = ("127.0.0.1", "localhost"),
) -> list[Path]:
    """Replace cluster ``cluster``'s key and certificate (a new key pair, same identity).

    The key is replaced first and the certificate second, each by one rename; a controller
    that reads in between sees a mismatched pair, which the reloader ignores until the
    certificate follows (see :func:`federation.tls.reloading_server_credentials`)."""
    tls_dir = Path(tls_dir)
    check_name("cluster", cluster)
    crt, key_path = tls_dir / f"{cluster}.crt", tls_dir / f"{cluster}.key"
    if not crt.exists():
        # Naming a cluster the directory has no certificate for is "not found" (exit 3).
        raise NotFound(f"{crt} does not exist: no cluster {cluster!r} to rotate in {tls_dir}")
    old = _load_cert(crt)
    if identity_of(old).kind != "cluster":
        # A user's certificate (or the administrator's) must not come back as cluster:NAME.
        raise NotFound(f"{crt} is not a cluster's certificate: no cluster {cluster!r} to rotate in {tls_dir}")
    sans = _san_entries(hosts)
    try:
        kept = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans += [s for s in kept if isinstance(s, (x509.IPAddress, x509.DNSName)) and s not in sans]
    except x509.ExtensionNotFound:
        pass
    ca, signer = _signer(tls_dir)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    cert = _make_leaf_cert(cluster, leaf_key.public_key(), ca, signer, sans=sans, days=days, kind="cluster")
    replace_atomic(key_path, _key_pem(leaf_key), 0o600)
    replace_atomic(crt, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("tls: rotated certificate %s", crt)
    return [key_path, crt]


def replace_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` whole or not at all, with ``mode`` from birth (never wider, even
    briefly), and make the rename durable: a reloading reader sees the old file or the new."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def can_issue(tls_dir: Path | None) -> bool:
    """True when ``tls_dir`` holds the CA's certificate and key (a hub that can sign CSRs)."""
    return tls_dir is not None and (Path(tls_dir) / CA_CERT).is_file() and (Path(tls_dir) / CA_KEY).is_file()


def check_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """Parse a CSR and check its self-signature (the requester holds the key); EC or RSA only."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise InvalidInput("certificate request is not a PEM CSR") from None
    if not csr.is_signature_valid:
        raise InvalidInput("certificate request signature is invalid")
    from cryptography.hazmat.primitives.asymmetric import rsa

    if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise InvalidInput("certificate request key must be EC or RSA")
    return csr


def sign_cluster_csr(
    tls_dir: Path,
    cluster: str,
    csr_pem: bytes,
    *,
    ttl_seconds: float,
    hosts: Iterable[str] = ("127.0.0.1", "localhost"),
) -> tuple[bytes, bytes, float]:
    """Sign a site's CSR as identity ``cluster:<cluster>``; return (cert PEM, CA PEM, not-after).

    Only the CSR's public key is used: the subject, SANs and extensions are this CA's choice
    (what :func:`init_certs` gives a cluster, plus the edge-site role, so that every
    controller tells the site from a controller by its certificate alone), never the
    requester's."""
    check_name("cluster", cluster)
    if isinstance(ttl_seconds, bool) or not ttl_seconds > 0:
        raise InvalidInput(f"invalid certificate ttl {ttl_seconds:g}s: must be more than 0")
    csr = check_csr(csr_pem)
    ca, signer = _signer(Path(tls_dir))
    cert = _make_leaf_cert(cluster, csr.public_key(), ca, signer,
                           sans=_san_entries(hosts), days=ttl_seconds / 86400.0, kind="cluster",
                           edge_site=True)
    log.info("tls: signed a certificate for cluster %s (edge site)", cluster)
    return (cert.public_bytes(serialization.Encoding.PEM), (Path(tls_dir) / CA_CERT).read_bytes(),
            cert.not_valid_after_utc.timestamp())
