"""TLS and user/password for etcd (SPEC §10), which ``aetcd`` does not offer by itself.

``aetcd.Client`` only ever opens an insecure channel and authenticates once. gns needs both:
:class:`SecureClient` opens a TLS channel (the etcd CA, and a client certificate when etcd
runs with ``--client-cert-auth``) and can :meth:`~SecureClient.reauthenticate`, which
:class:`namespace.etcd.Etcd` calls before a token gets old and whenever etcd says a token
is invalid, so a long-running controller never stalls on an expired token.

Where the settings come from (flag > environment): ``--etcd-ca`` / ``GNS_ETCD_CA``,
``--etcd-cert`` / ``GNS_ETCD_CERT``, ``--etcd-key`` / ``GNS_ETCD_KEY``, ``--etcd-user`` /
``GNS_ETCD_USER``, ``--etcd-password-file`` / ``GNS_ETCD_PASSWORD_FILE``. The password is
read from a file so it never shows in a process listing; it is never logged.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aetcd
import aetcd.client
import aetcd.exceptions
import aetcd.rpc as rpc
import grpc

from namespace.errors import InvalidInput

ENV = {
    "ca": "GNS_ETCD_CA",
    "cert": "GNS_ETCD_CERT",
    "key": "GNS_ETCD_KEY",
    "username": "GNS_ETCD_USER",
    "password_file": "GNS_ETCD_PASSWORD_FILE",
}


def security_from_env(given: dict[str, Any]) -> dict[str, Any]:
    """``given`` (explicit settings) completed from the ``GNS_ETCD_*`` environment, with
    the password file read; InvalidInput names a missing file or a half-given pair."""
    out = dict(given)
    for key, var in ENV.items():
        if out.get(key) is None and os.environ.get(var):
            out[key] = os.environ[var]
    pw_file = out.pop("password_file", None)
    if pw_file is not None and out.get("password") is None:
        out["password"] = _read(Path(pw_file), "etcd password file").decode().strip()
    if (out.get("username") is None) != (out.get("password") is None):
        raise InvalidInput("etcd user and password go together: --etcd-user with --etcd-password-file")
    if (out.get("cert") is None) != (out.get("key") is None):
        raise InvalidInput("etcd client certificate and key go together: --etcd-cert with --etcd-key")
    for key in ("ca", "cert", "key"):
        if out.get(key) is not None:
            _read(Path(out[key]), f"etcd {key} file")  # refuse a missing file now, not at dial time
    return out


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{what} {path} not found") from None
    except OSError as exc:
        raise InvalidInput(f"{what} {path} is unreadable: {exc.strerror}") from None


def channel_credentials(ca: str | None, cert: str | None, key: str | None) -> grpc.ChannelCredentials:
    """TLS to etcd: its CA (system roots when None) and our client certificate, if any."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(Path(ca), "etcd CA file") if ca else None,
        private_key=_read(Path(key), "etcd key file") if key else None,
        certificate_chain=_read(Path(cert), "etcd certificate file") if cert else None,
    )


class SecureClient(aetcd.Client):
    """An ``aetcd.Client`` whose channel is TLS (when given credentials) and whose token
    can be renewed in place."""

    # Set by aetcd.Client (untyped); named here for the reads below.
    _is_connecting: bool
    metadata: tuple[tuple[str, str], ...] | None

    def __init__(self, *args: Any, credentials: grpc.ChannelCredentials | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._credentials is None:
            await super().connect()
            return
        try:
            await self._connect_secure()
        except rpc.AioRpcError as exc:  # the same mapping as aetcd's own calls
            aetcd.exceptions._handle_exception(exc)

    async def _connect_secure(self) -> None:
        # The base class's connect, with a secure channel instead of an insecure one.
        if self._connected.is_set():
            return
        if self._is_connecting:
            import asyncio

            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            target = f"{self._host}:{self._port}"
            self.channel = rpc.secure_channel(target, self._credentials, options=self._options.items())
            if self._username is not None and self._password is not None:
                self.auth_stub = rpc.AuthStub(self.channel)
                await self._authenticate()
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.client.watcher.Watcher(
                rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata,
            )
            self._connected.set()
        finally:
            self._is_connecting = False

    async def _authenticate(self) -> None:
        resp = await self.auth_stub.Authenticate(
            rpc.AuthenticateRequest(name=self._username, password=self._password), timeout=self._timeout
        )
        self.metadata = (("token", resp.token),)
        if self._watcher is not None:
            self._watcher._metadata = self.metadata  # new watch streams carry the new token

    async def reauthenticate(self) -> None:
        """Trade the user and password for a fresh token (no-op without credentials)."""
        if self._username is None or self.auth_stub is None:
            return
        try:
            await self._authenticate()
        except rpc.AioRpcError as exc:
            aetcd.exceptions._handle_exception(exc)
