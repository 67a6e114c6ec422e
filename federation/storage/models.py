"""Plain values that the volume engine hands out: file metadata, directory entries, journal rows.

They exist so that callers (the gRPC service, the mirror engine) never see SQLite rows or
blob paths. They must never carry behaviour or I/O: frozen dataclasses, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class FileMeta:
    """One file of a volume as stored in the catalog."""

    path: str
    """Volume-relative path, e.g. ``sensors/day.csv`` (no leading '/')."""
    size: int
    """Size in bytes."""
    sha256: str
    """Lower-case hex sha256 of the content; also the name of its blob."""
    mtime: float
    """Modification time, seconds since the epoch, as given at commit."""
    version: int
    """The volume version whose mutation last wrote this file."""


@dataclass(frozen=True)
class DirEntry:
    """One entry of a directory listing (SPEC §4 ``ls`` shape)."""

    name: str
    """Last path component ('' for the volume root)."""
    type: Literal["file", "dir"]
    """``file`` or ``dir``; directories are implicit, derived from file paths."""
    size: int
    """File size in bytes; 0 for a directory."""


@dataclass(frozen=True)
class JournalEntry:
    """One row of the durable change journal; an ``rm -r`` is one version, many rows."""

    version: int
    """Volume version this change belongs to."""
    op: Literal["put", "delete"]
    """``put`` (file created or replaced) or ``delete``."""
    path: str
    """Volume-relative path of the file changed."""
    size: int
    """New size; 0 for a delete."""
    sha256: str
    """New content hash; '' for a delete."""
    mtime: float
    """New mtime; for a delete, the time of the deletion."""
