"""The one place gns talks to etcd: endpoints, retries and error translation.

A thin layer over ``aetcd`` (asyncio). Several endpoints become one gRPC target
(``ipv4:a,b,c``) so gRPC itself moves to a live member; a call that fails while it does so
is retried until ``deadline`` passes. Every etcd failure leaves this module as
:class:`~namespace.errors.Unavailable` naming the endpoints.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import aetcd.utils

from namespace.errors import InvalidInput, Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

_RETRYABLE = (
    aetcd.exceptions.ConnectionFailedError,
    aetcd.exceptions.ConnectionTimeoutError,
    aetcd.exceptions.InternalError,
)
FAILURES: tuple[type[Exception], ...] = (
    Unavailable, aetcd.exceptions.ClientError, ConnectionError, TimeoutError,
)
"""What a call straight on the aetcd client (not through :meth:`Etcd.call`) may raise when
etcd is away or slow: loops that must outlive an outage catch exactly these."""
# A mount table of a million entries is ~100 MB on the wire; etcd's own limit applies first.
_MAX_MESSAGE = 512 * 1024 * 1024


def prefix_end(prefix: bytes) -> bytes:
    """The range end that makes ``[prefix, end)`` cover every key starting with ``prefix``."""
    end: bytes = aetcd.utils.prefix_range_end(prefix)
    return end


@dataclass(frozen=True)
class EtcdConfig:
    """How to reach etcd."""

    endpoints: tuple[str, ...]
    """``host:port`` of each member (schemes stripped)."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    call_timeout: float = 2.0
    """Per call; short, because a dead member must not stall the caller for long."""
    deadline: float = 10.0
    """How long one logical operation keeps retrying across members."""
    tls: bool = False
    """Talk TLS (``https://`` endpoints, or a CA or client certificate given)."""
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    token_refresh: float = 60.0
    """Seconds after which an auth token is renewed before the next call (etcd's simple
    tokens live 300 s by default)."""

    @classmethod
    def parse(cls, urls: str, **kw: Any) -> EtcdConfig:
        """Endpoints from ``urls``; TLS and credentials from ``kw`` or ``GNS_ETCD_*``
        (see :mod:`namespace.etcd_tls`)."""
        from namespace.etcd_tls import ENV, security_from_env

        security = {k: kw.pop(k, None) for k in (*ENV, "password")}
        kw.update({k: v for k, v in security_from_env(security).items() if v is not None})
        endpoints = []
        tls = False
        for raw in urls.split(","):
            url = raw.strip()
            if not url:
                continue
            if url.startswith("https://"):
                tls = True
            url = url.removeprefix("http://").removeprefix("https://").rstrip("/")
            host, sep, port = url.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise InvalidInput(f"invalid etcd endpoint {raw.strip()!r}: expected HOST:PORT")
            endpoints.append(f"{host}:{port}")
        if not endpoints:
            raise InvalidInput("no etcd endpoint given")
        tls = tls or bool(kw.get("ca") or kw.get("cert"))
        return cls(endpoints=tuple(endpoints), tls=tls, **kw)

    @property
    def urls(self) -> str:
        scheme = "https" if self.tls else "http"
        return ",".join(f"{scheme}://{e}" for e in self.endpoints)


class Etcd:
    """An etcd connection with retries; create with :meth:`connect`, close with :meth:`close`."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self.tx = aetcd.Client().transactions  # comparison/operation builders, stateless
        *first, last = config.endpoints
        last_host, _, last_port = last.rpartition(":")
        # aetcd builds its target as f"{host}:{port}"; smuggling the other members into
        # ``host`` yields gRPC's multi-address form "ipv4:a:1,b:2,c:3" (pick_first failover).
        host = ("ipv4:" + ",".join([*first, last_host])) if first else last_host
        from namespace.etcd_tls import SecureClient, channel_credentials

        credentials = channel_credentials(config.ca, config.cert, config.key) if config.tls else None
        tls_options: dict[str, Any] = {}
        if credentials is not None and first:
            # A multi-address target has no host name to check the certificate against.
            tls_options["grpc.ssl_target_name_override"] = first[0].rpartition(":")[0]
        self._authed_at = time.monotonic()
        self.client = SecureClient(
            credentials=credentials,
            host=host,
            port=int(last_port),
            username=config.username,
            password=config.password,
            timeout=config.call_timeout,
            options={
                "grpc.max_receive_message_length": _MAX_MESSAGE,
                "grpc.max_send_message_length": 64 * 1024 * 1024,
                "grpc.initial_reconnect_backoff_ms": 100,
                "grpc.max_reconnect_backoff_ms": 1000,
                "grpc.keepalive_time_ms": 5000,
                "grpc.keepalive_timeout_ms": 2000,
                **tls_options,
            },
        )

    @classmethod
    async def connect(cls, config: EtcdConfig) -> Etcd:
        etcd = cls(config)
        await etcd.call(etcd.client.connect)
        return etcd

    async def _renew_token(self) -> None:
        self._authed_at = time.monotonic()
        if self.client.auth_stub is not None:
            await self.client.reauthenticate()
            log.debug("etcd auth token renewed")

    async def close(self) -> None:
        try:
            await self.client.close()
        except Exception:  # closing a broken channel must not mask the real error
            log.debug("closing etcd client failed", exc_info=True)

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T:
        """Run one etcd call, retrying transient failures until the deadline."""
        deadline = time.monotonic() + self.config.deadline
        delay = 0.05
        renewed = False
        while True:
            try:
                if self.config.username and time.monotonic() - self._authed_at > self.config.token_refresh:
                    await self._renew_token()
                return await fn(*args, **kw)
            except _RETRYABLE as exc:
                if time.monotonic() + delay >= deadline:
                    raise Unavailable(
                        f"etcd unreachable at {self.config.urls}: {exc or type(exc).__name__}"
                    ) from exc
                log.debug("etcd call %s failed (%s); retrying", getattr(fn, "__name__", fn), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            except aetcd.exceptions.UnauthenticatedError as exc:
                # An expired or revoked token: trade the password for a new one, once.
                if self.config.username and not renewed and self.client.auth_stub is not None:
                    renewed = True
                    try:
                        await self._renew_token()
                        continue
                    except aetcd.exceptions.ClientError:
                        pass
                raise Unavailable(f"etcd at {self.config.urls} refused the credentials") from exc
            except aetcd.exceptions.ClientError as exc:
                raise Unavailable(f"etcd error at {self.config.urls}: {exc}") from exc

    # Small typed helpers over the calls gns makes.

    async def get(self, key: bytes) -> bytes | None:
        kv = await self.call(self.client.get, key)
        return None if kv is None else kv.value

    async def get_prefix(self, prefix: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
        """All (key, value) under ``prefix`` and the store revision they were read at."""
        rng = await self.call(self.client.get_prefix, prefix)
        return [(kv.key, kv.value) for kv in rng.kvs], rng.header.revision

    async def txn(self, compare: list[Any], success: list[Any], failure: list[Any] | None = None) -> tuple[bool, list[Any]]:
        ok, responses = await self.call(self.client.transaction, compare, success, failure or [])
        return bool(ok), responses

    async def put(self, key: bytes, value: bytes, lease: Any = None) -> None:
        await self.call(self.client.put, key, value, lease=lease)
