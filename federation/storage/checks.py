"""Argument checks shared by the volume's modules: volume paths, mode bits and promised hashes.

They raise ``InvalidInput`` before anything is read or written, so bad input changes
nothing. This module must stay free of I/O.
"""

from __future__ import annotations

from namespace.errors import InvalidInput


def check_path(path: str) -> str:
    """Refuse a volume-relative path that the caller should have normalised."""
    if not isinstance(path, str):
        raise InvalidInput(f"path must be a string, not {type(path).__name__}")
    if path == "":
        return path
    if path.startswith("/") or path.endswith("/") or "//" in path or "\x00" in path:
        raise InvalidInput(f"malformed volume path {path!r}")
    for part in path.split("/"):
        if part in (".", ".."):
            raise InvalidInput(f"malformed volume path {path!r}: '{part}' component")
    return path


def check_mode(mode: int) -> int:
    """Permission bits only (``0o7777``): no file-type bits cross into the catalog."""
    if not isinstance(mode, int) or mode < 0 or mode > 0o7777:
        raise InvalidInput(f"mode must be permission bits within 0o7777, not {mode!r}")
    return mode


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def check_sha256(what: str, expect: str | None, sha256: str) -> None:
    """Refuse content whose sha256 is not the one the writer promised (commits nothing)."""
    if expect is not None and expect.lower() != sha256:
        raise InvalidInput(f"sha256 mismatch for {what}: expected {expect}, got {sha256}")
