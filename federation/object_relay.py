"""Object-store calls made through a controller: how an edge site mirrors to S3/GCS/Azure.

Why it exists: an edge site dials nothing but its hub (SPEC §8) and holds no cloud
credentials, yet its volumes' mirror policies may name object-store targets. The site runs
the normal mirror engine and ``ObjectStoreTarget`` (so the layout, manifest and commit rules
are exactly those of any other mirror) over a :func:`relayed_store`, whose adapter hooks
(``_put_small``, ``_stat``, ``_list_page``, ...) are one gRPC call each to a controller. The
controller runs the same hook on the real store with its own credentials
(:class:`ObjectRelayHandler`), but only for a target URI that a mirror policy of a volume the
calling site owns names.

Wire format (raw bytes, no proto: the edge link relays any method): the first request
message is a JSON header ``{"op", "uri", ...}``, further ones carry an upload's parts; the
first reply is JSON ``{"result": ...}`` or ``{"error": {"type", "message"}}``, further ones a
download's bytes. Errors come back as the same ``cloud_adapters.errors`` class, so retries
and conditional-put conflicts behave as with a direct store.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from functools import cache
from typing import Any

import grpc

from cloud_adapters import errors as store_errors
from cloud_adapters.base import ObjectInfo, ObjectStore, check_streamed, checked_parts
from cloud_adapters.registry import implementation, open_store
from cloud_adapters.uri import StoreURI, parse_uri
from federation.channels import sync_channel
from federation.stream_feed import feed_blocking

METHOD = "/gns.edge.v1.ObjectRelay/Call"
ON_BEHALF_OF = "gns-on-behalf-of"
_TIMEOUT = 3600.0
_PIECE = 1 << 20
"""Largest message on the wire: parts and reads are cut to this (a part may be far bigger
than gRPC's message limit) and put back together on the far side."""


def _framed(parts: Iterator[bytes]) -> Iterator[bytes]:
    """Each part as its 8-byte length, then its bytes in pieces of at most ``_PIECE``."""
    for part in parts:
        yield len(part).to_bytes(8, "big")
        view = memoryview(part)
        for i in range(0, len(part), _PIECE):
            yield bytes(view[i:i + _PIECE])


def _pieces(block: bytes) -> Iterator[bytes]:
    view = memoryview(block)
    for i in range(0, len(block), _PIECE):
        yield bytes(view[i:i + _PIECE])


# -- the calling side (an edge site) ----------------------------------------------------------
class _Relayed(ObjectStore):
    """Adapter hooks sent to a controller; subclassed per scheme by :func:`relayed_store`."""

    endpoint = ""

    def __init__(self, uri: StoreURI, endpoint: str) -> None:
        super().__init__(uri)
        self._channel = sync_channel(endpoint, None)
        self._call = self._channel.stream_stream(METHOD, request_serializer=None, response_deserializer=None)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._channel.close()

    def _rpc(self, op: str, parts: Iterator[bytes] | None = None, **args: Any) -> tuple[Any, Iterator[bytes]]:
        header = json.dumps({"op": op, "uri": self.uri, **args}).encode()

        def requests() -> Iterator[bytes]:
            yield header
            if parts is not None:
                yield from _framed(parts)

        replies = self._call(requests(), timeout=_TIMEOUT)
        try:
            first = json.loads(next(replies))
        except StopIteration:
            raise store_errors.TransientError(f"object relay: no answer to {op}", uri=self.uri) from None
        except grpc.RpcError as exc:
            raise store_errors.TransientError(f"object relay: {exc.details() or exc.code()}", uri=self.uri) from None
        if "error" in first:
            raise _error(first["error"], self.uri)
        return first.get("result"), _data(replies, self.uri)

    def _put_small(self, full_key: str, data: bytes, sha256: str, if_absent: bool,
                   if_match: str | None) -> ObjectInfo:
        result, _ = self._rpc("put_small", iter([data]), key=full_key, sha256=sha256,
                              if_absent=if_absent, if_match=if_match)
        return _info(result)

    def _put_parts(self, full_key: str, parts: Iterator[bytes], size: int, sha256: str, if_absent: bool,
                   if_match: str | None, part_size: int) -> ObjectInfo:
        result, _ = self._rpc("put_parts", parts, key=full_key, size=size, sha256=sha256,
                              if_absent=if_absent, if_match=if_match, part_size=part_size)
        return _info(result)

    def _open_range(self, full_key: str, start: int, end: int | None,
                    chunk_size: int) -> tuple[ObjectInfo, Iterator[bytes]]:
        result, data = self._rpc("open_range", key=full_key, start=start, end=end, chunk_size=chunk_size)
        return _info(result), data

    def _stat(self, full_key: str) -> ObjectInfo:
        return _info(self._rpc("stat", key=full_key)[0])

    def _list_page(self, full_prefix: str, token: str | None) -> tuple[list[ObjectInfo], str | None]:
        result, _ = self._rpc("list_page", prefix=full_prefix, token=token, page_size=self.page_size)
        return [_info(i) for i in result["items"]], result["token"]

    def _delete(self, full_key: str) -> None:
        self._rpc("delete", key=full_key)

    def _delete_batch(self, full_keys: list[str]) -> None:
        self._rpc("delete_batch", keys=full_keys)

    def _copy(self, full_src: str, full_dst: str) -> ObjectInfo:
        return _info(self._rpc("copy", src=full_src, dst=full_dst)[0])

    def _make_container(self) -> None:
        self._rpc("make_container")


@cache
def _relayed_class(scheme: str) -> type[_Relayed]:
    real = implementation(scheme)
    attrs: dict[str, Any] = {
        "scheme": scheme, "capabilities": real.capabilities, "delete_batch_size": real.delete_batch_size}
    # Full keys are the real store's (the controller hands them to its own adapter as they
    # come): a file:// store's are relative to its directory, not prefixed with its path.
    attrs["_key_prefix"] = real._key_prefix
    return type(f"Relayed{real.__name__}", (_Relayed,), attrs)


def relayed_store(uri: str, endpoint: str) -> _Relayed:
    """``uri`` as a store whose every request is made by the controller at ``endpoint``."""
    parsed = parse_uri(uri)
    return _relayed_class(parsed.scheme)(parsed, endpoint)


def _info(d: Any) -> ObjectInfo:
    return ObjectInfo(key=str(d["key"]), size=int(d["size"]), sha256=d.get("sha256"),
                      etag=str(d["etag"]), mtime=float(d["mtime"]))


def _data(replies: Iterator[bytes], uri: str) -> Iterator[bytes]:
    try:
        yield from replies
    except grpc.RpcError as exc:
        raise store_errors.TransientError(f"object relay: {exc.details() or exc.code()}", uri=uri) from None


_ERRORS: dict[str, type[store_errors.ObjectStoreError]] = {
    c.__name__: c for c in vars(store_errors).values()
    if isinstance(c, type) and issubclass(c, store_errors.ObjectStoreError)}


def _error(e: dict[str, str], uri: str) -> store_errors.ObjectStoreError:
    return _ERRORS.get(e.get("type", ""), store_errors.ObjectStoreError)(e.get("message", ""), uri=uri)


# -- the controller side ------------------------------------------------------------------------
Allowed = Callable[[str, str], bool]
"""(site, normalised store URI) -> may this site write there (a policy of a volume it owns
names it)?"""
TrustedCaller = Callable[[grpc.aio.ServicerContext], bool]
"""Did this call come from the hub's own relay? Only then is its ``gns-on-behalf-of: edge:<site>``
the hub's word rather than the caller's claim."""


class ObjectRelayHandler:
    """Runs relayed object-store hooks on the real store, for edge sites only."""

    def __init__(self, allowed: Allowed, trusted_caller: TrustedCaller) -> None:
        self.allowed = allowed
        self.trusted_caller = trusted_caller
        self._stores: dict[str, ObjectStore] = {}
        self._stores_lock = threading.Lock()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        service, _, method = METHOD.strip("/").partition("/")
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {
            method: grpc.stream_stream_rpc_method_handler(self._call, request_deserializer=None,
                                                          response_serializer=None)}),))

    def _store(self, uri: str) -> ObjectStore:
        with self._stores_lock:
            store = self._stores.get(uri)
            if store is None:
                store = self._stores[uri] = open_store(uri)
            return store

    async def _call(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        it = requests.__aiter__()
        try:
            head = json.loads(await it.__anext__())
            md = dict(context.invocation_metadata() or ())
            who = str(md.get(ON_BEHALF_OF, "")) if self.trusted_caller(context) else ""
            uri = str(parse_uri(str(head.get("uri", ""))))
            if not who.startswith("edge:") or not self.allowed(who[len("edge:"):], uri):
                raise store_errors.PermissionDenied(
                    f"{who or 'this caller'} may not write {uri}: no mirror policy of a volume it owns names it", uri=uri)
            store = await asyncio.to_thread(self._store, uri)  # may import an SDK: not on the loop
            if not all(str(k).startswith(store._key_prefix) for k in _keys(head)):
                raise store_errors.PermissionDenied(f"key outside {uri}", uri=uri)
            op = head["op"]
            if op in ("put_small", "put_parts"):
                result = await self._put(store, head, it)
                yield json.dumps({"result": _info_dict(result)}).encode()
            elif op == "open_range":
                info, chunks = await asyncio.to_thread(store._open_range, head["key"], int(head["start"]),
                                                       head["end"], int(head["chunk_size"]))
                yield json.dumps({"result": _info_dict(info)}).encode()
                while (block := await asyncio.to_thread(_next_or_none, chunks)) is not None:
                    for piece in _pieces(block):
                        yield piece
            else:
                yield json.dumps({"result": await asyncio.to_thread(_simple, store, head)}).encode()
        except store_errors.ObjectStoreError as exc:
            yield json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}}).encode()
        except (KeyError, ValueError, TypeError, StopAsyncIteration) as exc:
            yield json.dumps({"error": {"type": "ObjectStoreError", "message": f"bad relay request: {exc}"}}).encode()

    async def _put(self, store: ObjectStore, head: dict[str, Any], it: AsyncIterator[bytes]) -> ObjectInfo:
        key, sha, if_absent, if_match = head["key"], head["sha256"], bool(head["if_absent"]), head["if_match"]
        if head["op"] == "put_small":
            data = b"".join([p async for p in _unframed(it)])

            def put_small() -> ObjectInfo:
                # As below: a site killed before its part ends the stream cleanly too.
                check_streamed(len(data), hashlib.sha256(data).hexdigest(), None, sha, store.uri)
                return store._put_small(key, data, sha, if_absent, if_match)

            return await asyncio.to_thread(put_small)
        size = int(head["size"])

        def put_parts(parts: Iterator[bytes]) -> ObjectInfo:
            # A site killed at a part boundary ends its stream cleanly: the parts are checked
            # against the size and sha256 it promised, or the upload would complete partial.
            return store._put_parts(key, checked_parts(parts, size, sha, store.uri), size, sha,
                                    if_absent, if_match, int(head["part_size"]))

        return await feed_blocking(put_parts, _unframed(it), depth=2)


async def _unframed(it: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The parts :func:`_framed` sent, whole again."""
    want, pieces, got = -1, list[bytes](), 0
    async for m in it:
        if want < 0:
            want, pieces, got = int.from_bytes(m, "big"), [], 0
        else:
            pieces.append(m)
            got += len(m)
        if want >= 0 and got >= want:
            yield b"".join(pieces)
            want = -1
    if want >= 0:
        raise ValueError("a part ended early")


def _next_or_none(it: Iterator[bytes]) -> bytes | None:
    return next(it, None)


def _keys(head: dict[str, Any]) -> list[str]:
    keys = [head[k] for k in ("key", "prefix", "src", "dst") if head.get(k) is not None]
    return keys + list(head.get("keys") or [])


def _info_dict(info: ObjectInfo) -> dict[str, Any]:
    return dataclasses.asdict(info)


def _simple(store: ObjectStore, head: dict[str, Any]) -> Any:
    op = head["op"]
    if op == "stat":
        return _info_dict(store._stat(head["key"]))
    if op == "list_page":
        store.page_size = int(head.get("page_size") or store.page_size)
        items, token = store._list_page(head["prefix"], head.get("token"))
        return {"items": [_info_dict(i) for i in items], "token": token}
    if op == "delete":
        store._delete(head["key"])
        return None
    if op == "delete_batch":
        store._delete_batch(list(head["keys"]))
        return None
    if op == "copy":
        return _info_dict(store._copy(head["src"], head["dst"]))
    if op == "make_container":
        store._make_container()
        return None
    raise ValueError(f"unknown op {op!r}")


def policy_allows(view: Callable[[], Any]) -> Allowed:
    """``Allowed`` from the namespace view: ``uri`` is a target of a mirror policy whose
    volume ``site`` owns."""

    def allowed(site: str, uri: str) -> bool:
        v = view()
        for doc in v.policies.values():
            spec = (doc or {}).get("spec") or {}
            vol = v.volumes.get(spec.get("volume", ""))
            if vol is None or vol.owner != site:
                continue
            for t in spec.get("targets") or []:
                if isinstance(t, dict) and t.get("uri") and _same(t["uri"], uri):
                    return True
        return False

    return allowed


def _same(a: str, b: str) -> bool:
    try:
        return str(parse_uri(a)) == b
    except store_errors.ObjectStoreError:
        return False
