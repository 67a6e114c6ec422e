"""One volume on local disk: the public facade over its parts.

``VolumeStorage`` assembles one volume from parts with one job each, wired through their
constructors, and keeps the methods callers use:

* ``state.py``: the catalog, blob store, write lock and cached meta every part shares;
* ``puts.py``: the put path (small content inline in the commit; larger content streamed,
  hashed, fsynced and installed as a blob file; group commit);
* ``reads.py``: the get path (stat, listings, streaming reads, snapshots of files);
* ``edits.py``: namespace edits (delete, rename, mkdir, rmdir, chmod/utime);
* ``journal.py`` and ``pins.py``: the change journal's queries and truncation, and pins;
* ``replica_ingest.py``: blobs ahead of the version that uses them, then that version;
* ``gc.py``: which blobs (files, inline rows) may be removed, and when.

A put's content is durable and visible only after its catalog commit; a crash leaves the old
or the new file, never a part, and leftovers are swept at the next open. Writers are
serialised by one lock around commit transactions only; the streaming of several puts, and
all reads, run in parallel. One process owns a volume directory at a time (an ``flock`` on
``<root>/lock`` enforces it).

This package must never touch etcd, the network, or the gRPC layer; never hold more of a
file's content in memory than ``inline.INLINE_MAX`` (64 KiB); never rewrite a blob in place; never let a failed put change anything
visible.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Self

from namespace.errors import Conflict, FileNotFound, InvalidInput, StaleEpoch

from . import catalog as cat
from .blobs import fsync_dir
from .checks import check_path
from .edits import NamespaceEdits
from .gc import COLLECT_BATCH, BlobCollector
from .group_commit import GroupCommitter
from .journal import DIVERGED_DIR, Journal
from .models import DirEntry, FileMeta, JournalEntry
from .pins import Pins
from .puts import FAULT_ENV, Batch, Puts, PutWriter
from .reads import BlobReader, Reads
from .replica_ingest import ReplicaIngest
from .space import Headroom, disk_full_reason
from .state import VolumeState

__all__ = [
    "DIVERGED_DIR", "FAULT_ENV", "ROLES", "BlobReader", "PutWriter", "VolumeStorage",
    "check_path",
]

log = logging.getLogger(__name__)

ROLES = ("primary", "replica")
_FULL_DISK_BATCH = 16  # blobs per collection transaction when a full disk refused a larger one


class VolumeStorage:
    """A volume's files, journal and metadata under one directory ``root``."""

    def __init__(self, root: Path, name: str, headroom: Headroom | None = None) -> None:
        """No I/O here: use ``VolumeStorage.open``."""
        self.root = root
        self.name = name
        self._state = VolumeState(root, name)
        self._pins = Pins(name)
        self._gc = BlobCollector(self._state, self._pins)
        self._puts = Puts(self._state, self._gc)
        self._reads = Reads(self._state)
        self._edits = NamespaceEdits(self._state, self._gc)
        self._journal = Journal(self._state, self._pins)
        self._ingest = ReplicaIngest(self._state, self._gc)
        self._headroom = headroom or Headroom(root / "headroom")
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        root: Path,
        name: str,
        *,
        create: bool = False,
        epoch: int = 1,
        role: str = "primary",
        headroom: Headroom | None = None,
    ) -> VolumeStorage:
        """Open (or with ``create``, create) the volume at ``root``; recover after a crash.

        ``headroom``: the space its data directory keeps back for deletes (shared by the
        directory's volumes); without it, the volume keeps its own, in ``root``."""
        root = Path(root)
        if role not in ROLES:
            raise InvalidInput(f"volume role must be one of {ROLES}, not {role!r}")
        if not (root / "catalog.sqlite").is_file():
            if not create:
                raise FileNotFound(f"volume {name!r} has no storage at {root}")
            root.mkdir(parents=True, exist_ok=True)
        vol = cls(root, name, headroom)
        try:
            vol._open(epoch=epoch, role=role)
        except BaseException:
            vol.close()
            raise
        return vol

    def _open(self, *, epoch: int, role: str) -> None:
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Conflict(f"volume {self.name!r} at {self.root} is open in another process") from None
        self._lock_fd = fd
        state = self._state
        state.blobs.ensure_layout()
        state.catalog.init_schema(epoch=epoch, role=role)
        state.catalog.convert_to_reclaiming()
        fsync_dir(self.root)
        state.load_meta()
        swept = state.blobs.sweep_tmp()
        orphans = self._gc.sweep_orphans()
        with state.lock:
            self._gc.collect_locked()
        own = self.root / "headroom"
        if self._headroom.path != own:
            own.unlink(missing_ok=True)  # kept by each volume before one was shared: freed
        self._headroom.restore()
        if swept or orphans:
            log.info(
                "volume %s: recovered at open: %d temp files, %d unreferenced blobs removed",
                self.name,
                swept,
                orphans,
            )

    def close(self) -> None:
        """Close every catalog connection and release the directory lock."""
        self._state.catalog.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ metadata

    @property
    def version(self) -> int:
        """Committed mutations so far (0 = a new, empty volume)."""
        return self._state.version

    @property
    def epoch(self) -> int:
        return self._state.epoch

    @property
    def role(self) -> str:
        return self._state.role

    @property
    def journal_floor(self) -> int:
        """Oldest version from which the journal still describes every change."""
        return self._state.floor

    @property
    def put_committer(self) -> GroupCommitter[Batch, FileMeta]:
        """The group committer of puts (its counters are for tests and benchmarks)."""
        return self._puts.committer

    def set_epoch(self, epoch: int) -> None:
        """Record a new owner epoch; epochs never go down."""
        state = self._state
        with state.lock:
            if epoch < state.epoch:
                raise StaleEpoch(
                    f"volume {self.name!r}: epoch {epoch} is older than current {state.epoch}"
                )
            with state.write_txn() as conn:
                cat.set_meta(conn, "epoch", epoch)
            state.epoch = epoch

    def set_role(self, role: str) -> None:
        if role not in ROLES:
            raise InvalidInput(f"volume role must be one of {ROLES}, not {role!r}")
        state = self._state
        with state.lock:
            with state.write_txn() as conn:
                cat.set_meta(conn, "role", role)
            state.role = role

    # ------------------------------------------------------------------ puts (puts.py)

    def writer(self, path: str) -> PutWriter:
        """Start a put; a path where a directory is, or below a file, fails now."""
        self._headroom.check_room()
        return self._puts.writer(path)

    def put_bytes(
        self,
        path: str,
        data: bytes,
        *,
        mtime: float | None = None,
        expect_sha256: str | None = None,
        version: int | None = None,
        mode: int | None = None,
        if_absent: bool = False,
    ) -> FileMeta:
        self._headroom.check_room()
        return self._puts.put_bytes(
            path, data, mtime=mtime, expect_sha256=expect_sha256, version=version, mode=mode,
            if_absent=if_absent,
        )

    def put_small_async(
        self,
        path: str,
        data: bytes,
        schedule: Callable[[Callable[[], None]], object],
        *,
        mtime: float | None = None,
        expect_sha256: str | None = None,
        mode: int | None = None,
        if_absent: bool = False,
        gate: Callable[[], object] | None = None,
    ) -> asyncio.Future[FileMeta]:
        """``put_bytes`` of at most ``INLINE_MAX`` bytes from an event loop, without a thread
        of the caller's waiting for the commit (``Puts.put_small_async``)."""
        self._headroom.check_room()
        return self._puts.put_small_async(
            path, data, schedule, mtime=mtime, expect_sha256=expect_sha256, mode=mode,
            if_absent=if_absent, gate=gate,
        )

    # ------------------------------------------------------------------ edits (edits.py)

    def delete(
        self,
        path: str,
        *,
        recursive: bool = False,
        version: int | None = None,
        keep_parent: bool = False,
    ) -> int:
        """Delete a file, or with ``recursive`` a directory's files as ONE version. On a
        full disk it still commits, and its blobs are still collected, on the space the
        volume keeps back for this (:mod:`.space`)."""
        v = self._headroom.freeing(lambda: self._edits.delete(
            path, recursive=recursive, version=version, keep_parent=keep_parent, collect=False
        ))
        self._collect_freeing()
        return v

    def _collect_freeing(self) -> None:
        """Collect what a committed change freed, then take the headroom again if there is
        room. On a full disk: on the headroom, in small transactions, and at worst not now.
        The change is committed whatever happens here: failing it would tell the caller that
        a delete which took effect did not (a recursive delete of 10k small files on a full
        disk did that); what is left queued is collected by a later pass."""
        def collect(batch: int) -> None:
            with self._state.lock:
                self._gc.collect_locked(batch)

        for batch in (COLLECT_BATCH, _FULL_DISK_BATCH):
            try:
                self._headroom.freeing(functools.partial(collect, batch))
                break
            except (OSError, sqlite3.Error) as exc:
                if disk_full_reason(exc) is None:
                    raise
                full = exc
        else:
            log.warning("volume %s: disk full; blobs freed by a committed change wait for a "
                        "later collection (%s)", self.name, full)
        self._headroom.restore()

    def rename(self, src: str, dst: str, *, version: int | None = None) -> int:
        """Move a file or a directory (with everything below it) to ``dst`` as ONE version."""
        return self._edits.rename(src, dst, version=version)

    def mkdir(
        self, path: str, *, mode: int = 0o755, mtime: float | None = None,
        version: int | None = None,
    ) -> int:
        """Make an (empty) explicit directory; it persists until ``rmdir``."""
        return self._edits.mkdir(path, mode=mode, mtime=mtime, version=version)

    def rmdir(self, path: str, *, version: int | None = None) -> int:
        """Remove an empty directory (POSIX ``rmdir``)."""
        return self._edits.rmdir(path, version=version)

    def set_attrs(
        self, path: str, *, mode: int | None = None, mtime: float | None = None,
        version: int | None = None,
    ) -> int:
        """``chmod`` and/or ``utimens``: new mode bits or mtime, content untouched, ONE version."""
        return self._edits.set_attrs(path, mode=mode, mtime=mtime, version=version)

    # ------------------------------------------------------------------ replicas (replica_ingest.py)

    def ingest_blob(self, chunks: Iterable[bytes | memoryview], expect_sha256: str | None = None) -> str:
        """Store a blob durably for a coming ``reset_to``/``apply_changes``; return its sha256."""
        self._headroom.check_room()
        return self._ingest.ingest_blob(chunks, expect_sha256)

    def has_blob(self, sha256: str) -> bool:
        """Whether a blob with this content is on disk (lets a mirror skip sending it)."""
        return self._ingest.has_blob(sha256)

    def holds_intact(self, sha256: str) -> bool:
        """``has_blob``, and its bytes re-read still hash to its name (else it is set aside)."""
        return self._ingest.holds_intact(sha256)

    def apply_changes(
        self,
        files: Iterable[FileMeta],
        deleted: Iterable[str],
        version: int,
        dirs: Iterable[tuple[str, int, float]] | None = None,
    ) -> int:
        """Replicas: apply one primary version's net changes in one transaction. Their
        blobs are stored already, so what is left to write is catalog rows: on a full disk
        they commit on the headroom (:mod:`.space`), so that a replica whose disk filled
        still follows the deletes its owner makes to free space."""
        files, deleted = list(files), list(deleted)  # read again if the first try meets a full disk
        dirs = None if dirs is None else list(dirs)
        v = self._headroom.freeing(lambda: self._ingest.apply_changes(files, deleted, version, dirs, collect=False))
        self._collect_freeing()
        return v

    def reset_to(
        self,
        files: Iterable[FileMeta],
        version: int,
        dirs: Iterable[tuple[str, int, float]] | None = None,
    ) -> None:
        """Make the state exactly ``files`` at ``version`` (journal emptied, floor = version)."""
        self._ingest.reset_to(files, version, dirs)

    # ------------------------------------------------------------------ reads (reads.py)

    def dirs(self) -> list[tuple[str, int, float]]:
        """Every explicit directory as (path, mode, mtime): what a cluster replica mirrors."""
        return self._reads.dirs()

    def stat(self, path: str) -> FileMeta | DirEntry:
        return self._reads.stat(path)

    def listdir(self, path: str) -> list[DirEntry]:
        """Children of a directory sorted by name; a file lists as itself."""
        return self._reads.listdir(path)

    def read(
        self, path: str, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20
    ) -> BlobReader:
        """Stream ``[start, end)`` of a file; the blob is open when this returns."""
        return self._reads.read(path, start, end, chunk_size)

    def open_blob(self, sha256: str) -> BinaryIO:
        """Open a blob by hash (mirror copies of a pinned version)."""
        return self._reads.open_blob(sha256)

    def usage(self) -> tuple[int, int]:
        """(files, bytes) of the current state: one aggregate query (a table scan)."""
        return self._reads.usage()

    def files(self, prefix: str = "") -> Iterator[FileMeta]:
        """Current files at or below directory ``prefix``, by path, from one snapshot.

        The snapshot is taken now and held (a SQLite read transaction on a connection of the
        stream's own, so it may be advanced from any thread) until the iterator is exhausted
        or closed: close it promptly, as it keeps the WAL from being checkpointed past it.
        """
        return self._reads.files(prefix)

    # ------------------------------------------------------------------ journal and pins

    def journal(self, after_version: int) -> Iterator[JournalEntry]:
        """Journal entries with version > ``after_version``, in commit order."""
        return self._journal.entries(after_version)

    def existed_at(self, after_version: int, upto_version: int) -> set[str]:
        """Of the paths changed in (after, upto], those that existed at ``after``: lets the
        mirror engine tell overwrites from new paths without asking the target (issue 14)."""
        return self._journal.existed_at(after_version, upto_version)

    def changes_since(
        self, after_version: int, upto_version: int
    ) -> tuple[list[FileMeta], list[str]]:
        """Net effect of versions (after, upto]: files to copy (as of upto) and paths deleted.

        Computed from the journal alone (grouped by path), so its cost follows the number of
        changed paths, not the volume's size; both lists are held in memory. A path created
        and deleted within the range appears in neither list.
        """
        return self._journal.changes_since(after_version, upto_version)

    def snapshot_files(self, version: int) -> Iterator[FileMeta]:
        """The files as of ``version`` by path. Blobs of an old version are only guaranteed
        to exist while a pin at (or below) that version is held."""
        return self._journal.snapshot_files(version)

    def diverge(self, after_version: int, epoch: int) -> list[str]:
        """Copy every file changed after ``after_version`` to ``.gns/diverged/<epoch>/``.

        The copies are ordinary files sharing the same blobs (no data is copied) and are
        committed as ONE new version. Files already under ``.gns/`` are not copied again;
        deleted files have no content to keep. Returns the new paths.
        """
        return self._journal.diverge(after_version, epoch)

    def truncate_journal(self, upto_version: int) -> None:
        """Drop journal rows up to ``upto_version``; kept back to the oldest pin if any."""
        self._journal.truncate(upto_version)

    def pin(self) -> tuple[int, object]:
        """Hold the current version's blobs until ``unpin``; returns (version, token)."""
        with self._state.lock:
            version = self._state.version
            return version, self._pins.add(version)

    def unpin(self, token: object) -> None:
        with self._state.lock:
            self._pins.remove(token)
            if not self._pins.held:
                self._gc.collect_locked()
