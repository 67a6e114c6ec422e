"""``az://container/prefix`` through azure-storage-blob (block blobs).

Credentials: ``AZURE_STORAGE_CONNECTION_STRING`` if set (Azurite, account keys, SAS);
otherwise ``AZURE_STORAGE_ACCOUNT_URL`` (or ``AZURE_STORAGE_ACCOUNT`` ->
``https://<name>.blob.core.windows.net``) with ``DefaultAzureCredential`` (environment,
workload/managed identity, az CLI). Neither set -> ``PermissionDenied`` before any request.

Large objects are staged as blocks and committed with one ``Put Block List`` that carries
the sha256 metadata and the condition (``If-None-Match: *`` / ``If-Match: etag``), so the
object appears atomically; blocks of a failed upload stay uncommitted, never visible, and
are garbage-collected by the service. Small objects are one Put Blob, sent by
``azure_direct`` for a shared key or a token credential. The SDK's own retries
are off (``retry_total=0``): ``cloud_adapters.retry`` owns retrying. SDK exceptions (and
the direct path's, which are the same types) are translated in ``_sdk_errors``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, ClassVar

import azure.core.exceptions as aex
from azure.core import MatchConditions
from azure.storage.blob import BlobBlock, BlobServiceClient

from cloud_adapters.azure_direct import DirectAzure, NeedsSdk
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
from cloud_adapters.transfer import TransferPool
from cloud_adapters.uri import StoreURI

__all__ = ["AzureStore"]

_CLIENT_KW: dict[str, Any] = {"retry_total": 0, "connection_timeout": 10, "read_timeout": 60}
_POOL_CONNECTIONS = 64  # kept-alive connections of the direct path, as for S3 and GCS
# After the service challenges a token the direct path sent, small puts go through the SDK
# for this long. The SDK answers the challenge and caches the token it got (the one the
# direct path then sends too), so the direct path can take over again; the pause bounds what
# a challenge that comes back every time costs to one wasted request per pause.
_SDK_AFTER_CHALLENGE_S = 600.0
_PRECONDITION_CODES = {"BlobAlreadyExists", "ConditionNotMet", "TargetConditionNotMet"}
_NOT_FOUND_CODES = {"BlobNotFound", "ContainerNotFound", "ResourceNotFound"}


@contextlib.contextmanager
def _sdk_errors(uri: str) -> Iterator[None]:
    """The one place azure-core / azure-storage-blob exceptions become our errors."""
    try:
        yield
    except ObjectStoreError:
        raise
    except aex.HttpResponseError as exc:
        raw = getattr(exc, "error_code", "") or ""
        code = str(getattr(raw, "value", raw))
        status = int(getattr(exc, "status_code", 0) or 0)
        what = f"{status} {code or type(exc).__name__}"
        if (code in _PRECONDITION_CODES or status == 412
                or isinstance(exc, aex.ResourceModifiedError)):
            raise PreconditionFailed(what, uri=uri) from exc
        if code in _NOT_FOUND_CODES or status == 404:
            raise ObjectNotFound(what, uri=uri) from exc
        if isinstance(exc, aex.ClientAuthenticationError) or status in (401, 403):
            raise PermissionDenied(what, uri=uri) from exc
        if code in ("InvalidResourceName", "OutOfRangeInput"):
            raise InvalidURI(what, uri=uri) from exc
        if status in (408, 429) or status >= 500:
            raise TransientError(what, uri=uri) from exc
        raise ObjectStoreError(what, uri=uri) from exc
    except (aex.ServiceRequestError, aex.ServiceResponseError, aex.IncompleteReadError,
            ConnectionError, TimeoutError) as exc:
        raise TransientError(f"connection failed ({type(exc).__name__})", uri=uri) from exc
    except aex.ClientAuthenticationError as exc:  # pragma: no cover - subclass handled above
        raise PermissionDenied(f"authentication failed ({type(exc).__name__})",
                               uri=uri) from exc
    except ValueError as exc:  # malformed connection string etc. (message holds no secret)
        if "connection string" in str(exc).lower():
            raise MissingCredentials("AZURE_STORAGE_CONNECTION_STRING is malformed",
                                   uri=uri) from exc
        raise
    except Exception as exc:
        if type(exc).__name__ == "CredentialUnavailableError":
            raise MissingCredentials("no Azure credentials available", uri=uri) from exc
        raise


class AzureStore(ObjectStore):
    """An Azure Blob container plus key prefix."""

    scheme: ClassVar[str] = "az"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    delete_batch_size: ClassVar[int] = 256  # Blob Batch limit

    def __init__(self, uri: StoreURI) -> None:
        super().__init__(uri)
        self._container_name = uri.container
        self._container_obj: Any = None
        self._direct: DirectAzure | None = None
        self._direct_from = 0.0  # time.monotonic() before which small puts take the SDK

    def _make_sdk(self) -> Any:
        with _sdk_errors(self.uri):
            service = self._make_service()
            # One container client for the store's life (one per call cost a tenth of a
            # small put), and small puts skip the SDK's per-call pipeline (see
            # azure_direct); both built here, under the SDK lock, from the same client.
            self._container_obj = service.get_container_client(self._container_name)
            self._direct = DirectAzure.build(self._container_obj,
                                             pool_size=_POOL_CONNECTIONS)
            return service

    @property
    def _container(self) -> Any:
        if self._sdk_obj is None:
            self._sdk  # noqa: B018 - builds the client, the container's and the direct path
        return self._container_obj

    def _make_service(self) -> Any:
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if conn:
            return BlobServiceClient.from_connection_string(conn, **_CLIENT_KW)
        url = os.environ.get("AZURE_STORAGE_ACCOUNT_URL")
        account = os.environ.get("AZURE_STORAGE_ACCOUNT")
        if not url and account:
            url = f"https://{account}.blob.core.windows.net"
        if not url:
            raise MissingCredentials(
                "no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, or "
                "AZURE_STORAGE_ACCOUNT_URL / AZURE_STORAGE_ACCOUNT for DefaultAzureCredential",
                uri=self.uri,
            )
        from azure.identity import DefaultAzureCredential

        return BlobServiceClient(url, credential=DefaultAzureCredential(), **_CLIENT_KW)

    @staticmethod
    def _ts(value: Any) -> float:
        return value.timestamp() if value is not None else time.time()

    def _info(self, full_key: str, props: Any) -> ObjectInfo:
        sha = (props.metadata or {}).get("sha256")
        return ObjectInfo(key=full_key, size=int(props.size or 0),
                          sha256=sha.lower() if sha else None, etag=str(props.etag),
                          mtime=self._ts(props.last_modified))

    @staticmethod
    def _conditions(if_absent: bool, if_match: str | None) -> dict[str, Any]:
        if if_absent:
            return {"match_condition": MatchConditions.IfMissing}
        if if_match is not None:
            return {"etag": if_match, "match_condition": MatchConditions.IfNotModified}
        return {}

    def _put_small(
        self, full_key: str, data: bytes, sha256: str, if_absent: bool, if_match: str | None
    ) -> ObjectInfo:
        with _sdk_errors(self._obj_uri(self._rel(full_key))):
            container = self._container  # (builds the SDK client and the direct path)
            fast = self._direct
            if fast is not None and time.monotonic() >= self._direct_from:
                try:
                    etag, modified = fast.put_blob(full_key, data, sha256,
                                                   if_none_match=if_absent, if_match=if_match)
                    return ObjectInfo(key=full_key, size=len(data), sha256=sha256, etag=etag,
                                      mtime=time.time() if modified is None else modified)
                except NeedsSdk:  # the SDK answers the service's token challenges
                    self._direct_from = time.monotonic() + _SDK_AFTER_CHALLENGE_S
            blob = container.get_blob_client(full_key)
            r = blob.upload_blob(data, length=len(data), overwrite=True,
                                 metadata={"sha256": sha256}, max_concurrency=1,
                                 **self._conditions(if_absent, if_match))
        return ObjectInfo(key=full_key, size=len(data), sha256=sha256, etag=str(r["etag"]),
                          mtime=self._ts(r.get("last_modified")))

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
        blob = self._container.get_blob_client(full_key)
        tag = secrets.token_hex(8)

        def stage(numbered: tuple[int, bytes]) -> tuple[int, str]:
            n, body = numbered
            block_id = base64.b64encode(f"{tag}-{n:08d}".encode()).decode()
            with _sdk_errors(uri):
                blob.stage_block(block_id, body, length=len(body))
            return n, block_id

        pool = TransferPool(self.upload_workers, max_in_flight=self.upload_workers)
        staged = sorted(pool.map_unordered(stage, enumerate(parts)))
        with _sdk_errors(uri):
            r = blob.commit_block_list([BlobBlock(block_id=b) for _, b in staged],
                                       metadata={"sha256": sha256},
                                       **self._conditions(if_absent, if_match))
        return ObjectInfo(key=full_key, size=size, sha256=sha256, etag=str(r["etag"]),
                          mtime=self._ts(r.get("last_modified")))

    def _open_range(
        self, full_key: str, start: int, end: int | None, chunk_size: int
    ) -> tuple[ObjectInfo, Iterator[bytes]]:
        uri = self._obj_uri(self._rel(full_key))
        blob = self._container.get_blob_client(full_key)
        if end is not None and end <= start:
            return self._stat(full_key), iter(())
        with _sdk_errors(uri):
            try:
                dl = blob.download_blob(offset=start if (start or end is not None) else None,
                                        length=None if end is None else end - start,
                                        max_concurrency=1)
            except aex.HttpResponseError as exc:
                if getattr(exc, "status_code", 0) == 416:  # start at or past the end
                    return self._stat(full_key), iter(())
                raise
        info = self._info(full_key, dl.properties)
        total = str(getattr(dl.properties, "content_range", None) or "").rpartition("/")[2]
        if total.isdigit():  # a ranged read: properties.size is the range's, not the blob's
            info = replace(info, size=int(total))

        def chunks() -> Iterator[bytes]:
            with _sdk_errors(uri):
                for block in dl.chunks():
                    for i in range(0, len(block), chunk_size):
                        yield block[i:i + chunk_size]

        return info, chunks()

    def _stat(self, full_key: str) -> ObjectInfo:
        with _sdk_errors(self._obj_uri(self._rel(full_key))):
            props = self._container.get_blob_client(full_key).get_blob_properties()
        return self._info(full_key, props)

    def _list_page(
        self, full_prefix: str, token: str | None
    ) -> tuple[list[ObjectInfo], str | None]:
        with _sdk_errors(self.uri):
            pager = self._container.list_blobs(
                name_starts_with=full_prefix or None, include=["metadata"],
                results_per_page=self.page_size,
            ).by_page(continuation_token=token)
            page = next(pager, None)
            items = [self._info(p.name, p) for p in page] if page is not None else []
            return items, pager.continuation_token or None

    def _delete(self, full_key: str) -> None:
        with contextlib.suppress(ObjectNotFound), _sdk_errors(self._obj_uri(self._rel(full_key))):
            self._container.delete_blob(full_key)

    def _delete_batch(self, full_keys: list[str]) -> None:
        with _sdk_errors(self.uri):
            try:
                self._container.delete_blobs(*full_keys, raise_on_any_failure=False)
                return
            except aex.HttpResponseError as exc:
                if getattr(exc, "status_code", 0) not in (400, 404, 501):
                    raise
        TransferPool(8).run(self._delete, full_keys)  # no batch API (older emulators)

    def _copy(self, full_src: str, full_dst: str) -> ObjectInfo:
        uri = self._obj_uri(self._rel(full_dst))
        container = self._container
        src = container.get_blob_client(full_src)
        dst = container.get_blob_client(full_dst)
        with _sdk_errors(self._obj_uri(self._rel(full_src))):
            props = src.get_blob_properties()
        with _sdk_errors(uri):
            dst.start_copy_from_url(src.url, source_etag=props.etag,
                                    source_match_condition=MatchConditions.IfNotModified)
            deadline = time.monotonic() + 600
            while True:
                dprops = dst.get_blob_properties()
                status = dprops.copy.status
                if status in (None, "success"):
                    return self._info(full_dst, dprops)
                if status != "pending" or time.monotonic() > deadline:
                    raise ObjectStoreError(f"server-side copy ended {status}", uri=uri)
                time.sleep(0.2)

    def _make_container(self) -> None:
        with _sdk_errors(self.uri):
            try:
                self._container.create_container()
            except aex.ResourceExistsError:
                pass
