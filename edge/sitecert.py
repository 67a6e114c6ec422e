"""The site's own X.509 identity (SPEC §8): its key, the certificate the hub signs, the CA.

Why it exists: a site trades its join token for a certificate of its own (identity
``cluster:<site>``, signed by the federation CA) and dials its hubs with it from then on,
so a restart needs neither the token nor any certificate handed out beforehand. The key
is made here, kept in ``<data-dir>/tls/<site>.key`` (mode 0600) and never sent: only a
CSR leaves the site. ``<data-dir>/tls`` has the layout of a gns TLS directory
(``ca.crt``, ``<site>.crt``, ``<site>.key``), so :mod:`federation.tls` loads it as it is.

Nothing from the hub is trusted blindly: the CA it returns must hash to the token's pin
(or, on renewal, equal the CA already kept), the certificate must be issued by that CA, name
``cluster:<site>`` and carry the site's own public key.

Never logs or puts in an error message any key material.
"""
from __future__ import annotations

import _ssl
import hashlib
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from federation.certs import replace_atomic
from federation.tls import CA_CERT, identity_of
from namespace.errors import PermissionDenied, Unavailable


def cert_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "tls"


def has_certificate(data_dir: Path, site: str) -> bool:
    d = cert_dir(data_dir)
    return all((d / name).is_file() for name in (CA_CERT, f"{site}.crt", f"{site}.key"))


class Request:
    """A fresh key and the CSR for it (the key stays in memory until a certificate matches it)."""

    def __init__(self, site: str) -> None:
        self.site = site
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.csr_pem = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site)]))
            .sign(self._key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )

    def __repr__(self) -> str:  # never show the key, even in a traceback
        return f"Request(site={self.site!r})"

    def accept(self, data_dir: Path, cert_pem: bytes, ca_pem: bytes, ca_sha256: str) -> float:
        """Check what the hub signed and keep it; returns the certificate's expiry (epoch s).

        ``ca_sha256`` is the pin the CA must hash to. The key is written before the
        certificate, each file replaced atomically; :mod:`federation.tls` refuses a
        mismatched pair, so a dial that falls in between fails once and is retried."""
        if hashlib.sha256(ca_pem).hexdigest() != ca_sha256:
            raise PermissionDenied("the hub returned a CA other than the one the token pins: refusing it")
        try:
            ca = x509.load_pem_x509_certificate(ca_pem)
            cert = x509.load_pem_x509_certificate(cert_pem)
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise PermissionDenied("the hub returned a certificate its CA did not issue: refusing it") from None
        if cert.public_key() != self._key.public_key():
            raise PermissionDenied("the hub returned a certificate for another key: refusing it")
        who = identity_of(cert)
        if who.subject != f"cluster:{self.site}":
            raise PermissionDenied(f"the hub returned a certificate for {who.subject}, not cluster:{self.site}")
        d = cert_dir(data_dir)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        replace_atomic(d / CA_CERT, ca_pem, 0o644)
        replace_atomic(d / f"{self.site}.key", self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
        replace_atomic(d / f"{self.site}.crt", cert_pem, 0o644)
        return cert.not_valid_after_utc.timestamp()


def fetch_pinned_ca(address: str, pin: str, timeout: float = 10.0) -> bytes:
    """The CA (PEM) in the chain ``address`` presents whose sha256 is ``pin``.

    The handshake is unverified on purpose (the site has no CA yet): nothing is sent on it,
    and what it yields is kept only if it hashes to the pin the token carries."""
    host, _, port = address.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
            with ctx.wrap_socket(sock) as tls:
                # Public as SSLSocket.get_unverified_chain from Python 3.13; _ssl has it since 3.10
                # (typeshed does not declare the private _sslobj).
                chain = tls._sslobj.get_unverified_chain() or []  # type: ignore[attr-defined]
                ders = [c.public_bytes(_ssl.ENCODING_DER) for c in chain]
    except (OSError, ValueError) as exc:
        raise Unavailable(f"cannot reach {address}: {exc}") from None
    for der in ders:
        pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        if hashlib.sha256(pem).hexdigest() == pin:
            return pem
    raise PermissionDenied(f"{address} presents no CA with the token's pin: refusing to trust it")


