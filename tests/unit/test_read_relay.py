"""The owner's hand-built Read messages are exactly what protobuf would encode (issue 14)."""
from __future__ import annotations

import pytest

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.controller import read_relay

INFO = pb.FileInfo(path="/a/b", size=3, sha256="0" * 64, version=7, type="file", served_by="x")


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 2097151, 2097152, (1 << 20) + 7])
def test_data_message_is_the_protobuf_encoding(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    plain = read_relay.data_message(payload)
    assert pb.ReadChunk.FromString(plain) == pb.ReadChunk(data=payload)
    if payload:  # (proto3 leaves an empty field out; a read never yields an empty chunk)
        assert plain == pb.ReadChunk(data=payload).SerializeToString()
    with_info = read_relay.data_message(payload, INFO)
    parsed = pb.ReadChunk.FromString(with_info)
    assert parsed.info == INFO and parsed.data == payload


def test_messages_of_a_file_in_chunks() -> None:
    chunks = [b"abc", b"d" * 1000, b"e"]
    messages = read_relay.Messages(iter(chunks), INFO)
    got = []
    while (m := messages.next_message()) is not None:
        got.append(pb.ReadChunk.FromString(m))
    assert [c.data for c in got] == chunks
    assert got[0].info == INFO and not any(c.HasField("info") for c in got[1:])
    assert messages.sent == sum(map(len, chunks))
    assert messages.next_message() is None


def test_an_empty_file_still_sends_its_info_once() -> None:
    messages = read_relay.Messages(iter([]), INFO)
    first = messages.next_message()
    assert first is not None and pb.ReadChunk.FromString(first) == pb.ReadChunk(info=INFO)
    assert messages.next_message() is None
    messages.close()
