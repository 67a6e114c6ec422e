"""``cloud_adapters.http1`` reads answers as the network delivers them.

The request path of each store's direct module is tested with its store (``test_s3_direct``:
real loopback servers, malformed and cut answers); here the parser alone, fed through a
socket stand-in that hands out the bytes in whatever pieces hypothesis chooses; and how a
failure below HTTP is reported.
"""

from __future__ import annotations

import http.server
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_adapters.http1 import Conn, Connections
from tests.support.http_servers import serve_http


class _Segments:
    """A socket stand-in that hands the answer stream out in the given pieces, as TCP may."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    def sendall(self, data: bytes) -> None:
        pass

    def recv(self, n: int) -> bytes:
        return self._pieces.pop(0) if self._pieces else b""

    def close(self) -> None:
        pass


_answer = st.tuples(
    st.sampled_from([200, 204, 404, 412, 500]),
    st.dictionaries(st.sampled_from(["etag", "x-amz-meta-sha256", "last-modified", "x-amz-request-id"]),
                    st.text(alphabet="abcdef0123456789 \"-:", min_size=1, max_size=20).map(str.strip)
                    .filter(bool), max_size=4),
    st.binary(max_size=300),
    st.booleans(),
)


@settings(max_examples=300)
@given(st.lists(_answer, min_size=1, max_size=4), st.lists(st.integers(1, 97), min_size=1, max_size=60))
def test_answers_split_anywhere_by_the_network_read_the_same(
        answers: list[tuple[int, dict[str, str], bytes, bool]], cuts: list[int]) -> None:
    """A run of kept-alive answers (by length and by chunks), cut into arbitrary pieces,
    is read back answer by answer with nothing lost or left over."""
    stream = b""
    for status, headers, body, chunked in answers:
        body = b"" if status == 204 else body
        head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if status == 204:
            framed = b""
        elif chunked:
            head += "Transfer-Encoding: chunked\r\n"
            framed = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 50]), body[i:i + 50])
                              for i in range(0, len(body), 50)) + b"0\r\n\r\n"
        else:
            head += f"Content-Length: {len(body)}\r\n"
            framed = body
        stream += (head + "\r\n").encode() + framed
    pieces, at = [], 0
    for n in cuts * (len(stream) // max(1, sum(cuts)) + 1):
        if at >= len(stream):
            break
        pieces.append(stream[at:at + n])
        at += n
    conn = Conn(_Segments(pieces))  # type: ignore[arg-type]
    for status, headers, body, _ in answers:
        got_status, got_headers, got_body = conn.exchange("PUT", b"", b"")
        assert got_status == status
        assert got_body == (b"" if status == 204 else body)
        assert all(got_headers[k] == v for k, v in headers.items())
    assert conn.sock is not None and not conn.unread


def test_a_tls_failure_is_a_connection_error_and_leaves_no_connection() -> None:
    """TLS to a server that speaks plain HTTP fails in the handshake with an ``SSLError``,
    which is an ``OSError`` but not a ``ConnectionError``: the request raises it as one (as
    requests does), so each store maps it as a broken connection."""
    with serve_http(http.server.BaseHTTPRequestHandler) as url:
        origin = urlsplit(url.replace("http://", "https://"))
        pool = Connections(origin, None, 2, 5.0, 5.0)
        with pytest.raises(ConnectionError, match="SSL"):
            pool.request("GET", "/", {"host": origin.netloc}, b"")
        assert not pool._idle
