"""Mutual TLS at run time for gRPC between controllers, clients and forwarders (SPEC §10).

Issuing (the CA, cluster and user certificates, rotation) lives in :mod:`federation.certs`;
this module loads what it wrote. A controller started with ``--tls-dir`` listens with
:func:`reloading_server_credentials`, which requires every peer to present a certificate
issued by that CA and picks up a rotated certificate without a restart; clients and
forwarders dial with :func:`channel_credentials` and :func:`channel_options`, which live in
:mod:`federation.tls_files` (a client that dials with files already checked needs no
``cryptography``).
:func:`identity_of_pem` turns the certificate a peer proved into its gns identity
(``cluster:ID`` or ``user:NAME`` with groups). :func:`is_loopback` lets the controller
refuse a non-loopback ``--listen`` without TLS.

Layout of a TLS directory::

    ca.crt  ca.key             the federation's CA (ca.key is only needed to issue)
    <name>.crt  <name>.key     one identity per cluster, and ``client`` for the CLI/apps

Everything here is synchronous, small and file-based; it works for ``grpc`` and
``grpc.aio`` alike. Missing, unreadable, malformed or expired files raise
:class:`~namespace.errors.InvalidInput` naming the path.

This module must never log, print or put in an error message any private key material (key
bytes, PEM text, or the text of a parser error about a key file); it never writes files
(``tls_files`` writes the record of a passed check, which holds no key material).
"""

from __future__ import annotations

import datetime as _dt
import functools
import ipaddress
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from federation.tls_files import CA_CERT as CA_CERT
from federation.tls_files import CLIENT_NAME as CLIENT_NAME
from federation.tls_files import TARGET_NAME_OVERRIDE as TARGET_NAME_OVERRIDE
from federation.tls_files import channel_credentials as channel_credentials
from federation.tls_files import channel_options as channel_options
from federation.tls_files import check_identity_name as _check_identity_name
from federation.tls_files import identity_paths
from federation.tls_files import identity_stamp as identity_stamp
from federation.tls_files import stamp as _stamp
from namespace.errors import InvalidInput

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CLIENT_NAME",
    "TARGET_NAME_OVERRIDE",
    "channel_credentials",
    "channel_options",
    "check_tls_dir",
    "Identity",
    "identity_of_pem",
    "is_loopback",
    "reloading_server_credentials",
    "server_credentials",
]

log = logging.getLogger(__name__)

CA_KEY = "ca.key"
#: Subject OU entries: the identity's kind (``cluster``/``user``) and each group.
KIND_PREFIX = "gns-kind:"
GROUP_PREFIX = "gns-group:"
#: Subject OU entry of a certificate a hub signs for an edge site at join or renewal: the
#: site is a cluster (it owns volumes, grants may name ``cluster:<site>``) but never a
#: controller, whatever the registry holds or no longer holds about it.
EDGE_SITE_ROLE = "gns-role:edge-site"


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Identity:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    not_before: float  # the certificate's validity window, seconds since the epoch
    not_after: float

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


def _check_current(cert: x509.Certificate, path: Path) -> None:
    """Refuse an expired (or not yet valid) certificate with one clear line."""
    now = _dt.datetime.now(_dt.UTC)
    if cert.not_valid_after_utc <= now:
        raise InvalidInput(
            f"TLS certificate {path} expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC "
            "(issue a new one: `gns certs issue` / `gns certs rotate`)"
        )
    if cert.not_valid_before_utc > now:
        raise InvalidInput(
            f"TLS certificate {path} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC (clock skew?)"
        )


def load_identity(tls_dir: Path, name: str) -> _Identity:
    """``name``'s files, checked (see :func:`check_tls_dir`)."""
    _check_identity_name(name)
    tls_dir = Path(tls_dir)
    if not tls_dir.is_dir():
        raise InvalidInput(f"TLS directory {tls_dir} does not exist or is not a directory")
    ca_path, crt_path, key_path = identity_paths(tls_dir, name)
    ca_pem, cert_pem, key_pem = _read(ca_path), _read(crt_path), _read(key_path)
    ca = _parse_cert(ca_pem, ca_path)
    cert = _parse_cert(cert_pem, crt_path)
    key = _parse_key(key_pem, key_path)
    _check_pair(cert, key, crt_path, key_path)
    _check_issued(cert, ca, crt_path, ca_path)
    _check_current(cert, crt_path)
    return _Identity(ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem,
                     not_before=cert.not_valid_before_utc.timestamp(),
                     not_after=cert.not_valid_after_utc.timestamp())


def check_tls_dir(tls_dir: Path, name: str) -> None:
    """Raise :class:`InvalidInput` naming the file unless ``name``'s identity is usable.

    Checks that ``ca.crt``, ``<name>.crt`` and ``<name>.key`` exist, are readable PEM, that
    the key matches the certificate and that the CA issued it.
    """
    load_identity(tls_dir, name)


def server_credentials(tls_dir: Path, name: str) -> grpc.ServerCredentials:
    """Credentials for a server that accepts only peers with a certificate from our CA."""
    ident = load_identity(tls_dir, name)
    return grpc.ssl_server_credentials(
        [(ident.key_pem, ident.cert_pem)],
        root_certificates=ident.ca_pem,
        require_client_auth=True,
    )


def reloading_server_credentials(tls_dir: Path, name: str) -> grpc.ServerCredentials:
    """Like :func:`server_credentials`, but re-read when the files change (rotation).

    gRPC asks the fetcher at each new handshake; it compares the files' mtimes (a stat per
    handshake, no parsing) and loads a new configuration only when one changed and the new
    files form a valid pair issued by the CA. Until then the old certificate keeps serving,
    so a half-finished rotation never breaks the server.
    """
    tls_dir = Path(tls_dir)
    ident = load_identity(tls_dir, name)
    paths = identity_paths(tls_dir, name)
    state: dict[str, object] = {"stamp": _stamp(paths)}

    def config(i: _Identity) -> object:
        return grpc.ssl_server_certificate_configuration(
            [(i.key_pem, i.cert_pem)], root_certificates=i.ca_pem
        )

    def fetch() -> object | None:
        stamp = _stamp(paths)
        if stamp == state["stamp"]:
            return None
        try:
            fresh = load_identity(tls_dir, name)
        except InvalidInput as exc:  # mid-rotation or broken: keep serving the old pair
            log.warning("tls: not reloading %s yet: %s", name, exc)
            return None
        state["stamp"] = stamp
        log.info("tls: reloaded certificate for %s", name)
        return config(fresh)

    return grpc.dynamic_ssl_server_credentials(
        config(ident), fetch, require_client_authentication=True
    )


@dataclass(frozen=True)
class Identity:
    """Who a peer is, as its certificate proves: ``cluster:ID`` or ``user:NAME`` + groups."""

    kind: str
    name: str
    groups: tuple[str, ...] = field(default=())
    edge_site: bool = False
    """A cluster identity its certificate (or the forwarding controller) marks as an edge
    site's: checked on grants like a user's, never trusted as a controller."""

    @property
    def subject(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def subjects(self) -> tuple[str, ...]:
        """What grants may name to cover this identity."""
        return (self.subject, "*", *(f"group:{g}" for g in self.groups))

    @property
    def is_cluster(self) -> bool:
        return self.kind == "cluster"


def identity_of(cert: x509.Certificate) -> Identity:
    """The identity in a certificate's subject (CN = name, OU = kind and groups).

    Certificates from before kinds were recorded carry no kind: ``client`` is then the
    administrator and every other name a cluster, which is what ``certs init`` issued."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(cns[0].value) if cns else ""
    kind = ""
    groups: list[str] = []
    edge_site = False
    for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME):
        value = str(attr.value)
        if value == EDGE_SITE_ROLE:
            edge_site = True
        elif value.startswith(KIND_PREFIX):
            kind = value[len(KIND_PREFIX):]
        elif value.startswith(GROUP_PREFIX):
            groups.append(value[len(GROUP_PREFIX):])
    if kind not in ("cluster", "user"):
        kind = "user" if name == CLIENT_NAME else "cluster"
    return Identity(kind, name, tuple(groups), edge_site=edge_site and kind == "cluster")


@functools.lru_cache(maxsize=4096)
def identity_of_pem(pem: bytes) -> Identity:
    """:func:`identity_of` for the PEM gRPC's auth context carries (cached: one parse per
    distinct certificate, not per request)."""
    return identity_of(x509.load_pem_x509_certificate(pem))


def identity_file(tls_dir: Path, name: str) -> Identity:
    """The identity in ``<tls_dir>/<name>.crt``."""
    path = Path(tls_dir) / f"{_check_identity_name(name)}.crt"
    return identity_of(_load_cert(path))


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ``::1``, ``localhost``.

    The wildcard ``0.0.0.0``/``::`` and the empty host listen on every interface: False.
    """
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


if TYPE_CHECKING:  # what __getattr__ below returns, for the type checker
    from federation.certs import init_certs as init_certs


def __getattr__(attr: str) -> object:
    # Issuing moved to federation.certs; old imports of init_certs keep working (imported
    # when asked for: federation.certs imports this module).
    if attr == "init_certs":
        from federation.certs import init_certs

        return init_certs
    raise AttributeError(attr)
