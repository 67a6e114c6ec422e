"""Small S3 requests (PutObject, HeadObject) signed and sent without botocore's per-call
pipeline.

Why: mirroring sends one PutObject per small file. Through a boto3 client each call costs
about 3 ms of CPU on this class of machine (parameter validation, the endpoint rule set
evaluated per call, event hooks, a user-agent string rebuilt, then SigV4), which caps a
Python process at a few hundred small objects per second whatever the store can take. This
module does the same request with what the call really needs: botocore's own S3 SigV4 signer
(``botocore.auth.S3SigV4Auth``, told the payload hash the caller already has) and one request
on a kept-alive connection, about a fifth of the CPU. The SDK still owns credentials, the URL
layout, the signing algorithm and the error shape; only the per-call machinery is skipped.

The connections are the standard library's ``http.client`` ones, kept alive in a small pool
of this module's: urllib3's pool (what botocore uses) cost 260 to 330 us of CPU per request
here, ``http.client`` on a kept-alive connection 155 (a HEAD against SeaweedFS, 8
interleaved rounds of 2,000), and a small put is little more than that request. An idle
connection the server has closed is noticed before use (it polls readable) and replaced, as
urllib3 does; a request that fails on the wire raises, and the store's retry layer decides.

Nothing is configured here: it is derived from a boto3 client and session built by
``S3Store`` through boto3's default chain. The URL layout (path or virtual-hosted style,
the endpoint, ``AWS_ENDPOINT_URL``) comes from one presigned URL that botocore itself
builds, credentials from the session on every request (refreshable credentials refresh),
the CA bundle from botocore's own setting. Where the client is something this path does
not model (anonymous, a proxy, S3 Express, a non-SigV4 signer) ``DirectS3.build`` returns
None and every call goes through botocore as before.

The payload hash that SigV4 signs (``x-amz-content-sha256``) is the object's sha256, which
the caller has already verified: the store checks the body against it, so the hash the
metadata claims is also the one the server received, end to end.

Errors are raised as botocore ``ClientError``s with the same ``Error``/``ResponseMetadata``
shape, so ``cloud_adapters.s3._sdk_errors`` stays the one place that maps them.
"""

from __future__ import annotations

import hashlib
import http.client
import select
import ssl
import threading
import urllib.request
import weakref
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import SplitResult, quote, urlsplit
from xml.etree import ElementTree

import botocore.exceptions as bex
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.httpsession import get_cert_path

__all__ = ["DirectS3", "DirectResponse"]

_PROBE = "gns-direct-probe-key"


class DirectResponse:
    """Status and headers of a finished request (lower-case header names)."""

    __slots__ = ("status", "headers")

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers

    @property
    def etag(self) -> str:
        return self.headers.get("etag", "")

    @property
    def mtime(self) -> float | None:
        raw = self.headers.get("last-modified")
        if not raw:
            return None
        try:
            return parsedate_to_datetime(raw).timestamp()
        except (TypeError, ValueError):
            return None


class DirectS3:
    """PutObject / HeadObject on one bucket, signed with SigV4, over kept-alive connections.
    Thread-safe: the connection pool and the credentials object are shared by every thread."""

    def __init__(self, *, base_url: str, region: str, credentials: Any, ca_certs: str | None,
                 pool_size: int, connect_timeout: float, read_timeout: float) -> None:
        parts = urlsplit(base_url)
        self._host = parts.netloc
        self._base_path = parts.path  # encoded by botocore, ends with '/'
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._credentials = credentials
        self._region = region
        self._pool = _Connections(parts, ca_certs, pool_size, connect_timeout, read_timeout)

    @classmethod
    def build(cls, client: Any, session: Any, bucket: str, *, pool_size: int
              ) -> DirectS3 | None:
        """The direct path for ``client`` on ``bucket``, or None where this module does not
        model the client's configuration (then botocore does every call). Sends nothing."""
        try:
            config = client.meta.config
            if getattr(config, "signature_version", None) not in (None, "s3v4", "v4"):
                return None
            s3cfg = getattr(config, "s3", None) or {}
            if s3cfg.get("use_accelerate_endpoint") or s3cfg.get("use_dualstack_endpoint"):
                return None
            if getattr(config, "proxies", None) or getattr(config, "client_cert", None):
                return None
            credentials = session.get_credentials()
            if credentials is None or not credentials.get_frozen_credentials().access_key:
                return None
            if "--x-s3" in bucket:  # S3 Express directory bucket: session auth
                return None
            url = client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": _PROBE}, ExpiresIn=60)
            parts = urlsplit(url)
            if not parts.path.endswith("/" + _PROBE):
                return None
            proxies = urllib.request.getproxies()
            if parts.scheme in proxies and not urllib.request.proxy_bypass(
                    parts.hostname or ""):
                return None
            # boto3's Session keeps botocore's (the one with the config chain) as _session.
            core = getattr(session, "_session", session)
            ca_bundle = core.get_config_variable("ca_bundle")
            return cls(
                base_url=f"{parts.scheme}://{parts.netloc}{parts.path[:-len(_PROBE)]}",
                region=client.meta.region_name or "us-east-1", credentials=credentials,
                ca_certs=ca_bundle or get_cert_path(True) or None, pool_size=pool_size,
                connect_timeout=float(config.connect_timeout or 60),
                read_timeout=float(config.read_timeout or 60),
            )
        except Exception:  # noqa: BLE001 - any surprise: botocore keeps doing every call
            return None

    # -- requests ------------------------------------------------------------------------------

    def put_object(self, full_key: str, body: bytes, sha256: str,
                   conditions: dict[str, str]) -> DirectResponse:
        """PutObject with ``x-amz-meta-sha256``; ``sha256`` must be the body's (verified by
        the caller): it is the signed payload hash, which the server checks."""
        extra = {"content-type": "binary/octet-stream"}
        if "IfNoneMatch" in conditions:
            extra["if-none-match"] = conditions["IfNoneMatch"]
        if "IfMatch" in conditions:
            extra["if-match"] = conditions["IfMatch"]
        return self._request("PUT", "PutObject", full_key, body, sha256,
                             {"x-amz-meta-sha256": sha256}, extra)

    def head_object(self, full_key: str) -> DirectResponse:
        return self._request("HEAD", "HeadObject", full_key, b"", _EMPTY_SHA256, {}, {})

    def _request(self, method: str, op: str, full_key: str, body: bytes, payload_sha: str,
                 amz: dict[str, str], extra: dict[str, str]) -> DirectResponse:
        path = self._base_path + quote(full_key, safe="/~")
        request = AWSRequest(method=method, url=self._origin + path, data=body or None,
                             headers={**amz, **extra})
        request.context["payload_sha256"] = payload_sha
        # botocore's own S3 SigV4 signer (fresh frozen credentials each time: they may refresh).
        _KnownPayloadS3SigV4(self._credentials.get_frozen_credentials(), "s3", self._region).add_auth(request)
        conn = self._pool.take()
        try:
            conn.request(method, path, body=body or None, headers=dict(request.headers.items()))
            r = conn.getresponse()
            data = r.read()
        except (http.client.HTTPException, OSError) as exc:
            conn.close()  # in an unknown state: never reused
            raise bex.HTTPClientError(error=exc) from exc
        self._pool.give(conn)  # closed by http.client if the server said it closes
        resp = DirectResponse(r.status, {k.lower(): v for k, v in r.getheaders()})
        if r.status >= 300:
            raise _client_error(op, r.status, data)
        return resp


class _Connections:
    """Idle kept-alive connections to one origin, most recently used first; at most
    ``size`` are kept (a burst beyond that opens more, closed when given back)."""

    def __init__(self, origin: SplitResult, ca_certs: str | None, size: int,
                 connect_timeout: float, read_timeout: float) -> None:
        self._host = origin.hostname or ""
        self._port = origin.port
        self._tls: ssl.SSLContext | None = None
        if origin.scheme == "https":
            self._tls = ssl.create_default_context(cafile=ca_certs)  # verifies the host name
        self._size = size
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        # Like urllib3's pools: connections still idle when the store goes are closed,
        # not left to the garbage collector (which warns about unclosed sockets).
        weakref.finalize(self, _close_all, self._idle)

    def take(self) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if not _dropped(conn):
                return conn
            conn.close()

    def give(self, conn: http.client.HTTPConnection) -> None:
        if conn.sock is None:  # the response said "Connection: close"
            return
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._tls is None:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)
        else:
            conn = http.client.HTTPSConnection(self._host, self._port,
                                               timeout=self._connect_timeout, context=self._tls)
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(self._read_timeout)
        except OSError as exc:
            conn.close()
            raise bex.HTTPClientError(error=exc) from exc
        return conn


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle connection with something to read has been closed by the server (or holds
    bytes nobody asked for): either way it cannot carry the next request."""
    if conn.sock is None:
        return True
    poller = select.poll()
    poller.register(conn.sock, select.POLLIN)
    return bool(poller.poll(0))


def _close_all(conns: list[http.client.HTTPConnection]) -> None:
    for conn in conns:
        conn.close()
    conns.clear()


class _KnownPayloadS3SigV4(S3SigV4Auth):  # type: ignore[misc]  # botocore ships no types
    """botocore's S3 signer, told the payload's sha256 (the caller verified it against the
    body) instead of hashing the body a second time."""

    def payload(self, request: AWSRequest) -> str:
        known = request.context.get("payload_sha256")
        return str(known) if known else str(super().payload(request))


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _client_error(op: str, status: int, body: bytes) -> bex.ClientError:
    """The error botocore would raise for this response (same dict shape)."""
    code, message = str(status), ""
    if body:
        try:
            root = ElementTree.fromstring(body)
            code = root.findtext("Code") or code
            message = root.findtext("Message") or ""
        except ElementTree.ParseError:
            message = body[:200].decode("utf-8", "replace")
    return bex.ClientError(
        {"Error": {"Code": code, "Message": message},
         "ResponseMetadata": {"HTTPStatusCode": status}}, op)
