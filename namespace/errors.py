"""The gns error tree, shared by every layer and mapped to the CLI's exit codes (SPEC §4).

::

    GnsError                      exit 1   anything else
    ├── InvalidInput (ValueError) exit 2   malformed name, path, document or flag
    ├── NotFound (LookupError)    exit 3   unknown cluster, volume, mount or file
    ├── Conflict                  exit 4   exists already, still in use, precondition failed
    │   ├── StaleEpoch                     a write carried an epoch older than the volume's
    │   └── PermissionDenied               the caller's identity holds no grant for this
    └── Unavailable               exit 5   owner down, no usable replica, etcd unreachable

Errors say what was wrong in one line; ``retryable`` tells callers whether trying again
can help. Nothing here may import from a higher layer.
"""
from __future__ import annotations


class GnsError(Exception):
    """Root of every error gns raises on purpose."""

    exit_code: int = 1
    retryable: bool = False


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


class PermissionDenied(Conflict, PermissionError):
    """The identity that TLS proved holds no grant for this action on this path (SPEC §10)."""


class Unavailable(GnsError):
    """A needed party (owner controller, replica, etcd) cannot be reached now."""

    exit_code = 5
    retryable = True
