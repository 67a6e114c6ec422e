"""Mutual TLS for gRPC between controllers, clients and forwarders (SPEC §10).

``gns certs init`` calls :func:`init_certs` to make a private CA for one federation and, per
cluster, a certificate that serves as both server and client identity (plus a ``client``
identity for the CLI and apps). A controller started with ``--tls-dir`` listens with
:func:`server_credentials`, which requires every peer to present a certificate issued by
that CA; clients and forwarders dial with :func:`channel_credentials` and
:func:`channel_options`. :func:`is_loopback` lets the controller refuse a non-loopback
``--listen`` without TLS.

Layout of a TLS directory::

    ca.crt  ca.key             the federation's CA (ca.key is only needed to issue)
    <name>.crt  <name>.key     one identity per cluster, and ``client`` for the CLI/apps

Everything here is synchronous, small and file-based; it works for ``grpc`` and
``grpc.aio`` alike. Missing, unreadable or malformed files raise
:class:`~namespace.errors.InvalidInput` naming the path.

This module must never log, print or put in an error message any private key material (key
bytes, PEM text, or the text of a parser error about a key file); it must never overwrite
or rotate an existing key or certificate, and never write a private key with a mode wider
than 0600.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import logging
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from namespace.errors import InvalidInput
from namespace.paths import check_name

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CLIENT_NAME",
    "TARGET_NAME_OVERRIDE",
    "channel_credentials",
    "channel_options",
    "check_tls_dir",
    "init_certs",
    "is_loopback",
    "server_credentials",
]

log = logging.getLogger(__name__)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CLIENT_NAME = "client"
#: Every certificate carries this DNS SAN, so dialing by IP can check it (see channel_options).
TARGET_NAME_OVERRIDE = "localhost"

_CA_DAYS_MIN = 3650
_BACKDATE = _dt.timedelta(minutes=5)  # tolerate small clock skew between machines
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)


# --------------------------------------------------------------------------- issuing


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
        cert = _make_leaf_cert(name, leaf_key, ca_cert, signer, sans=sans, days=days)
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
            if not _HOSTNAME.fullmatch(dns):
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
    key: CertificateIssuerPrivateKeyTypes,
    ca_cert: x509.Certificate,
    ca_key: CertificateIssuerPrivateKeyTypes,
    *,
    sans: list[x509.GeneralName],
    days: int,
) -> x509.Certificate:
    now = _dt.datetime.now(_dt.UTC)
    # A leaf never outlives its CA: peers would refuse it from that day on anyway.
    not_after = min(now + _dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    alt_names: list[x509.GeneralName] = [x509.DNSName(name), x509.DNSName(TARGET_NAME_OVERRIDE)]
    alt_names += [s for s in sans if s not in alt_names]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gns"),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
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
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
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
        raise InvalidInput(f"{path} appeared while it was being created; not overwritten") from None
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Identity:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:  # never show key bytes, even in a traceback or debugger
        return "_Identity(<redacted>)"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"TLS file {path} is missing (run `gns certs init`)") from None
    except IsADirectoryError:
        raise InvalidInput(f"TLS file {path} is a directory") from None
    except OSError as exc:
        raise InvalidInput(f"TLS file {path} is unreadable: {exc.strerror}") from None


def _parse_cert(data: bytes, path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise InvalidInput(f"TLS file {path} is not a PEM certificate") from None


def _parse_key(data: bytes, path: Path) -> CertificateIssuerPrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # The parser's own message is deliberately dropped: it may quote the key's content.
        raise InvalidInput(f"TLS file {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidInput(f"TLS file {path} holds a {type(key).__name__}; use an EC or RSA key")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    return _parse_cert(_read(path), path)


def _load_key(path: Path) -> CertificateIssuerPrivateKeyTypes:
    return _parse_key(_read(path), path)


def _check_pair(
    cert: x509.Certificate, key: CertificateIssuerPrivateKeyTypes, crt_path: Path, key_path: Path
) -> None:
    if cert.public_key() != key.public_key():
        raise InvalidInput(f"TLS key {key_path} does not match certificate {crt_path}")


def _check_issued(
    cert: x509.Certificate, ca: x509.Certificate, crt_path: Path, ca_path: Path
) -> None:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise InvalidInput(f"TLS certificate {crt_path} was not issued by {ca_path}") from None


def _load_identity(tls_dir: Path, name: str) -> _Identity:
    check_name("cluster", name)
    tls_dir = Path(tls_dir)
    if not tls_dir.is_dir():
        raise InvalidInput(f"TLS directory {tls_dir} does not exist or is not a directory")
    ca_path, crt_path, key_path = (
        tls_dir / CA_CERT,
        tls_dir / f"{name}.crt",
        tls_dir / f"{name}.key",
    )
    ca_pem, cert_pem, key_pem = _read(ca_path), _read(crt_path), _read(key_path)
    ca = _parse_cert(ca_pem, ca_path)
    cert = _parse_cert(cert_pem, crt_path)
    key = _parse_key(key_pem, key_path)
    _check_pair(cert, key, crt_path, key_path)
    _check_issued(cert, ca, crt_path, ca_path)
    return _Identity(ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem)


def check_tls_dir(tls_dir: Path, name: str) -> None:
    """Raise :class:`InvalidInput` naming the file unless ``name``'s identity is usable.

    Checks that ``ca.crt``, ``<name>.crt`` and ``<name>.key`` exist, are readable PEM, that
    the key matches the certificate and that the CA issued it.
    """
    _load_identity(tls_dir, name)


def server_credentials(tls_dir: Path, name: str) -> grpc.ServerCredentials:
    """Credentials for a server that accepts only peers with a certificate from our CA."""
    ident = _load_identity(tls_dir, name)
    return grpc.ssl_server_credentials(
        [(ident.key_pem, ident.cert_pem)],
        root_certificates=ident.ca_pem,
        require_client_auth=True,
    )


def channel_credentials(tls_dir: Path, name: str = CLIENT_NAME) -> grpc.ChannelCredentials:
    """Credentials for dialing a controller as identity ``name`` (``client`` by default)."""
    ident = _load_identity(tls_dir, name)
    return grpc.ssl_channel_credentials(
        root_certificates=ident.ca_pem,
        private_key=ident.key_pem,
        certificate_chain=ident.cert_pem,
    )


def channel_options(tls_dir: Path | None, target: str | None = None) -> list[tuple[str, str]]:
    """gRPC channel options to go with :func:`channel_credentials`; ``[]`` without TLS.

    Controllers are usually dialed by IP (``127.0.0.1:PORT``), so the server's certificate
    is checked against the name ``localhost``, which every certificate from
    :func:`init_certs` carries. Given a ``target`` (``host:port``) that names a DNS host,
    no override is set and gRPC checks the certificate against that host name instead.
    """
    if tls_dir is None:
        return []
    if target is not None and _is_dns_name(_target_host(target)):
        return []
    return [("grpc.ssl_target_name_override", TARGET_NAME_OVERRIDE)]


def _target_host(target: str) -> str:
    """The host part of a gRPC target (``host:port``, ``[v6]:port``, ``dns:///host:port``)."""
    if target.startswith(("ipv4:", "ipv6:", "unix:")):
        return ""  # addresses, not names: nothing a certificate's DNS name could match
    if target.startswith("dns:"):
        target = target[4:].lstrip("/")
        target = target.split("/", 1)[-1] if "/" in target else target
    if target.startswith("["):
        return target[1 : target.find("]")] if "]" in target else target[1:]
    if target.count(":") == 1:
        return target.rsplit(":", 1)[0]
    return target


def _is_dns_name(host: str) -> bool:
    return not _is_ip(host) and _HOSTNAME.fullmatch(host.lower().rstrip(".")) is not None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ``::1``, ``localhost``.

    The wildcard ``0.0.0.0``/``::`` and the empty host listen on every interface: False.
    """
    if not isinstance(host, str):
        return False
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h.lower().rstrip(".") == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
