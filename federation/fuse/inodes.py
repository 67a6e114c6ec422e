"""Inode numbers for mount-relative paths, and the kernel's lookup counts.

Paths are relative to the mount's root ('' is the root, ``a/b`` below it). An inode lives
while the kernel holds a lookup on it (``forget`` drops it); a rename moves the paths of an
inode and of everything below it, so open files and cached inodes follow the rename.

The table also remembers, per file, the sha256 of the content the kernel may hold pages of
(set when it is opened for reading, dropped when it is opened for writing): an open keeps
the kernel's pages exactly when the file's committed content is still that one.
"""
from __future__ import annotations

import threading

ROOT_INODE = 1


class InodeTable:
    """path <-> inode, with lookup counts (thread-safe: watch threads read it)."""

    def __init__(self) -> None:
        self._path: dict[int, str] = {ROOT_INODE: ""}
        self._ino: dict[str, int] = {"": ROOT_INODE}
        self._lookups: dict[int, int] = {}
        self._content: dict[int, str] = {}
        self._next = ROOT_INODE + 1
        self._lock = threading.Lock()

    def path_of(self, ino: int) -> str:
        """Raises KeyError for an inode the kernel already forgot."""
        return self._path[ino]

    def find(self, path: str) -> int | None:
        return self._ino.get(path)

    def ino_for(self, path: str) -> int:
        with self._lock:
            ino = self._ino.get(path)
            if ino is None:
                ino = self._next
                self._next += 1
                self._ino[path] = ino
                self._path[ino] = path
            return ino

    def detach(self, path: str) -> int | None:
        """Unlinked while open: the name leads to its inode no more (a new file there gets
        another), while the inode lives on until the kernel forgets it."""
        with self._lock:
            return self._ino.pop(path, None)

    def looked_up(self, ino: int, n: int = 1) -> None:
        with self._lock:
            self._lookups[ino] = self._lookups.get(ino, 0) + n

    def forget(self, ino: int, n: int) -> None:
        with self._lock:
            left = self._lookups.get(ino, 0) - n
            if left > 0:
                self._lookups[ino] = left
                return
            self._lookups.pop(ino, None)
            self._content.pop(ino, None)
            if ino != ROOT_INODE:
                path = self._path.pop(ino, None)
                if path is not None and self._ino.get(path) == ino:
                    del self._ino[path]

    def content(self, ino: int) -> str | None:
        """The sha256 of what the kernel may cache of this file's pages, if known."""
        return self._content.get(ino)

    def set_content(self, ino: int, sha256: str) -> None:
        with self._lock:
            if ino in self._path:
                self._content[ino] = sha256

    def drop_content(self, ino: int) -> None:
        """The kernel's pages of this file may now differ from any committed content."""
        with self._lock:
            self._content.pop(ino, None)

    def rename(self, old: str, new: str) -> None:
        """``old`` (and everything below it) is now at ``new``; whatever was at ``new`` goes."""
        with self._lock:
            gone = self._ino.pop(new, None)
            if gone is not None:
                self._path.pop(gone, None)
                self._content.pop(gone, None)
            prefix = old + "/"
            moves = [(p, i) for p, i in self._ino.items() if p == old or p.startswith(prefix)]
            for p, _ in moves:
                del self._ino[p]
            for p, i in moves:
                q = new + p[len(old):]
                self._ino[q] = i
                self._path[i] = q

    def __len__(self) -> int:
        return len(self._path)
