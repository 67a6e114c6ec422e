"""Every error gns can report, how it crosses gRPC, and the exit code it ends in: ONE table.

Servers just raise; the controller's one interceptor (:mod:`federation.controller.rpc_errors`)
turns what escapes a handler into a status through :func:`kind_of`, and sends the error's
kind and ``retryable`` in trailing metadata. Clients rebuild the very same exception type
with :func:`from_rpc_error`, so ``StaleEpoch`` stays ``StaleEpoch`` (and keeps its exit
code) across any number of forwarding hops; nothing is ever decided from message text.

The tree (``namespace.errors`` and ``cloud_adapters.errors`` roots, plus anything else)::

    Exception                                 kind              status               exit
    ├── GnsError                              gns               UNKNOWN              1
    │   ├── InternalError                     internal          INTERNAL             1
    │   ├── OutOfSpace                        no-space          RESOURCE_EXHAUSTED   1
    │   ├── InvalidInput (ValueError)         invalid-input     INVALID_ARGUMENT     2
    │   ├── NotFound (LookupError)            not-found         NOT_FOUND            3
    │   │   └── FileNotFound                  file-not-found    NOT_FOUND            3
    │   ├── Conflict                          conflict          FAILED_PRECONDITION  4
    │   │   ├── StaleEpoch                    stale-epoch       FAILED_PRECONDITION  4
    │   │   ├── NotOwner           retryable  not-owner         FAILED_PRECONDITION  4
    │   │   └── PermissionDenied              permission-denied PERMISSION_DENIED    4
    │   └── Unavailable            retryable  unavailable       UNAVAILABLE          5
    │       └── EpochNotSeen       retryable  epoch-not-seen    UNAVAILABLE          5
    ├── ObjectStoreError                      store             UNKNOWN              1
    │   ├── InvalidURI                        store-invalid-uri INVALID_ARGUMENT     2
    │   ├── MissingDependency                 store-missing-sdk FAILED_PRECONDITION  1
    │   ├── ObjectNotFound                    store-not-found   NOT_FOUND            3
    │   ├── PreconditionFailed                store-precondition FAILED_PRECONDITION 4
    │   ├── PermissionDenied                  store-denied      PERMISSION_DENIED    1
    │   │   └── MissingCredentials            store-no-credentials UNAUTHENTICATED   2
    │   ├── IntegrityError                    store-integrity   DATA_LOSS            1
    │   └── TransientError         retryable  store-unreachable UNAVAILABLE          5
    └── anything else (a bug)                 internal          INTERNAL             1

``retryable`` travels with each error (an instance may differ from its class); a status
without gns metadata (the connection failed, an older peer) falls back to its code.
"""
from __future__ import annotations

from dataclasses import dataclass

import grpc

from cloud_adapters import errors as store
from namespace.errors import (
    Conflict,
    EpochNotSeen,
    FileNotFound,
    GnsError,
    InternalError,
    InvalidInput,
    NotFound,
    NotOwner,
    OutOfSpace,
    PermissionDenied,
    StaleEpoch,
    Unavailable,
)

__all__ = [
    "KIND_KEY",
    "RETRYABLE_KEY",
    "ErrorKind",
    "KINDS",
    "kind_of",
    "error_of_kind",
    "exit_code_for",
    "trailing_metadata",
    "from_rpc_error",
    "from_outcome",
]

KIND_KEY = "gns-error-kind"
RETRYABLE_KEY = "gns-retryable"
URI_KEY = "gns-error-uri"

Code = grpc.StatusCode


@dataclass(frozen=True)
class ErrorKind:
    """One row of the table: an exception type, its wire name, status and exit code."""

    name: str
    type: type[Exception]
    code: grpc.StatusCode
    exit_code: int


KINDS: tuple[ErrorKind, ...] = (
    ErrorKind("gns", GnsError, Code.UNKNOWN, 1),
    ErrorKind("internal", InternalError, Code.INTERNAL, 1),
    ErrorKind("no-space", OutOfSpace, Code.RESOURCE_EXHAUSTED, 1),
    ErrorKind("invalid-input", InvalidInput, Code.INVALID_ARGUMENT, 2),
    ErrorKind("not-found", NotFound, Code.NOT_FOUND, 3),
    ErrorKind("file-not-found", FileNotFound, Code.NOT_FOUND, 3),
    ErrorKind("conflict", Conflict, Code.FAILED_PRECONDITION, 4),
    ErrorKind("stale-epoch", StaleEpoch, Code.FAILED_PRECONDITION, 4),
    ErrorKind("not-owner", NotOwner, Code.FAILED_PRECONDITION, 4),
    ErrorKind("permission-denied", PermissionDenied, Code.PERMISSION_DENIED, 4),
    ErrorKind("unavailable", Unavailable, Code.UNAVAILABLE, 5),
    ErrorKind("epoch-not-seen", EpochNotSeen, Code.UNAVAILABLE, 5),
    ErrorKind("store", store.ObjectStoreError, Code.UNKNOWN, 1),
    ErrorKind("store-invalid-uri", store.InvalidURI, Code.INVALID_ARGUMENT, 2),
    ErrorKind("store-missing-sdk", store.MissingDependency, Code.FAILED_PRECONDITION, 1),
    ErrorKind("store-not-found", store.ObjectNotFound, Code.NOT_FOUND, 3),
    ErrorKind("store-precondition", store.PreconditionFailed, Code.FAILED_PRECONDITION, 4),
    ErrorKind("store-denied", store.PermissionDenied, Code.PERMISSION_DENIED, 1),
    ErrorKind("store-no-credentials", store.MissingCredentials, Code.UNAUTHENTICATED, 2),
    ErrorKind("store-integrity", store.IntegrityError, Code.DATA_LOSS, 1),
    ErrorKind("store-unreachable", store.TransientError, Code.UNAVAILABLE, 5),
)

_INTERNAL = next(k for k in KINDS if k.type is InternalError)
_BY_TYPE: dict[type[BaseException], ErrorKind] = {k.type: k for k in KINDS}
_BY_NAME: dict[str, ErrorKind] = {k.name: k for k in KINDS}

# A status that carries no kind (transport failure, a peer without the interceptor).
_ERROR_BY_CODE: dict[grpc.StatusCode, type[GnsError]] = {
    Code.INVALID_ARGUMENT: InvalidInput,
    Code.OUT_OF_RANGE: InvalidInput,
    Code.NOT_FOUND: NotFound,
    Code.ALREADY_EXISTS: Conflict,
    Code.FAILED_PRECONDITION: Conflict,
    Code.ABORTED: Conflict,
    Code.PERMISSION_DENIED: PermissionDenied,
    Code.UNAVAILABLE: Unavailable,
    Code.DEADLINE_EXCEEDED: Unavailable,
    Code.UNAUTHENTICATED: Unavailable,
    Code.INTERNAL: InternalError,
}


def kind_of(exc: BaseException) -> ErrorKind:
    """The table row for ``exc``: its nearest listed class; ``internal`` for anything else."""
    for cls in type(exc).__mro__:
        row = _BY_TYPE.get(cls)
        if row is not None:
            return row
    return _INTERNAL


def exit_code_for(exc: BaseException) -> int:
    """The CLI's exit code for ``exc`` (SPEC §4)."""
    return kind_of(exc).exit_code


def retryable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retryable", False))


def trailing_metadata(exc: BaseException) -> tuple[tuple[str, str], ...]:
    """What a server sends with the status of ``exc`` so the client can rebuild it."""
    md = [(KIND_KEY, kind_of(exc).name), (RETRYABLE_KEY, "true" if retryable(exc) else "false")]
    uri = getattr(exc, "uri", None)
    if isinstance(exc, store.ObjectStoreError) and uri:
        md.append((URI_KEY, str(uri)))
    return tuple(md)


def _metadata(exc: grpc.RpcError) -> dict[str, str]:
    getter = getattr(exc, "trailing_metadata", None)
    pairs = getter() if callable(getter) else None
    out: dict[str, str] = {}
    for key, value in pairs or ():
        if isinstance(value, str):
            out[key] = value
    return out


def error_of_kind(name: str, message: str) -> GnsError | store.ObjectStoreError:
    """The exception whose kind is called ``name`` (``kind_of(exc).name``, as trailing
    metadata and other pipes carry it), with ``message``; a plain GnsError (exit 1) for a
    name this release does not know."""
    row = _BY_NAME.get(name)
    err = row.type(message) if row is not None else GnsError(message)
    assert isinstance(err, (GnsError, store.ObjectStoreError))  # every row is one of both
    return err


def from_rpc_error(exc: grpc.RpcError, where: str = "") -> GnsError | store.ObjectStoreError:
    """The error a failed call stands for: the server's exception type, message and
    ``retryable``; ``where`` names the party called when it could not be reached."""
    code_fn = getattr(exc, "code", None)
    code: grpc.StatusCode = code_fn() if callable(code_fn) else Code.UNKNOWN
    details_fn = getattr(exc, "details", None)
    detail = (details_fn() if callable(details_fn) else str(exc)) or code.name
    md = _metadata(exc)
    name = md.get(KIND_KEY, "")
    if name in _BY_NAME:
        err = error_of_kind(name, detail)
        if isinstance(err, store.ObjectStoreError):
            err.uri = md.get(URI_KEY)
        err.retryable = md.get(RETRYABLE_KEY) == "true"
        return err
    kind = _ERROR_BY_CODE.get(code, GnsError)
    lowered = detail.lower()
    if code == Code.UNAUTHENTICATED or "handshake" in lowered or "ssl" in lowered:
        # The status comes from the TLS layer itself, not from a gns server.
        if "certificate" in lowered:
            return kind(f"{where or 'controller'} refused the connection: certificate not "
                        "trusted (check --tls-dir / GNS_TLS_DIR)")
        # Also what a hung peer gives: TCP accepts, the handshake gets no answer (20 s).
        return kind(f"{where or 'controller'} did not complete the TLS handshake: it is not "
                    "answering, or it refused this certificate (check --tls-dir / GNS_TLS_DIR)")
    if code == Code.UNAVAILABLE and where:
        detail = f"{where} unavailable: {detail}"
    return kind(detail)


def from_outcome(kind: str, message: str, is_retryable: bool) -> GnsError | store.ObjectStoreError:
    """The error one item of a batched reply carries (``PutOutcome``: the same kind,
    message and ``retryable`` a status's trailing metadata would)."""
    err = error_of_kind(kind, message)
    err.retryable = is_retryable
    return err
