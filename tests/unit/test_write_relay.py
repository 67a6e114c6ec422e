"""Write data messages stay the bytes they came in; everything else is parsed (issue 14)."""
from __future__ import annotations

import pytest

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.controller import write_relay
from namespace.errors import InvalidInput


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 1 << 20, (1 << 20) + 7])
def test_data_messages_stay_raw_and_yield_their_payload(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    raw = pb.WriteChunk(data=payload).SerializeToString()
    got = write_relay.deserialize(raw)
    assert got is raw  # (an empty oneof bytes field still encodes its tag: raw too)
    assert bytes(write_relay.data_of(got)) == payload
    assert write_relay.serialized(got) is raw


def test_headers_and_unexpected_shapes_are_parsed() -> None:
    head = pb.WriteChunk(header=pb.WriteHeader(target=pb.Target(global_path="/a/b")))
    got = write_relay.deserialize(head.SerializeToString())
    assert isinstance(got, pb.WriteChunk) and got.header.target.global_path == "/a/b"
    with pytest.raises(InvalidInput):
        write_relay.data_of(got)
    # a data field followed by more bytes (e.g. an unknown field) is not a plain data message
    odd = pb.WriteChunk(data=b"xyz").SerializeToString() + b"\x18\x01"
    parsed = write_relay.deserialize(odd)
    assert isinstance(parsed, pb.WriteChunk) and parsed.data == b"xyz"
    assert write_relay.serialized(parsed) == pb.WriteChunk.FromString(odd).SerializeToString()
