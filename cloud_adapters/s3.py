"""``s3://bucket/prefix`` through boto3: AWS S3 and S3-compatible stores (MinIO, Ceph RGW,
SeaweedFS, R2) — those are configuration (``AWS_ENDPOINT_URL``), never subclasses.

Credentials, region and endpoint come only from boto3's default chain (environment,
profiles, instance/workload roles, ``AWS_ENDPOINT_URL``); region defaults to us-east-1 when
none is configured. Large objects use multipart upload with the sha256 as user metadata,
conditional puts use ``If-None-Match: *`` / ``If-Match`` on PutObject and
CompleteMultipartUpload, and any failed multipart upload is aborted so nothing partial is
left. botocore's own retries are off: ``cloud_adapters.retry`` owns retrying, so attempts do
not multiply. boto3/botocore exceptions are translated in ``_sdk_errors`` only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import boto3
import botocore.exceptions as bex
from botocore.config import Config
from botocore.httpchecksum import DEFAULT_CHECKSUM_ALGORITHM

from cloud_adapters.base import Capability, ClosingIterator, ObjectInfo, ObjectStore
from cloud_adapters.errors import (
    InvalidURI,
    MissingCredentials,
    ObjectNotFound,
    ObjectStoreError,
    PermissionDenied,
    PreconditionFailed,
    TransientError,
)
from cloud_adapters.s3_direct import DirectS3
from cloud_adapters.transfer import TransferPool
from cloud_adapters.uri import StoreURI

__all__ = ["S3Store"]

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchUpload"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
_DENIED = {
    "AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "AllAccessDisabled", "AccountProblem", "Forbidden",
}
_TRANSIENT = {
    "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling",
    "ThrottlingException", "RequestTimeTooSkewed", "503", "500", "502", "504",
}
_MAX_COPY_SINGLE = 5 * 2**30


@contextlib.contextmanager
def _sdk_errors(uri: str) -> Iterator[None]:
    """The one place boto3/botocore exceptions become ``cloud_adapters`` errors."""
    try:
        yield
    except ObjectStoreError:
        raise
    except bex.ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        what = f"{code or status}: {err.get('Message') or 'no message'}"
        if code in _NOT_FOUND or status == 404:
            raise ObjectNotFound(what, uri=uri) from exc
        if code in _PRECONDITION or status == 412:
            raise PreconditionFailed(what, uri=uri) from exc
        if code in _DENIED or status in (401, 403):
            raise PermissionDenied(what, uri=uri) from exc
        if code in _TRANSIENT or status >= 500 or status == 429:
            raise TransientError(what, uri=uri) from exc
        if code == "InvalidBucketName":
            raise InvalidURI(what, uri=uri) from exc
        raise ObjectStoreError(what, uri=uri) from exc
    except (bex.NoCredentialsError, bex.PartialCredentialsError,
            bex.CredentialRetrievalError) as exc:
        raise MissingCredentials(f"no usable AWS credentials ({type(exc).__name__})",
                               uri=uri) from exc
    except (bex.EndpointConnectionError, bex.ConnectionClosedError, bex.ReadTimeoutError,
            bex.ConnectTimeoutError, bex.ResponseStreamingError,
            bex.HTTPClientError) as exc:
        raise TransientError(f"connection failed ({type(exc).__name__})", uri=uri) from exc
    except bex.ParamValidationError as exc:
        raise InvalidURI(f"rejected by boto3: {exc}", uri=uri) from exc
    except bex.BotoCoreError as exc:
        raise ObjectStoreError(f"{type(exc).__name__}: {exc}", uri=uri) from exc
    except (ConnectionError, TimeoutError) as exc:
        raise TransientError(f"connection failed ({type(exc).__name__})", uri=uri) from exc


class S3Store(ObjectStore):
    """An S3 bucket plus key prefix."""

    scheme: ClassVar[str] = "s3"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    delete_batch_size: ClassVar[int] = 1000

    pool_connections: ClassVar[int] = 64
    """Connections kept per store: enough for a mirror pass's requests in flight."""

    def __init__(self, uri: StoreURI) -> None:
        super().__init__(uri)
        self._bucket = uri.container
        self._direct: DirectS3 | None = None

    def _make_sdk(self) -> Any:
        with _sdk_errors(self.uri):
            session = boto3.session.Session()
            region = session.region_name or "us-east-1"
            client = session.client(
                "s3",
                region_name=region,
                config=Config(
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    max_pool_connections=self.pool_connections,
                    connect_timeout=10,
                    read_timeout=60,
                ),
            )
        # Small puts and heads skip botocore's per-call pipeline (see s3_direct); built
        # here, under the SDK lock, from the same session, so both see the same settings.
        self._direct = DirectS3.build(client, session, self._bucket,
                                      pool_size=self.pool_connections)
        return client

    @property
    def _client(self) -> Any:
        return self._sdk

    @property
    def _fast(self) -> DirectS3 | None:
        if self._sdk_obj is None:
            self._sdk  # noqa: B018 - builds the client and the direct path
        return self._direct

    def _info(self, full_key: str, size: int, meta: dict[str, str] | None, etag: str,
              mtime: Any) -> ObjectInfo:
        ts = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime or time.time())
        sha = (meta or {}).get("sha256")
        return ObjectInfo(key=full_key, size=int(size), sha256=sha.lower() if sha else None,
                          etag=etag, mtime=ts)

    def _part_checksum(self) -> dict[str, str]:
        """What boto3's managed upload (s3transfer) declares for a multipart upload when
        botocore computes request checksums (``when_supported``, its default since 1.36):
        the upload is created with the algorithm its parts' checksums use, and the parts'
        checksums go into the completion, so the store ties them to the object as it does
        for boto3's own uploads (and moto, for one, took a fifth longer per upload without
        the declaration)."""
        if self._client.meta.config.request_checksum_calculation != "when_supported":
            return {}
        return {"ChecksumAlgorithm": DEFAULT_CHECKSUM_ALGORITHM}

    @staticmethod
    def _conditions(if_absent: bool, if_match: str | None) -> dict[str, str]:
        if if_absent:
            return {"IfNoneMatch": "*"}
        if if_match is not None:
            return {"IfMatch": if_match}
        return {}

    def _put_small(
        self, full_key: str, data: bytes, sha256: str, if_absent: bool, if_match: str | None
    ) -> ObjectInfo:
        fast = self._fast
        with _sdk_errors(self._obj_uri(self._rel(full_key))):
            if fast is not None:
                etag = fast.put_object(full_key, data, sha256,
                                       self._conditions(if_absent, if_match)).etag
            else:
                etag = self._client.put_object(
                    Bucket=self._bucket, Key=full_key, Body=data, Metadata={"sha256": sha256},
                    **self._conditions(if_absent, if_match),
                )["ETag"]
        return self._info(full_key, len(data), {"sha256": sha256}, etag, time.time())

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
        client = self._client
        checksum = self._part_checksum()
        with _sdk_errors(uri):
            upload_id = client.create_multipart_upload(
                Bucket=self._bucket, Key=full_key, Metadata={"sha256": sha256}, **checksum
            )["UploadId"]
        try:
            def send(numbered: tuple[int, bytes]) -> dict[str, Any]:
                n, body = numbered
                with _sdk_errors(uri):
                    r = client.upload_part(Bucket=self._bucket, Key=full_key,
                                           UploadId=upload_id, PartNumber=n, Body=body,
                                           **checksum)
                part = {"PartNumber": n, "ETag": r["ETag"]}
                if checksum:
                    member = "Checksum" + checksum["ChecksumAlgorithm"]
                    if member in r:
                        part[member] = r[member]
                return part

            pool = TransferPool(self.upload_workers, max_in_flight=self.upload_workers)
            done = sorted(pool.map_unordered(send, enumerate(parts, start=1)),
                          key=lambda p: p["PartNumber"])
            with _sdk_errors(uri):
                r = client.complete_multipart_upload(
                    Bucket=self._bucket, Key=full_key, UploadId=upload_id,
                    MultipartUpload={"Parts": done}, **self._conditions(if_absent, if_match),
                )
        except BaseException:
            with contextlib.suppress(Exception):
                client.abort_multipart_upload(Bucket=self._bucket, Key=full_key,
                                              UploadId=upload_id)
            raise
        return self._info(full_key, size, {"sha256": sha256}, r["ETag"], time.time())

    def _open_range(
        self, full_key: str, start: int, end: int | None, chunk_size: int
    ) -> tuple[ObjectInfo, Iterator[bytes]]:
        uri = self._obj_uri(self._rel(full_key))
        if end is not None and end <= start:
            return self._stat(full_key), iter(())
        kwargs: dict[str, Any] = {}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        try:
            with _sdk_errors(uri):
                r = self._client.get_object(Bucket=self._bucket, Key=full_key, **kwargs)
        except ObjectStoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, bex.ClientError) and (
                cause.response.get("Error", {}).get("Code") == "InvalidRange"
            ):
                return self._stat(full_key), iter(())  # start at or past the end
            raise
        total = r["ContentLength"]
        if "ContentRange" in r:
            total = int(str(r["ContentRange"]).rpartition("/")[2])
        info = self._info(full_key, total, r.get("Metadata"), r["ETag"], r.get("LastModified"))
        body = r["Body"]

        def chunks() -> Iterator[bytes]:
            with _sdk_errors(uri):
                yield from body.iter_chunks(chunk_size)

        return info, ClosingIterator(chunks(), body.close)

    def _stat(self, full_key: str) -> ObjectInfo:
        fast = self._fast
        with _sdk_errors(self._obj_uri(self._rel(full_key))):
            if fast is not None:
                h = fast.head_object(full_key)
                meta = {"sha256": h.headers["x-amz-meta-sha256"]} if (
                    "x-amz-meta-sha256" in h.headers) else None
                return self._info(full_key, int(h.headers.get("content-length", 0)), meta,
                                  h.etag, h.mtime)
            r = self._client.head_object(Bucket=self._bucket, Key=full_key)
        return self._info(full_key, r["ContentLength"], r.get("Metadata"), r["ETag"],
                          r.get("LastModified"))

    def _list_page(
        self, full_prefix: str, token: str | None
    ) -> tuple[list[ObjectInfo], str | None]:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": full_prefix,
                                  "MaxKeys": self.page_size}
        if token:
            kwargs["ContinuationToken"] = token
        with _sdk_errors(self.uri):
            r = self._client.list_objects_v2(**kwargs)
        items = [self._info(o["Key"], o["Size"], None, o["ETag"], o.get("LastModified"))
                 for o in r.get("Contents", ())]
        return items, (r.get("NextContinuationToken") if r.get("IsTruncated") else None)

    def _delete(self, full_key: str) -> None:
        with _sdk_errors(self._obj_uri(self._rel(full_key))):
            self._client.delete_object(Bucket=self._bucket, Key=full_key)

    def _delete_batch(self, full_keys: list[str]) -> None:
        with _sdk_errors(self.uri):
            r = self._client.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": k} for k in full_keys], "Quiet": True},
            )
        errors = [e for e in r.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
        if errors:
            e = errors[0]
            err = bex.ClientError({"Error": {"Code": e.get("Code"), "Message": e.get("Message")}},
                                  "DeleteObjects")
            with _sdk_errors(self._obj_uri(self._rel(e.get("Key", "")))):
                raise err

    def _copy(self, full_src: str, full_dst: str) -> ObjectInfo:
        src = self._stat(full_src)
        with _sdk_errors(self._obj_uri(self._rel(full_dst))):
            if src.size <= _MAX_COPY_SINGLE:
                r = self._client.copy_object(
                    Bucket=self._bucket, Key=full_dst,
                    CopySource={"Bucket": self._bucket, "Key": full_src},
                    CopySourceIfMatch=src.etag, MetadataDirective="COPY",
                )
                etag = r["CopyObjectResult"]["ETag"]
            else:
                extra = {"Metadata": {"sha256": src.sha256}} if src.sha256 else {}
                self._client.copy({"Bucket": self._bucket, "Key": full_src}, self._bucket,
                                  full_dst, ExtraArgs=extra)
                etag = self._client.head_object(Bucket=self._bucket, Key=full_dst)["ETag"]
        return ObjectInfo(key=full_dst, size=src.size, sha256=src.sha256, etag=etag,
                          mtime=time.time())

    def _make_container(self) -> None:
        with _sdk_errors(self.uri):
            client = self._client
            region = client.meta.region_name
            kwargs: dict[str, Any] = {"Bucket": self._bucket}
            if region and region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                client.create_bucket(**kwargs)
            except bex.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in (
                    "BucketAlreadyOwnedByYou", "BucketAlreadyExists"
                ):
                    raise
