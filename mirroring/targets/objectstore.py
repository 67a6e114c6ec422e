"""``ObjectStoreTarget``: a volume mirrored to an object-store prefix in SPEC §6's plain layout.

Why: a disaster-recovery copy in S3 / GCS / Azure / an NFS directory must be readable by any
other tool, so the layout is plain::

    <prefix>/<relative path>          the file's bytes; object metadata ``sha256``
    <prefix>/.gns/manifest.json       the commit point, written LAST
    <prefix>/.gns/segments/<n>.json   the file list, in immutable pieces the manifest names
    <prefix>/.gns/pass.json           only while a pass replaces or deletes files in place
    <prefix>/.gns/writing.json        from the start of a pass that writes until its commit

The manifest (format 2) is small: ``{"format": 2, "volume", "version", "epoch",
"committed_at", "segments": [{"key", "base", "entries"}, ...], "retired": [keys]}``; for a
volume of at most 1,000 files it also lists them whole, ``"files": {"<path>": {"size",
"sha256"}}`` (and ``"files_inline": true``), so that a tool reading only the manifest (SPEC
§6: "version, files with size and sha256") finds the answer there; past that size the file
list lives only in the segments. The volume's files at ``version`` are the segments applied
in order: the first is a base, ``{...,
"files": {"<path>": {"size", "sha256"}, ...}}``, each later one a delta in the same shape
where ``null`` means "deleted". So an incremental pass writes one delta of what changed and
rewrites only the manifest, not a list of the whole volume; when the deltas pass a quarter of
the base (or 32 of them), the next commit writes a new base instead (compaction). A segment is
never changed once written (its name carries the version, epoch and a random tag); the
segments a commit stops using are listed as ``retired`` and deleted one commit later, so a
reader holding the previous manifest can still read its segments. Format-1 manifests (the
file list inline under ``files``) stay readable; the next commit on such a target writes a
base.

Segments are written by streaming JSON from the files iterable (sorted by path, one entry per
line) so a million-file volume never sits in memory; the manifest is put conditionally
(``if_match`` the etag read by ``state()``, ``if_absent`` for the first) so two writers cannot
both commit. ``state()`` reads only the manifest's head (one ranged read, which also gives its etag)
and the in-place marker.

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
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from json.encoder import encode_basestring as _quote
from typing import Any, BinaryIO

from cloud_adapters.base import ObjectInfo, ObjectStore
from cloud_adapters.errors import ObjectNotFound, ObjectStoreError, PreconditionFailed
from mirroring.engine import external_sort
from mirroring.protocols import FileLike, TargetFile, TargetState
from namespace.errors import Conflict, InvalidInput, StaleEpoch

__all__ = ["ObjectStoreTarget", "MANIFEST_KEY", "PASS_KEY", "SEGMENTS_PREFIX", "MANIFEST_FORMAT"]

log = logging.getLogger(__name__)

MANIFEST_KEY = ".gns/manifest.json"
PASS_KEY = ".gns/pass.json"
SEGMENTS_PREFIX = ".gns/segments/"
MANIFEST_FORMAT = 2
_READABLE_FORMATS = (1, 2)
WRITING_KEY = ".gns/writing.json"
_RESERVED = frozenset((MANIFEST_KEY, PASS_KEY, WRITING_KEY))
_HEAD_BYTES = 16384
_ENTRIES_PER_CHUNK = 512
_COMPACT_FRACTION = 4  # deltas beyond 1/4 of the base's entries: write a new base
_COMPACT_MIN_ENTRIES = 1000
_MAX_DELTAS = 32
# A volume of at most this many files is also listed whole in the manifest itself.
INLINE_FILES_MAX = 1000


def _reserved(path: str) -> bool:
    return path in _RESERVED or path.startswith(SEGMENTS_PREFIX)


@dataclass(frozen=True)
class _Segment:
    key: str
    base: bool
    entries: int


@dataclass(frozen=True)
class _Seen:
    """What ``state()`` last read: the manifest's etag (None = no manifest) and header."""

    etag: str | None
    version: int
    epoch: int
    volume: str | None
    format: int = MANIFEST_FORMAT
    segments: tuple[_Segment, ...] = ()
    retired: tuple[str, ...] = ()
    inline: bool = False  # the manifest lists every file itself ("files_inline")


def _entry_chunks(header: Mapping[str, object], entries: Iterable[tuple[str, FileLike | None]]
                  ) -> Iterator[bytes]:
    """``header`` plus ``"files": {...}``, one entry per line (``None`` = deleted)."""
    head = json.dumps(header, ensure_ascii=False)
    yield (head[:-1] + ', "files": {\n').encode()
    prev: str | None = None
    lines: list[str] = []
    for path, f in entries:
        if prev is not None and path <= prev:
            raise ValueError(f"manifest files not sorted/unique: {prev!r} then {path!r}")
        if _reserved(path):
            raise InvalidInput(f"volume path {path!r} is reserved by the mirror layout")
        if f is None:
            entry = f"{_quote(path)}: null"
        else:
            sha = f.sha256
            if len(sha) != 64 or not sha.isalnum():
                raise ValueError(f"bad sha256 {sha!r} for {path!r}")
            entry = f'{_quote(path)}: {{"size": {int(f.size)}, "sha256": "{sha}"}}'
        lines.append(entry if prev is None else ",\n" + entry)
        prev = path
        if len(lines) >= _ENTRIES_PER_CHUNK:
            yield "".join(lines).encode()
            lines = []
    lines.append("\n}}\n")
    yield "".join(lines).encode()


class _Counted:
    """Passes items through, counting them (a segment's entry count, known once written)."""

    def __init__(self, items: Iterable[tuple[str, FileLike | None]]) -> None:
        self._items = items
        self.count = 0

    def __iter__(self) -> Iterator[tuple[str, FileLike | None]]:
        for item in self._items:
            self.count += 1
            yield item


class _Listed:
    """Passes a base's files through, keeping them while there are at most
    ``INLINE_FILES_MAX`` (``files``: None past that)."""

    def __init__(self, items: Iterable[FileLike]) -> None:
        self._items = items
        self.files: dict[str, FileLike] | None = {}

    def __iter__(self) -> Iterator[FileLike]:
        for f in self._items:
            if self.files is not None:
                self.files[f.path] = f
                if len(self.files) > INLINE_FILES_MAX:
                    self.files = None
            yield f


@dataclass(frozen=True)
class _Listing:
    """A file as a manifest lists it."""

    path: str
    size: int
    sha256: str
    mtime: float = 0.0  # not in a manifest


def _parse_entries(lines: Iterator[bytes]) -> Iterator[tuple[str, tuple[int, str] | None]]:
    """Entries of one streamed file list in our line format (header line already consumed)."""
    for raw in lines:
        line = raw.strip().rstrip(b",")
        if not line or line.startswith(b"}"):
            continue
        ((path, meta),) = json.loads(b"{" + line + b"}").items()
        yield path, None if meta is None else (int(meta["size"]), str(meta["sha256"]))


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
            info, head = self.store.read_head(key, _HEAD_BYTES)  # one request, not stat+read
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
        fmt = head.get("format")
        if fmt not in _READABLE_FORMATS:
            raise Conflict(f"{self.name}: manifest format {fmt!r} unsupported")
        version, epoch = int(str(head["version"])), int(str(head["epoch"]))
        vol = head.get("volume")
        raw_segments: Any = head.get("segments", ())
        raw_retired: Any = head.get("retired", ())
        segments = tuple(_Segment(str(s["key"]), bool(s["base"]), int(s["entries"]))
                         for s in raw_segments)
        retired = tuple(str(k) for k in raw_retired)
        self._seen = _Seen(info.etag, version, epoch, vol if isinstance(vol, str) else None,
                           int(fmt), segments, retired, head.get("files_inline") is True)
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
        """Write a new base segment of ``files``, then the manifest naming only it."""
        seen = self._writable(epoch)
        volume = self.volume or seen.volume or self._default_volume()
        listed = _Listed(files)
        base = self._write_segment(volume, version, epoch, True, ((f.path, f) for f in listed))
        self._commit_manifest(seen, volume, version, epoch, (base,), listed.files)
        self._sweep_orphans(version)

    def _sweep_orphans(self, version: int) -> None:
        """Delete segments left by passes that died before their commit (only after a new
        base, so this listing is as rare as compaction). Only older versions' segments: a
        newer one may belong to a pass still running elsewhere."""
        assert self._seen is not None
        keep = {s.key for s in self._seen.segments} | set(self._seen.retired)
        try:
            orphans = [
                i.key for i in self.store.list(SEGMENTS_PREFIX)
                if i.key not in keep and i.key[len(SEGMENTS_PREFIX):][:12].isdigit()
                and int(i.key[len(SEGMENTS_PREFIX):][:12]) < version
            ]
            self.store.delete_many(orphans)
        except ObjectStoreError as exc:
            log.warning("target %s: sweeping old segments failed: %s", self.name, exc)

    def commit_changes(
        self, version: int, epoch: int, changed: Iterable[FileLike], deleted: Iterable[str],
        files: Callable[[], Iterator[FileLike]],
    ) -> None:
        """Commit ``version`` as the committed version plus these changes (the journal's net
        effect since it): one small delta segment, then the manifest. Falls back to a base of
        ``files()`` (the full list) when there is no base to extend or it is time to compact.
        """
        seen = self._writable(epoch)
        deltas = [s for s in seen.segments[1:] if not s.base]
        changes: dict[str, FileLike | None] = dict.fromkeys(deleted)
        changes.update((f.path, f) for f in changed)
        base = seen.segments[0] if seen.segments and seen.segments[0].base else None
        if (
            seen.format != MANIFEST_FORMAT or base is None
            or len(deltas) + 1 > _MAX_DELTAS
            or sum(d.entries for d in deltas) + len(changes)
            > max(_COMPACT_MIN_ENTRIES, base.entries // _COMPACT_FRACTION)
        ):
            it = files()
            try:
                self.commit(version, epoch, it)
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
            return
        volume = self.volume or seen.volume or self._default_volume()
        delta = self._write_segment(volume, version, epoch, False,
                                    ((p, changes[p]) for p in sorted(changes)))
        self._commit_manifest(seen, volume, version, epoch, (*seen.segments, delta),
                              self._inline_after(seen, changes))

    def _inline_after(self, seen: _Seen, changes: Mapping[str, FileLike | None]) -> dict[str, FileLike] | None:
        """The whole list the manifest shows after ``changes``, if the committed one
        shows one and it stays small (one read of a manifest of at most 1,000 files)."""
        if not seen.inline:
            return None
        files: dict[str, FileLike] = {
            path: _Listing(path, meta[0], meta[1])
            for path, meta in self._list_entries(MANIFEST_KEY) if meta is not None}
        for path, f in changes.items():
            if f is None:
                files.pop(path, None)
            else:
                files[path] = f
        return files if len(files) <= INLINE_FILES_MAX else None

    def begin_writing(self, to_version: int, epoch: int) -> bool:
        """Leave ``.gns/writing.json`` before a pass writes (one conditional put); the commit
        removes it. Finding it already there means a pass died since the last commit and
        may have left objects: the engine then asks per file (HEAD) to resume without
        re-sending. Only ever an optimisation: either answer is safe."""
        body = json.dumps({"to": to_version, "epoch": epoch,
                           "started_at": round(time.time(), 3)}).encode()
        try:
            self.store.put(WRITING_KEY, body, if_absent=True)
        except PreconditionFailed:
            return False
        return True

    def _writable(self, epoch: int) -> _Seen:
        if self._seen is None:
            self.state()
        assert self._seen is not None
        if self._seen.epoch > epoch:
            raise self._stale(epoch)
        return self._seen

    def _write_segment(self, volume: str | None, version: int, epoch: int, base: bool,
                       entries: Iterable[tuple[str, FileLike | None]]) -> _Segment:
        key = f"{SEGMENTS_PREFIX}{version:012d}-{epoch}-{secrets.token_hex(4)}.json"
        counted = _Counted(entries)
        header = {"format": MANIFEST_FORMAT, "volume": volume, "version": version,
                  "epoch": epoch, "base": base}
        self.store.put(key, _entry_chunks(header, counted))
        return _Segment(key, base, counted.count)

    def _commit_manifest(self, seen: _Seen, volume: str | None, version: int, epoch: int,
                         segments: tuple[_Segment, ...], inline: Mapping[str, FileLike] | None) -> None:
        """The commit point: one conditional put; then the clean-up it allows. ``inline``:
        every file, listed in the manifest too (a small volume)."""
        keys = {s.key for s in segments}
        retired = tuple(s.key for s in seen.segments if s.key not in keys)
        header: dict[str, object] = {
            "format": MANIFEST_FORMAT, "volume": volume, "version": version, "epoch": epoch,
            "committed_at": round(time.time(), 3),
            "segments": [{"key": s.key, "base": s.base, "entries": s.entries} for s in segments],
            "retired": list(retired),
        }
        if inline is None:
            body = json.dumps(header, ensure_ascii=False).encode() + b"\n"
        else:  # the header on the first line still (state() reads only that line)
            header["files_inline"] = True
            body = b"".join(_entry_chunks(header, ((p, inline[p]) for p in sorted(inline))))
        try:
            if seen.etag is None:
                info = self.store.put(MANIFEST_KEY, body, if_absent=True)
            else:
                info = self.store.put(MANIFEST_KEY, body, if_match=seen.etag)
        except PreconditionFailed as exc:
            self.state()
            assert self._seen is not None
            if self._seen.epoch > epoch:
                raise self._stale(epoch) from exc
            raise Conflict(f"{self.name}: manifest changed under this writer "
                           f"(now v{self._seen.version}, epoch {self._seen.epoch})") from exc
        self._seen = _Seen(info.etag, version, epoch, volume, MANIFEST_FORMAT, segments, retired,
                           inline is not None)
        # Segments retired by the previous commit: no manifest names them any more, and a
        # reader of that previous manifest has had one commit interval to read them.
        try:
            self.store.delete_many([*(k for k in seen.retired if k not in keys), PASS_KEY,
                                    WRITING_KEY])
        except ObjectStoreError as exc:  # leftovers only: the marker names `to == version`
            log.warning("target %s: clean-up after commit v%d failed: %s",
                        self.name, version, exc)

    def _default_volume(self) -> str | None:
        parts = self.store.uri.rstrip("/").split("/")
        return parts[-1] if len(parts) > 3 else None

    # -- files --------------------------------------------------------------------------------

    def _list_entries(self, key: str) -> Iterator[tuple[str, tuple[int, str] | None]]:
        """Entries of one file list (a format-1 manifest or a segment), in path order."""
        try:
            lines = _lines(self.store.open(key))
            if next(lines, None) is None:
                return
            yield from _parse_entries(lines)
        except ValueError:
            # Not in our line format (another writer): correct but not bounded in memory.
            doc = json.loads(self.store.read_bytes(key))
            files = doc.get("files", {})
            for path in sorted(files):
                meta = files[path]
                yield path, None if meta is None else (int(meta["size"]), str(meta["sha256"]))

    def manifest_entries(self) -> Iterator[tuple[str, int, str]]:
        """(path, size, sha256) of the committed version, streamed in path order: the base
        segment merged with the deltas (held in memory: they are small by construction)."""
        if self._seen is None or self._seen.etag is None:
            self.state()
        assert self._seen is not None
        seen = self._seen
        try:
            if seen.etag is None:
                return
            if seen.format == 1:
                for path, meta in self._list_entries(MANIFEST_KEY):
                    if meta is not None:
                        yield path, meta[0], meta[1]
                return
            if not seen.segments:
                return
            overlay: dict[str, tuple[int, str] | None] = {}
            for seg in seen.segments[1:]:
                overlay.update(self._list_entries(seg.key))
            pending = sorted(overlay)
            i = 0
            for path, meta in self._list_entries(seen.segments[0].key):
                while i < len(pending) and pending[i] < path:
                    extra = overlay[pending[i]]
                    if extra is not None:
                        yield pending[i], extra[0], extra[1]
                    i += 1
                if i < len(pending) and pending[i] == path:
                    meta = overlay[path]
                    i += 1
                if meta is not None:
                    yield path, meta[0], meta[1]
            for path in pending[i:]:
                extra = overlay[path]
                if extra is not None:
                    yield path, extra[0], extra[1]
        except ObjectNotFound:
            return

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
                elif not _reserved(i.key):
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
                            cursor = _ManifestCursor(self.manifest_entries())
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
        if _reserved(path):
            raise InvalidInput(f"volume path {path!r} is reserved by the mirror layout")
        self.store.put(path, data, size=size, sha256=sha256)

    def delete(self, paths: Iterable[str]) -> None:
        self.store.delete_many(p for p in paths if not _reserved(p))
