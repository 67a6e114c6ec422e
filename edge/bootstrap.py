"""Bootstrap: trade a single-use join token for the site's own identity (once).

Why it exists: the token is a one-time secret that a person carried to the site; what the
site keeps afterwards is its own identity, in ``<data-dir>`` (``identity.json``, mode
0600), so a restart needs no token (Open Cluster Management's bootstrap kubeconfig, K3s's
token). With TLS that identity is the site's own certificate: it sends a CSR and gets
``cluster:<site>`` signed by the federation CA (:mod:`edge.sitecert`), which it dials
with from then on and which alone authenticates its link (no bearer credential is issued).
Without TLS the hub hands out a bearer credential instead.
The token pins the hub's CA fingerprint (``K10<ca-sha256>::<id>.<secret>``); the hub's
answer must carry the same fingerprint or the site refuses it.

The token is redeemed at the ``--hub`` addresses the user gave, in order, as the link
dials them. A site holding nothing but the token cannot pass a hub's main port (it demands
a client certificate), so it goes to that hub's token-only join port instead, which the
token names for each hub's endpoint (:func:`join_addresses`); a token that names none of
the ``--hub`` addresses falls back to the ports it names.

A refused token (reused, expired, wrong site, forged) ends bootstrap with the hub's reason
(exit 4); an unreachable hub is retried with jittered backoff, moving through the ``--hub``
list, forever.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from federation.api._gen.gns.edge.v1 import edge_pb2 as epb
from federation.api._gen.gns.edge.v1 import edge_pb2_grpc as epb_grpc
from federation.api.errors import from_rpc_error
from namespace.edge import INSECURE_CA, parse_token
from namespace.errors import InvalidInput, PermissionDenied, Unavailable

log = logging.getLogger(__name__)

API_VERSION = "v1"


@dataclass
class Identity:
    site: str
    credential: str
    credential_expires_at: float
    issued_at: float
    ca_sha256: str
    hub: str
    cert_expires_at: float = 0.0
    """0: the site holds no certificate of its own (the hub could not sign one)."""
    cert_issued_at: float = 0.0

    def __repr__(self) -> str:  # never show the credential, even in a traceback
        return f"Identity(site={self.site!r}, hub={self.hub!r}, expires={self.credential_expires_at:.0f})"

    def renew_due(self, now: float | None = None) -> bool:
        """In the last third of its lifetime: time to ask for a new one."""
        now = time.time() if now is None else now
        if self.credential_expires_at:  # 0: no bearer credential (TLS: the certificate is the identity)
            life = max(1.0, self.credential_expires_at - self.issued_at)
            if now >= self.credential_expires_at - life / 3:
                return True
        return self.cert_due(now)

    def cert_due(self, now: float | None = None) -> bool:
        """The site's certificate is in the last third of its lifetime."""
        if not self.cert_expires_at:
            return False
        now = time.time() if now is None else now
        life = max(1.0, self.cert_expires_at - self.cert_issued_at)
        return now >= self.cert_expires_at - life / 3


@dataclass(frozen=True)
class Dialer:
    """How the site dials a hub: plain, or mutual TLS with a certificate of ``tls_dir``
    whose CA must be the one the join token pins (K3s: trust only the pinned CA)."""

    tls_dir: Path | None = None
    identity: str = "client"

    def ca_fingerprint(self) -> str:
        from federation.tls import CA_CERT
        from namespace.edge import ca_fingerprint

        return ca_fingerprint((self.tls_dir / CA_CERT).read_bytes() if self.tls_dir is not None else None)

    def channel(self, address: str) -> grpc.aio.Channel:
        from federation.channels import BASE_OPTIONS

        if self.tls_dir is None:
            return grpc.aio.insecure_channel(address, options=BASE_OPTIONS)
        from federation.tls import channel_credentials, channel_options

        return grpc.aio.secure_channel(address, channel_credentials(self.tls_dir, self.identity),
                                       options=BASE_OPTIONS + channel_options(self.tls_dir, address))


def identity_path(data_dir: Path) -> Path:
    return data_dir / "identity.json"


def load_identity(data_dir: Path, site: str) -> Identity | None:
    path = identity_path(data_dir)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise InvalidInput(f"{path} is corrupt ({exc}); remove it and join with a new token") from None
    ident = Identity(**raw)
    if ident.site != site:
        raise InvalidInput(f"{data_dir} belongs to site {ident.site!r}, not {site!r}")
    return ident


def save_identity(data_dir: Path, ident: Identity) -> None:
    path = identity_path(data_dir)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(ident), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


async def join(hubs: list[str], token: str, site: str, *, max_delay: float = 5.0,
               dialer: Dialer | None = None, data_dir: Path | None = None) -> Identity:
    """Redeem ``token`` at the first hub that answers; refusals end it (exit 4).

    With TLS and a ``data_dir``, a CSR goes along; the certificate that comes back is kept
    in ``<data_dir>/tls`` once it checks out (:meth:`edge.sitecert.Request.accept`)."""
    from edge.sitecert import Request

    dialer = dialer or Dialer()
    parsed = parse_token(token)
    pin = parsed.ca_sha256
    if dialer.tls_dir is not None and dialer.ca_fingerprint() != pin:
        raise PermissionDenied("the CA in --tls-dir is not the one the token pins: refusing to trust it")
    # Token only, no certificate at all: the --hub addresses' token-only join ports (the
    # token names them; a hub's main port demands a client certificate).
    token_only = dialer.tls_dir is None and bool(parsed.join) and pin != INSECURE_CA and data_dir is not None
    request = Request(site) if (dialer.tls_dir is not None or token_only) and data_dir is not None else None
    addresses = (await asyncio.to_thread(join_addresses, site, hubs, parsed.join, parsed.join_ports)
                 if token_only else list(hubs))
    attempt = 0
    while True:
        address = addresses[attempt % len(addresses)]
        try:
            channel = await _token_only_channel(address, pin) if token_only else dialer.channel(address)
        except Unavailable as exc:
            log.warning("site %s: hub join port %s unreachable (%s); retrying", site, address, exc)
            attempt += 1
            await asyncio.sleep(backoff(attempt, max_delay))
            continue
        try:
            reply = await epb_grpc.EdgeLinkStub(channel).Join(
                epb.JoinRequest(site=site, token=token, api_version=API_VERSION,
                                csr_pem=request.csr_pem if request is not None else b""), timeout=10)
        except grpc.RpcError as exc:
            err = from_rpc_error(exc, f"hub {address}")
            if not isinstance(err, Unavailable):
                raise err from None
            log.warning("site %s: hub %s unreachable for join (%s); retrying", site, address, err)
        else:
            if reply.ca_sha256 != pin:
                raise PermissionDenied(
                    f"hub {address} presents CA {reply.ca_sha256[:16]}..., the token pins {pin[:16]}...: "
                    "refusing to join a server the token was not made for")
            ident = Identity(site=site, credential=reply.credential,
                             credential_expires_at=reply.credential_expires_at, issued_at=time.time(),
                             ca_sha256=reply.ca_sha256, hub=reply.hub)
            if request is not None and data_dir is not None:
                if reply.cert_pem:
                    ident.cert_expires_at = request.accept(data_dir, reply.cert_pem, reply.ca_pem, pin)
                    ident.cert_issued_at = time.time()
                else:
                    log.warning("site %s: hub %s signs no certificates (it holds no CA key); "
                                "keeping the credential and --tls-dir's certificate", site, reply.hub)
            return ident
        finally:
            await channel.close()
        attempt += 1
        await asyncio.sleep(backoff(attempt, max_delay))


def join_addresses(site: str, hubs: Sequence[str], issuer: str, ports: Sequence[tuple[str, str]]) -> list[str]:
    """Where a site holding only a token redeems it: the token-only join port of each of
    its ``--hub`` addresses, in that order (the token pairs each hub's endpoint with its
    join port, ``ports``). A ``--hub`` the token does not know is skipped with a warning;
    only if it knows none of them do the join ports it names (``issuer``'s, the issuing
    hub's, first) stand in."""
    found: list[str] = []
    for hub in hubs:
        join = next((j for endpoint, j in ports if same_address(endpoint, hub)), None)
        if join is None:
            log.warning("site %s: the join token names no join port for --hub %s (not a hub of the "
                        "federation that signs site certificates when the token was made)", site, hub)
        elif join not in found:
            found.append(join)
    if found:
        return found
    fallback = list(dict.fromkeys([issuer, *(j for _, j in ports)]))
    log.warning("site %s: the join token names none of --hub %s; redeeming it at the join port(s) it "
                "names: %s", site, ",".join(hubs), ",".join(fallback))
    return fallback


def same_address(a: str, b: str) -> bool:
    """``HOST:PORT`` ``a`` and ``b`` reach the same server: equal, or the same port on host
    names that resolve to a common address (``localhost:7000`` is ``127.0.0.1:7000``)."""
    if a == b:
        return True
    host_a, _, port_a = a.rpartition(":")
    host_b, _, port_b = b.rpartition(":")
    if port_a != port_b:
        return False
    return bool(_resolve(host_a, port_a) & _resolve(host_b, port_b))


def _resolve(host: str, port: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)}
    except (OSError, UnicodeError):
        return set()


async def _token_only_channel(address: str, pin: str) -> grpc.aio.Channel:
    """TLS to the hub's token-only port, trusting only the CA the token pins (K3s' cacerts:
    fetch the CA unverified, keep it only if it hashes to the pin, then verify the server)."""
    from edge.sitecert import fetch_pinned_ca
    from federation.channels import BASE_OPTIONS
    from federation.tls import channel_options

    ca_pem = await asyncio.to_thread(fetch_pinned_ca, address, pin)
    return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca_pem),
                                   options=BASE_OPTIONS + channel_options(Path("."), address))


def backoff(attempt: int, max_delay: float, base: float = 0.1) -> float:
    """Full-jitter exponential backoff (AWS architecture blog): spreads a storm of sites."""
    return random.uniform(0, min(max_delay, base * 2 ** min(attempt, 16)))
