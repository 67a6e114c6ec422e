"""gns errors <-> gRPC status codes: the one table each way (after python-etcd3).

Servers raise :mod:`namespace.errors` types and :func:`abort_with` turns them into a status;
clients turn a status back into the same type with :func:`from_rpc_error`, so an error keeps
its exit code across any number of forwarding hops.
"""
from __future__ import annotations

import grpc

from namespace.errors import (
    Conflict,
    FileNotFound,
    GnsError,
    InvalidInput,
    NotFound,
    StaleEpoch,
    Unavailable,
)

_STALE_MARK = "stale epoch: "
_FILE_MARK = "no such file: "

_CODE_BY_ERROR: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
]

_ERROR_BY_CODE: dict[grpc.StatusCode, type[GnsError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.OUT_OF_RANGE: InvalidInput,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unavailable,
    grpc.StatusCode.PERMISSION_DENIED: GnsError,
}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and detail a server sends for ``exc``."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, StaleEpoch):
        return grpc.StatusCode.FAILED_PRECONDITION, _STALE_MARK + detail
    if isinstance(exc, FileNotFound):
        return grpc.StatusCode.NOT_FOUND, _FILE_MARK + detail
    for kind, code in _CODE_BY_ERROR:
        if isinstance(exc, kind):
            return code, detail
    return grpc.StatusCode.INTERNAL, f"internal error: {detail}"


def from_rpc_error(exc: grpc.RpcError, where: str = "") -> GnsError:
    """The gns error a failed call stands for (keeps the server's message)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    detail = exc.details() if hasattr(exc, "details") else str(exc)
    detail = detail or code.name
    if detail.startswith(_STALE_MARK):
        return StaleEpoch(detail[len(_STALE_MARK) :])
    if detail.startswith(_FILE_MARK):
        return FileNotFound(detail[len(_FILE_MARK) :])
    kind = _ERROR_BY_CODE.get(code, GnsError)
    lowered = detail.lower()
    if code == grpc.StatusCode.UNAUTHENTICATED or "handshake" in lowered or "ssl" in lowered:
        reason = "certificate not trusted" if "certificate" in lowered else "TLS handshake failed"
        return kind(f"{where or 'controller'} refused the connection: {reason} "
                    "(check --tls-dir / GNS_TLS_DIR)")
    if code == grpc.StatusCode.UNAVAILABLE and where:
        detail = f"{where} unavailable: {detail}"
    return kind(detail)
