"""Plain values that the volume engine hands out: file metadata, directory entries, journal rows.

They exist so that callers (the gRPC service, the mirror engine) never see SQLite rows or
blob paths. They must never carry behaviour or I/O: frozen dataclasses, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    mode: int = 0o644
    """Permission bits (``chmod``), kept per file and mirrored to cluster replicas."""


@dataclass(frozen=True)
class DirEntry:
    """One entry of a directory listing (SPEC §4 ``ls`` shape)."""

    name: str
    """Last path component ('' for the volume root)."""
    type: Literal["file", "dir"]
    """``file`` or ``dir``; directories are implicit, derived from file paths."""
    size: int
    """File size in bytes; 0 for a directory."""
    mtime: float = field(default=0.0, compare=False)
    """Modification time; 0 for an implicit directory (one that only exists through files).
    Attributes, not identity: equality stays (name, type, size)."""
    mode: int = field(default=0, compare=False)
    """Permission bits; 0 for an implicit directory (callers show their default)."""


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
    kind: str = ""
    """What the row stands for beyond put/delete: ``rename`` (both rows of a moved file),
    ``chmod``, ``utime``, or for directories ``mkdir``, ``rmdir``, ``dirattr``; '' = plain."""
    src: str = ""
    """For the put row of a rename: the old path."""
    mode: int = 0
    """Mode bits after the change (0 when not recorded)."""
