"""The standard streams of a ``gns`` process that started with one of them closed.

Python gives ``None`` for a stream whose descriptor was closed at start (``gns ls >&-``,
``gns put - P <&-``): commands then died of ``AttributeError``, or lost their output
silently (``click.echo`` drops it: ``gns ls /a >&-`` exited 0). :func:`standard_streams`
puts a stand-in there that fails as ``read(2)``/``write(2)`` on a closed descriptor do, so
every command behaves as coreutils do without knowing: one that prints nothing succeeds,
one whose output is lost fails (:class:`StdoutClosed`, exit 1, "write error"), one that
reads a closed stdin is told so (:class:`StdinClosed`, exit 2).
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn


class StdoutClosed(OSError):
    """A write to stdout, which was closed when gns started: the output is lost."""

    def __init__(self) -> None:
        super().__init__(errno.EBADF, os.strerror(errno.EBADF))


class StdinClosed(Exception):
    """A read of stdin, which was closed when gns started: there is no input to read."""

    def __init__(self) -> None:
        super().__init__("stdin is closed: there is nothing to read for '-'")


class _ClosedBinary(io.RawIOBase):
    """``sys.stdin.buffer`` / ``sys.stdout.buffer`` of a closed stream."""

    def __init__(self, error: Callable[[], Exception]) -> None:
        super().__init__()
        self._error = error

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: Any, /) -> NoReturn:
        raise self._error()

    def write(self, b: Any, /) -> NoReturn:
        raise self._error()


class _ClosedText(io.TextIOBase):
    """``sys.stdin`` / ``sys.stdout`` of a closed stream, with its ``buffer``."""

    def __init__(self, error: Callable[[], Exception]) -> None:
        super().__init__()
        self._error = error
        self.buffer = _ClosedBinary(error)

    # click takes a stream that names its encoding as it is, instead of wrapping it
    encoding = "utf-8"
    errors = "strict"

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> NoReturn:
        raise self._error()

    def readline(self, size: int | None = -1, /) -> NoReturn:
        raise self._error()

    def write(self, s: str, /) -> NoReturn:
        raise self._error()


class _Discard(io.TextIOBase):
    """``sys.stderr`` of a closed stream: an error has nowhere to go but the exit code."""

    def write(self, s: str, /) -> int:
        return len(s)


@contextlib.contextmanager
def standard_streams() -> Iterator[None]:
    """Stand-ins for the standard streams that are closed, for the time of one command."""
    stand_ins = {
        "stdin": _ClosedText(StdinClosed),
        "stdout": _ClosedText(StdoutClosed),
        "stderr": _Discard(),
    }
    placed = [name for name in stand_ins if getattr(sys, name) is None]
    for name in placed:
        setattr(sys, name, stand_ins[name])
    try:
        yield
    finally:
        # Only ours go back to None: click may have put its own wrapper on a broken pipe.
        for name in placed:
            if getattr(sys, name) is stand_ins[name]:
                setattr(sys, name, None)


def plug_closed_descriptors() -> None:
    """Open /dev/null on standard descriptors that are closed, before anything else is.

    Otherwise the next file or socket opened takes the lowest free number, say 2, and
    anything written to "stderr" below Python (the gRPC core's early log lines) would go
    into an etcd or gRPC connection. ``sys.stdout`` and the others stay None (Python
    decided at start), so :func:`standard_streams` still sees them closed."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this fd (0, 1, 2 in turn)
