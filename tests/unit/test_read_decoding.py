"""A client takes a ``ReadChunk``'s data out of its bytes itself, as protobuf would (issue 14)."""
from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api.wire import payload_at, read_data
from federation.client import Client
from federation.controller import read_relay
from namespace.errors import InternalError

INFO = pb.FileInfo(path="/a/b", size=3, sha256="0" * 64, version=7, type="file", served_by="x")


def _payload(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(size % 256)


@pytest.mark.parametrize("size", [1, 127, 128, 16383, 16384, 2097151, 2097152, (1 << 20) + 7])
def test_a_data_message_is_sliced_and_equals_protobufs_parse(size: int) -> None:
    payload = _payload(size)
    for message in (read_relay.data_message(payload), pb.ReadChunk(data=payload).SerializeToString()):
        assert payload_at(message) is not None
        got = read_data(message)
        assert got == payload == pb.ReadChunk.FromString(message).data
        assert got.obj is message and got.readonly  # a view into the message: no copy


@pytest.mark.parametrize("message", [
    read_relay.data_message(b"first", INFO),             # the first message carries info
    pb.ReadChunk(info=INFO).SerializeToString(),          # an empty file: info only
    pb.ReadChunk(data=b"xyz").SerializeToString() + b"\x1a\x01z",  # more after the data field
    b"\x12\x05abc",                                       # shorter than its length says
    b"\x12\x02abc",                                       # longer than its length says
    b"",                                                  # an empty message
], ids=["info-then-data", "info-only", "trailing-field", "short", "long", "empty"])
def test_any_other_message_is_left_to_protobuf(message: bytes) -> None:
    try:
        expected = pb.ReadChunk.FromString(message).data
    except Exception as exc:  # protobuf refuses it: so must we, not hand back a slice
        assert payload_at(message) is None
        with pytest.raises(type(exc)):
            read_data(message)
        return
    assert read_data(message) == expected


class _Call:
    """A finished ``Read`` call that delivered ``messages`` (what ``read_raw`` returns)."""

    def __init__(self, messages: list[bytes]) -> None:
        self.messages, self.cancelled = messages, False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.messages)

    def cancel(self) -> None:
        self.cancelled = True


def _client_reading(messages: list[bytes]) -> tuple[Client, _Call]:
    """A client whose every read is routed to a stub that answers ``messages``."""
    call = _Call(messages)
    client = Client.__new__(Client)  # no etcd, no cache: only read_chunks runs
    stub = SimpleNamespace(read_raw=lambda request, timeout=None: call)
    client._route = lambda path, epoch=None, **kw: (stub, pb.Target(global_path=path), "here")  # type: ignore[method-assign,assignment]
    return client, call


def test_read_chunks_yields_the_data_of_every_message() -> None:
    first = read_relay.data_message(b"ab", INFO)
    client, call = _client_reading([first, read_relay.data_message(b"cd"), pb.ReadChunk(info=INFO).SerializeToString()])
    got = list(client.read_chunks("/a/b"))
    assert got == [b"ab", b"cd"] and all(type(c) is bytes for c in got)
    assert call.cancelled


def test_read_views_yield_views_into_the_messages() -> None:
    second = read_relay.data_message(b"cd")
    client, _ = _client_reading([read_relay.data_message(b"ab", INFO), second])
    views = list(client.read_views("/a/b"))
    assert views == [b"ab", b"cd"] and views[1].obj is second


def test_read_chunks_left_early_cancels_the_call() -> None:
    client, call = _client_reading([read_relay.data_message(b"ab"), read_relay.data_message(b"cd")])
    chunks = client.read_chunks("/a/b")
    assert next(chunks) == b"ab"
    chunks.close()
    assert call.cancelled


def test_a_reply_that_does_not_parse_is_an_internal_error_naming_the_cluster() -> None:
    client, call = _client_reading([read_relay.data_message(b"ab"), b"\x12\x05abc"])
    chunks = client.read_chunks("/a/b")
    assert next(chunks) == b"ab"
    with pytest.raises(InternalError, match="cluster here: a Read reply does not parse"):
        next(chunks)
    assert call.cancelled
