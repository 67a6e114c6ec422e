"""What blobs a volume directory holds, of both kinds: files under ``blobs/`` and inline
rows of its catalog (small content). Tests compare this with what the files reference."""
from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


def blob_files(root: Path) -> set[str]:
    """Names of the blob files under ``<root>/blobs``."""
    return {p.name for p in (root / "blobs").rglob("*") if p.is_file()}


def inline_blobs(root: Path) -> set[str]:
    """sha256 of every inline blob row in ``<root>/catalog.sqlite`` (read-only)."""
    uri = f"file:{root / 'catalog.sqlite'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        return {str(r[0]) for r in conn.execute("SELECT sha256 FROM inline_blobs")}


def stored_blobs(root: Path) -> set[str]:
    """Every blob the volume stores, whichever its kind."""
    return blob_files(root) | inline_blobs(root)
