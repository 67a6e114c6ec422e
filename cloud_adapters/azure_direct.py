"""Small Azure Blob uploads (the one-request puts mirroring sends per small file) without the
SDK's per-call pipeline.

Why: through azure-storage-blob a 4 KiB upload cost 1.5 to 1.9 ms of CPU here (a blob client
per call, azure-core's pipeline of policies, ``requests``' session with its environment scan
for proxies, urllib3, ``http.client``), so a mirror pass of many small files was bound by the
client's CPU, as S3's and GCS's were before :mod:`cloud_adapters.s3_direct` and
:mod:`cloud_adapters.gcs_direct`. This module sends the request the SDK sends for a small
block blob, Put Blob (``x-ms-blob-type: BlockBlob``, the ``sha256`` metadata, the
condition), authorised as the SDK authorises it (below), over :mod:`cloud_adapters.http1`'s
kept-alive connections.

Nothing is configured here: the container's URL, the credential, the service version and
the user agent come from the SDK's container client that ``AzureStore`` built. Two
credentials are modelled:

* the account's shared key (a connection string with ``AccountKey``, Azurite's): each
  request is signed here, exactly as the SDK signs it;
* a token credential (``DefaultAzureCredential``: workload or managed identity, az CLI),
  over HTTPS: the ``Authorization`` header comes from the SDK's own bearer-token policy
  object, so the token's scope, caching and refresh are the SDK's. A 401 (the service
  challenging the token, as for another tenant) is not handled here: ``NeedsSdk`` tells the
  store to send that upload, and those of the next minutes, through the SDK, which answers
  the challenge and caches the token it got for this path's later requests.

Where the client has neither (a SAS, anonymous access) or the environment names a proxy,
``DirectAzure.build`` returns None and the SDK does every upload as before.

Errors come back as azure-core's exceptions with the service's status and error code, as
the SDK raises them, so ``cloud_adapters.azure._sdk_errors`` stays the one place that maps
them.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import re
import uuid
from typing import Any
from urllib.parse import quote, urlsplit

import azure.core.exceptions as aex
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.rest import HttpRequest

from cloud_adapters.http1 import Connections, host_header, http_date, proxied, requests_ca_bundle

__all__ = ["DirectAzure", "NeedsSdk"]

# The exception azure-storage-blob raises per status (its process_storage_error); the error
# code rides along as ``error_code``, as on the SDK's own.
_ERROR_BY_STATUS: dict[int, type[aex.HttpResponseError]] = {
    401: aex.ClientAuthenticationError,
    403: aex.ClientAuthenticationError,
    404: aex.ResourceNotFoundError,
    409: aex.ResourceExistsError,
    412: aex.ResourceModifiedError,
}
_MESSAGE = re.compile(rb"<Message>(.*?)</Message>", re.DOTALL)


class NeedsSdk(Exception):
    """The service challenged a token this path sent: send through the SDK, which answers
    challenges, for a while."""


class DirectAzure:
    """Put Blob into one container over kept-alive connections. Thread-safe: the pool is
    shared by every thread, as the SDK's is."""

    def __init__(self, *, container_url: str, api_version: str, user_agent: str,
                 ca_certs: str | None, pool_size: int, timeout: float,
                 shared_key: tuple[str, str] | None = None,
                 token_policy: BearerTokenCredentialPolicy[Any, Any] | None = None) -> None:
        """Exactly one of ``shared_key`` (account name, base64 key) and ``token_policy``."""
        if (shared_key is None) == (token_policy is None):
            raise ValueError("DirectAzure takes a shared key or a token policy")
        parts = urlsplit(container_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path = parts.path.rstrip("/")
        self._account, key = shared_key or ("", "")
        self._key = base64.b64decode(key)
        self._token_policy = token_policy
        self._version = api_version
        self._user_agent = user_agent
        self._host = host_header(parts)
        self._pool = Connections(parts, ca_certs, pool_size, timeout, timeout)

    @classmethod
    def build(cls, container: Any, *, pool_size: int, timeout: float = 60.0
              ) -> DirectAzure | None:
        """The direct path for the SDK's ``container`` client, or None where this module
        does not model the client's configuration (then the SDK does every upload)."""
        try:
            parts = urlsplit(str(container.url))
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
                return None  # (a query: a SAS in the URL)
            if proxied(parts):
                return None
            credential = container.credential
            name = getattr(credential, "account_name", None)
            key = getattr(credential, "account_key", None)
            shared_key: tuple[str, str] | None = None
            token_policy = None
            if isinstance(name, str) and isinstance(key, str):
                base64.b64decode(key, validate=True)  # the SDK would fail to sign: let it say so
                shared_key = (name, key)
            else:
                token_policy = _token_policy(container)
                if token_policy is None or parts.scheme != "https":
                    return None  # a SAS credential, anonymous; a token only over HTTPS
            policy = getattr(getattr(container, "_config", None), "user_agent_policy", None)
            user_agent = str(getattr(policy, "user_agent", None) or "gns")  # (not signed)
            return cls(container_url=str(container.url), api_version=str(container.api_version),
                       user_agent=user_agent, pool_size=pool_size,
                       ca_certs=requests_ca_bundle(),  # azure-core sends through requests
                       timeout=timeout, shared_key=shared_key, token_policy=token_policy)
        except Exception:  # noqa: BLE001 - any surprise: the SDK keeps doing every upload
            return None

    def put_blob(self, name: str, data: bytes, sha256: str, *, if_none_match: bool = False,
                 if_match: str | None = None) -> tuple[str, float | None]:
        """Upload ``data`` as block blob ``name`` with metadata ``sha256``, only if absent
        (``if_none_match``) or only over etag ``if_match``; the new blob's ETag and
        Last-Modified time (None if the service sent none). ``NeedsSdk`` if the service
        challenged our token."""
        target = f"{self._path}/{quote(name, safe='~/')}"  # the SDK's own quoting of a name
        date = email.utils.formatdate(usegmt=True)
        request_id = str(uuid.uuid4())
        headers = {
            "host": self._host,
            "x-ms-meta-sha256": sha256,
            "x-ms-blob-type": "BlockBlob",
            "x-ms-version": self._version,
            "content-type": "application/octet-stream",
            "accept": "application/xml",
            "user-agent": self._user_agent,
            "x-ms-date": date,
            "x-ms-client-request-id": request_id,
        }
        if if_none_match:
            headers["if-none-match"] = "*"
        elif if_match is not None:
            headers["if-match"] = if_match
        if self._token_policy is not None:
            headers["authorization"] = _bearer(self._token_policy, self._origin + target)
        else:
            # The SDK's string to sign: verb, eleven standard headers (only these four can be
            # set here), the x-ms- headers in the service's order, the resource; no query.
            length = str(len(data)) if data else ""
            to_sign = (
                f"PUT\n\n\n{length}\n\napplication/octet-stream\n\n\n"
                f"{if_match or ''}\n{'*' if if_none_match else ''}\n\n\n"
                f"x-ms-blob-type:BlockBlob\nx-ms-client-request-id:{request_id}\n"
                f"x-ms-date:{date}\nx-ms-meta-sha256:{sha256}\nx-ms-version:{self._version}\n"
                f"/{self._account}{target}"
            )
            signature = base64.b64encode(
                hmac.new(self._key, to_sign.encode(), hashlib.sha256).digest()).decode()
            headers["authorization"] = f"SharedKey {self._account}:{signature}"
        status, answer_headers, answer = self._pool.request("PUT", target, headers, data)
        if status == 401 and self._token_policy is not None:
            raise NeedsSdk(f"the service challenged the token ({status})")
        if status >= 300:
            raise _service_error(status, answer_headers, answer)
        return answer_headers.get("etag", ""), http_date(answer_headers.get("last-modified"))


def _bearer(policy: BearerTokenCredentialPolicy[Any, Any], url: str) -> str:
    """The ``Authorization`` the SDK's own token policy gives a request to ``url`` (its
    token, got and renewed as the SDK does; it refuses a URL that is not HTTPS)."""
    request = PipelineRequest(HttpRequest("PUT", url), PipelineContext(None))
    policy.on_request(request)
    return str(request.http_request.headers["Authorization"])


def _token_policy(container: Any) -> BearerTokenCredentialPolicy[Any, Any] | None:
    """The bearer-token policy the container's pipeline runs: the very object whose cached
    token the SDK's own calls use (a client made from another shares its parent's pipeline,
    and holds an unused policy of its own)."""
    pipeline = getattr(container, "_pipeline", None)
    for policy in getattr(pipeline, "_impl_policies", None) or ():
        if isinstance(policy, BearerTokenCredentialPolicy):
            return policy
    return None


def _service_error(status: int, headers: dict[str, str], body: bytes) -> aex.HttpResponseError:
    """The exception the SDK raises for this answer: its class by status, with the service's
    error code and message."""
    code = headers.get("x-ms-error-code", "")
    found = _MESSAGE.search(body)
    message = found.group(1).decode("utf-8", "replace").strip() if found else f"HTTP {status}"
    exc = _ERROR_BY_STATUS.get(status, aex.HttpResponseError)(
        message=f"{message}\nErrorCode:{code}" if code else message)
    exc.status_code = status
    exc.error_code = code or None  # type: ignore[attr-defined]
    return exc
