"""A hub never completes an edge site's relayed upload on part of its bytes (kill -9 mid-put).

An edge site's object-store mirror uploads large objects in parts through its hub
(``federation.object_relay``). A grpc.aio server sees a client killed mid-stream as a clean
end of its request stream, so a site killed at a part boundary looked like a site that had
sent everything: the hub completed the multipart upload on the parts it had, and a partial
object, carrying the whole file's sha256 as its metadata, became visible at the key. Now the
hub checks the parts against the size and sha256 the site promised, and aborts.

Real parts: the hub's relay handler on a real grpc.aio server, a moto S3 server, a sender
process that is killed -9. The handler is served alone, with the authorisation callables
allowing the call: what a policy lets a site write is tested with a whole hub and edge site
in ``test_edge_shipping_objects``; this file tests what reaches the store.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from federation.local.emulators import ServerHandle
from federation.local.ports import free_port
from federation.loop_thread import LoopThread
from federation.object_relay import METHOD, ON_BEHALF_OF, ObjectRelayHandler
from tests.support import wait_for
from tests.support.raw_store import RawStore

PART = 5 << 20  # S3's smallest part but the last
PARTS = 3

SENDER = textwrap.dedent("""
    import json, sys, time, grpc
    endpoint, head, parts_sent = sys.argv[1], sys.argv[2], int(sys.argv[3])
    part = bytes(range(256)) * (5 << 12)  # 5 MiB
    def requests():
        yield head.encode()
        for _ in range(parts_sent):
            yield len(part).to_bytes(8, "big")
            for i in range(0, len(part), 1 << 20):
                yield part[i:i + (1 << 20)]
        print("sent", flush=True)
        time.sleep(600)  # killed here, at a part boundary: the rest never comes
    call = grpc.insecure_channel(endpoint).stream_stream(
        {method!r}, request_serializer=None, response_deserializer=None)
    for reply in call(requests(), metadata=[({behalf!r}, "edge:site-1")], timeout=600):
        print(reply[:200], flush=True)
""").format(method=METHOD, behalf=ON_BEHALF_OF)


@pytest.fixture
def relay(moto_s3: ServerHandle) -> Iterator[str]:
    """The endpoint of a relay handler serving on its own grpc.aio server."""
    loop = LoopThread("relay-test")
    endpoint = f"127.0.0.1:{free_port()}"

    async def start() -> grpc.aio.Server:
        server = grpc.aio.server()
        ObjectRelayHandler(allowed=lambda site, uri: True, trusted_caller=lambda ctx: True).add_to_server(server)
        server.add_insecure_port(endpoint)
        await server.start()
        return server

    with moto_s3.env():
        server = loop.run(start(), timeout=30)
        try:
            yield endpoint
        finally:
            loop.run(server.stop(None), timeout=30)
            loop.close()


def _head(uri: str, key: str) -> str:
    part = bytes(range(256)) * (PART // 256)
    whole = part * PARTS
    return json.dumps({"op": "put_parts", "uri": uri, "key": key, "size": len(whole),
                       "sha256": hashlib.sha256(whole).hexdigest(), "if_absent": False,
                       "if_match": None, "part_size": PART})


def _uploads(raw: RawStore) -> list[dict[str, Any]]:
    return list(raw._s3().list_multipart_uploads(Bucket=raw.bucket).get("Uploads", []))


@pytest.mark.parametrize("parts_sent", [1, PARTS - 1])
def test_a_site_killed_mid_upload_leaves_no_object(relay: str, moto_s3: ServerHandle, parts_sent: int) -> None:
    uri = moto_s3.new_store_uri(f"cut-{parts_sent}")
    raw = RawStore(uri, moto_s3)
    sender = subprocess.Popen([sys.executable, "-c", SENDER, relay, _head(uri, f"cut-{parts_sent}/big.bin"),
                               str(parts_sent)], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert sender.stdout is not None and sender.stdout.readline().strip() == "sent"
        # The hub has begun the multipart upload before the kill: the cut comes mid-upload.
        wait_for(lambda: _uploads(raw), 30, "the hub's multipart upload to begin")
    finally:
        sender.send_signal(signal.SIGKILL)
        sender.wait(10)
        if sender.stdout is not None:
            sender.stdout.close()
    # Whatever the hub does with the cut stream, it ends the upload: completed (the code
    # before: a partial object) or aborted. Every part sent is a whole one, and the stream
    # ends cleanly at the hub, so only the promised size tells this cut from an end.
    wait_for(lambda: not _uploads(raw), 30, "the hub to end the upload")
    assert raw.listing() == {}, "a cut upload became visible"


def test_a_whole_relayed_upload_is_stored(relay: str, moto_s3: ServerHandle) -> None:
    """The same call, not cut: the object is there, whole (what the test above would see if
    its check were wrong)."""
    uri = moto_s3.new_store_uri("whole")
    raw = RawStore(uri, moto_s3)
    part = bytes(range(256)) * (PART // 256)

    def requests() -> Iterator[bytes]:
        yield _head(uri, "whole/big.bin").encode()
        for _ in range(PARTS):
            yield len(part).to_bytes(8, "big")
            for i in range(0, len(part), 1 << 20):
                yield part[i:i + (1 << 20)]

    channel = grpc.insecure_channel(relay)
    try:
        call = channel.stream_stream(METHOD, request_serializer=None, response_deserializer=None)
        first = json.loads(next(iter(call(requests(), metadata=[(ON_BEHALF_OF, "edge:site-1")], timeout=60))))
    finally:
        channel.close()
    assert first["result"]["size"] == PART * PARTS, first
    assert raw.read("big.bin") == part * PARTS
    assert raw.sha_metadata("big.bin") == hashlib.sha256(part * PARTS).hexdigest()
    assert _uploads(raw) == []
