"""Small blobs kept inside the catalog: ``inline_blobs(sha256 PK, data)``.

Why: a small put written as a blob file costs a temp file, its fsync, a rename, a directory
fsync and often an unlink: several syscalls and two fsyncs per put, where the content is a
few KiB. Stored as a row written in the same transaction as the put's ``files`` row, a whole
group-commit batch of small puts costs ONE transaction and ONE WAL fsync, and a crash can
never leave the row without its blob or the blob without its row.

Inline blobs are content-addressed like blob files and obey the same rules: immutable, and
deleted only by garbage collection (``gc.py``) once nothing references them and no pin is
held. The same content may exist both inline and as a file (a replica of an earlier release
ingested every blob as a file; an older volume has only files): readers accept either,
collection removes both.

This module only speaks SQL on a connection the caller owns (transactions included).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

# Content up to this size is stored inline. Why 64 KiB: at that size a blob file costs more
# in syscalls and fsyncs than the bytes themselves, while 16 catalog pages per row keep the
# WAL (written twice: commit, then checkpoint) small next to the per-file costs it saves.
# Larger content streams to blob files (O_DIRECT stages) and is never held in memory.
INLINE_MAX = 64 << 10


def store_many(conn: sqlite3.Connection, blobs: list[tuple[str, bytes]]) -> None:
    """Keep each (sha256, data) pair (inside the caller's transaction); same sha, same bytes."""
    conn.executemany("INSERT OR IGNORE INTO inline_blobs(sha256, data) VALUES (?, ?)", blobs)


def load(conn: sqlite3.Connection, sha256: str) -> bytes | None:
    row = conn.execute("SELECT data FROM inline_blobs WHERE sha256 = ?", (sha256,)).fetchone()
    return None if row is None else bytes(row[0])


def exists(conn: sqlite3.Connection, sha256: str) -> bool:
    row = conn.execute("SELECT 1 FROM inline_blobs WHERE sha256 = ?", (sha256,)).fetchone()
    return row is not None


def delete(conn: sqlite3.Connection, shas: Iterable[str]) -> None:
    """Drop these inline blobs (GC, inside the caller's transaction); absent ones are fine."""
    conn.executemany("DELETE FROM inline_blobs WHERE sha256 = ?", [(s,) for s in shas])


def all_shas(conn: sqlite3.Connection) -> set[str]:
    """Every inline blob's sha256 (checks and tests)."""
    return {str(r[0]) for r in conn.execute("SELECT sha256 FROM inline_blobs")}
