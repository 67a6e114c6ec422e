"""``Read`` responses as wire bytes: encoded once by the owner, relayed untouched.

Why: the service registers ``Read`` with no response serializer (``add_to_server``), so a
forwarder passes the owner's serialized ``ReadChunk`` messages on as they are. The owner
builds a data message by hand (a tag, a length, the bytes: one copy) in the I/O pool
thread that read the chunk, instead of filling a ``ReadChunk`` and serializing it on the
event loop (two more copies of every MiB, under the GIL the loop needs; issue 14).
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api.wire import DATA_TAG, read_raw, varint

_DATA_TAG = bytes((DATA_TAG,))


def data_message(data: bytes, info: pb.FileInfo | None = None) -> bytes:
    """A serialized ``ReadChunk`` carrying ``data`` (and ``info``, for the first one).

    Concatenated encodings of a message are its merge, so ``info``'s encoding followed by
    the data field is exactly ``ReadChunk(info=info, data=data)``."""
    head = pb.ReadChunk(info=info).SerializeToString() if info is not None else b""
    return b"".join((head, _DATA_TAG, varint(len(data)), data))


class Messages:
    """The serialized messages of one local read; ``next_message`` runs in the I/O pool."""

    def __init__(self, chunks: Iterator[bytes], info: pb.FileInfo) -> None:
        self._chunks = chunks
        self._info: pb.FileInfo | None = info
        self.sent = 0  # payload bytes handed out so far

    def next_message(self) -> bytes | None:
        """The next message, or None at the end (an empty file still gets its info)."""
        data = next(self._chunks, None)
        info, self._info = self._info, None
        if data is None:
            return None if info is None else pb.ReadChunk(info=info).SerializeToString()
        self.sent += len(data)
        return data_message(data, info)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


async def relay(channel: grpc.aio.Channel, request: pb.ReadRequest,
                metadata: tuple[tuple[str, str], ...]) -> AsyncIterator[bytes]:
    """The owner's serialized messages for ``request``, as they arrive (never decoded)."""
    async for message in read_raw(channel)(request, metadata=metadata):
        yield message
