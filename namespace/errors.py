"""The gns error tree, shared by every layer and mapped to the CLI's exit codes (SPEC §4).

::

    GnsError                      exit 1   anything else
    ├── InternalError                      a server failed in a way it did not expect (a bug)
    ├── OutOfSpace                         a cluster's disk had no room: nothing committed
    ├── InvalidInput (ValueError) exit 2   malformed name, path, document or flag
    ├── NotFound (LookupError)    exit 3   unknown cluster, volume, mount or file
    │   └── FileNotFound (FileNotFoundError)  a file or directory inside a volume
    ├── Conflict                  exit 4   exists already, still in use, precondition failed
    │   ├── StaleEpoch                     a write carried an epoch older than the volume's
    │   ├── NotOwner              retry    the cluster asked does not own the volume (moved)
    │   └── PermissionDenied               the caller's identity holds no grant for this
    └── Unavailable               exit 5   owner down, no usable replica, etcd unreachable
        └── EpochNotSeen          retry    a write named an epoch this cluster has not seen yet

Errors say what was wrong in one line; ``retryable`` tells callers whether trying again
(after refreshing their view of the namespace) can help. An error about paths inside a
volume (made with :meth:`GnsError.naming`) keeps them apart from its message, so that the
controller, which knows the global path the caller named, says that one instead
(:meth:`GnsError.renamed`): storage only knows ``day.csv``, the user typed
``/health/day.csv``. How these cross gRPC, and how
``cloud_adapters`` errors join them on the wire and in exit codes, is the one table in
:mod:`federation.api.errors`. Nothing here may import from a higher layer.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Self


class GnsError(Exception):
    """Root of every error gns raises on purpose."""

    exit_code: int = 1
    retryable: bool = False
    template: str = ""
    """With ``paths``: the message with one ``{}`` per path it names (see ``naming``)."""
    paths: tuple[str, ...] = ()
    """The volume-relative paths the message names, in ``template`` order."""

    @classmethod
    def naming(cls, template: str, *paths: str) -> Self:
        """An error whose message names ``paths`` (volume-relative, quoted, the root as
        '/') where ``template`` has ``{}``; ``renamed`` can name them otherwise later."""
        err = cls(template.format(*map(_quoted, paths)))
        err.template, err.paths = template, paths
        return err

    def renamed(self, name: Callable[[str], str]) -> Self:
        """The same error naming ``name(p)`` for each path ``p`` it names; itself if it
        names none (its message was not made by ``naming``)."""
        if not self.template:
            return self
        err = type(self).naming(self.template, *map(name, self.paths))
        err.retryable = self.retryable
        return err


class InternalError(GnsError):
    """A server failed unexpectedly (its log holds the traceback); what the client sees."""


class OutOfSpace(GnsError):
    """A cluster's disk (or its quota) had no room for a write; the write committed nothing.

    Not a bug and not retryable as it is: someone has to free space or move the volume."""


class InvalidInput(GnsError, ValueError):
    """The caller gave something malformed; nothing was changed."""

    exit_code = 2


class NotFound(GnsError, LookupError):
    """The named cluster, volume, mount, policy or file does not exist."""

    exit_code = 3


class FileNotFound(NotFound, FileNotFoundError):
    """A file or directory inside a volume does not exist."""


class Conflict(GnsError):
    """The change clashes with current state (exists, in use, precondition failed)."""

    exit_code = 4


class StaleEpoch(Conflict):
    """A write carried an epoch older than the volume's current one: its writer was fenced."""


class NotOwner(Conflict):
    """The cluster asked does not own the volume (ownership moved): re-resolve and retry."""

    retryable = True


class PermissionDenied(Conflict, PermissionError):
    """The identity that TLS proved holds no grant for this action on this path (SPEC §10)."""


class Unavailable(GnsError):
    """A needed party (owner controller, replica, etcd) cannot be reached now."""

    exit_code = 5
    retryable = True


class EpochNotSeen(Unavailable):
    """A request named a newer epoch than this cluster has seen: its view lags; retry."""


def _quoted(path: str) -> str:
    return repr(path or "/")
