"""Small GCS uploads (the one-request puts mirroring sends per small file) without the
client library's per-call machinery.

Why: through google-cloud-storage a 4 KiB upload cost about 1.0 ms of CPU here (the upload
object, ``requests``' session pipeline with its environment scan for proxies on every call,
urllib3, ``http.client``), so a mirror pass of many small files was bound by the client's
CPU, as S3's was before :mod:`cloud_adapters.s3_direct`. This module sends the request the
library sends, a JSON API multipart upload (object resource, then the bytes), over
:mod:`cloud_adapters.http1`'s kept-alive connections.

Nothing is configured here: the endpoint (``STORAGE_EMULATOR_HOST`` or the API's), the
bucket path and the credentials come from the ``storage.Client`` that ``GCSStore`` built.
Credentials are applied per request with google-auth's own ``before_request`` (which
refreshes an expired token first), so service accounts, workload identity and user
credentials work as through the library. Where the client is something this path does not
model (mutual TLS, a proxy in the environment, credentials without ``before_request``)
``DirectGCS.build`` returns None and every upload goes through the library as before.

Errors come back as the library's ``google.api_core`` exceptions (``from_http_status``), so
``cloud_adapters.gcs._sdk_errors`` stays the one place that maps them.
"""

from __future__ import annotations

import json
import secrets
import warnings
from typing import Any
from urllib.parse import quote, urlsplit

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ImportWarning)  # see cloud_adapters.gcs
    import google.api_core.exceptions as gex
    from google.auth.transport.requests import Request as AuthRequest

from cloud_adapters.http1 import Connections, host_header, proxied, requests_ca_bundle

__all__ = ["DirectGCS"]


class DirectGCS:
    """Multipart uploads into one bucket over kept-alive connections. Thread-safe: the
    pool and the credentials are shared by every thread, as the library shares them."""

    def __init__(self, *, api_base: str, bucket: str, credentials: Any, ca_certs: str | None,
                 pool_size: int, timeout: float) -> None:
        parts = urlsplit(api_base)
        self._url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._path = f"{parts.path.rstrip('/')}/upload/storage/v1/b/{quote(bucket, safe='')}/o"
        self._host = host_header(parts)
        self._credentials = credentials
        self._auth_request = AuthRequest()  # only for a token refresh
        self._pool = Connections(parts, ca_certs, pool_size, timeout, timeout)

    @classmethod
    def build(cls, client: Any, bucket: str, *, pool_size: int, timeout: float = 60.0
              ) -> DirectGCS | None:
        """The direct path for ``client`` on ``bucket``, or None where this module does not
        model the client's configuration (then the library does every upload)."""
        try:
            session = client._http
            if getattr(session, "is_mtls", False):
                return None
            credentials = getattr(session, "credentials", None) or client._credentials
            if not callable(getattr(credentials, "before_request", None)):
                return None
            api_base = str(client._connection.API_BASE_URL)
            parts = urlsplit(api_base)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                return None
            if proxied(parts):
                return None
            return cls(api_base=api_base, bucket=bucket, credentials=credentials,
                       ca_certs=requests_ca_bundle(session.verify), pool_size=pool_size,
                       timeout=timeout)
        except Exception:  # noqa: BLE001 - any surprise: the library keeps doing every upload
            return None

    def put_object(self, key: str, data: bytes, sha256: str, if_generation_match: int | None
                   ) -> dict[str, Any]:
        """Upload ``data`` as ``key`` with metadata ``sha256``; the new object's resource.
        ``if_generation_match`` 0 means only if absent."""
        boundary = _boundary()
        while boundary in data:  # (never, in practice: 128 random bits)
            boundary = _boundary()
        resource = {"name": key, "metadata": {"sha256": sha256}}  # the type: the bytes' part
        sep = b"--" + boundary
        body = b"".join([
            sep, b"\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n",
            json.dumps(resource).encode(), b"\r\n",
            sep, b"\r\ncontent-type: application/octet-stream\r\n\r\n", data, b"\r\n",
            sep, b"--",
        ])
        target = f"{self._path}?uploadType=multipart"
        if if_generation_match is not None:
            target += f"&ifGenerationMatch={int(if_generation_match)}"
        headers = {"host": self._host, "accept": "application/json",
                   "content-type": f'multipart/related; boundary="{boundary.decode()}"'}
        self._credentials.before_request(self._auth_request, "POST", self._url + target, headers)
        status, _, answer = self._pool.request("POST", target, headers, body)
        if status >= 300:
            raise gex.from_http_status(status, _error_message(answer) or f"HTTP {status}")
        return dict(json.loads(answer))


def _boundary() -> bytes:
    """A multipart boundary in the library's own form, with 128 random bits."""
    return b"===============" + secrets.token_hex(16).encode() + b"=="


def _error_message(body: bytes) -> str:
    """The message of a JSON API error answer (``{"error": {"message": ...}}``), else its
    first bytes."""
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace").strip()
