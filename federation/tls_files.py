"""A TLS identity's files as a gRPC client takes them, checked once per version of the files.

:mod:`federation.tls` checks an identity before it is used: the key matches the
certificate, the CA issued it, and it is valid now. That takes ``cryptography``: its import
and the check cost a CLI process about 50 ms here, a seventh of a whole ``gns stat``
against a federation with TLS (the one ``gns up`` starts: 362 ms of CPU against 312
without them, medians of 15). The files rarely change, so the result of the check is
remembered beside them, in ``.<name>.checked``: the inode, size and modification time of
the three files it covered, and the certificate's validity window.
While the files are those and the window holds, a client reads the PEM bytes and dials
without importing ``cryptography``. Anything else (a file replaced or rotated, a
certificate expired or not yet valid, no record or a damaged one) runs the whole check
again, with its errors. Where the directory cannot be written (a Kubernetes Secret), every
process runs the whole check, as before.

The record holds no key material, and it vouches for nothing the TLS handshake does not
check again: it only spares the up-front check that turns a bad file into one clear error
before any call. The channel options and the files' stamp live here too: they need no
``cryptography`` either.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import threading
import time
from pathlib import Path

import grpc

from namespace.errors import InvalidInput

__all__ = [
    "CA_CERT",
    "CLIENT_NAME",
    "TARGET_NAME_OVERRIDE",
    "channel_credentials",
    "channel_options",
    "check_identity_name",
    "identity_paths",
    "identity_stamp",
]

CA_CERT = "ca.crt"
CLIENT_NAME = "client"
#: Every certificate carries this DNS SAN, so dialing by IP can check it (see channel_options).
TARGET_NAME_OVERRIDE = "localhost"
HOSTNAME = re.compile(
    r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
_IDENTITY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_RECORD_VERSION = 1


def check_identity_name(name: str) -> str:
    if not isinstance(name, str) or not _IDENTITY_NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid identity {name!r}: letters, digits and . _ @ - (not first), at most 128"
        )
    return name


def identity_paths(tls_dir: Path, name: str) -> tuple[Path, Path, Path]:
    """The CA certificate, ``name``'s certificate and its key."""
    d = Path(tls_dir)
    return d / CA_CERT, d / f"{name}.crt", d / f"{name}.key"


def identity_stamp(tls_dir: Path, name: str) -> tuple[int, ...]:
    """Changes when ``name``'s certificate, key or the CA file is replaced (a stat each)."""
    return stamp(identity_paths(tls_dir, name))


def stamp(paths: tuple[Path, ...]) -> tuple[int, ...]:
    """Each path's modification time (ns), inode and size; zeros for one that is missing."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out += [st.st_mtime_ns, st.st_ino, st.st_size]
        except OSError:
            out += [0, 0, 0]
    return tuple(out)


def channel_credentials(tls_dir: Path, name: str = CLIENT_NAME) -> grpc.ChannelCredentials:
    """Credentials for dialing a controller as identity ``name`` (``client`` by default):
    the whole check of :mod:`federation.tls` the first time the files are seen, and after
    any change to them; their bytes alone while they stay as they were checked."""
    check_identity_name(name)
    pems = _checked_pems(tls_dir, name)
    if pems is None:
        from federation.tls import load_identity

        before = identity_stamp(tls_dir, name)
        ident = load_identity(tls_dir, name)
        if identity_stamp(tls_dir, name) == before:  # the check covered exactly these files
            _remember(tls_dir, name, before, ident.not_before, ident.not_after)
        pems = ident.ca_pem, ident.cert_pem, ident.key_pem
    ca_pem, cert_pem, key_pem = pems
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def channel_options(tls_dir: Path | None, target: str | None = None) -> list[tuple[str, str]]:
    """gRPC channel options to go with :func:`channel_credentials`; ``[]`` without TLS.

    Controllers are usually dialed by IP (``127.0.0.1:PORT``), so the server's certificate
    is checked against the name ``localhost``, which every certificate from
    :func:`federation.certs.init_certs` carries. Given a ``target`` (``host:port``) that
    names a DNS host, no override is set and gRPC checks the certificate against that host
    name instead.
    """
    if tls_dir is None:
        return []
    if target is not None and _is_dns_name(_target_host(target)):
        return []
    return [("grpc.ssl_target_name_override", TARGET_NAME_OVERRIDE)]


def _record_path(tls_dir: Path, name: str) -> Path:
    return Path(tls_dir) / f".{name}.checked"


def _checked_pems(tls_dir: Path, name: str) -> tuple[bytes, bytes, bytes] | None:
    """The identity's PEM bytes if a record says these very files passed the check and the
    certificate is valid now; None if the whole check must run."""
    try:
        record = json.loads(_record_path(tls_dir, name).read_bytes())
        recorded = tuple(record["stamp"])
        not_before, not_after = float(record["not_before"]), float(record["not_after"])
        if record["version"] != _RECORD_VERSION:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not not_before <= time.time() < not_after:
        return None  # expired or not yet valid: the check says so, clearly
    paths = identity_paths(tls_dir, name)
    if stamp(paths) != recorded:
        return None
    try:
        ca_pem, cert_pem, key_pem = (p.read_bytes() for p in paths)
    except OSError:
        return None
    if stamp(paths) != recorded:  # replaced while we read: these bytes were never checked
        return None
    return ca_pem, cert_pem, key_pem


def _remember(tls_dir: Path, name: str, checked: tuple[int, ...], not_before: float,
              not_after: float) -> None:
    """Write the record (atomically); a directory that refuses it only costs the check."""
    path = _record_path(tls_dir, name)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    body = {"version": _RECORD_VERSION, "stamp": list(checked), "not_before": not_before,
            "not_after": not_after}
    try:
        tmp.write_text(json.dumps(body))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


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
    return not _is_ip(host) and HOSTNAME.fullmatch(host.lower().rstrip(".")) is not None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
