"""The one table from the gns error tree to the gRPC codes the CSI specification prescribes.

CSI servicers raise :mod:`namespace.errors` exceptions (or the two CSI-only ones below) and
:func:`rpc` turns them into ``context.abort(code, message)``. ``InvalidInput`` from a
malformed request field is ``INVALID_ARGUMENT`` with a message naming the field.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import NoReturn, TypeVar

import grpc

from namespace.errors import (
    Conflict,
    GnsError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unavailable,
)

log = logging.getLogger(__name__)


class AlreadyExists(Conflict):
    """CreateVolume/NodePublishVolume with a known name but incompatible parameters."""


class FailedPrecondition(Conflict):
    """The request is well formed but the state does not allow it (a volume still in use)."""


class OperationPending(Conflict):
    """Another call is working on the same volume right now (CSI: ABORTED, retry later)."""


# Most specific first: the first class an error is an instance of decides.
_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (OperationPending, grpc.StatusCode.ABORTED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (Conflict, grpc.StatusCode.ALREADY_EXISTS),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (GnsError, grpc.StatusCode.INTERNAL),
)


def code_for(exc: BaseException) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def rpc(
    method: Callable[[S, Req, grpc.ServicerContext], Resp],
) -> Callable[[S, Req, grpc.ServicerContext], Resp]:
    """Run a servicer method; map what it raises through the table above."""

    @functools.wraps(method)
    def wrapper(self: S, request: Req, context: grpc.ServicerContext) -> Resp:
        try:
            return method(self, request, context)
        except GnsError as exc:
            _abort(context, code_for(exc), " ".join(str(exc).split()))
        except Exception as exc:  # a bug: keep the traceback in the log, not on the wire
            log.exception("%s failed", method.__name__)
            _abort(context, grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    return wrapper


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")
