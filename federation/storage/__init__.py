"""Volume storage: each volume a directory on the controller's disk, with its change journal.

Why: a controller must accept atomic, durable puts of any size in bounded memory, answer
``stat`` with a sha256 without rereading the file, and give mirroring a durable per-volume
journal of every committed mutation (SPEC §5, §6, §7), so incremental passes cost what
changed, not the volume's size.

On-disk layout of one volume (``<data-dir>/volumes/<name>``)::

    lock                      flock: one process owns the directory
    catalog.sqlite (+ -wal)   WAL, synchronous=FULL: files, journal, meta, gc_pending, staged,
                              inline_blobs (small files); auto_vacuum=INCREMENTAL, so the
                              pages of deleted small files go back to the disk
    blobs/<sha[:2]>/<sha256>  immutable, content-addressed file bodies
    tmp/                      puts being streamed; swept at open
    headroom                  4 MiB kept back so that a delete commits on a full disk

A put streams to ``tmp/`` while hashing, fsyncs, renames into ``blobs/`` (directory fsynced),
then commits ONE SQLite transaction (files row, journal row, version + 1). Readers open the
blob before streaming, so a concurrent replace never tears a read. Blobs are unlinked only
when nothing references them and no pin holds a point-in-time version.

This package must never touch etcd, the network or gRPC (the controller does), never import
from ``mirroring`` or above, never hold a whole file in memory, and never show its own
internals (temp files, the catalog, blobs) as volume files.
"""

from .inline import INLINE_MAX
from .models import DirEntry, FileMeta, JournalEntry
from .space import Headroom
from .volume import PutWriter, VolumeStorage

__all__ = ["INLINE_MAX", "DirEntry", "FileMeta", "Headroom", "JournalEntry", "PutWriter", "VolumeStorage"]
