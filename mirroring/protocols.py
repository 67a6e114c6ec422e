"""What mirroring needs from the layers above it, as protocols (no import runs upward).

``federation`` passes in a :class:`VolumeSource` (a volume's journal and files on the owner's
disk, i.e. ``federation.storage.VolumeStorage``) and, for cluster targets, a
:class:`MirrorTarget` that pushes to another controller over gRPC. Object-store targets are
implemented here, in :mod:`mirroring.targets.objectstore`.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable


class FileLike(Protocol):
    """A file of a volume (``federation.storage.FileMeta`` fits)."""

    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def mtime(self) -> float: ...


@dataclass(frozen=True)
class TargetFile:
    """A file as a target holds it."""

    path: str
    size: int
    sha256: str
    mtime: float = 0.0


@runtime_checkable
class VolumeSource(Protocol):
    """Read side of one volume on its owner."""

    name: str

    @property
    def version(self) -> int: ...
    @property
    def epoch(self) -> int: ...
    @property
    def journal_floor(self) -> int: ...
    def pin(self) -> tuple[int, object]:
        """Hold the current version's blobs readable; returns (version, token)."""
    def unpin(self, token: object) -> None: ...
    def changes_since(self, after_version: int, upto_version: int) -> tuple[Sequence[FileLike], Sequence[str]]:
        """Net effect of versions (after, upto]: files to copy and paths deleted.
        Raises ``namespace.errors.Conflict`` when the journal no longer reaches back."""
    def snapshot_files(self, version: int) -> Iterator[FileLike]:
        """Every file as of ``version`` (the pinned one), sorted by path, streamed."""
    def open_blob(self, sha256: str) -> BinaryIO: ...


@dataclass(frozen=True)
class TargetState:
    """What a target has committed (its commit point)."""

    version: int
    """Volume version the target fully holds; 0 = nothing committed yet."""
    epoch: int = 0
    """Owner epoch that committed it; writers from older epochs are refused."""


@runtime_checkable
class MirrorTarget(Protocol):
    """Write side: one target of one policy (a replica cluster or an object-store prefix)."""

    name: str
    """As written in the policy: ``onprem-b`` or ``s3://dr-bucket/sensors``."""

    def state(self) -> TargetState:
        """The committed version (read from the commit point, e.g. the manifest)."""
    def files(self) -> Iterator[TargetFile]:
        """Everything the target holds now, for a full compare (streamed)."""
    def has(self, path: str, sha256: str) -> bool:
        """True if ``path`` already holds exactly ``sha256`` (resume without re-sending)."""
    def put(self, path: str, size: int, sha256: str, mtime: float, data: BinaryIO) -> None:
        """Store one file (not yet visible as part of any version)."""
    def delete(self, paths: Iterable[str]) -> None:
        """Remove files (not yet visible as part of any version)."""
    def commit(self, version: int, epoch: int, files: Iterable[FileLike]) -> None:
        """Make ``version`` the target's committed state; ``files`` is the full file list at
        that version (streamed). Refused with ``namespace.errors.StaleEpoch`` if the target
        was committed by a newer epoch."""
