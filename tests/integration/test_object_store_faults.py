"""Faults against real servers: a server killed mid-upload, bytes changed behind our back.

Each kill test starts its own server (the session ones stay healthy for other tests).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from cloud_adapters.base import ObjectStore
from cloud_adapters.errors import IntegrityError, ObjectNotFound, TransientError
from cloud_adapters.registry import open_store
from tests.fixtures.objectstores import STARTERS, ServerHandle, ServerUnavailable

MiB = 2**20
PART = 5 * MiB


class _KillingReader(io.RawIOBase):
    """A seekable source that runs ``on_read`` once after ``after`` bytes were read."""

    def __init__(self, data: bytes, after: int, on_read: Callable[[], None]) -> None:
        self._b = io.BytesIO(data)
        self._after = after
        self._on_read: Callable[[], None] | None = on_read

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._b.seek(pos, whence)

    def tell(self) -> int:
        return self._b.tell()

    def readinto(self, buf: Any) -> int:
        if self._on_read is not None and self._b.tell() >= self._after:
            cb, self._on_read = self._on_read, None
            cb()
        data = self._b.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _own_server(name: str) -> ServerHandle:
    try:
        return STARTERS[name]()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["s3-moto", "s3-seaweedfs", "gcs", "azure"])
def test_server_killed_mid_upload_is_transient_and_leaves_nothing(backend: str) -> None:
    srv = _own_server(backend)
    try:
        with srv.env():
            store = open_store(srv.new_store_uri("kill"))
            store.retry_attempts, store.retry_base, store.retry_cap = 2, 0.05, 0.1
            data = os.urandom(4 * PART + 123)
            sha = hashlib.sha256(data).hexdigest()
            src = _KillingReader(data, after=2 * PART, on_read=srv.kill)
            with pytest.raises(TransientError) as ei:
                store.put("victim", src, sha256=sha, part_size=PART)
            assert store.uri in str(ei.value) and ei.value.retryable
            assert ei.value.exit_code == 5
            srv.start()  # same ports (and same data dir for SeaweedFS)
            if backend == "s3-seaweedfs":  # persistent: the real check
                with pytest.raises(ObjectNotFound):
                    store.stat("victim")
                assert [i.key for i in store.list()] == []
    finally:
        srv.close()


@pytest.mark.slow
def test_server_restarted_mid_upload_retry_succeeds() -> None:
    srv = _own_server("s3-seaweedfs")
    try:
        with srv.env():
            store = open_store(srv.new_store_uri("retry"))
            store.retry_attempts, store.retry_base, store.retry_cap = 10, 0.5, 2.0
            data = os.urandom(4 * PART + 321)
            sha = hashlib.sha256(data).hexdigest()
            restarter: list[threading.Thread] = []

            def kill_and_restart_later() -> None:
                srv.kill()
                t = threading.Thread(target=srv.start)
                t.start()
                restarter.append(t)

            src = _KillingReader(data, after=2 * PART, on_read=kill_and_restart_later)
            info = store.put("survivor", src, sha256=sha, part_size=PART)
            for t in restarter:
                t.join()
            assert info.sha256 == sha and info.size == len(data)
            assert store.read_bytes("survivor", verify=True) == data
    finally:
        srv.close()


def _tamper(store: ObjectStore, backend: str, key: str, data: bytes, sha: str | None) -> None:
    """Overwrite ``key`` with the bare SDK, keeping (or dropping) the sha256 metadata."""
    full = store._full(key)
    meta = {"sha256": sha} if sha else {}
    if backend.startswith("s3"):
        import boto3

        boto3.client("s3").put_object(Bucket=store._store_uri.container, Key=full, Body=data,
                                      Metadata=meta)
    elif backend == "gcs":
        b = store._bucket.blob(full)  # type: ignore[attr-defined]
        b.metadata = meta or None
        b.upload_from_string(data)
    elif backend == "azure":
        c = store._container  # type: ignore[attr-defined]
        c.get_blob_client(full).upload_blob(data, overwrite=True, metadata=meta)
    else:
        path = store._path(full)  # type: ignore[attr-defined]
        st = path.stat()
        with open(path, "r+b") as f:  # in place, same size, mtime restored: bit rot
            f.write(data)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("keep_sha", [True, False], ids=["sha-kept", "sha-dropped"])
def test_bytes_changed_behind_our_back_are_caught(
    object_store_backend: ObjectStore, backend_name: str, keep_sha: bool
) -> None:
    s = object_store_backend
    good = os.urandom(100_000)
    info = s.put("victim", good)
    evil = bytearray(good)
    evil[5000] ^= 0xFF
    _tamper(s, backend_name, "victim", bytes(evil), info.sha256 if keep_sha else None)
    with pytest.raises(IntegrityError) as ei:
        s.read_bytes("victim", verify=True)
    assert "victim" in str(ei.value)
    with pytest.raises(IntegrityError):
        s.verify("victim")
    assert s.read_bytes("victim") == bytes(evil)  # unverified reads still work
