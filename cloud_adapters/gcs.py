"""``gs://bucket/prefix`` through google-cloud-storage.

Credentials: with ``STORAGE_EMULATOR_HOST`` set (fake-gcs-server, tests) anonymous
credentials against that endpoint, project from ``GOOGLE_CLOUD_PROJECT`` or "gns";
otherwise Application Default Credentials (workload identity, gcloud, key file env).

The etag we hand out is the object *generation*, because GCS preconditions work on
generations: ``if_absent`` is ``if_generation_match=0``, ``if_match`` is
``if_generation_match=<generation>``. Large objects go through a resumable upload whose
final chunk is only sent after the streamed bytes matched their sha256; an unfinished
resumable session is never visible. The client library's retries are off (``retry=None``):
``cloud_adapters.retry`` owns retrying. SDK exceptions are translated in ``_sdk_errors``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any, ClassVar

with warnings.catch_warnings():
    # google.api_core warns (ImportWarning) that grpcio-status is absent; we use only the
    # JSON API, so the hint is noise, and the test suite turns warnings into errors.
    warnings.simplefilter("ignore", ImportWarning)
    import google.api_core.exceptions as gex
    import google.auth.exceptions as gauth
    import requests
    from google.api_core.datetime_helpers import from_rfc3339
    from google.cloud import storage

from cloud_adapters.base import Capability, ObjectInfo, ObjectStore
from cloud_adapters.errors import (
    InvalidURI,
    MissingCredentials,
    ObjectNotFound,
    ObjectStoreError,
    PermissionDenied,
    PreconditionFailed,
    TransientError,
)
from cloud_adapters.gcs_direct import DirectGCS
from cloud_adapters.transfer import TransferPool
from cloud_adapters.uri import StoreURI

_rm_common: ModuleType | None
try:  # the resumable-media exceptions moved packages across releases
    _rm_common = importlib.import_module("google.resumable_media.common")
except ImportError:  # pragma: no cover
    _rm_common = None

__all__ = ["GCSStore"]

_CHUNK_ALIGN = 256 * 1024
_DOWNLOAD_REQUEST = 16 * 2**20


def _from_status(status: int, what: str, uri: str) -> ObjectStoreError:
    if status == 404:
        return ObjectNotFound(what, uri=uri)
    if status == 412:
        return PreconditionFailed(what, uri=uri)
    if status in (401, 403):
        return PermissionDenied(what, uri=uri)
    if status in (408, 429) or status >= 500:
        return TransientError(what, uri=uri)
    return ObjectStoreError(what, uri=uri)


@contextlib.contextmanager
def _sdk_errors(uri: str) -> Iterator[None]:
    """The one place google-cloud-storage exceptions become ``cloud_adapters`` errors."""
    try:
        yield
    except ObjectStoreError:
        raise
    except gex.GoogleAPICallError as exc:
        status = int(exc.code or 0)
        what = f"{status} {type(exc).__name__}: {exc.message}"
        if status == 400 and "bucket" in str(exc.message).lower() and "name" in str(
            exc.message).lower():
            raise InvalidURI(what, uri=uri) from exc
        raise _from_status(status, what, uri) from exc
    except gauth.DefaultCredentialsError as exc:
        raise MissingCredentials(
            "no Google credentials found (set up Application Default Credentials, or "
            "STORAGE_EMULATOR_HOST for an emulator)", uri=uri) from exc
    except gauth.GoogleAuthError as exc:
        raise PermissionDenied(f"authentication failed ({type(exc).__name__})",
                               uri=uri) from exc
    except (requests.ConnectionError, requests.Timeout,
            requests.exceptions.ChunkedEncodingError, ConnectionError, TimeoutError) as exc:
        raise TransientError(f"connection failed ({type(exc).__name__})", uri=uri) from exc
    except Exception as exc:
        if _rm_common is not None and isinstance(exc, _rm_common.InvalidResponse):
            status = int(getattr(exc.response, "status_code", 0) or 0)
            raise _from_status(status, f"{status} from upload/download", uri) from exc
        raise


_POOL_CONNECTIONS = 64
"""Keep-alive connections per host: every thread of a transfer pool (and of the mirror
engine's small-file pipeline) keeps its own, where requests' default of 10 made the others
discard and reopen a connection per request."""


def _widen_pool(session: Any) -> None:
    """Give the SDK's HTTP session ``_POOL_CONNECTIONS`` connections per host; adapters
    other than requests' plain one (an mTLS set-up, say) are left as they are."""
    for prefix in ("https://", "http://"):
        if type(session.adapters.get(prefix)) is requests.adapters.HTTPAdapter:
            session.mount(prefix, requests.adapters.HTTPAdapter(
                pool_connections=_POOL_CONNECTIONS, pool_maxsize=_POOL_CONNECTIONS))


class _PartsReader(io.RawIOBase):
    """The stream an upload reads: the parts in order, handed out as they are when a read
    asks for at least a whole part (the chunk size is the part size), and a position for
    the SDK's ``tell()``. Not seekable: the SDK's retries are off."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self._parts = parts
        self._head = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        want = None if size is None or size < 0 else size
        out: list[bytes] = []
        got = 0
        while want is None or got < want:
            if not self._head:
                self._head = next(self._parts, b"")
                if not self._head:
                    break
            take = self._head if want is None else self._head[:want - got]
            self._head = self._head[len(take):]
            out.append(take)
            got += len(take)
        self._pos += got
        return out[0] if len(out) == 1 else b"".join(out)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)


class GCSStore(ObjectStore):
    """A GCS bucket plus key prefix."""

    scheme: ClassVar[str] = "gs"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    delete_batch_size: ClassVar[int] = 1000

    def __init__(self, uri: StoreURI) -> None:
        super().__init__(uri)
        self._bucket_name = uri.container
        self._direct: DirectGCS | None = None

    def _make_sdk(self) -> Any:
        with _sdk_errors(self.uri):
            emulator = os.environ.get("STORAGE_EMULATOR_HOST")
            project = os.environ.get("GOOGLE_CLOUD_PROJECT")
            if emulator:
                from google.auth.credentials import AnonymousCredentials

                if "://" not in emulator:
                    emulator = "http://" + emulator
                client = storage.Client(
                    project=project or "gns",
                    credentials=AnonymousCredentials(),
                    client_options={"api_endpoint": emulator},
                )
            else:
                client = storage.Client(project=project)
            _widen_pool(client._http)
        # Small uploads skip the library's per-call machinery (see gcs_direct); built here,
        # under the SDK lock, from the same client, so both see the same settings.
        self._direct = DirectGCS.build(client, self._bucket_name, pool_size=_POOL_CONNECTIONS)
        return client

    @property
    def _fast(self) -> DirectGCS | None:
        if self._sdk_obj is None:
            self._sdk  # noqa: B018 - builds the client and the direct path
        return self._direct

    @property
    def _bucket(self) -> Any:
        return self._sdk.bucket(self._bucket_name)

    def _info(self, blob: Any) -> ObjectInfo:
        sha = (blob.metadata or {}).get("sha256")
        return ObjectInfo(
            key=blob.name,
            size=int(blob.size or 0),
            sha256=sha.lower() if sha else None,
            etag=str(blob.generation),
            mtime=blob.updated.timestamp() if blob.updated else 0.0,
        )

    @staticmethod
    def _resource_info(resource: dict[str, Any]) -> ObjectInfo:
        """``_info`` of an object resource as the JSON API returns it."""
        sha = (resource.get("metadata") or {}).get("sha256")
        updated = resource.get("updated")
        return ObjectInfo(
            key=str(resource["name"]),
            size=int(resource.get("size") or 0),
            sha256=sha.lower() if sha else None,
            etag=str(resource["generation"]),
            mtime=from_rfc3339(updated).timestamp() if updated else 0.0,
        )

    @staticmethod
    def _conditions(if_absent: bool, if_match: str | None, uri: str) -> dict[str, int]:
        if if_absent:
            return {"if_generation_match": 0}
        if if_match is not None:
            if not if_match.isdigit():
                raise PreconditionFailed(f"etag {if_match!r} is not a GCS generation", uri=uri)
            return {"if_generation_match": int(if_match)}
        return {}

    def _put_small(
        self, full_key: str, data: bytes, sha256: str, if_absent: bool, if_match: str | None
    ) -> ObjectInfo:
        uri = self._obj_uri(self._rel(full_key))
        cond = self._conditions(if_absent, if_match, uri)
        fast = self._fast
        with _sdk_errors(uri):
            if fast is not None:
                return self._resource_info(
                    fast.put_object(full_key, data, sha256, cond.get("if_generation_match")))
            blob = self._bucket.blob(full_key)
            blob.metadata = {"sha256": sha256}
            blob.upload_from_string(data, content_type="application/octet-stream",
                                    checksum=None, retry=None, **cond)
        return self._info(blob)

    def _put_parts(
        self,
        full_key: str,
        parts: Iterator[bytes],
        size: int,
        sha256: str,
        if_absent: bool,
        if_match: str | None,
        part_size: int,
    ) -> ObjectInfo:
        uri = self._obj_uri(self._rel(full_key))
        cond = self._conditions(if_absent, if_match, uri)
        chunk = max(_CHUNK_ALIGN, part_size // _CHUNK_ALIGN * _CHUNK_ALIGN)
        with _sdk_errors(uri):
            blob = self._bucket.blob(full_key, chunk_size=chunk)
            blob.metadata = {"sha256": sha256}
            # The SDK's own resumable upload, reading our parts as a stream: each chunk
            # request carries a part as is (no copy through a writer's buffer), and the
            # final response sets the blob's properties (no reload). ``parts`` raises
            # before yielding the final part if the bytes are wrong, so the final chunk is
            # never sent and the unfinished session never becomes visible.
            blob.upload_from_file(_PartsReader(parts), size=size, checksum=None, retry=None,
                                  content_type="application/octet-stream", **cond)
        return self._info(blob)

    def _open_range(
        self, full_key: str, start: int, end: int | None, chunk_size: int
    ) -> tuple[ObjectInfo, Iterator[bytes]]:
        uri = self._obj_uri(self._rel(full_key))
        with _sdk_errors(uri):
            blob = self._bucket.get_blob(full_key, retry=None)
        if blob is None:
            raise ObjectNotFound("no such object", uri=uri)
        info = self._info(blob)
        stop = info.size if end is None else min(end, info.size)

        def chunks() -> Iterator[bytes]:
            pos = start
            request = max(chunk_size, _DOWNLOAD_REQUEST)
            while pos < stop:
                upto = min(stop, pos + request)
                with _sdk_errors(uri):  # generation-pinned: a replaced object is a 404
                    data = blob.download_as_bytes(start=pos, end=upto - 1, checksum=None,
                                                  retry=None)
                if not data:
                    raise TransientError("empty ranged read", uri=uri)
                pos += len(data)
                for i in range(0, len(data), chunk_size):
                    yield data[i:i + chunk_size]

        return info, chunks()

    def _stat(self, full_key: str) -> ObjectInfo:
        uri = self._obj_uri(self._rel(full_key))
        with _sdk_errors(uri):
            blob = self._bucket.get_blob(full_key, retry=None)
        if blob is None:
            raise ObjectNotFound("no such object", uri=uri)
        return self._info(blob)

    def _list_page(
        self, full_prefix: str, token: str | None
    ) -> tuple[list[ObjectInfo], str | None]:
        with _sdk_errors(self.uri):
            it = self._bucket.list_blobs(prefix=full_prefix or None, page_size=self.page_size,
                                         page_token=token, retry=None)
            page = next(it.pages, None)
            items = [self._info(b) for b in page] if page is not None else []
            return items, it.next_page_token

    def _delete(self, full_key: str) -> None:
        uri = self._obj_uri(self._rel(full_key))
        with contextlib.suppress(ObjectNotFound), _sdk_errors(uri):
            self._bucket.blob(full_key).delete(retry=None)

    def _delete_batch(self, full_keys: list[str]) -> None:
        # JSON batch requests are not served by fake-gcs-server; parallel deletes are.
        TransferPool(8).run(self._delete, full_keys)

    def _copy(self, full_src: str, full_dst: str) -> ObjectInfo:
        uri = self._obj_uri(self._rel(full_dst))
        with _sdk_errors(uri):
            bucket = self._bucket
            src = bucket.get_blob(full_src, retry=None)
            if src is None:
                raise ObjectNotFound("copy source missing", uri=self._obj_uri(self._rel(full_src)))
            dst = bucket.blob(full_dst)
            token, _, _ = dst.rewrite(src, retry=None, if_source_generation_match=src.generation)
            while token is not None:
                token, _, _ = dst.rewrite(src, token=token, retry=None,
                                          if_source_generation_match=src.generation)
            dst.reload(retry=None)
        return self._info(dst)

    def _make_container(self) -> None:
        with contextlib.suppress(PreconditionFailed), _sdk_errors(self.uri):
            try:
                self._bucket.create(retry=None)
            except gex.Conflict:
                pass
