"""``ObjectStoreTarget``: a volume mirrored to an object-store prefix in SPEC §6's plain layout.

Why: a disaster-recovery copy in S3 / GCS / Azure / an NFS directory must be readable by any
other tool, so the layout is plain::

    <prefix>/<relative path>        the file's bytes; object metadata ``sha256``
    <prefix>/.gns/manifest.json     the commit point, written LAST
    <prefix>/.gns/pass.json         only while a pass replaces or deletes files in place

The manifest is ``{"format": 1, "volume", "version", "epoch", "committed_at", "files":
{"<path>": {"size", "sha256"}, ...}}``, written by streaming JSON from the files iterable
(sorted by path, one entry per line) so a million-file volume never sits in memory, and put
conditionally (``if_match`` the etag read by ``state()``, ``if_absent`` for the first) so two
writers cannot both commit. Its first line holds every field but ``files``: ``state()`` reads
only that (one stat + one small ranged read).

The plain layout updates files in place, so a pass that must overwrite or delete files of the
committed version cannot keep that version intact. The engine therefore writes new paths first
(harmless), then calls ``begin_in_place``, which writes ``.gns/pass.json`` ({from, to,
epoch}); while it names a version other than the manifest's, ``state()`` reports version 0
(the target fully holds no version; the next pass does a full compare, copying only what
differs). The commit deletes the marker. So the target never reports a version whose files it
does not hold, at the price of losing the claim on the old version during that window.

``files()`` takes sha256 from the listing when the backend lists metadata (GCS, Azure, local);
S3 listings have none, so it joins the sorted listing with the manifest, trusting the
manifest's hash only for objects of the same size last modified before the manifest itself
(server clock) and HEADing the rest (in parallel, order kept).

This module must never store or log credentials (the store gets them from its SDK's standard
chain), never import ``federation``, and never parse a whole manifest just to read a version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from json.encoder import encode_basestring as _quote  # type: ignore[attr-defined]
from typing import BinaryIO

from cloud_adapters.base import ObjectInfo, ObjectStore
from cloud_adapters.errors import ObjectNotFound, ObjectStoreError, PreconditionFailed
from mirroring.engine import external_sort
from mirroring.protocols import FileLike, TargetFile, TargetState
from namespace.errors import Conflict, InvalidInput, StaleEpoch

__all__ = ["ObjectStoreTarget", "MANIFEST_KEY", "PASS_KEY", "MANIFEST_FORMAT"]

log = logging.getLogger(__name__)

MANIFEST_KEY = ".gns/manifest.json"
PASS_KEY = ".gns/pass.json"
MANIFEST_FORMAT = 1
_RESERVED = frozenset((MANIFEST_KEY, PASS_KEY))
_HEAD_BYTES = 4096
_ENTRIES_PER_CHUNK = 512


@dataclass(frozen=True)
class _Seen:
    """What ``state()`` last read: the manifest's etag (None = no manifest) and header."""

    etag: str | None
    version: int
    epoch: int
    volume: str | None


def _manifest_chunks(
    volume: str | None, version: int, epoch: int, files: Iterable[FileLike]
) -> Iterator[bytes]:
    header = json.dumps({
        "format": MANIFEST_FORMAT, "volume": volume, "version": version, "epoch": epoch,
        "committed_at": round(time.time(), 3),
    }, ensure_ascii=False)
    yield (header[:-1] + ', "files": {\n').encode()
    prev: str | None = None
    lines: list[str] = []
    for f in files:
        if prev is not None and f.path <= prev:
            raise ValueError(f"manifest files not sorted/unique: {prev!r} then {f.path!r}")
        if f.path in _RESERVED:
            raise InvalidInput(f"volume path {f.path!r} is reserved by the mirror layout")
        sha = f.sha256
        if len(sha) != 64 or not sha.isalnum():
            raise ValueError(f"bad sha256 {sha!r} for {f.path!r}")
        entry = f'{_quote(f.path)}: {{"size": {int(f.size)}, "sha256": "{sha}"}}'
        lines.append(entry if prev is None else ",\n" + entry)
        prev = f.path
        if len(lines) >= _ENTRIES_PER_CHUNK:
            yield "".join(lines).encode()
            lines = []
    lines.append("\n}}\n")
    yield "".join(lines).encode()


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    buf = b""
    for chunk in chunks:
        buf += chunk
        *full, buf = buf.split(b"\n")
        yield from full
    if buf:
        yield buf


class _ManifestCursor:
    """Point lookups in path order over a streamed manifest (sorted by path)."""

    def __init__(self, entries: Iterator[tuple[str, int, str]]) -> None:
        self._it = entries
        self._cur = next(self._it, None)

    def get(self, path: str) -> tuple[int, str] | None:
        while self._cur is not None and self._cur[0] < path:
            self._cur = next(self._it, None)
        if self._cur is not None and self._cur[0] == path:
            return self._cur[1], self._cur[2]
        return None


class ObjectStoreTarget:
    """A ``MirrorTarget`` (and ``InPlaceTarget``, ``RehashTarget``) over one ``ObjectStore``.

    ``volume`` is written into the manifest (default: the last component of the store
    prefix). No I/O in the constructor; thread-safe for the engine's parallel ``put``/``has``.
    """

    def __init__(
        self, store: ObjectStore, name: str | None = None, *, volume: str | None = None,
        head_workers: int = 16,
    ) -> None:
        self.store = store
        self.name = name or store.uri
        self.volume = volume
        self.head_workers = head_workers
        self._seen: _Seen | None = None

    def __repr__(self) -> str:
        return f"ObjectStoreTarget({self.name!r})"

    # -- commit point -------------------------------------------------------------------------

    def _read_json(self, key: str) -> tuple[ObjectInfo, dict[str, object]] | None:
        """The object's info and, for the manifest, its header (first line) only."""
        try:
            info = self.store.stat(key)
            head = b"".join(self.store.open(key, 0, min(info.size, _HEAD_BYTES)))
        except ObjectNotFound:
            return None
        line = head.split(b"\n", 1)[0]
        try:
            if key == MANIFEST_KEY and line.rstrip().endswith(b"{"):
                return info, json.loads(line + b"}}")
            return info, json.loads(line)
        except ValueError:
            pass
        # Not our line format (another writer, or a very long header): parse it all.
        try:
            doc = json.loads(self.store.read_bytes(key))
        except ObjectNotFound:
            return None
        if isinstance(doc, dict):
            doc.pop("files", None)
            return info, doc
        raise Conflict(f"{self.name}: {key} is not a gns manifest")

    def state(self) -> TargetState:
        """The committed (version, epoch); version 0 while a pass is replacing files."""
        got = self._read_json(MANIFEST_KEY)
        if got is None:
            self._seen = _Seen(None, 0, 0, None)
            return TargetState(version=0, epoch=0)
        info, head = got
        if head.get("format") != MANIFEST_FORMAT:
            raise Conflict(f"{self.name}: manifest format {head.get('format')!r} unsupported")
        version, epoch = int(head["version"]), int(head["epoch"])  # type: ignore[call-overload]
        vol = head.get("volume")
        self._seen = _Seen(info.etag, version, epoch, vol if isinstance(vol, str) else None)
        marker = self._read_json(PASS_KEY)
        if marker is not None and marker[1].get("to") != version:
            log.info("target %s: pass %s -> %s was interrupted while replacing files; "
                     "reporting no complete version", self.name, marker[1].get("from"),
                     marker[1].get("to"))
            return TargetState(version=0, epoch=epoch)
        return TargetState(version=version, epoch=epoch)

    def _stale(self, epoch: int) -> StaleEpoch:
        assert self._seen is not None
        return StaleEpoch(f"{self.name}: committed by epoch {self._seen.epoch}, "
                          f"writer has epoch {epoch}")

    def begin_in_place(self, from_version: int, to_version: int, epoch: int) -> None:
        """Mark that files of the committed version are about to be replaced or deleted."""
        if self._seen is None:
            self.state()
        assert self._seen is not None
        if self._seen.epoch > epoch:
            raise self._stale(epoch)
        if self._seen.etag is None:
            return  # nothing committed: nothing to un-claim
        body = json.dumps({"from": self._seen.version, "to": to_version, "epoch": epoch,
                           "started_at": round(time.time(), 3)}).encode()
        self.store.put(PASS_KEY, body)

    def commit(self, version: int, epoch: int, files: Iterable[FileLike]) -> None:
        """Write the manifest (conditionally), then drop the in-place marker."""
        if self._seen is None:
            self.state()
        assert self._seen is not None
        if self._seen.epoch > epoch:
            raise self._stale(epoch)
        volume = self.volume or self._seen.volume or self._default_volume()
        chunks = _manifest_chunks(volume, version, epoch, files)
        try:
            if self._seen.etag is None:
                info = self.store.put(MANIFEST_KEY, chunks, if_absent=True)
            else:
                info = self.store.put(MANIFEST_KEY, chunks, if_match=self._seen.etag)
        except PreconditionFailed as exc:
            self.state()
            if self._seen.epoch > epoch:
                raise self._stale(epoch) from exc
            raise Conflict(f"{self.name}: manifest changed under this writer "
                           f"(now v{self._seen.version}, epoch {self._seen.epoch})") from exc
        self._seen = _Seen(info.etag, version, epoch, volume)
        try:
            self.store.delete(PASS_KEY)
        except ObjectStoreError as exc:  # the marker names `to == version`: already harmless
            log.warning("target %s: could not remove %s after commit: %s",
                        self.name, PASS_KEY, exc)

    def _default_volume(self) -> str | None:
        parts = self.store.uri.rstrip("/").split("/")
        return parts[-1] if len(parts) > 3 else None

    # -- files --------------------------------------------------------------------------------

    def _manifest_entries(self) -> Iterator[tuple[str, int, str]]:
        """(path, size, sha256) of the committed manifest, streamed in path order."""
        try:
            lines = _lines(self.store.open(MANIFEST_KEY))
            first = next(lines, None)
            if first is None:
                return
            for raw in lines:
                line = raw.strip().rstrip(b",")
                if not line or line.startswith(b"}"):
                    continue
                ((path, meta),) = json.loads(b"{" + line + b"}").items()
                yield path, int(meta["size"]), str(meta["sha256"])
        except ObjectNotFound:
            return
        except ValueError:
            # A manifest not in our line format: correct but not bounded in memory.
            doc = json.loads(self.store.read_bytes(MANIFEST_KEY))
            for path in sorted(doc.get("files", {})):
                meta = doc["files"][path]
                yield path, int(meta["size"]), str(meta["sha256"])

    def files(self) -> Iterator[TargetFile]:
        """Every object under the prefix but ``.gns/manifest.json`` / ``pass.json``, sorted by
        path, with the sha256 of its stored bytes ("" if unknown)."""
        minfo: ObjectInfo | None = None

        def listing() -> Iterator[ObjectInfo]:
            # The manifest's own listing entry gives its mtime on the same (server) clock
            # and in the same resolution as the objects' mtimes.
            nonlocal minfo
            for i in self.store.list():
                if i.key == MANIFEST_KEY:
                    minfo = i
                elif i.key not in _RESERVED:
                    yield i

        cursor: _ManifestCursor | None = None
        pool = ThreadPoolExecutor(self.head_workers, thread_name_prefix="gns-mirror-head")
        window: deque[TargetFile | Future[TargetFile]] = deque()
        try:
            for info in external_sort(listing(), key=lambda i: i.key):
                if info.sha256:
                    window.append(TargetFile(info.key, info.size, info.sha256, info.mtime))
                else:
                    entry = None
                    if minfo is not None and info.mtime < minfo.mtime:
                        if cursor is None:
                            cursor = _ManifestCursor(self._manifest_entries())
                        entry = cursor.get(info.key)
                    if entry is not None and entry[0] == info.size:
                        window.append(TargetFile(info.key, info.size, entry[1], info.mtime))
                    else:
                        window.append(pool.submit(self._head, info.key))
                while window and (len(window) > 4 * self.head_workers
                                  or not isinstance(window[0], Future) or window[0].done()):
                    head = window.popleft()
                    yield head.result() if isinstance(head, Future) else head
            while window:
                head = window.popleft()
                yield head.result() if isinstance(head, Future) else head
        finally:
            for item in window:
                if isinstance(item, Future):
                    item.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _head(self, key: str) -> TargetFile:
        try:
            info = self.store.stat(key)
        except ObjectNotFound:  # deleted while listing: report as gone-but-listed
            return TargetFile(key, -1, "", 0.0)
        return TargetFile(key, info.size, info.sha256 or "", info.mtime)

    # -- per file -----------------------------------------------------------------------------

    def held_sha256(self, path: str) -> str | None:
        try:
            info = self.store.stat(path)
        except ObjectNotFound:
            return None
        return info.sha256 or ""

    def has(self, path: str, sha256: str) -> bool:
        """One stat: does ``path`` hold exactly ``sha256`` (per its metadata)?"""
        return self.held_sha256(path) == sha256

    def rehash(self, path: str) -> str:
        """sha256 of the stored bytes, read back through the store."""
        h = hashlib.sha256()
        for chunk in self.store.open(path):
            h.update(chunk)
        return h.hexdigest()

    def put(self, path: str, size: int, sha256: str, mtime: float, data: BinaryIO) -> None:
        if path in _RESERVED:
            raise InvalidInput(f"volume path {path!r} is reserved by the mirror layout")
        self.store.put(path, data, size=size, sha256=sha256)

    def delete(self, paths: Iterable[str]) -> None:
        self.store.delete_many(p for p in paths if p not in _RESERVED)
