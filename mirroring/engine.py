"""The mirror engine: one pass copies exactly one volume version V to one target.

Why it exists: SPEC §6 promises that a target reporting version V holds exactly the volume's
files at V, that unchanged files are never copied again, that an incremental pass costs what
changed (not the volume's size), and that an interrupted pass resumes without re-sending.
This module is where those promises are kept, for every kind of target, through the two
small protocols of :mod:`mirroring.protocols`.

How a pass works (``run_pass``):

1. ``source.pin()`` fixes V (always unpinned in ``finally``); ``target.state()`` says what
   the target has committed (its version and epoch).
2. Mode: nothing to do (same version and epoch); **incremental** from the journal
   (``source.changes_since(target.version, V)``) when the target's version is within the
   journal; otherwise a **full compare**: ``source.snapshot_files(V)`` (sorted) merged with
   ``target.files()`` (sorted here with a bounded external sort, since the protocol does not
   promise an order), comparing sha256. Full compare happens on a first sync, a journal gap,
   a target ahead of V, or a target committed by an older epoch (after a failover its
   version numbers may describe another history).
3. Copies run on a bounded worker pool (``cloud_adapters.transfer.TransferPool``): at most
   ``workers`` files of ``SMALL_FILE`` bytes or more at once, and up to ``small_workers``
   (default ``SMALL_FACTOR`` x ``workers``) requests in flight in all, since a small file
   costs a target a round trip, not bandwidth; a file the target already holds (same sha256
   in its listing, or ``has`` / ``has_many`` for what the listing lacks) is skipped, which is
   what makes a killed pass resume without re-sending.
4. Phases, for targets that replace files in place (plain object-store layouts, see
   :class:`InPlaceTarget`): new paths first (harmless: not part of any version); then, only if
   needed, ``begin_in_place`` (the target stops claiming its old version), overwrites and
   deletions; then ``target.commit(V, epoch, snapshot_files(V))`` LAST, the commit point.

Memory stays bounded for millions of files: listings and snapshots are streamed, the target
listing is sorted in spilled runs, deferred overwrites/deletions are spilled to a temporary
file; only ``changes_since`` (proportional to what changed) is held in memory.

This module must never import ``federation`` (layers: federation > mirroring), never build
a dict or list of a whole volume, and never commit a version before every file of it is on
the target.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import pickle
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol, TypeVar, runtime_checkable

from cloud_adapters.transfer import TransferPool
from mirroring.protocols import FileLike, MirrorTarget, TargetFile, TargetState, VolumeSource
from namespace.errors import Conflict, StaleEpoch

__all__ = [
    "BatchHasTarget",
    "InPlaceTarget",
    "Plan",
    "PassResult",
    "VerifyReport",
    "external_sort",
    "plan",
    "run_pass",
    "verify",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

DELETE_BATCH = 1000
"""Paths per ``target.delete`` call."""
SAMPLE_LIMIT = 1000
"""Paths listed by name in a ``Plan`` / ``VerifyReport`` (counts are always exact)."""
SMALL_FILE = 1 << 20
"""Files below this size may be copied beyond ``workers`` at once (up to ``small_workers``)."""
SMALL_FACTOR = 4
"""Default ``small_workers`` = ``SMALL_FACTOR`` x ``workers``."""
HAS_BATCH = 1000
"""Files per ``has_many`` question (:class:`BatchHasTarget`)."""
_RUN_SIZE = 100_000
_SPOOL_IN_MEMORY = 10_000


# ---------------------------------------------------------------------------------------------
# Optional target capabilities (structural: a target just has the methods)


@runtime_checkable
class InPlaceTarget(Protocol):
    """A target that replaces files in place (``ObjectStoreTarget``: plain objects).

    Such a target cannot stage a whole version aside, so overwrites and deletions are done
    last, after ``begin_in_place``; from then until the next ``commit`` its ``state()`` must
    not claim ``from_version`` (it reports 0: it fully holds no version)."""

    def held_sha256(self, path: str) -> str | None:
        """sha256 held at ``path`` now; None if absent, "" if present with no known hash."""

    def begin_in_place(self, from_version: int, to_version: int, epoch: int) -> None:
        """Called once per pass before the first overwrite or deletion."""


@runtime_checkable
class WriteIntentTarget(Protocol):
    """A target that can tell whether a pass was interrupted since its last commit."""

    def begin_writing(self, to_version: int, epoch: int) -> bool:
        """Called before a pass writes anything. True if no pass has written since the last
        commit (the target then holds its committed version and nothing else of ours)."""


@runtime_checkable
class ChangeOriginSource(Protocol):
    """A source that knows which changed paths existed at the target's version."""

    def existed_at(self, after_version: int, upto_version: int) -> set[str]:
        """Of the paths changed in (after, upto], those that existed at ``after``."""


@runtime_checkable
class DeltaTarget(Protocol):
    """A target whose commit point can record just what changed (``ObjectStoreTarget``: a
    delta segment), so an incremental pass does not rewrite a list of the whole volume."""

    def commit_changes(
        self, version: int, epoch: int, changed: Iterable[FileLike], deleted: Iterable[str],
        files: Callable[[], Iterator[FileLike]],
    ) -> None:
        """Commit ``version`` = the committed version plus ``changed`` / ``deleted``;
        ``files()`` streams the full list, for a target that decides to rewrite it."""


@runtime_checkable
class BatchHasTarget(Protocol):
    """A target that answers ``has`` for a batch of files in one round trip (a cluster
    replica: one ``Lacks`` RPC). A pass asks it before sending anything its listing does not
    show, so a resumed pass skips the blobs an interrupted one already delivered."""

    def has_many(self, files: Sequence[tuple[str, str]]) -> list[bool]:
        """``has(path, sha256)`` for each (path, sha256), in order."""


@runtime_checkable
class RehashTarget(Protocol):
    """A target that can re-read a file and hash its bytes (``verify(deep=True)``)."""

    def rehash(self, path: str) -> str:
        """sha256 of the bytes stored at ``path``, read back through the target."""


@runtime_checkable
class BlobRehashTarget(Protocol):
    """A target that re-reads and hashes blobs where they are stored (a cluster's replica,
    next to its disk), given their names (``verify(deep=True)``)."""

    def rehash_blobs(self, sha256s: Sequence[str]) -> set[str]:
        """Which of ``sha256s`` the target does not hold intact (a corrupt one is set aside)."""


REHASH_BATCH = 1000
"""Blobs a :class:`BlobRehashTarget` is asked to re-hash per call."""


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Plan:
    """What a pass would do (no side effects)."""

    volume: str
    target: str
    version: int
    """The version V a pass would mirror."""
    from_version: int
    """The target's committed version."""
    full: bool
    """True: full compare by sha256; False: incremental from the journal (or nothing)."""
    reason: str
    """``up-to-date``, ``incremental``, ``first-sync``, ``journal-gap``, ``target-ahead`` or
    ``epoch-changed``."""
    files_to_copy: int
    bytes_to_copy: int
    files_to_delete: int
    files_unchanged: int
    """Full compare only: files the target already holds with the right sha256."""
    copy_sample: tuple[str, ...] = ()
    """Up to ``SAMPLE_LIMIT`` paths to copy (in path order for a full compare)."""
    delete_sample: tuple[str, ...] = ()

    @property
    def nothing_to_do(self) -> bool:
        return self.reason == "up-to-date"


@dataclass(frozen=True)
class PassResult:
    """What one pass did."""

    version: int
    """The version V mirrored (pinned at pass start)."""
    from_version: int
    """The target's committed version when the pass started."""
    full: bool
    files_copied: int
    bytes_copied: int
    files_skipped: int
    """Files of V the target already held (resumed work or unchanged on a full compare)."""
    files_deleted: int
    seconds: float
    committed: bool = True
    """False when ``should_stop`` ended the pass early (nothing committed)."""
    reason: str = ""
    """Why this mode (see ``Plan.reason``)."""


@dataclass(frozen=True)
class VerifyReport:
    """``verify``: the target's files against the source's version V, by sha256."""

    volume: str
    target: str
    version: int
    """Source version compared against (pinned)."""
    target_version: int
    """Target's committed version before any repair."""
    deep: bool
    files_checked: int
    missing_count: int
    extra_count: int
    mismatched_count: int
    missing: tuple[str, ...] = ()
    """Up to ``SAMPLE_LIMIT`` paths each."""
    extra: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()
    repaired: bool = False
    repair: PassResult | None = None

    @property
    def ok(self) -> bool:
        """True if the target held exactly V (before any repair)."""
        return (
            self.missing_count == self.extra_count == self.mismatched_count == 0
            and self.target_version == self.version
        )


# ---------------------------------------------------------------------------------------------
# Bounded-memory helpers


class _Spool:
    """An append-only list that spills to a temporary file past a few thousand items."""

    def __init__(self) -> None:
        self._mem: list[Any] = []
        self._file: IO[bytes] | None = None
        self.count = 0

    def append(self, item: Any) -> None:
        self.count += 1
        self._mem.append(item)
        if len(self._mem) >= _SPOOL_IN_MEMORY:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="gns-mirror-spool-")
            pickle.dump(self._mem, self._file, protocol=pickle.HIGHEST_PROTOCOL)
            self._mem = []

    def __iter__(self) -> Iterator[Any]:
        if self._file is not None:
            self._file.flush()
            self._file.seek(0)
            while True:
                try:
                    chunk = pickle.load(self._file)
                except EOFError:
                    break
                yield from chunk
            self._file.seek(0, 2)
        yield from list(self._mem)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._mem = []


def external_sort(
    items: Iterable[T], key: Callable[[T], str], *, run_size: int = _RUN_SIZE
) -> Iterator[T]:
    """``items`` sorted by ``key`` with at most ``run_size`` items in memory: sorted runs are
    pickled to temporary files and merged. Already-sorted input costs one Timsort pass per
    run. Items must be picklable."""
    runs: list[IO[bytes]] = []
    buf: list[T] = []
    try:
        for item in items:
            buf.append(item)
            if len(buf) >= run_size:
                buf.sort(key=key)
                spill: IO[bytes] = tempfile.TemporaryFile(prefix="gns-mirror-sort-")
                for i in range(0, len(buf), 1000):
                    pickle.dump(buf[i:i + 1000], spill, protocol=pickle.HIGHEST_PROTOCOL)
                spill.seek(0)
                runs.append(spill)
                buf = []
        buf.sort(key=key)
        if not runs:
            yield from buf
            return

        def read_run(f: IO[bytes]) -> Iterator[T]:
            while True:
                try:
                    chunk = pickle.load(f)
                except EOFError:
                    return
                yield from chunk

        yield from heapq.merge(*(read_run(f) for f in runs), iter(buf), key=key)
    finally:
        for run in runs:
            run.close()


def _sorted_checked(items: Iterable[FileLike], what: str) -> Iterator[FileLike]:
    """Pass ``items`` through, raising if paths are not strictly increasing."""
    prev: str | None = None
    for f in items:
        if prev is not None and f.path <= prev:
            raise ValueError(f"{what}: paths not sorted/unique ({prev!r} then {f.path!r})")
        prev = f.path
        yield f


@contextlib.contextmanager
def _closing_stream(it: Iterator[T]) -> Iterator[Iterator[T]]:
    """Close a stream (e.g. a snapshot holding a read transaction) however we leave it."""
    try:
        yield it
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _merge(
    src: Iterator[FileLike], tgt: Iterator[TargetFile]
) -> Iterator[tuple[FileLike | None, TargetFile | None]]:
    """Merge-join two path-sorted streams: (s, None) source only, (None, t) target only."""
    s = next(src, None)
    t = next(tgt, None)
    while s is not None or t is not None:
        if t is None or (s is not None and s.path < t.path):
            yield s, None
            s = next(src, None)
        elif s is None or t.path < s.path:
            yield None, t
            t = next(tgt, None)
        else:
            yield s, t
            s = next(src, None)
            t = next(tgt, None)


def _target_sorted(target: MirrorTarget) -> Iterator[TargetFile]:
    return external_sort(target.files(), key=lambda f: f.path)


def _same(s: FileLike, t: TargetFile) -> bool:
    return t.sha256 == s.sha256 and t.size == s.size


@dataclass(frozen=True)
class _Copy:
    """A picklable snapshot of the FileLike to copy (spooled across phases)."""

    path: str
    size: int
    sha256: str
    mtime: float


def _as_copy(f: FileLike) -> _Copy:
    return _Copy(f.path, f.size, f.sha256, f.mtime)


# ---------------------------------------------------------------------------------------------
# Mode decision and planning


def _decide(source: VolumeSource, st: TargetState, v: int) -> tuple[bool, str]:
    """(full, reason) for mirroring V to a target in state ``st``."""
    if st.epoch > source.epoch:
        raise StaleEpoch(
            f"volume {source.name!r}: target committed by epoch {st.epoch}, "
            f"this owner has epoch {source.epoch}"
        )
    if st.version == 0:
        return True, "first-sync"
    if st.epoch and st.epoch < source.epoch:
        return True, "epoch-changed"
    if st.version == v:
        return False, "up-to-date"
    if st.version > v:
        return True, "target-ahead"
    if st.version < source.journal_floor:
        return True, "journal-gap"
    return False, "incremental"


def plan(source: VolumeSource, target: MirrorTarget, *, version: int | None = None) -> Plan:
    """What ``run_pass`` would do now (or for ``version``); reads only, writes nothing.

    Incremental counts are the journal's changed files (some may turn out to be on the
    target already); a full compare streams both sides and counts exactly."""
    token: object | None = None
    if version is None:
        version, token = source.pin()
    try:
        st = target.state()
        full, reason = _decide(source, st, version)
        copy_sample: list[str] = []
        delete_sample: list[str] = []
        n_copy = n_bytes = n_del = n_same = 0
        if not full and reason == "incremental":
            try:
                copies, deleted = source.changes_since(st.version, version)
            except Conflict:
                full, reason = True, "journal-gap"
            else:
                n_copy, n_bytes, n_del = len(copies), sum(f.size for f in copies), len(deleted)
                copy_sample = [f.path for f in copies[:SAMPLE_LIMIT]]
                delete_sample = list(deleted[:SAMPLE_LIMIT])
        if full:
            with _closing_stream(source.snapshot_files(version)) as snap:
                src = _sorted_checked(snap, f"volume {source.name!r} snapshot")
                for s, t in _merge(src, _target_sorted(target)):
                    if s is None:
                        assert t is not None
                        n_del += 1
                        if len(delete_sample) < SAMPLE_LIMIT:
                            delete_sample.append(t.path)
                    elif t is not None and _same(s, t):
                        n_same += 1
                    else:
                        n_copy += 1
                        n_bytes += s.size
                        if len(copy_sample) < SAMPLE_LIMIT:
                            copy_sample.append(s.path)
        return Plan(
            volume=source.name, target=target.name, version=version, from_version=st.version,
            full=full, reason=reason, files_to_copy=n_copy, bytes_to_copy=n_bytes,
            files_to_delete=n_del, files_unchanged=n_same,
            copy_sample=tuple(copy_sample), delete_sample=tuple(delete_sample),
        )
    finally:
        if token is not None:
            source.unpin(token)


# ---------------------------------------------------------------------------------------------
# Executing a pass


@dataclass
class _Run:
    """Mutable state of one pass (only the calling thread touches it)."""

    source: VolumeSource
    target: MirrorTarget
    version: int
    st: TargetState
    pool: TransferPool
    """``small_workers`` threads; ``large`` admits ``workers`` of them to large files."""
    large: threading.BoundedSemaphore
    progress: Callable[[int, int], None] | None
    should_stop: Callable[[], bool] | None
    copied: int = 0
    bytes_copied: int = 0
    skipped: int = 0
    deleted: int = 0
    done_bytes: int = 0
    stopped: bool = False
    in_place_begun: bool = False
    overwrites: _Spool = field(default_factory=_Spool)
    deletes: _Spool = field(default_factory=_Spool)
    changes: tuple[Sequence[FileLike], Sequence[str]] | None = None
    """Incremental passes: the journal's net changes since the target's committed version."""
    existed: set[str] | None = None
    """Incremental passes on a target no pass has written to since its commit: the changed
    paths that exist in its committed version (overwrites); the others are new paths. The
    journal says what the target lacks, so no per-file HEAD is needed."""

    @property
    def in_place(self) -> bool:
        return isinstance(self.target, InPlaceTarget)

    def tick(self, nbytes: int) -> None:
        self.done_bytes += nbytes
        if self.progress is not None:
            self.progress(self.done_bytes, self.copied + self.skipped)

    def stop_now(self) -> bool:
        if not self.stopped and self.should_stop is not None and self.should_stop():
            self.stopped = True
            log.info("volume %s -> %s: pass to v%d stopped on request",
                     self.source.name, self.target.name, self.version)
        return self.stopped

    def copy(self, f: _Copy) -> tuple[_Copy, int | None]:
        """Worker: stream one blob to the target; (the file, its size)."""
        if f.size < SMALL_FILE:
            self._put(f)
        else:
            with self.large:
                self._put(f)
        return f, f.size

    def _put(self, f: _Copy) -> None:
        data = self.source.open_blob(f.sha256)
        try:
            self.target.put(f.path, f.size, f.sha256, f.mtime, data)
        finally:
            data.close()

    def feed(self, items: Iterable[_Copy]) -> Iterator[_Copy]:
        for f in items:
            if self.stop_now():
                return
            yield f

    def run_copies(self, items: Iterable[_Copy], *, ask: bool = False) -> None:
        """Copy ``items``; with ``ask``, each worker first asks ``target.has`` (a target
        without ``has_many``) and skips what the target holds."""
        fn = self.copy_if_lacking if ask else self.copy
        for f, size in self.pool.map_unordered(fn, self.feed(items)):
            if size is None:
                self.skipped += 1
                self.tick(f.size)
                continue
            self.copied += 1
            self.bytes_copied += size
            self.tick(size)

    def copy_if_lacking(self, f: _Copy) -> tuple[_Copy, int | None]:
        """Worker: ``copy`` unless the target already holds the file (size None)."""
        if self.target.has(f.path, f.sha256):
            return f, None
        return self.copy(f)

    def lacking(self, items: Iterable[_Copy]) -> Iterator[_Copy]:
        """The items a :class:`BatchHasTarget` does not hold, asked ``HAS_BATCH`` at a time
        (from the calling thread; copies already in flight go on meanwhile)."""
        assert isinstance(self.target, BatchHasTarget)
        it = iter(items)
        while batch := list(itertools.islice(it, HAS_BATCH)):
            if self.stop_now():
                return
            held = self.target.has_many([(f.path, f.sha256) for f in batch])
            if len(held) != len(batch):
                raise RuntimeError(f"target {self.target.name}: has_many answered "
                                   f"{len(held)} of {len(batch)}")
            for f, h in zip(batch, held, strict=True):
                if h:
                    self.skipped += 1
                    self.tick(f.size)
                else:
                    yield f

    def begin_in_place(self) -> None:
        if not self.in_place_begun and isinstance(self.target, InPlaceTarget):
            self.target.begin_in_place(self.st.version, self.version, self.source.epoch)
            self.in_place_begun = True

    def finish(self) -> bool:
        """Overwrites, deletions, then the commit point. False if stopped before commit."""
        if self.stop_now():
            return False
        if self.overwrites.count or self.deletes.count:
            self.begin_in_place()
        self.run_copies(self.overwrites)
        if self.stopped:
            return False
        batch: list[str] = []
        for path in self.deletes:
            batch.append(path)
            if len(batch) >= DELETE_BATCH:
                self.target.delete(batch)
                self.deleted += len(batch)
                batch = []
        if batch:
            self.target.delete(batch)
            self.deleted += len(batch)
        if self.stop_now():
            return False
        if self.changes is not None and isinstance(self.target, DeltaTarget):
            self.target.commit_changes(self.version, self.source.epoch, *self.changes,
                                       lambda: self.source.snapshot_files(self.version))
            return True
        with _closing_stream(self.source.snapshot_files(self.version)) as snap:
            self.target.commit(self.version, self.source.epoch, snap)
        return True

    def close(self) -> None:
        self.overwrites.close()
        self.deletes.close()

    # -- the two modes ------------------------------------------------------------------------

    def incremental(self, copies: Sequence[FileLike], deleted: Sequence[str]) -> None:
        in_place = isinstance(self.target, InPlaceTarget)
        if not in_place and isinstance(self.target, BatchHasTarget):
            # One question per HAS_BATCH changed files instead of one per file.
            self.run_copies(self.lacking(_as_copy(f) for f in copies))
            for path in deleted:
                self.deletes.append(path)
            return

        existed = self.existed
        target = self.target

        def classify(f: _Copy) -> tuple[str, _Copy]:
            if in_place and existed is not None:
                if f.path in existed:
                    return "defer", f  # an overwrite: after begin_in_place
                self.copy(f)
                return "copied", f
            if isinstance(target, InPlaceTarget):
                held = target.held_sha256(f.path)
                if held == f.sha256:
                    return "skip", f
                if held is not None:
                    return "defer", f  # an overwrite: after begin_in_place
            elif self.target.has(f.path, f.sha256):
                return "skip", f
            self.copy(f)
            return "copied", f

        items = self.feed(_as_copy(f) for f in copies)
        for what, f in self.pool.map_unordered(classify, items):
            if what == "skip":
                self.skipped += 1
                self.tick(f.size)
            elif what == "defer":
                self.overwrites.append(f)
            else:
                self.copied += 1
                self.bytes_copied += f.size
                self.tick(f.size)
        for path in deleted:
            self.deletes.append(path)

    def full(self) -> None:
        in_place = self.in_place

        def new_files() -> Iterator[_Copy]:
            with _closing_stream(self.source.snapshot_files(self.version)) as snap:
                src = _sorted_checked(snap, f"volume {self.source.name!r} snapshot")
                for s, t in _merge(src, _target_sorted(self.target)):
                    if s is None:
                        assert t is not None
                        self.deletes.append(t.path)
                    elif t is None:
                        yield _as_copy(s)
                    elif _same(s, t):
                        self.skipped += 1
                        self.tick(s.size)
                    elif in_place:
                        self.overwrites.append(_as_copy(s))
                    else:
                        yield _as_copy(s)

        if in_place:
            # Its listing shows every object it holds, with its sha256: nothing to ask.
            self.run_copies(new_files())
        elif isinstance(self.target, BatchHasTarget):
            # A listing shows committed files only: blobs an interrupted pass delivered
            # are not in it, so ask before sending (a resumed pass sends only the rest).
            self.run_copies(self.lacking(new_files()))
        else:
            self.run_copies(new_files(), ask=True)


def _pools(workers: int, small_workers: int | None, target: MirrorTarget
           ) -> tuple[TransferPool, threading.BoundedSemaphore]:
    if workers < 1:
        raise ValueError("workers must be >= 1")
    small = small_workers
    if small is None:
        # A small file costs an object store, or a replica (which fsyncs each blob), a round
        # trip more than bandwidth: keep more of them in flight.
        small = SMALL_FACTOR * workers
    if small < workers:
        raise ValueError("small_workers must be >= workers")
    return TransferPool(small), threading.BoundedSemaphore(workers)


def run_pass(
    source: VolumeSource,
    target: MirrorTarget,
    *,
    workers: int = 8,
    small_workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PassResult:
    """Mirror exactly the version pinned now to ``target`` (see the module docstring).

    ``workers`` files of ``SMALL_FILE`` bytes or more are copied at once; ``small_workers``
    (default: ``SMALL_FACTOR`` x ``workers``) bounds all requests in flight.

    ``progress(bytes_done, files_done)`` counts files copied or found already present (and
    their bytes), from the calling thread. ``should_stop()`` is polled between files; when it
    turns true the pass ends without committing (``PassResult.committed`` False).
    Raises ``StaleEpoch`` if the target was committed by a newer epoch (before writing
    anything, or at commit), ``Conflict`` if another writer committed meanwhile.
    """
    t0 = time.monotonic()
    version, token = source.pin()
    try:
        st = target.state()
        full, reason = _decide(source, st, version)
        if reason == "up-to-date":
            return PassResult(version, st.version, False, 0, 0, 0, 0,
                              time.monotonic() - t0, True, reason)
        copies: Sequence[FileLike] = ()
        deleted: Sequence[str] = ()
        if not full:
            try:
                copies, deleted = source.changes_since(st.version, version)
            except Conflict:
                full, reason = True, "journal-gap"
        log.info("volume %s -> %s: pass v%d -> v%d (%s)",
                 source.name, target.name, st.version, version, reason)
        run = _Run(source, target, version, st, *_pools(workers, small_workers, target), progress,
                   should_stop)
        try:
            if isinstance(target, WriteIntentTarget):
                clean = target.begin_writing(version, source.epoch)
                if clean and not full and isinstance(source, ChangeOriginSource):
                    run.existed = source.existed_at(st.version, version)
            if full:
                run.full()
            else:
                run.incremental(copies, deleted)
                run.changes = (copies, deleted)
                del copies, deleted
            committed = False if run.stopped else run.finish()
        finally:
            run.close()
        result = PassResult(
            version=version, from_version=st.version, full=full, files_copied=run.copied,
            bytes_copied=run.bytes_copied, files_skipped=run.skipped,
            files_deleted=run.deleted, seconds=time.monotonic() - t0,
            committed=committed, reason=reason,
        )
        log.info("volume %s -> %s: v%d %s: %d copied (%d bytes), %d skipped, %d deleted "
                 "in %.2fs", source.name, target.name, version,
                 "committed" if committed else "stopped", result.files_copied,
                 result.bytes_copied, result.files_skipped, result.files_deleted,
                 result.seconds)
        return result
    finally:
        source.unpin(token)


# ---------------------------------------------------------------------------------------------
# Verify


def verify(
    source: VolumeSource,
    target: MirrorTarget,
    *,
    repair: bool,
    deep: bool = False,
    workers: int = 8,
    small_workers: int | None = None,
) -> VerifyReport:
    """Compare the target's files with the source's current version V by sha256.

    Uses the sha256 ``target.files()`` reports (object metadata; for S3, the manifest or a
    HEAD for objects changed since it). ``deep=True`` also re-reads every matching file
    through the target and hashes its bytes (targets with ``rehash``), or has the target hash
    its blobs where they lie (``rehash_blobs``: a cluster's replica, which sets a corrupt one
    aside, so it is missing there until repaired). With ``repair``, copies
    missing and mismatched files, deletes extras and re-commits V, even if nothing differed
    but the target's committed version is not V."""
    version, token = source.pin()
    try:
        st = target.state()
        if st.epoch > source.epoch:
            raise StaleEpoch(
                f"volume {source.name!r}: target committed by epoch {st.epoch}, "
                f"this owner has epoch {source.epoch}"
            )
        pool, large = _pools(workers, small_workers, target)
        missing: list[str] = []
        extra: list[str] = []
        mismatched: list[str] = []
        counts = {"missing": 0, "extra": 0, "mismatched": 0, "checked": 0}
        run = _Run(source, target, version, st, pool, large, None, None)
        # Deep: an object store's bytes are read back here and hashed; a cluster's replica
        # hashes its own blobs. A target that can do neither gets the sha256 check only,
        # and its report says deep=False.
        rehash = target.rehash if deep and isinstance(target, RehashTarget) else None
        rehash_blobs = (target.rehash_blobs if deep and rehash is None and isinstance(target, BlobRehashTarget)
                        else None)

        def note(kind: str, sample: list[str], path: str) -> None:
            counts[kind] += 1
            if len(sample) < SAMPLE_LIMIT:
                sample.append(path)

        def walk() -> Iterator[_Copy]:
            with _closing_stream(source.snapshot_files(version)) as snap:
                src = _sorted_checked(snap, f"volume {source.name!r} snapshot")
                for s, t in _merge(src, _target_sorted(target)):
                    if s is None:
                        assert t is not None
                        note("extra", extra, t.path)
                        run.deletes.append(t.path)
                        continue
                    counts["checked"] += 1
                    if t is None:
                        note("missing", missing, s.path)
                        run.overwrites.append(_as_copy(s))
                    elif not _same(s, t):
                        note("mismatched", mismatched, s.path)
                        run.overwrites.append(_as_copy(s))
                    elif rehash is not None or rehash_blobs is not None:
                        yield _as_copy(s)

        def check(f: _Copy) -> tuple[_Copy, bool]:
            assert rehash is not None
            try:
                return f, rehash(f.path) == f.sha256
            except FileNotFoundError:
                return f, False

        def checked() -> Iterator[tuple[_Copy, bool]]:
            if rehash_blobs is None:
                yield from pool.map_unordered(check, walk())
                return
            files = walk()
            while batch := list(itertools.islice(files, REHASH_BATCH)):
                bad = rehash_blobs(sorted({f.sha256 for f in batch}))
                yield from ((f, f.sha256 not in bad) for f in batch)

        try:
            for f, good in checked():
                if not good:
                    note("mismatched", mismatched, f.path)
                    run.overwrites.append(f)
            differs = run.overwrites.count or run.deletes.count
            repair_result: PassResult | None = None
            if repair and (differs or st.version != version or st.epoch != source.epoch):
                t0 = time.monotonic()
                run.finish()
                repair_result = PassResult(
                    version=version, from_version=st.version, full=True,
                    files_copied=run.copied, bytes_copied=run.bytes_copied,
                    files_skipped=0, files_deleted=run.deleted,
                    seconds=time.monotonic() - t0, committed=True, reason="repair",
                )
        finally:
            run.close()
        report = VerifyReport(
            volume=source.name, target=target.name, version=version,
            target_version=st.version, deep=rehash is not None or rehash_blobs is not None,
            files_checked=counts["checked"],
            missing_count=counts["missing"], extra_count=counts["extra"],
            mismatched_count=counts["mismatched"], missing=tuple(missing),
            extra=tuple(extra), mismatched=tuple(sorted(mismatched)),
            repaired=repair_result is not None, repair=repair_result,
        )
        log.info("volume %s -> %s: verify v%d%s: %d checked, %d missing, %d extra, "
                 "%d mismatched%s", source.name, target.name, version,
                 " (deep)" if deep else "", report.files_checked, report.missing_count,
                 report.extra_count, report.mismatched_count,
                 ", repaired" if report.repaired else "")
        return report
    finally:
        source.unpin(token)
