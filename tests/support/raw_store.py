"""An object-store target prefix read (and written) with the vendor SDK directly, so tests
check what gns stored without going through ``cloud_adapters``."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tests.fixtures.objectstores import ServerHandle


class RawStore:
    """One ``s3://``, ``gs://``, ``az://`` or ``file://`` prefix on an emulator (``srv``)."""

    def __init__(self, uri: str, srv: ServerHandle | None) -> None:
        self.uri = uri
        self.srv = srv
        self.scheme, rest = uri.split("://", 1)
        if self.scheme == "file":
            self.root = Path(rest)
            self.bucket, self.prefix = "", ""
        else:
            self.bucket, _, p = rest.partition("/")
            self.prefix = p.strip("/") + "/" if p.strip("/") else ""
        self._client: Any = None

    # -- SDK clients (one per store, made on first use) --
    def _s3(self) -> Any:
        if self._client is None:
            import boto3

            assert self.srv is not None
            self._client = boto3.client(
                "s3", endpoint_url=self.srv.endpoint, region_name="us-east-1",
                aws_access_key_id="testing", aws_secret_access_key="testing")
        return self._client

    def _gcs(self) -> Any:
        if self._client is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            assert self.srv is not None
            self._client = storage.Client(
                project="gns", credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.srv.endpoint}).bucket(self.bucket)
        return self._client

    def _az(self) -> Any:
        if self._client is None:
            from azure.storage.blob import BlobServiceClient

            assert self.srv is not None
            svc = BlobServiceClient.from_connection_string(
                self.srv.env_vars["AZURE_STORAGE_CONNECTION_STRING"])
            self._client = svc.get_container_client(self.bucket)
        return self._client

    # -- reads --
    def listing(self) -> dict[str, dict[str, Any]]:
        """relative key -> {"size", "mtime", "etag"} for every object under the prefix."""
        out: dict[str, dict[str, Any]] = {}
        n = len(self.prefix)
        if self.scheme == "file":
            if not self.root.exists():
                return out
            for p in self.root.rglob("*"):
                rel = p.relative_to(self.root).as_posix()
                if not p.is_file() or ".gns-locks" in rel.split("/"):
                    continue
                if p.name.startswith(".") and not rel.startswith(".gns/"):
                    continue  # the local store's sidecars and temp files
                if rel.startswith(".gns/") and not rel.endswith(".json"):
                    continue
                st = p.stat()
                out[rel] = {"size": st.st_size, "mtime": st.st_mtime_ns,
                            "etag": f"{st.st_ino}-{st.st_mtime_ns}"}
        elif self.scheme == "s3":
            pages = self._s3().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for o in page.get("Contents", ()):
                    out[o["Key"][n:]] = {"size": o["Size"], "mtime": o["LastModified"],
                                         "etag": o["ETag"]}
        elif self.scheme == "gs":
            for b in self._gcs().list_blobs(prefix=self.prefix or None):
                out[b.name[n:]] = {"size": b.size, "mtime": b.updated, "etag": b.etag}
        else:
            for b in self._az().list_blobs(name_starts_with=self.prefix or None):
                out[b.name[n:]] = {"size": b.size, "mtime": b.last_modified, "etag": b.etag}
        return out

    def read(self, key: str) -> bytes | None:
        """The object's bytes (None if absent)."""
        full = self.prefix + key
        if self.scheme == "file":
            p = self.root / key
            return p.read_bytes() if p.is_file() else None
        if self.scheme == "s3":
            c = self._s3()
            try:
                body: bytes = c.get_object(Bucket=self.bucket, Key=full)["Body"].read()
                return body
            except c.exceptions.NoSuchKey:
                return None
        if self.scheme == "gs":
            from google.api_core.exceptions import NotFound as GcsNotFound

            try:
                data: bytes = self._gcs().blob(full).download_as_bytes()
                return data
            except GcsNotFound:
                return None
        from azure.core.exceptions import ResourceNotFoundError

        try:
            blob: bytes = self._az().download_blob(full).readall()
            return blob
        except ResourceNotFoundError:
            return None

    def contents(self) -> dict[str, bytes]:
        """key -> bytes for every object listed (volume files and ``.gns/*.json``)."""
        out = {}
        for key in self.listing():
            data = self.read(key)
            if data is not None:
                out[key] = data
        return out

    def files(self) -> dict[str, str]:
        """Volume files only: path -> sha256 of the stored bytes."""
        return {k: hashlib.sha256(v).hexdigest() for k, v in self.contents().items()
                if not k.startswith(".gns/")}

    def head_etag(self, key: str) -> Any:
        if self.scheme == "s3":
            c = self._s3()
            try:
                return c.head_object(Bucket=self.bucket, Key=self.prefix + key)["ETag"]
            except c.exceptions.ClientError:
                return None
        return self.listing().get(key, {}).get("etag")

    def sha_metadata(self, key: str) -> str | None:
        """The sha256 the object carries as metadata (S3 / GCS / Azure)."""
        full = self.prefix + key
        found: str | None = None
        if self.scheme == "s3":
            found = self._s3().head_object(Bucket=self.bucket, Key=full)["Metadata"].get("sha256")
        elif self.scheme == "gs":
            b = self._gcs().get_blob(full)
            found = (b.metadata or {}).get("sha256")
        elif self.scheme == "az":
            props = self._az().get_blob_client(full).get_blob_properties()
            found = props.metadata.get("sha256")
        return found

    # -- writes (to damage a target on purpose) --
    def overwrite(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        full = self.prefix + key
        if self.scheme == "file":
            (self.root / key).write_bytes(data)
        elif self.scheme == "s3":
            self._s3().put_object(Bucket=self.bucket, Key=full, Body=data, Metadata=metadata or {})
        elif self.scheme == "gs":
            self._gcs().blob(full).upload_from_string(data)
        else:
            self._az().upload_blob(full, data, overwrite=True)
