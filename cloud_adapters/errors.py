"""The one error tree of ``cloud_adapters``.

Every adapter translates its SDK's exceptions into this tree in exactly one function, so
callers (mirroring, the CLI) never import boto3, google or azure exceptions::

    ObjectStoreError(Exception)                           exit_code 1
    ├── InvalidURI(ObjectStoreError, ValueError)          exit_code 2  bad URI, bucket or key
    ├── MissingDependency(ObjectStoreError, ImportError)  exit_code 1  SDK not installed
    ├── ObjectNotFound(ObjectStoreError, FileNotFoundError) exit_code 3  object or bucket
    ├── PreconditionFailed(ObjectStoreError)              exit_code 4  if_absent / if_match lost
    ├── PermissionDenied(ObjectStoreError, PermissionError) exit_code 1  access refused
    │   └── MissingCredentials(PermissionDenied)          exit_code 2  no usable credentials
    ├── IntegrityError(ObjectStoreError)                  exit_code 1  sha256 mismatch
    └── TransientError(ObjectStoreError, ConnectionError) exit_code 5  retryable

Every error carries ``.uri`` (the store or object URI it is about) and names it in ``str()``;
``.retryable`` says whether trying again may help; ``.exit_code`` is what the CLI exits with
(SPEC §4). Errors must never carry a secret (connection strings, keys, tokens): messages are
built from URIs, status codes and error codes only.
"""

from __future__ import annotations

__all__ = [
    "ObjectStoreError",
    "InvalidURI",
    "MissingDependency",
    "ObjectNotFound",
    "PreconditionFailed",
    "PermissionDenied",
    "MissingCredentials",
    "IntegrityError",
    "TransientError",
]


class ObjectStoreError(Exception):
    """Root of every error raised by ``cloud_adapters``."""

    exit_code: int = 1
    retryable: bool = False

    def __init__(self, message: str, *, uri: str | None = None) -> None:
        self.message = message
        self.uri = uri
        super().__init__(f"{uri}: {message}" if uri else message)

    def __reduce__(self) -> tuple[object, ...]:  # keep pickling (process pools) working
        return (_rebuild, (type(self), self.message, self.uri))


def _rebuild(cls: type[ObjectStoreError], message: str, uri: str | None) -> ObjectStoreError:
    return cls(message, uri=uri)


class InvalidURI(ObjectStoreError, ValueError):
    """A malformed URI, an invalid bucket/container name or an invalid key."""

    exit_code = 2


class MissingDependency(ObjectStoreError, ImportError):
    """The SDK for a scheme is not installed; the message carries the install hint."""

    exit_code = 1


class ObjectNotFound(ObjectStoreError, FileNotFoundError):
    """The object, or the bucket/container holding it, does not exist."""

    exit_code = 3


class PreconditionFailed(ObjectStoreError):
    """A conditional put lost: the object exists (if_absent) or changed (if_match)."""

    exit_code = 4


class PermissionDenied(ObjectStoreError, PermissionError):
    """Access refused, or no usable credentials were found."""

    exit_code = 1


class MissingCredentials(PermissionDenied):
    """No usable credentials were found: a set-up mistake the user fixes, like a bad URI."""

    exit_code = 2


class IntegrityError(ObjectStoreError):
    """Bytes do not match the sha256 they were promised (or it is missing when verifying)."""

    exit_code = 1


class TransientError(ObjectStoreError, ConnectionError):
    """The store is unreachable, overloaded or failed mid-request; trying again may help."""

    exit_code = 5
    retryable = True
