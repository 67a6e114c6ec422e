"""What blobs a volume directory holds, of both kinds: files under ``blobs/`` and inline
rows of its catalog (small content). Tests compare this with what the files reference."""
from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from federation.storage.blobs import BlobStore


def blob_files(root: Path) -> set[str]:
    """Names of the blob files under ``<root>/blobs``."""
    return {p.name for p in (root / "blobs").rglob("*") if p.is_file()}


def _catalog_shas(root: Path, table: str) -> set[str]:
    """The sha256 column of ``table`` in ``<root>/catalog.sqlite``, opened read-only."""
    uri = f"file:{root / 'catalog.sqlite'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        return {str(r[0]) for r in conn.execute(f"SELECT sha256 FROM {table}")}


def inline_blobs(root: Path) -> set[str]:
    """sha256 of every inline blob row."""
    return _catalog_shas(root, "inline_blobs")


def staged_blobs(root: Path) -> set[str]:
    """sha256 of every blob a replica staged for a coming apply or reset."""
    return _catalog_shas(root, "staged")


def stored_blobs(root: Path) -> set[str]:
    """Every blob the volume stores, whichever its kind."""
    return blob_files(root) | inline_blobs(root)


def small_blob_file(root: Path, data: bytes) -> str:
    """Store ``data`` as a blob file of the volume at ``root``, however small, as replicas of
    releases before inline replica ingest did; return its sha256. Nothing references it:
    the caller commits a file that does."""
    store = BlobStore(root)
    temp = store.new_temp()
    try:
        temp.write(data)
        sha = temp.finish()
        store.install(temp, sha)
        return sha
    finally:
        temp.discard()
