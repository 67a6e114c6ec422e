"""The one place a controller turns what its gRPC handlers raise into a status.

Every servicer on the controller's server just raises (:mod:`namespace.errors`,
:mod:`cloud_adapters.errors`, or a bug); :class:`ErrorInterceptor` wraps each method's
behaviour (unary and streaming alike), maps the exception through the one table in
:mod:`federation.api.errors`, sends its kind and ``retryable`` in trailing metadata (or, for
one put of a ``PutBatch``, in its outcome: :func:`put_failure`), counts
every call by (method, code) and logs unexpected exceptions once, with their traceback. A
full disk is not a bug: whatever layer met it, it is reported as ``OutOfSpace``, naming the
cluster (:mod:`federation.storage.space`).

Per call it does as little as it can (issue 14: a Resolve is ~300 µs of controller CPU, most
of it gRPC's own): the wrapped handler of a method is built once and reused while the inner
handler is the same object, and the metric children of a method are bound once.
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from time import perf_counter
from typing import Any, NoReturn, TypeVar

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api.errors import ErrorKind, kind_of, retryable, trailing_metadata
from federation.controller.metrics import ControllerMetrics
from federation.storage.space import disk_full_reason
from namespace.errors import GnsError, InternalError, OutOfSpace

log = logging.getLogger(__name__)

Behaviour = Callable[[Any, grpc.aio.ServicerContext], Any]
E = TypeVar("E", bound=BaseException)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Install on ``grpc.aio.server(interceptors=[...])``; servicers then only raise."""

    def __init__(self, metrics: ControllerMetrics | None = None, *, where: str = "this cluster") -> None:
        _quiet_gone_readers()
        self.metrics = metrics
        self.where = where  # who serves: "cluster onprem-a", "site edge-1" (errors name it)
        # full method name -> (the inner handler, our wrapper of it)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full = handler_call_details.method
        cached = self._wrapped.get(full)
        # The inner handler is looked up per call; rewrap only if it is a different one.
        if cached is not None and cached[0] is handler:
            return cached[1]
        # "/gns.federation.v1.Federation/Read" -> "Federation/Read"
        wrapped = self._wrap(handler, str(full).rsplit(".", 1)[-1])
        self._wrapped[full] = (handler, wrapped)
        return wrapped

    def _wrap(self, h: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        kw = {"request_deserializer": h.request_deserializer,
              "response_serializer": h.response_serializer}
        if h.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._behaviour(h.unary_unary, method), **kw)
        if h.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._behaviour(h.unary_stream, method), **kw)
        if h.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self._behaviour(h.stream_unary, method), **kw)
        return grpc.stream_stream_rpc_method_handler(self._behaviour(h.stream_stream, method), **kw)

    def _behaviour(self, fn: Behaviour, method: str) -> Behaviour:
        count = self._counter(method)
        # grpc.aio tells an async generator (streamed replies) from a coroutine (one reply,
        # or replies sent with context.write) by the function's kind: keep the same kind.
        if inspect.isasyncgenfunction(fn):
            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                start, code = perf_counter(), "OK"
                replies = fn(request, context)
                try:
                    async for reply in replies:
                        yield reply
                except BaseException as raised:  # noqa: BLE001 - the one mapping; _abort always raises
                    exc = known(raised, self.where)
                    code = _code_name(exc, context)
                    await self._abort(exc, context, method)
                finally:
                    await replies.aclose()  # now, not whenever the collector gets to it
                    count(code, start)

            return stream
        if not inspect.iscoroutinefunction(fn):
            return fn  # a blocking handler runs in grpc's own executor: none of ours

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = perf_counter()
            try:
                reply = await fn(request, context)
            except BaseException as raised:  # noqa: BLE001 - the one mapping; _abort always raises
                exc = known(raised, self.where)
                count(_code_name(exc, context), start)
                await self._abort(exc, context, method)
            count("OK", start)
            return reply

        return unary

    async def _abort(self, exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> NoReturn:
        """End the call with the status ``exc`` stands for (always raises)."""
        if not isinstance(exc, Exception) or isinstance(exc, grpc.aio.AbortError):
            raise exc  # cancelled, or the handler chose a status itself
        kind, detail = _described(exc, method)
        await context.abort(kind.code, detail, trailing_metadata(exc))
        raise AssertionError("unreachable: context.abort raises")

    def _counter(self, method: str) -> Callable[[str, float], None]:
        """``count(code, start)`` for calls of ``method``: the latency child and the "OK"
        counter child are bound here, once (``labels()`` costs a lock and a dict per call)."""
        metrics = self.metrics
        if metrics is None:
            return _no_count
        requests = metrics.requests
        ok = requests.labels(method, "OK")
        observe = metrics.latency.labels(method).observe

        def count(code: str, start: float) -> None:
            (ok if code == "OK" else requests.labels(method, code)).inc()
            observe(perf_counter() - start)

        return count


class _GoneReader(logging.Filter):
    """Demotes what grpc.aio logs, as an ERROR with a traceback, when a reply of a ``Read``
    cannot be sent because its client went away (``gns cat big | head``, a reader that
    closes a file early): that is a normal end of a read, worth a DEBUG line.

    grpc's own check for a client that left (``_handle_exceptions``: ExecuteBatchError with
    ``client_closed``) loses a race with the send it makes, and the error is raised and
    logged inside grpc, past the reach of the handler and of this interceptor."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not (message.startswith("ExecuteBatchError raised in core")
                and message.endswith(".Federation/Read]")):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.msg, record.args = "Federation/Read: the client went away before its reply was sent", ()
        record.exc_info, record.exc_text = None, None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_GRPC_CORE_LOG = logging.getLogger("grpc._cython.cygrpc")


def _quiet_gone_readers() -> None:
    """Install :class:`_GoneReader` on grpc's server logger, once per process."""
    if not any(isinstance(f, _GoneReader) for f in _GRPC_CORE_LOG.filters):
        _GRPC_CORE_LOG.addFilter(_GoneReader())


def put_failure(exc: Exception, method: str, where: str = "this cluster") -> pb.PutOutcome:
    """One failed item of a ``PutBatch``: what a failed ``Put`` would have ended with, as
    the outcome carries it (the call itself succeeds)."""
    exc = known(exc, where)
    kind, detail = _described(exc, method)
    return pb.PutOutcome(error_kind=kind.name, error=detail, retryable=retryable(exc))


def known(exc: E, where: str) -> E | OutOfSpace:
    """``exc``, or the gns error it stands for where that is not a bug: a full disk met by
    ``where`` (the serving cluster) becomes ``OutOfSpace``, logged without a traceback."""
    if isinstance(exc, GnsError) or not isinstance(exc, Exception):
        return exc
    reason = disk_full_reason(exc)
    if reason is None:
        return exc
    log.warning("out of disk space: %s", reason)
    return OutOfSpace(f"{where} has no space left on its disk ({reason}): nothing was committed")


def _described(exc: Exception, method: str) -> tuple[ErrorKind, str]:
    """The table row and message for ``exc``; a bug is logged once, with its traceback."""
    kind = kind_of(exc)
    detail = str(exc) or type(exc).__name__
    if kind.type is InternalError and not isinstance(exc, InternalError):
        log.error("%s failed unexpectedly", method, exc_info=exc)
        detail = f"internal error in {method}: {type(exc).__name__}: {detail}"
    return kind, detail


def _no_count(code: str, start: float) -> None:
    pass


def _code_name(exc: BaseException, context: grpc.aio.ServicerContext) -> str:
    """The status name a call that raised ``exc`` ends with (for the metrics)."""
    if isinstance(exc, grpc.aio.AbortError):
        code = context.code()
        return str(code.name) if isinstance(code, grpc.StatusCode) else "ABORTED"
    if not isinstance(exc, Exception):
        return "CANCELLED"
    return str(kind_of(exc).code.name)
