"""The ``ObjectStore`` interface every backend implements, and the logic they all share.

Kept as small as mirroring needs (httpx's one-method transport is the model): streaming put
with sha256, ranged streaming read, stat, paged lazy listing, delete, conditional put and
copy. Backends declare :class:`Capability` values instead of callers testing ``isinstance``.

What lives here rather than in each adapter, so it is written and tested once:

* key validation and the store prefix (``s3://b/p`` + key ``k`` -> object ``p/k``);
* turning any source (bytes, file, iterable of chunks) into a rewindable stream whose size
  and sha256 are known before the first byte is sent, because S3 and GCS take object
  metadata when an upload *starts*: seekable files are hashed in one extra read pass,
  iterables are spooled to a temporary file (memory stays bounded by ``part_size``);
* verifying a promised sha256 while streaming and failing *before* the final part or commit
  is sent, so a mismatching upload never becomes visible;
* retries (whole put from a rewound source; reads resume at the byte they reached).

Constructors never do I/O and stores hold no caches of objects: every answer comes from the
store. Nothing here may log or keep a credential.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import io
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, TypeVar, cast

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

from cloud_adapters.errors import (
    IntegrityError,
    InvalidURI,
    ObjectNotFound,
    PreconditionFailed,
    TransientError,
)
from cloud_adapters.retry import backoff_delay, with_retries
from cloud_adapters.uri import StoreURI, validate_key

__all__ = ["Capability", "ObjectInfo", "ObjectStore", "PreparedSource", "prepare_source"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_READ_BLOCK = 2**20


class Capability(str, enum.Enum):
    """Optional features a backend may have; check ``cap in store.capabilities``."""

    SERVER_SIDE_COPY = "server_side_copy"
    CONDITIONAL_PUT = "conditional_put"
    RANGED_READ = "ranged_read"
    MULTIPART = "multipart"


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object."""

    key: str
    """Relative to the store's prefix, '/'-separated, no leading '/'."""
    size: int
    """Bytes."""
    sha256: str | None
    """Lowercase hex from the object's metadata (key ``sha256``); None if absent or unknown
    (S3 listings do not return metadata: use ``stat`` for it)."""
    etag: str
    """Opaque token usable with ``put(if_match=...)``."""
    mtime: float
    """Unix seconds (for objects just written: the client clock at completion)."""


# ---------------------------------------------------------------------------------------------
# Sources


class PreparedSource:
    """A rewindable binary stream with a known size and sha256 (expected or computed)."""

    def __init__(
        self, stream: BinaryIO, start: int, size: int, sha256: str, *, owned: bool
    ) -> None:
        self.stream = stream
        self.start = start
        self.size = size
        self.sha256 = sha256
        self._owned = owned

    def rewind(self) -> None:
        self.stream.seek(self.start)

    def close(self) -> None:
        if self._owned:
            self.stream.close()

    def read_all(self, uri: str) -> bytes:
        """Read the whole (small) source and check its size and sha256."""
        self.rewind()
        data = self.stream.read(self.size)
        self._check(len(data), hashlib.sha256(data).hexdigest(), uri)
        return data

    def iter_parts(self, part_size: int, uri: str) -> Iterator[bytes]:
        """Yield the source in ``part_size`` parts; the final part is yielded only after the
        whole stream matched the expected size and sha256 (else ``IntegrityError``)."""
        self.rewind()
        h = hashlib.sha256()

        def load(want: int) -> bytes:
            # Reads and hashes the NEXT part on a helper thread while the caller sends this
            # one (hashlib and file reads release the GIL), so verifying costs no wall time
            # on a machine with a spare core. One load at a time: the hash stays in order.
            part = self.stream.read(want)
            h.update(part)
            return part

        seen = 0
        with ThreadPoolExecutor(1, thread_name_prefix="gns-hash-ahead") as ahead:
            nxt = ahead.submit(load, min(part_size, self.size))
            while seen < self.size:
                part = nxt.result()
                if not part:
                    break
                seen += len(part)
                if seen >= self.size:
                    self._check(seen, h.hexdigest(), uri)
                else:
                    nxt = ahead.submit(load, min(part_size, self.size - seen))
                yield part
        if seen < self.size:
            self._check(seen, h.hexdigest(), uri)

    def _check(self, n: int, digest: str, uri: str) -> None:
        check_streamed(n, digest, self.size, self.sha256, uri)


def check_streamed(n: int, digest: str, size: int | None, sha256: str | None, uri: str | None = None) -> None:
    """``IntegrityError`` unless ``n`` bytes hashing to ``digest`` are the ``size`` bytes of
    ``sha256`` promised (None: not promised)."""
    if size is not None and n != size:
        raise IntegrityError(f"source gave {n} bytes, expected {size}", uri=uri)
    if sha256 is not None and digest != sha256:
        raise IntegrityError(f"sha256 mismatch: streamed {digest}, expected {sha256}", uri=uri)


def checked_parts(parts: Iterable[bytes], size: int, sha256: str, uri: str) -> Iterator[bytes]:
    """``parts`` as ``_put_parts`` must get them when they cannot be read twice (a stream
    relayed from elsewhere): the part that completes ``size`` bytes is yielded only once
    they hash to ``sha256``, and a stream that ends short raises instead of ending, so an
    upload is never completed on part of the bytes (``IntegrityError`` either way)."""
    h = hashlib.sha256()
    seen = 0
    for part in parts:
        seen += len(part)
        h.update(part)
        if seen >= size:
            check_streamed(seen, h.hexdigest(), size, sha256, uri)
        yield part
    if seen < size:
        check_streamed(seen, h.hexdigest(), size, sha256, uri)


class _ChunkReader(io.RawIOBase):
    """A non-seekable binary stream over an iterable of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._buf:
            try:
                self._buf = bytes(next(self._it))
            except StopIteration:
                return 0
        b = memoryview(buffer).cast("B")
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class ClosingIterator(Iterator[bytes]):
    """Chunks of a response, and ``close()`` that releases the response even when no chunk
    was read yet (a generator that never started never runs its ``finally``)."""

    def __init__(self, chunks: Iterator[bytes], release: Callable[[], object]) -> None:
        self._chunks = chunks
        self._release = release

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            self._release()


def _hash_stream(stream: BinaryIO, limit: int | None = None) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    while limit is None or n < limit:
        block = stream.read(_READ_BLOCK if limit is None else min(_READ_BLOCK, limit - n))
        if not block:
            break
        h.update(block)
        n += len(block)
    return n, h.hexdigest()


def prepare_source(
    source: bytes | bytearray | memoryview | BinaryIO | Iterable[bytes],
    *,
    size: int | None,
    sha256: str | None,
    spool_in_memory: int,
) -> PreparedSource:
    """Make ``source`` rewindable with known size and sha256 (see the module docstring)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        digest = sha256 or hashlib.sha256(data).hexdigest()
        return PreparedSource(io.BytesIO(data), 0, len(data), digest, owned=True)
    if hasattr(source, "read"):
        stream = cast(BinaryIO, source)
        seekable = getattr(stream, "seekable", lambda: False)
        if seekable():
            start = stream.tell()
            if size is None:
                size = stream.seek(0, os.SEEK_END) - start
                stream.seek(start)
            if sha256 is None:
                n, sha256 = _hash_stream(stream, size)
                stream.seek(start)
                size = n
            return PreparedSource(stream, start, size, sha256, owned=False)
        chunks: Iterable[bytes] = iter(lambda: stream.read(_READ_BLOCK), b"")
    else:
        chunks = source
    spool = tempfile.SpooledTemporaryFile(max_size=spool_in_memory, prefix="gns-upload-")
    h = hashlib.sha256()
    n = 0
    for chunk in chunks:
        h.update(chunk)
        spool.write(chunk)
        n += len(chunk)
    spool.seek(0)
    digest = h.hexdigest()
    try:
        check_streamed(n, digest, size, sha256)
    except IntegrityError:
        spool.close()
        raise
    # A spooled file is a binary file (typeshed does not say so).
    return PreparedSource(cast(BinaryIO, spool), 0, n, digest, owned=True)


# ---------------------------------------------------------------------------------------------
# The interface


class ObjectStore(abc.ABC):
    """One bucket/container (or directory) plus a key prefix.

    Tunables are plain attributes (set them on an instance, e.g. in tests):
    ``page_size`` (listing page), ``upload_workers`` (parallel parts of one put),
    ``retry_attempts`` / ``retry_base`` / ``retry_cap`` (see ``retry.with_retries``).
    """

    scheme: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]
    delete_batch_size: ClassVar[int] = 1000

    page_size: int = 1000
    upload_workers: int = 4
    retry_attempts: int = 5
    retry_base: float = 0.1
    retry_cap: float = 5.0

    def __init__(self, uri: StoreURI) -> None:
        if uri.scheme != self.scheme:
            raise InvalidURI(f"{type(self).__name__} serves {self.scheme}://", uri=str(uri))
        self._store_uri = uri
        self._sdk_obj: Any = None
        self._sdk_lock = threading.Lock()

    def _make_sdk(self) -> Any:
        """Build this adapter's SDK client (credentials from the SDK's standard chain)."""
        raise NotImplementedError

    @property
    def _sdk(self) -> Any:
        """The SDK client, built on first use (never in the constructor), then shared by
        every thread of this store."""
        if self._sdk_obj is None:
            with self._sdk_lock:
                if self._sdk_obj is None:
                    self._sdk_obj = self._make_sdk()
        return self._sdk_obj

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    @property
    def uri(self) -> str:
        """The normalised store URI, e.g. ``s3://bucket/prefix``."""
        return str(self._store_uri)

    # -- helpers for adapters -----------------------------------------------------------------

    @property
    def _key_prefix(self) -> str:
        p = self._store_uri.prefix
        return f"{p}/" if p else ""

    def _full(self, key: str) -> str:
        return self._key_prefix + validate_key(key, self.uri)

    def _rel(self, full_key: str) -> str:
        return full_key[len(self._key_prefix):]

    def _obj_uri(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    def _retry(self, fn: Callable[[], T]) -> T:
        return with_retries(
            fn, attempts=self.retry_attempts, base=self.retry_base, cap=self.retry_cap
        )

    def _relinfo(self, info: ObjectInfo) -> ObjectInfo:
        return replace(info, key=self._rel(info.key))

    # -- adapter hooks (full keys in, ObjectInfo with full keys out) -------------------------

    @abc.abstractmethod
    def _put_small(
        self, full_key: str, data: bytes, sha256: str, if_absent: bool, if_match: str | None
    ) -> ObjectInfo:
        """One request; ``data`` is already verified."""

    @abc.abstractmethod
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
        """Multipart/blocks/resumable. ``parts`` raises IntegrityError before yielding the
        final part if the bytes do not match; any exception must abort the upload so that
        nothing becomes visible."""

    @abc.abstractmethod
    def _open_range(
        self, full_key: str, start: int, end: int | None, chunk_size: int
    ) -> tuple[ObjectInfo, Iterator[bytes]]:
        """First request now (raising ObjectNotFound etc.), bytes [start, end) lazily."""

    @abc.abstractmethod
    def _stat(self, full_key: str) -> ObjectInfo: ...

    @abc.abstractmethod
    def _list_page(
        self, full_prefix: str, token: str | None
    ) -> tuple[list[ObjectInfo], str | None]:
        """One page of at most ``page_size`` objects and the next token (None at the end)."""

    @abc.abstractmethod
    def _delete(self, full_key: str) -> None:
        """Delete; a missing object is not an error."""

    def _delete_batch(self, full_keys: list[str]) -> None:
        for k in full_keys:
            self._delete(k)

    def _copy(self, full_src: str, full_dst: str) -> ObjectInfo:
        raise NotImplementedError

    @abc.abstractmethod
    def _make_container(self) -> None: ...

    # -- the public interface ----------------------------------------------------------------

    def put(
        self,
        key: str,
        source: bytes | BinaryIO | Iterable[bytes],
        *,
        size: int | None = None,
        sha256: str | None = None,
        if_absent: bool = False,
        if_match: str | None = None,
        part_size: int = 16 * 2**20,
    ) -> ObjectInfo:
        """Store ``source`` at ``key`` with its sha256 as metadata.

        Objects larger than ``part_size`` go up in parts (memory ~ ``part_size`` times
        ``upload_workers``, plus one part read and hashed ahead). A given ``sha256`` that the bytes do not match raises
        ``IntegrityError`` and leaves no object. ``if_absent`` / ``if_match`` raise
        ``PreconditionFailed`` when the condition does not hold. Transient failures retry the
        whole put from a rewound source.
        """
        full = self._full(key)
        uri = self._obj_uri(key)
        if if_absent and if_match is not None:
            raise ValueError("if_absent and if_match are mutually exclusive")
        if (if_absent or if_match is not None) and Capability.CONDITIONAL_PUT not in (
            self.capabilities
        ):
            raise NotImplementedError(f"{self.uri}: conditional put is not supported")
        if sha256 is not None:
            sha256 = sha256.lower()
            if not _HEX64.match(sha256):
                raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
        if part_size < 5 * 2**20 and Capability.MULTIPART in self.capabilities:
            raise ValueError("part_size must be at least 5 MiB")
        try:
            src = prepare_source(source, size=size, sha256=sha256, spool_in_memory=part_size)
        except IntegrityError as exc:
            raise IntegrityError(exc.message, uri=uri) from None
        attempts = 0

        def attempt() -> ObjectInfo:
            nonlocal attempts
            attempts += 1
            try:
                if src.size <= part_size:
                    data = src.read_all(uri)
                    return self._put_small(full, data, src.sha256, if_absent, if_match)
                return self._put_parts(
                    full, src.iter_parts(part_size, uri), src.size, src.sha256,
                    if_absent, if_match, part_size,
                )
            except ObjectNotFound as exc:
                # S3 and Azure answer 404 to If-Match on a missing object; for us that is a
                # lost precondition, unless the bucket/container itself is missing.
                if if_match is None or "Bucket" in exc.message or "Container" in exc.message:
                    raise
                raise PreconditionFailed("object does not exist (if_match)", uri=uri) from exc
            except PreconditionFailed:
                # A retried put may have lost only to its own earlier attempt that landed.
                if attempts > 1 and if_absent:
                    try:
                        info = self._stat(full)
                    except ObjectNotFound:
                        raise
                    if info.sha256 == src.sha256 and info.size == src.size:
                        return info
                raise

        try:
            return self._relinfo(self._retry(attempt))
        finally:
            src.close()

    def open(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = 2**20,
        *,
        verify: bool = False,
    ) -> Iterator[bytes]:
        """Stream bytes ``[start, end)`` (end exclusive, None = to the end) in chunks of at
        most ``chunk_size``. Lazy: nothing is requested until the first ``next()``.

        A transient failure mid-stream resumes at the byte reached (if the object changed
        meanwhile: ``PreconditionFailed``). ``verify=True`` (whole object only) hashes the
        stream and raises ``IntegrityError`` at the end if it does not match the stored
        sha256, or if the object has none.
        """
        full = self._full(key)
        uri = self._obj_uri(key)
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad range [{start}, {end})")
        if verify and (start != 0 or end is not None):
            raise ValueError("verify=True needs the whole object (start=0, end=None)")
        return self._open_gen(full, uri, start, end, chunk_size, verify)

    def _open_gen(
        self, full: str, uri: str, start: int, end: int | None, chunk_size: int, verify: bool
    ) -> Iterator[bytes]:
        h = hashlib.sha256() if verify else None
        pos = start
        first: ObjectInfo | None = None
        failures = 0
        while True:
            try:
                info, chunks = self._open_range(full, pos, end, chunk_size)
                try:
                    if first is None:
                        first = info
                        if verify and not first.sha256:
                            raise IntegrityError("object has no sha256 metadata to verify", uri=uri)
                    elif info.etag != first.etag:
                        raise PreconditionFailed("object changed while being read", uri=uri)
                    for chunk in chunks:
                        pos += len(chunk)
                        if h is not None:
                            h.update(chunk)
                        yield chunk
                finally:
                    # The response behind ``chunks`` is released even if it was never read.
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()
                break
            except TransientError:
                failures += 1
                if failures >= self.retry_attempts:
                    raise
                time.sleep(backoff_delay(failures - 1, base=self.retry_base, cap=self.retry_cap))
        if h is not None and first is not None:
            digest = h.hexdigest()
            if pos != first.size or digest != first.sha256:
                raise IntegrityError(
                    f"sha256 mismatch: read {digest} ({pos} bytes), "
                    f"stored {first.sha256} ({first.size} bytes)",
                    uri=uri,
                )

    def read_head(self, key: str, limit: int) -> tuple[ObjectInfo, bytes]:
        """The object's info (``size`` is the whole object's) and its first ``limit`` bytes,
        from one ranged read: a small object's etag and content without a separate stat."""
        full = self._full(key)
        if limit < 1:
            raise ValueError("limit must be >= 1")

        def once() -> tuple[ObjectInfo, bytes]:
            info, chunks = self._open_range(full, 0, limit, limit)
            try:
                return info, b"".join(chunks)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()

        info, data = self._retry(once)
        return self._relinfo(info), data

    def read_bytes(self, key: str, *, verify: bool = False) -> bytes:
        """The whole object in memory (small objects only)."""
        return b"".join(self.open(key, verify=verify))

    def verify(self, key: str) -> ObjectInfo:
        """Stream the object and check it against its stored sha256 (``IntegrityError``)."""
        for _ in self.open(key, verify=True):
            pass
        return self.stat(key)

    def stat(self, key: str) -> ObjectInfo:
        """``ObjectInfo`` for ``key``; ``ObjectNotFound`` if missing."""
        full = self._full(key)
        return self._relinfo(self._retry(lambda: self._stat(full)))

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (recursive), fetched a page at a time as the
        iterator is consumed. Order: lexicographic on S3, GCS, Azure and local; SeaweedFS
        walks its directories (``a/b`` before ``a-c``), so callers must not rely on order
        across '/' boundaries."""
        if prefix.startswith("/"):
            raise InvalidURI(f"invalid list prefix {prefix!r}", uri=self.uri)
        return self._list_gen(self._key_prefix + prefix)

    def _list_gen(self, full_prefix: str) -> Iterator[ObjectInfo]:
        token: str | None = None
        while True:
            tok = token
            items, token = self._retry(lambda: self._list_page(full_prefix, tok))
            for info in items:
                yield self._relinfo(info)
            if not token:
                return

    def delete(self, key: str) -> None:
        """Delete ``key``; a missing object is fine."""
        full = self._full(key)
        self._retry(lambda: self._delete(full))

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete many keys, batched where the store supports it (lazy over ``keys``)."""
        batch: list[str] = []
        for key in keys:
            batch.append(self._full(key))
            if len(batch) >= self.delete_batch_size:
                b = batch
                self._retry(lambda: self._delete_batch(b))
                batch = []
        if batch:
            self._retry(lambda: self._delete_batch(batch))

    def copy(self, src_key: str, dst_key: str) -> ObjectInfo:
        """Copy keeping the sha256 metadata; server-side where the store has it."""
        if Capability.SERVER_SIDE_COPY in self.capabilities:
            s, d = self._full(src_key), self._full(dst_key)
            return self._relinfo(self._retry(lambda: self._copy(s, d)))
        info = self.stat(src_key)
        return self.put(
            dst_key, _ChunkReader(self.open(src_key)), size=info.size, sha256=info.sha256
        )

    def make_container(self) -> None:
        """Create the bucket/container/directory if missing (idempotent)."""
        self._retry(self._make_container)
