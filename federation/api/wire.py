"""The protobuf wire format of the messages that carry file bytes, read and written by hand.

``ReadChunk`` and ``WriteChunk`` both carry a file's bytes in field 2 (``data``). Protobuf
copies those bytes into every message it builds and out of every message it parses: taking
``data`` out of a parsed 1 MiB ``ReadChunk`` costs 0.096 CPU-s per GiB here, against 0.032
for one slice of the message's bytes. So the owner encodes its read data by hand
(``federation.controller.read_relay``), a forwarder passes messages on as they came, and the
owner of a write and a client reading a file take the payload of a message that is exactly
one ``data`` field straight out of its bytes (:func:`read_data`, a view: whoever needs the
bytes on their own copies them once). Any other message is left to protobuf.
"""
from __future__ import annotations

from typing import Any

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb

READ_METHOD = "/gns.federation.v1.Federation/Read"
"""Called with no response deserializer by a forwarder and a client, which take the bytes."""
DATA_TAG = 0x12
"""Field 2 (``data``), wire type 2 (length-delimited), as one byte."""


def read_raw(channel: grpc.Channel | grpc.aio.Channel) -> Any:
    """``Read`` on ``channel`` (synchronous or asyncio) with its replies left as the bytes
    they came in: a forwarder passes them on, a reader takes their data (:func:`read_data`)."""
    return channel.unary_stream(READ_METHOD, request_serializer=pb.ReadRequest.SerializeToString,
                                response_deserializer=None, _registered_method=True)


def varint(n: int) -> bytes:
    """``n`` as a protobuf varint."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def payload_at(raw: bytes) -> int | None:
    """Offset of the payload when ``raw`` is exactly one ``data`` field, else None."""
    if not raw or raw[0] != DATA_TAG:
        return None
    size = shift = 0
    pos = 1
    while pos < len(raw) and pos < 11:
        b = raw[pos]
        size |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return pos if pos + size == len(raw) else None
        shift += 7
    return None


def read_data(message: bytes) -> memoryview:
    """The file bytes of one serialized ``ReadChunk``, without a copy: a view into the
    message where it is only its ``data`` field (what an owner sends after the first), else
    into protobuf's parse (which raises ``DecodeError`` on bytes that are no ``ReadChunk``)."""
    at = payload_at(message)
    return memoryview(message)[at:] if at is not None else memoryview(pb.ReadChunk.FromString(message).data)
